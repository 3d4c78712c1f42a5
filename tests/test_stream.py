"""Packed datasets (`visionkit-pack`, `data=stream`): what a pack holds, the samples a stream gives back (labels,
boxes through the mosaic, masks), and an object store's faults: wrong bucket, prefix or credentials named in one
line, a store that stops answering retried and then stopped with a checkpoint, a damaged chunk named and skipped.
Training from a pack in moto's S3 server with two DDP processes, killed and resumed exactly: test_exact_resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from tests.object_store import ObjectStore, object_store
from visionkit.data import StreamSource, VisionDataModule
from visionkit.data.augment import first_resize
from visionkit.data.pack import pack_splits, stored_order
from visionkit.data.pixels import RGB8
from visionkit.data.shards import Location, StoreUnreachable
from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.run import build_datamodule, pack, predict


def _pack(tmp_path: Path, out: str, *overrides: str) -> dict[str, float]:
    return pack(compose_config(tmp_path / "pack-run", [f"out={out}", *overrides], name="pack"))


@pytest.fixture(scope="module")
def store() -> Iterator[ObjectStore]:
    with object_store() as running:
        yield running


def test_a_pack_holds_every_split_and_streams_back_the_same_samples(tmp_path: Path, shapes_folder: Path) -> None:
    out = tmp_path / "packed"
    source = ["data=imagefolder", f"data.root={shapes_folder}", "data.image_size=24"]
    metrics = _pack(tmp_path, str(out), *source, "pack.encoding=png", "pack.chunk_mb=0.005")
    meta = json.loads((out / "visionkit.json").read_text())
    assert metrics["images"] == 36 and meta["class_names"] == ["hbar", "square", "vbar"]
    assert len(list((out / "train").glob("chunk-*.bin"))) > 1

    plain = build_datamodule(compose_config(tmp_path, source).data, None, mean=[0.5] * 3, std=[0.5] * 3)
    own = compose_config(tmp_path, ["data=stream", f"data.url={out}"]).data
    assert build_datamodule(own, None, mean=[0.5] * 3, std=[0.5] * 3).image_size == [24, 24]  # the size packed at
    unsized = compose_config(tmp_path, [*source, "data.image_size=null"]).data
    with pytest.raises(VisionkitError, match=r"image folders under .*shapes was not packed: set data\.image_size"):
        build_datamodule(unsized, None, mean=[0.5] * 3, std=[0.5] * 3)
    streamed = VisionDataModule(StreamSource(str(out)), image_size=24, num_classes=3, augment="none")
    for name, samples in plain._load_splits().items():  # stored shuffled with the split seed
        packed = streamed._load_splits()[name]
        order = stored_order(len(samples), 0)
        assert len(packed) == len(samples) and np.array_equal(packed.targets, samples.targets[order]), name
    first = first_resize(24, "stretch")
    reader = streamed.source.reader("val", first, streamed.pixel_format)
    original = plain._reading("val", plain._load_splits()["val"])["reader"]
    order = stored_order(len(reader.paths), 0)
    for index in range(len(reader.paths)):
        assert np.array_equal(reader(index)[0], original(order[index])[0])  # png: lossless
    assert reader.paths[0] == f"{out}/val#0"

    with pytest.raises(VisionkitError, match="already holds a packed dataset"):
        _pack(tmp_path, str(out), *source)
    with pytest.raises(VisionkitError, match="packed for task=classification; train it with task=classification"):
        StreamSource(str(out), task="detection")
    with pytest.raises(VisionkitError, match=r"set data\.channels=3 data\.dtype=uint8"):
        from visionkit.data.pixels import PixelFormat

        streamed.source.reader("train", first, PixelFormat(channels=1))


def test_a_pack_cut_off_goes_on_from_where_it_stopped(tmp_path: Path, shapes_folder: Path, caplog) -> None:
    paths = sorted(str(p) for p in shapes_folder.rglob("*.png"))
    bad = tmp_path / "unreadable.png"
    bad.write_text("not an image")
    val = paths[16:]
    val[stored_order(len(val), 0)[-1]] = str(bad)  # packed last: the chunks before it are written
    splits = {"train": SampleSet(paths[:16], np.arange(16) % 3), "val": SampleSet(val, np.arange(len(val)) % 3)}
    settings = dict(task="classification", task_name="classification", class_names=["a", "b", "c"], fmt=RGB8)
    settings.update(description="shapes", image_size=(24, 24), encoding="png", chunk_mb=0.002, workers=2)
    out = tmp_path / "cut"
    with pytest.raises(VisionkitError, match=rf"packing val stopped: image {bad} is not a readable.*run the same"):
        pack_splits(splits, Location(str(out)), **settings)
    assert (out / "train" / "index.json").exists() and any((out / "val").glob("chunk-*.bin"))
    assert not (out / "val" / "index.json").exists() and not (out / "visionkit.json").exists()

    bad.write_bytes(Path(paths[0]).read_bytes())  # fixed: the same command again
    with caplog.at_level(logging.INFO, logger="visionkit.data.pack"):
        metrics = pack_splits(splits, Location(str(out)), **settings)
    assert metrics["kept"] == 16 and "train is packed already (16 images" in caplog.text
    pack_splits(splits, Location(str(tmp_path / "uncut")), **settings)
    resumed, uncut = (StreamSource(str(tmp_path / name)) for name in ("cut", "uncut"))
    for split in ("train", "val"):
        a, b = resumed.reader(split, None, RGB8), uncut.reader(split, None, RGB8)
        assert len(a.paths) == len(b.paths) and all(np.array_equal(a(i)[0], b(i)[0]) for i in range(len(a.paths)))
    assert np.array_equal(resumed.splits(0, 0, 0)["val"].targets, uncut.splits(0, 0, 0)["val"].targets)

    splits["val"] = splits["val"].subset(range(10))  # another source into a pack cut off: refused, nothing lost
    (out / "visionkit.json").unlink()
    with pytest.raises(VisionkitError, match=r"holds 20 packed images from an earlier run, the source now gives 10"):
        pack_splits(splits, Location(str(out)), **settings)


def test_boxes_pass_the_mosaic_and_masks_keep_their_pixels(tmp_path: Path, builtin_data: Path) -> None:
    data_dir = f"paths.data_dir={builtin_data}"
    detection = tmp_path / "det"
    _pack(tmp_path, str(detection), "task=detection", data_dir, "data.image_size=64", "pack.chunk_mb=0.1")
    source = StreamSource(str(detection), task="detection")
    train = source.splits(0.1, 0.2, 0)["train"]
    streamed = compose_config(tmp_path, ["task=detection", "data=stream", f"data.url={detection}"]).data
    as_packed = build_datamodule(streamed, None, mean=[0.0] * 3, std=[1.0] * 3)
    assert (as_packed.resize, as_packed.image_size) == ("letterbox", [64, 64])  # the source's, not stretch at 224
    module = VisionDataModule(source, image_size=64, num_classes=4, augment="light", mosaic=1.0, resize="letterbox")
    module.setup("fit")
    dataset = module.datasets["train"]
    boxes = [dataset[i]["boxes"] for i in range(8)]
    assert all(b.ndim == 2 and b.shape[1] == 4 for b in boxes) and sum(len(b) for b in boxes) > 8
    assert all(t.shape[1] == 5 for t in train.targets) and sum(map(len, train.targets)) > len(train)

    masks = tmp_path / "seg"
    seg = ["task=segmentation", data_dir, "data.train_images=24", "data.image_size=32"]
    _pack(tmp_path, str(masks), *seg, "pack.chunk_mb=0.05")
    plain = build_datamodule(compose_config(tmp_path, seg).data, None, mean=[0.5] * 3, std=[0.5] * 3)
    samples = plain._load_splits()["val"]
    source = StreamSource(str(masks), task="segmentation")
    reader = source.reader("val", None, plain.pixel_format)
    order = stored_order(len(samples), 0)
    for index in (0, 5):
        image = reader(index)[0]
        mask = source.mask_reader.read(source.splits(0, 0, 0)["val"].targets[index])
        expected = plain.source.mask_reader.read(samples.targets[order[index]])
        assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= set(range(5))
        if expected.shape == mask.shape:
            assert np.array_equal(mask, expected)
        else:  # stored at the size that covers 32 px: nearest-neighbour
            assert abs(np.mean(mask > 0) - np.mean(expected > 0)) < 0.05


@pytest.fixture(scope="module")
def digits_in_store(store: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"s3://{store.bucket('faults')}/digits"
    folder = tmp_path_factory.mktemp("digits-pack")
    _pack(folder, url, *_options(store), "pack.chunk_mb=0.02")
    return url


def _options(store: ObjectStore) -> list[str]:
    """The pack overrides that reach `store` (its endpoint and credentials given as storage options)."""
    env = store.env
    return [
        f"pack.storage_options.endpoint_url={store.endpoint}",
        f"pack.storage_options.aws_access_key_id={env['AWS_ACCESS_KEY_ID']}",
        f"pack.storage_options.aws_secret_access_key={env['AWS_SECRET_ACCESS_KEY']}",
    ]


def _packed_digits(own: ObjectStore, tmp_path: Path, bucket: str, retries: int) -> StreamSource:
    """The digits packed into a new bucket of a store of the test's own (small chunks), opened with `retries`."""
    url = f"s3://{own.bucket(bucket)}/digits"
    _pack(tmp_path, url, *_options(own), "pack.chunk_mb=0.01")
    options = {option.split("=")[0].split(".")[-1]: option.split("=", 1)[1] for option in _options(own)}
    return StreamSource(url, storage_options=options, cache_dir=str(tmp_path / "cache"), retries=retries)


def test_a_wrong_bucket_prefix_or_credentials_is_named(store: ObjectStore, digits_in_store: str, monkeypatch) -> None:
    from moto.core.authorization import enable_iam_authentication

    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    assert len(StreamSource(digits_in_store).splits(0, 0, 0)["train"]) > 1000
    with pytest.raises(VisionkitError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"):
        StreamSource("s3://no-such-bucket/digits")
    with pytest.raises(VisionkitError, match="was not packed, or the path is wrong; pack it with visionkit-pack"):
        StreamSource(digits_in_store + "-typo")
    refused = r"refused the credentials.*AWS_ACCESS_KEY_ID"
    with enable_iam_authentication(), pytest.raises(VisionkitError, match=refused):
        StreamSource(digits_in_store)


def test_a_store_that_stops_answering_is_retried_then_training_stops_with_a_checkpoint(tmp_path: Path) -> None:
    """The server goes away after three training steps: the reader retries, then training stops with last.ckpt
    holding the steps done and the loader's position (resume as after a kill)."""
    import lightning as L

    from visionkit.callbacks.checkpoint import ModelCheckpoint
    from visionkit.callbacks.exact_resume import KEY, ExactResume
    from visionkit.tasks import ClassificationTask

    with object_store() as own:
        source = _packed_digits(own, tmp_path, "stops", retries=1)
        source.retry_wait = 0.2
        module = VisionDataModule(source, image_size=32, num_classes=10, augment="none", batch_size=32)
        task = ClassificationTask(backbone="lenet5", num_classes=10, in_channels=3)

        class StopTheStore(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                if batch_idx == 2:
                    own.stop()

        checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
        trainer = L.Trainer(
            max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[checkpoints, ExactResume(), StopTheStore()],
        )  # fmt: skip
        with pytest.raises(StoreUnreachable, match=r"did not answer after 1 retries.*resume with ckpt_path="):
            trainer.fit(task, datamodule=module)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] >= 3 and last[KEY]["batches_done"] == last["global_step"]


def test_a_store_back_within_the_retries_loses_nothing(tmp_path: Path) -> None:
    import threading

    from moto.server import ThreadedMotoServer

    with object_store() as own:
        source = _packed_digits(own, tmp_path, "returns", retries=3)
        source.retry_wait = 1.0
        reader = source.reader("train", first_resize(32, "stretch"), VisionDataModule(source).pixel_format)
        reader(0)
        own.stop()
        port = int(own.endpoint.rsplit(":", 1)[1])
        back = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # same in-process buckets
        threading.Timer(1.5, back.start).start()
        try:
            image, _ = reader(len(reader.paths) - 1)  # a chunk not fetched before the stop
        finally:
            back.stop()
    assert image.shape == (32, 32, 3)


def test_a_damaged_chunk_is_named_and_its_samples_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "packed"
    _pack(tmp_path, str(out), "pack.chunk_mb=0.02")
    chunk = sorted((out / "train").glob("chunk-*.bin"))[1]
    size = chunk.stat().st_size
    chunk.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    counts = {c["filename"]: c["chunk_size"] for c in json.loads((out / "train" / "index.json").read_text())["chunks"]}

    strict = VisionDataModule(StreamSource(str(out)), image_size=32, num_classes=10, augment="none")
    strict.setup("fit")
    dataset = strict.datasets["train"]
    start = sum(n for name, n in counts.items() if name < chunk.name)
    with pytest.raises(VisionkitError, match=f"bad image {out}/train#{start}: chunk {chunk.name} is damaged"):
        dataset[start]

    lenient = VisionDataModule(
        StreamSource(str(out)), image_size=32, num_classes=10, augment="none", skip_bad_images=True
    )
    lenient.setup("fit")
    dataset = lenient.datasets["train"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(start, start + counts[chunk.name] + 1)]
    assert all(sample["image"].shape == (3, 32, 32) for sample in samples)  # the next readable samples instead
    named = [r.getMessage() for r in caplog.records if chunk.name in r.getMessage()]
    assert len(named) == 1 and f"its {counts[chunk.name]} samples cannot be read" in named[0], named


def test_predict_reads_a_bucket_prefix_and_a_pack(
    store: ObjectStore, digits_checkpoint: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`source=s3://bucket/prefix` predicts the images under it (fetched into <run>/source/), the same answers as
    the local files; `source=<a pack>` predicts one split of it."""
    import csv

    from PIL import Image

    ckpt, _ = digits_checkpoint
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "shots"
    folder.mkdir()
    from sklearn.datasets import load_digits

    images = load_digits().images[:5]
    bucket = store.bucket("shots")
    for index, image in enumerate(images):
        path = folder / "day1" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).convert("RGB").resize((32, 32)).save(path)
        store.client().upload_file(str(path), bucket, f"cam/day1/{index}.png")
    store.client().put_object(Bucket=bucket, Key="cam/notes.txt", Body=b"not an image")

    def labels(run: Path, source: str, *extra: str) -> list[tuple[str, str]]:
        predict(compose_config(run, [f"ckpt_path={ckpt}", f"source={source}", *extra], name="predict"))
        rows = list(csv.DictReader((run / "predictions.csv").open()))
        return [(Path(r["path"]).name, r["label"]) for r in rows]

    remote = labels(tmp_path / "remote", f"s3://{bucket}/cam")
    assert remote == labels(tmp_path / "local", str(folder)) and len(remote) == 5
    assert sorted(p.name for p in (tmp_path / "remote" / "source" / "day1").iterdir()) == [f"{i}.png" for i in range(5)]

    packed = tmp_path / "packed"
    _pack(tmp_path, str(packed), "pack.chunk_mb=0.02")
    count = json.loads((packed / "visionkit.json").read_text())["splits"]["val"]["count"]
    assert len(labels(tmp_path / "from-pack", str(packed), "source_split=val")) == count
    with pytest.raises(VisionkitError, match=r"holds the splits \['test', 'train', 'val'\]; choose one"):
        labels(tmp_path / "bad-split", str(packed), "source_split=holdout")
