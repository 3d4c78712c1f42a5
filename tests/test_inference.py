"""The inference layer: load_predictor for every task, every input type, batching and streaming, skipped inputs,
results (plot, to_dict, save) and agreement with the training pipeline's preprocessing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TrainedDetector, TrainedSegmenter, save_task_checkpoint
from visionkit.data import IMAGENET_MEAN, IMAGENET_STD
from visionkit.errors import VisionkitError
from visionkit.inference import (
    ClassificationResult,
    DetectionResult,
    SegmentationResult,
    StylizedResult,
    load_predictor,
)
from visionkit.inference.tiling import segment_image, segment_small
from visionkit.tasks.detection import decoded_output
from visionkit.utils.device import autocast
from visionkit.utils.video import VideoFrame


def _digit_inputs(image_path: Path) -> list[object]:
    """The same 64×64 digit as a path, an HxWx3 uint8 array, a PIL image, a CxHxW uint8 tensor and a CxHxW float
    tensor in [0, 1]."""
    array = np.asarray(Image.open(image_path).convert("RGB"))
    chw = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return [str(image_path), array, Image.fromarray(array), chw, chw.float() / 255]


def test_every_input_type_gives_the_same_result(digits_checkpoint: tuple[Path, Path]) -> None:
    from visionkit import load_predictor as top_level

    ckpt, image = digits_checkpoint
    predictor = top_level(ckpt, device="cpu")
    assert repr(predictor) == (
        "ClassificationPredictor(32x32 stretch, 3 channels, 10 classes [0, 1, 2, ...], PyTorch on cpu fp32, batch 16)"
    )
    results = predictor(_digit_inputs(image))
    assert [r.task for r in results] == ["classification"] * 5 and all(
        isinstance(r, ClassificationResult) for r in results
    )
    assert [r.source for r in results] == [str(image), "image1", "image2", "image3", "image4"]
    assert all(r.size == (64, 64) for r in results)
    for other in results[1:]:
        np.testing.assert_allclose(other.probs, results[0].probs, atol=1e-5)
    top = results[0].top_k(3)
    assert len(top) == 3 and top[0][0] == results[0].label and top[0][1] >= top[1][1] >= top[2][1]
    assert abs(float(results[0].probs.sum()) - 1) < 1e-5 and results[0].names == [str(i) for i in range(10)]
    record = results[1].to_dict()
    assert json.loads(json.dumps(record)) == record and record["task"] == "classification"
    assert record["label"] == results[1].label and len(record["top_k"]) == 5 and record["path"] == "image1"
    assert results[0].plot().shape == (64, 64, 3) and results[0].plot().dtype == np.uint8
    frame = VideoFrame(np.asarray(Image.open(image).convert("RGB")), 7, 0.25, "clip.mp4")
    (alone,) = predictor(frame)  # one video frame on its own, as a video loop of one's own passes them
    assert (alone.source, alone.frame, alone.time) == ("clip.mp4", 7, 0.25)
    np.testing.assert_allclose(alone.probs, results[0].probs, atol=1e-5)


def test_the_predictor_prepares_images_as_the_training_pipeline_did(digits_checkpoint: tuple[Path, Path]) -> None:
    """Probabilities from loose images equal the task's on the data module's own (albumentations) test batch."""
    from visionkit.data import DigitsSource, VisionDataModule
    from visionkit.tasks import ClassificationTask

    ckpt, _ = digits_checkpoint
    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=16, augment="none", mean=(0.5,) * 3, std=(0.5,) * 3)
    dm.setup("test")
    dataset = dm.datasets["test"]
    raw = [dataset.read(i) for i in range(16)]  # the RGB images before any transform
    task = ClassificationTask.load_from_checkpoint(ckpt, weights_only=True).eval()
    with torch.no_grad():
        expected = torch.softmax(task(dm.normalize_batch(next(iter(dm.test_dataloader())))["image"]), 1).numpy()
    ours = np.stack([r.probs for r in load_predictor(ckpt, device="cpu", batch_size=5)(raw)])
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    labels = next(iter(dm.test_dataloader()))["label"].numpy()
    assert (ours.argmax(1) == labels).mean() > 0.7  # a trained model: most digits right


def test_unreadable_inputs_stop_with_their_name_or_are_skipped_and_counted(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, image = digits_checkpoint
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(VisionkitError, match=r"broken.png is not a readable image"):
        load_predictor(ckpt)([str(image), str(broken)])
    predictor = load_predictor(ckpt, skip_bad_images=True, batch_size=2)
    results = predictor([str(broken), str(image), np.zeros((5, 5, 7), np.uint8), str(image)])
    assert [r.ok for r in results] == [False, True, False, True]
    assert "not a readable image" in results[0].error and "HxWx3" in results[2].error
    assert predictor.counts == {"images": 2, "skipped": 2}
    record = results[0].to_dict()
    assert record["skipped"] is True and record["label"] is None and record["path"] == str(broken)
    assert results[0].save(tmp_path / "out") == []


def test_stream_reads_lazily_and_runs_in_batches(digits_checkpoint: tuple[Path, Path]) -> None:
    ckpt, image = digits_checkpoint
    predictor = load_predictor(ckpt, num_workers=0)
    array = np.asarray(Image.open(image).convert("RGB"))
    consumed, batches = [], []
    predictor.model.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))

    def frames() -> Iterator[np.ndarray]:
        for index in range(10):
            consumed.append(index)
            yield array

    stream = predictor.stream(frames(), batch_size=4)
    first = next(stream)
    assert first.ok and len(consumed) == 4 and batches == [4]  # one batch read, not the whole stream
    rest = list(stream)
    assert len(rest) == 9 and batches == [4, 4, 2] and len(consumed) == 10
    four_d = predictor(np.stack([array] * 3))  # a batch array is three images
    assert len(four_d) == 3
    consumed.clear()
    ahead = load_predictor(ckpt, num_workers=1).stream(frames(), batch_size=4)
    assert next(ahead).ok and len(consumed) == 8  # a reading thread reads the next batch ahead, never more
    assert len(list(ahead)) == 9


def test_detection_results_are_in_image_pixels_and_round_trip_as_json(
    trained_detector: TrainedDetector, tmp_path: Path
) -> None:
    tests = sorted((trained_detector.data_yaml.parent / "images" / "test").glob("*.png"))
    predictor = load_predictor(trained_detector.ckpt, conf=0.05, device="cpu")
    assert predictor.contract.image_size == (128, 128) and predictor.contract.resize == "letterbox"
    found = predictor(list(map(str, tests)))  # a briefly trained detector: start from its surest image
    best = max(range(len(tests)), key=lambda i: found[i].scores.max(initial=0.0))
    images = [tests[best], *tests[:best], *tests[best + 1 :]][:4]
    first = Image.open(images[0]).convert("RGB")
    doubled = np.asarray(first.resize((256, 256), Image.Resampling.NEAREST))  # letterboxed down to 128 again
    results = predictor([*map(str, images), doubled])
    assert all(isinstance(r, DetectionResult) for r in results) and len(results[0]) > 0
    for r in results:
        height, width = r.size
        assert r.boxes.shape == (len(r), 4) and r.scores.shape == r.classes.shape == (len(r),)
        assert (r.scores >= 0.05).all() and (r.boxes[:, [0, 2]] <= width).all() and (r.boxes[:, [1, 3]] <= height).all()
        assert r.plot().shape == (height, width, 3) and r.plot().dtype == np.uint8
        record = r.to_dict()
        assert json.loads(json.dumps(record)) == record and record["task"] == "detection"
        assert len(record["detections"]) == len(r) and record["width"] == width
    # boxes come back in each image's own pixels: the same picture at twice the size gives twice the boxes
    assert results[-1].size == (256, 256) and np.abs(results[-1].boxes[0] / 2 - results[0].boxes[0]).max() < 1.5
    # a wide input at a wide network size (image_size=[128, 256]): the left copy finds the first image's best box
    wide = np.concatenate([np.asarray(first)] * 2, 1)
    found = load_predictor(trained_detector.ckpt, conf=0.05, image_size=[128, 256])([wide])[0]
    assert found.size == (128, 256) and np.abs(found.boxes - results[0].boxes[0]).max(1).min() < 3
    written = results[0].save(tmp_path / "out", "a.png")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == ["labels/a.txt", "images/a.png"]
    assert len((tmp_path / "out" / "labels" / "a.txt").read_text().splitlines()) == len(results[0])


def test_bf16_detection_decodes_boxes_in_float32(trained_detector: TrainedDetector) -> None:
    # bfloat16 holds 8 bits: boxes decoded in it would move in 4 px steps near 640 px (2.3 px median measured on
    # 640 px images); the head's decode runs in float32, so only the convolutions' rounding remains. A 640 px
    # mosaic of 25 shape images keeps objects at their training scale; the same anchors are compared (no NMS).
    tests = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in sorted(trained_detector.data_yaml.parent.glob("images/*/*.png"))
    ]
    mosaic = np.block([[[tests[5 * i + j]] for j in range(5)] for i in range(5)])
    exact = load_predictor(trained_detector.ckpt, device="cpu", image_size=640)
    rounded = load_predictor(trained_detector.ckpt, device="cpu", image_size=640, precision="bf16")
    images = exact.to_network([mosaic])
    with torch.inference_mode():
        expected = decoded_output(exact.model.model(images))[0]
        with autocast(rounded.device, rounded.precision):
            found = decoded_output(rounded.model.model(images))[0]
    assert mosaic.shape == (640, 640, 3) and found.dtype == torch.float32
    surest = expected[4:].max(0).values.argsort(descending=True)[:50]  # the anchors most sure of an object
    assert expected[:4, surest].max() > 320  # boxes spread over the image, where bf16's steps are 2-4 px
    error = (found[:4, surest] - expected[:4, surest]).abs()
    # the convolutions' bf16 rounding moves boxes a little (0.24 px at most on an Intel Xeon with AMX, 1.33 px on an
    # AMD EPYC with AVX512-BF16); a bf16 decode would put every coordinate on bf16's grid, 2-4 px apart out there
    assert error.median() < 0.5 and error.max() < 2.0, (error.median(), error.max())
    coordinates = found[:4, surest]
    on_grid = (coordinates == coordinates.to(torch.bfloat16).float()).float().mean()
    assert on_grid < 0.5, on_grid


def test_segmentation_results_at_the_images_own_size(trained_segmenter: TrainedSegmenter, tmp_path: Path) -> None:
    paths = sorted((trained_segmenter.root / "images" / "test").glob("*.png"))[:3]
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    large = np.concatenate(tiles, 1)  # 64 x 192 with a 64 px training size: tiled
    predictor = load_predictor(trained_segmenter.ckpt, device="cpu")
    results = predictor([*tiles, large])
    assert all(isinstance(r, SegmentationResult) for r in results)
    assert [r.mask.shape for r in results] == [(64, 64)] * 3 + [(64, 192)]
    task = trained_segmenter.task
    with torch.no_grad():  # one tile each: the same labels as the task's own forward pass on the normalized image
        x = (
            torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
            - torch.tensor(IMAGENET_MEAN)[:, None, None]
        )
        direct = task(x / torch.tensor(IMAGENET_STD)[:, None, None]).argmax(1).numpy()
    assert all((r.mask == d).mean() > 0.999 for r, d in zip(results, direct))
    assert any(len(r.class_shares) > 1 for r in results)  # it finds shapes, not only background
    shares = results[0].class_shares
    assert abs(sum(shares.values()) - 1) < 1e-4 and set(shares) <= set(results[0].names)
    assert results[-1].plot().shape == (64, 192, 3)
    record = results[0].to_dict()
    assert json.loads(json.dumps(record)) == record and record["classes"] == shares and record["mask"] is None
    results[0].save(tmp_path / "out", "x/one.jpg")
    saved = np.asarray(Image.open(tmp_path / "out" / "masks" / "x" / "one.png"))
    assert (saved == results[0].mask).all() and (tmp_path / "out" / "overlays" / "x" / "one.png").is_file()
    assert results[0].to_dict()["mask"] == "masks/x/one.png"


def test_small_images_batched_in_one_pass_match_the_tiled_path(trained_segmenter: TrainedSegmenter) -> None:
    task = trained_segmenter.task
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (50, 64), (33, 47))]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    with torch.no_grad():
        batched = segment_small(task.class_probabilities, images, mean, std, (64, 64))
        from_logits = segment_small(task, images, mean, std, (64, 64))  # what the predictor hands it
        tiled = [segment_image(task.class_probabilities, im, mean, std, tile=(64, 64)) for im in images]
    for one, other, logits in zip(batched, tiled, from_logits):
        assert one.shape == other.shape and (one == other).mean() > 0.999
        assert (logits == one).mean() > 0.9999  # softmax keeps the logits' order


def test_binary_segmentation_keeps_its_threshold(tmp_path: Path) -> None:
    from visionkit.tasks import SegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask("unet", "resnet18", num_classes=2, binary=True, threshold=0.7).eval()
    state = {"image_size": 64, "resize": "stretch", "mean": [0.5] * 3, "std": [0.25] * 3}
    ckpt = save_task_checkpoint(task, tmp_path / "binary.ckpt", state)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = load_predictor(ckpt, device="cpu")([image])[0].mask
    with torch.no_grad():
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
        expected = (torch.sigmoid(task(x))[0, 0] > 0.7).numpy()
    assert (mask == expected).mean() > 0.999 and 0 < expected.mean() < 1


def test_a_fast_stylizer_keeps_each_images_size(tmp_path: Path) -> None:
    from visionkit.tasks import StyleTransferTask

    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1).eval()
    state = {"image_size": 64, "resize": "crop", "mean": [0.0] * 3, "std": [1.0] * 3}
    ckpt = save_task_checkpoint(task, tmp_path / "stylizer.ckpt", state)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 60), (40, 60), (70, 30))]
    results = load_predictor(ckpt, precision="fp32")(images)
    assert all(isinstance(r, StylizedResult) for r in results)
    assert [r.image.shape for r in results] == [(40, 60, 3), (40, 60, 3), (70, 30, 3)]
    with torch.no_grad():
        direct = task(torch.from_numpy(images[2]).permute(2, 0, 1)[None].float() / 255)[0]
    assert np.abs(results[2].image.astype(np.float32) / 255 - direct.permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-4
    assert results[0].plot() is results[0].image
    assert results[0].save(tmp_path / "out", "a.jpg")[0].name == "a.jpg" and results[0].to_dict()["output"] == "a.jpg"
    resized = load_predictor(ckpt, size=32)(images[:1])[0]
    assert resized.image.shape == (40, 60, 3)  # the network saw 32 px, the result comes back at the image's size


def test_load_predictor_names_what_is_wrong(digits_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = digits_checkpoint
    with pytest.raises(VisionkitError, match=r"conf: not an option of the classification predictor \(options: top_k"):
        load_predictor(ckpt, conf=0.3)
    with pytest.raises(VisionkitError, match=r"ckpt_path: checkpoint .*nope.ckpt does not exist"):
        load_predictor(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(VisionkitError, match=r"junk.ckpt is not a checkpoint \(not a PyTorch zip archive"):
        load_predictor(tmp_path / "junk.ckpt")
    with pytest.raises(VisionkitError, match="precision=fp16 needs a CUDA device"):
        load_predictor(ckpt, device="cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(VisionkitError, match="CUDA is not available"):
            load_predictor(ckpt, device="cuda")
    with pytest.raises(VisionkitError, match="cannot read an image from dict"):
        load_predictor(ckpt)([{"image": 1}])
    bf16 = load_predictor(ckpt, precision="bf16")([np.full((32, 32, 3), 128, np.uint8)])[0]
    assert bf16.probs.dtype == np.float32 and abs(float(bf16.probs.sum()) - 1) < 1e-3


def test_a_truncated_checkpoint_is_named_with_the_newest_one_that_reads(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """last.ckpt cut short (a full disk, a copy that stopped): resuming, predicting and stylizing name the file, say
    it is truncated in our own words (not torch's cut sentence) and point at the run's newest readable checkpoint."""
    from tests.conftest import compose_config
    from visionkit.inference import open_checkpoint
    from visionkit.run import train

    ckpt, _ = digits_checkpoint
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    good = folder / "epoch=2.ckpt"
    good.write_bytes(ckpt.read_bytes())
    last = folder / "last.ckpt"
    last.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    expected = rf"{last} is truncated: its end is missing .*; the newest readable checkpoint beside it is {good}"
    with pytest.raises(VisionkitError, match=rf"^ckpt_path: {expected}: pass ckpt_path={good}$"):
        train(compose_config(tmp_path / "resumed", [f"ckpt_path={last}"]))
    with pytest.raises(VisionkitError, match=rf"^ckpt_path: {expected}"):
        load_predictor(last)
    with pytest.raises(VisionkitError, match=rf"^--model: {expected}: pass --model={good}$"):
        open_checkpoint(last, key="--model")
    good.unlink()
    with pytest.raises(VisionkitError) as caught:
        load_predictor(last)
    assert str(caught.value).endswith("(a save or a copy that was cut short, or a full disk)")
