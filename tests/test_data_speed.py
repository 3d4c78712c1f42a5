"""The fast data path: reduced-size JPEG decoding that keeps boxes and masks aligned, uint8 batches normalized
on the device, the decoded-image caches, the speed report at the end of a fit, and decode failures in training."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data import DigitsSource, VisionDataModule
from visionkit.data.augment import build_transform, first_resize
from visionkit.data.datasets import DetectionDataset, SegmentationDataset
from visionkit.data.decoded import DiskCache, ImageReader, RamCache, build_reader, decode
from visionkit.data.mask_files import MaskReader
from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import read_image, read_image_at_least

SIZE = 64


def _photo(path: Path, height: int = 600, width: int = 800, seed: int = 0, quality: int = 90) -> np.ndarray:
    """A JPEG "photo" (smooth gradients, a few bright rectangles, mild noise) and its pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], 2).astype(np.int32)
    for _ in range(4):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.integers(0, 255, 3)
    image = np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=quality)
    return image


def test_jpeg_is_decoded_at_reduced_size_only_when_that_covers_the_training_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _photo(path, 600, 800)
    small, full = read_image_at_least(path, first_resize(SIZE, "stretch").needed)
    assert full == (600, 800) and small.shape == (75, 100, 3)  # libjpeg's 1/8 scale still covers 64 x 64
    big, _ = read_image_at_least(path, first_resize(400, "stretch").needed)
    assert big.shape == (600, 800, 3)  # 1/2 would give 300 rows: decoded in full
    half, _ = read_image_at_least(path, first_resize(300, "letterbox").needed)  # letterbox needs 225 x 300
    assert half.shape == (300, 400, 3)
    full_pixels = read_image(path)
    reduced = first_resize(SIZE, "stretch")(small).astype(float)
    resized = first_resize(SIZE, "stretch")(full_pixels).astype(float)
    assert np.abs(reduced - resized).mean() < 4  # the same picture (DCT scaling averages, bilinear samples)


def test_reduced_decode_keeps_exif_rotation(tmp_path: Path) -> None:
    path = tmp_path / "turned.jpg"
    image = Image.fromarray(_photo(tmp_path / "plain.jpg", 600, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees: 600 wide, 800 high
    image.save(path, quality=90, exif=exif)
    small, full = read_image_at_least(path, first_resize(SIZE, "stretch").needed)
    assert full == (800, 600) and small.shape == (100, 75, 3)
    assert np.abs(small.astype(float) - np.asarray(Image.fromarray(read_image(path)).resize((75, 100)))).mean() < 8


def _pair(tmp_path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Two JPEG photos with YOLO boxes around their rectangles and PNG masks of them."""
    paths, boxes, masks = [], [], []
    for seed, (height, width) in enumerate(((600, 800), (750, 500))):
        path = tmp_path / f"p{seed}.jpg"
        _photo(path, height, width, seed)
        mask = np.zeros((height, width), np.uint8)
        y0, x0, h, w = height // 5, width // 3, height // 3, width // 4
        mask[y0 : y0 + h, x0 : x0 + w] = 1
        mask[height - h // 2 :, : w // 2] = 2
        Image.fromarray(mask).save(tmp_path / f"p{seed}.png")
        paths.append(str(path))
        masks.append(str(tmp_path / f"p{seed}.png"))
        boxes.append(np.array([[0, (x0 + w / 2) / width, (y0 + h / 2) / height, w / width, h / height]], np.float32))
    return paths, np.array(boxes, dtype=object), masks


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_boxes_and_masks_stay_aligned_with_reduced_decoding(tmp_path: Path, mode: str) -> None:
    paths, boxes, masks = _pair(tmp_path)
    first = first_resize(SIZE, mode)
    box_transform = build_transform(None, image_size=SIZE, resize=mode, targets=("image", "boxes"), normalize=False)
    mask_transform = build_transform(None, image_size=SIZE, resize=mode, targets=("image", "mask"), normalize=False)
    reader = MaskReader.make(3)
    for index in range(2):
        full = DetectionDataset(SampleSet(paths, boxes), box_transform, reader=ImageReader(paths, None, None))[index]
        fast = DetectionDataset(SampleSet(paths, boxes), box_transform, first=first)[index]
        assert fast["image"].dtype == torch.uint8 and fast["image"].shape == full["image"].shape
        np.testing.assert_allclose(fast["boxes"].numpy() * SIZE, full["boxes"].numpy() * SIZE, atol=1.0)
        assert (fast["image"].float() - full["image"].float()).abs().mean() < 6
        samples = SampleSet(paths, np.array(masks))
        full_mask = SegmentationDataset(
            samples, mask_transform, mask_reader=reader, reader=ImageReader(paths, None, None)
        )[index]["mask"]
        fast_mask = SegmentationDataset(samples, mask_transform, mask_reader=reader, first=first)[index]["mask"]
        differ = (fast_mask != full_mask).numpy()
        # a pixel differs only on a class edge: every such pixel has a neighbour of the other class
        edge = np.zeros_like(differ)
        m = full_mask.numpy()
        edge[1:, :] |= m[1:, :] != m[:-1, :]
        edge[:-1, :] |= m[1:, :] != m[:-1, :]
        edge[:, 1:] |= m[:, 1:] != m[:, :-1]
        edge[:, :-1] |= m[:, 1:] != m[:, :-1]
        assert not (differ & ~edge).any() and differ.mean() < 0.03


def test_batches_travel_as_uint8_and_are_normalized_on_the_device(tmp_path: Path) -> None:
    dm = VisionDataModule(DigitsSource(), image_size=16, batch_size=8, augment="none", mean=(0.4,) * 3, std=(0.2,) * 3)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].dtype == torch.uint8
    images = dm.datasets["test"].samples.images[:8]
    reference = A.Compose([A.Normalize(mean=(0.4,) * 3, std=(0.2,) * 3, max_pixel_value=255.0)])
    expected = np.stack([reference(image=image)["image"] for image in images]).transpose(0, 3, 1, 2)
    normalized = dm.on_after_batch_transfer(batch, 0)["image"]
    assert normalized.dtype == torch.float32
    np.testing.assert_allclose(normalized.numpy(), expected, atol=1e-5)


def _files(tmp_path: Path, count: int = 4) -> list[str]:
    paths = []
    for index in range(count):
        path = tmp_path / f"img{index}.jpg"
        _photo(path, 300, 400, seed=index)
        paths.append(str(path))
    png = tmp_path / "img_png.png"
    Image.fromarray(_photo(tmp_path / "tmp.jpg", 200, 260, seed=9)).save(png)
    return [*paths, str(png)]


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_cache_returns_the_uncached_samples_and_notices_a_changed_file(tmp_path: Path, kind: str) -> None:
    paths = _files(tmp_path)
    first = first_resize(SIZE, "letterbox")
    cached = build_reader(paths, first, kind, cache_dir=tmp_path / "cache", split="train")
    plain = ImageReader(paths, first, None)
    for index in range(len(paths)):
        hit, expected = cached(index), plain(index)
        assert hit[1] == expected[1] and np.array_equal(hit[0], expected[0])
    if kind == "disk":
        assert len(list((tmp_path / "cache").rglob("*.npy"))) == len(paths)
        assert isinstance(cached.cache, DiskCache) and cached.cache.get(0, paths[0]) is not None
    else:
        assert isinstance(cached.cache, RamCache) and cached.cache.nbytes == sum(plain(i)[0].nbytes for i in range(5))
    changed = _photo(Path(paths[1]), 320, 400, seed=42)  # another picture, another size, in the same file
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    image, full = cached(1)
    assert full == (320, 400) and np.array_equal(image, plain(1)[0])
    assert np.abs(image.astype(float) - first(changed).astype(float)).mean() < 4


def test_ram_cache_is_bounded_and_the_data_module_reports_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = _files(tmp_path)
    first = first_resize(SIZE, "stretch")
    one = SIZE * SIZE * 3
    ram = RamCache(paths, first, max_bytes=2 * one)
    assert ram.nbytes == 2 * one and ram.left_out == 3
    reader = ImageReader(paths, first, ram)
    assert all(np.array_equal(reader(i)[0], decode(paths[i], first)[0]) for i in range(len(paths)))
    with pytest.raises(VisionkitError, match=r"data.cache='memory' is not a cache kind; choose null, ram or disk"):
        VisionDataModule(DigitsSource(), cache="memory")


def test_truncated_jpeg_that_passes_the_scan_stops_training_with_the_scan_message(tmp_path: Path) -> None:
    from visionkit.data import ImageFolderSource

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(4):
            _photo(tmp_path / name / f"{index}.jpg", 120, 160, seed=index)
    bad = tmp_path / "a" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:1500])  # the header is intact: the up-front scan passes it
    dm = VisionDataModule(
        ImageFolderSource(str(tmp_path)), image_size=32, batch_size=8, val_fraction=0.25, test_fraction=0.0
    )
    dm.setup("fit")
    assert str(bad) in dm.datasets["train"].samples.images + dm.datasets["val"].samples.images
    hint = "; delete or replace it, or set data.skip_bad_images=true to skip bad images"
    message = rf"bad image {re.escape(str(bad))}: corrupt or truncated .*{re.escape(hint)}"
    with pytest.raises(VisionkitError, match=message):
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            list(loader)


def _fit_a_few_batches(task: L.LightningModule, dm: VisionDataModule, root: Path, train_batches: int, val_batches: int):
    """One quiet CPU epoch of `train_batches` batches; the speed report lands in `root`."""
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=train_batches,
        limit_val_batches=val_batches,
        accelerator="cpu",
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=dm)


class _Slowed(torch.utils.data.Dataset):
    """A dataset that takes `delay` seconds more for every sample: an artificially slow loader."""

    def __init__(self, dataset: torch.utils.data.Dataset, delay: float) -> None:
        self.dataset, self.delay = dataset, delay

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.delay)
        return self.dataset[index]


@pytest.mark.parametrize("delay", [0.0, 0.08])
def test_speed_report_says_where_the_time_goes(tmp_path: Path, delay: float) -> None:
    from visionkit.tasks import ClassificationTask

    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=16, augment="none", num_workers=0)
    dm.setup("fit")
    dm.datasets["train"] = _Slowed(dm.datasets["train"], delay)
    # model-bound: ResNet-18's step of tens of ms against ~1 ms of loading; input-bound: LeNet-5's step of a few ms
    # against 1.3 s of sleeping (a step that stays far below it even on a loaded machine)
    task = ClassificationTask("lenet5" if delay else "resnet18", num_classes=10)
    _fit_a_few_batches(task, dm, tmp_path, train_batches=8, val_batches=1)
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["batches_measured"] == 7 and report["batch_size"] == 16  # the first batch is start-up
    for key in ("images_per_s", "data_wait_share", "model_step_ms", "loop_overhead_ms", "cuda_peak_mb", "advice"):
        assert key in report
    assert report["rss_peak_mb"] > 50 and report["cuda_peak_mb"] is None
    if delay:
        assert report["verdict"] == "input-bound" and report["data_wait_ms"] > 1200
        assert any("data.num_workers" in tip for tip in report["advice"])
    else:
        assert report["verdict"] == "model-bound" and report["data_wait_share"] < 0.3


def _smooth(count: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 7, yy * 7, (xx + yy) * 4], 2)
    return np.stack([np.clip(base + 10 * k, 0, 255) for k in range(count)]).astype(np.uint8)


@pytest.mark.parametrize(
    "op",
    [
        A.Affine(scale=(0.8, 0.8), translate_percent=(0.1, 0.1), rotate=(15, 15), shear=(6, 6), border_mode=0, p=1),
        A.Affine(scale=(1.2, 1.2), rotate=(-30, -30), border_mode=0, fill=114, p=1),
        A.RandomBrightnessContrast(brightness_limit=(0.1, 0.1), contrast_limit=(-0.2, -0.2), p=1),
        A.HorizontalFlip(p=1),
    ],
    ids=["affine", "affine-fill", "brightness-contrast", "flip"],
)
def test_batched_augmentation_matches_albumentations_image_by_image(op: A.BasicTransform) -> None:
    from visionkit.data.batch_augment import BatchAugment

    images = _smooth(4)
    pipeline = build_transform([op], image_size=32, normalize=False)
    batched = BatchAugment.from_pipeline(pipeline, (32, 32))
    assert batched is not None
    ours = batched(images).numpy().astype(float)
    theirs = np.stack([pipeline(image=image)["image"].numpy() for image in images]).astype(float)
    inside = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # borders differ by the sampling of a pixel
    assert np.abs(ours - theirs)[inside].mean() < 1.0 and np.abs(ours - theirs)[inside].max() <= 12


def test_digits_are_augmented_a_batch_at_a_time_with_the_per_image_distribution() -> None:
    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=64, augment="light", num_workers=0)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    assert dataset.batched is not None and dataset.samples.images.shape[1:3] == (32, 32)  # resized once
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (64, 3, 32, 32)
    per_image = torch.stack([dataset[i]["image"] for i in range(256)]).float()
    batched = torch.cat(
        [torch.stack([s["image"] for s in dataset.__getitems__(list(range(k, k + 64)))]) for k in (0, 64, 128, 192)]
    ).float()
    # same transforms, same ranges: the same brightness spread and the same share of shifted-out pixels
    assert abs(per_image.mean() - batched.mean()) < 0.1 * per_image.mean()
    assert abs(per_image.std() - batched.std()) < 0.1 * per_image.std()
    plain = torch.from_numpy(dataset.samples.images[:64]).permute(0, 3, 1, 2).float()
    assert (batched[:64] != plain).float().mean() > 0.3  # augmented, not copied


def test_compiled_task_trains_and_keeps_its_checkpoint_keys(tmp_path: Path) -> None:
    from visionkit.tasks import ClassificationTask

    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=32, augment="none", num_workers=0)
    task = ClassificationTask("lenet5", num_classes=10, compile=True)
    keys = set(task.state_dict())
    _fit_a_few_batches(task, dm, tmp_path, train_batches=4, val_batches=0)
    assert hasattr(task.model, "_compiled_call_impl") and task.model._compiled_call_impl is not None
    assert set(task.state_dict()) == keys and json.loads((tmp_path / "speed.json").read_text())["batches_measured"] == 3


def test_full_size_follows_the_exif_rotation_in_every_format(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    for name in ("turned.tiff", "turned.webp", "turned.jpg"):
        Image.fromarray(_photo(tmp_path / "plain.jpg", 60, 80)).save(tmp_path / name, exif=exif)
        _, full = read_image_at_least(tmp_path / name, first_resize(SIZE, "stretch").needed)
        assert full == (80, 60) == read_image(tmp_path / name).shape[:2], name
