"""SegmentationTask: training on the built-in shapes, losses and metrics with ignored pixels, tiled
prediction, predict files, ONNX export, encoder weights and freezing, every shipped model config."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import TrainedSegmenter, compose_config
from visionkit.config.folders import config_dir
from visionkit.errors import VisionkitError
from visionkit.export import build_graph, export_onnx
from visionkit.inference.tiling import normalizer, segment_image
from visionkit.models import available_architectures, build_segmentation_model
from visionkit.run import predict
from visionkit.tasks import SegmentationTask
from visionkit.tasks.segmentation_loss import SegmentationLoss
from visionkit.tasks.segmentation_metrics import segmentation_scores
from visionkit.utils.io import read_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_short_training_lowers_the_loss_and_beats_the_all_background_baseline(
    trained_segmenter: TrainedSegmenter,
) -> None:
    losses = _column(trained_segmenter.metrics, "train_loss_epoch")
    mious = _column(trained_segmenter.metrics, "val_miou")
    assert losses[-1] < 0.75 * losses[0], losses
    assert trained_segmenter.baseline_miou < 0.2
    assert mious[-1] > trained_segmenter.baseline_miou + 0.04, (mious, trained_segmenter.baseline_miou)
    assert mious[-1] > mious[0]


def test_scores_from_the_confusion_matrix_match_hand_computed_values() -> None:
    confusion = torch.tensor([[50, 5, 0], [10, 30, 0], [0, 0, 0]])  # class 2 absent: left out of the means
    scores = segmentation_scores(confusion)
    assert scores["iou"][:2].tolist() == pytest.approx([50 / 65, 30 / 45])
    assert torch.isnan(scores["iou"][2])
    assert float(scores["miou"]) == pytest.approx((50 / 65 + 30 / 45) / 2)
    assert float(scores["mdice"]) == pytest.approx((100 / 115 + 60 / 75) / 2)
    assert float(scores["pixel_acc"]) == pytest.approx(80 / 95)


def test_ignored_pixels_count_in_neither_loss_nor_metrics() -> None:
    task = SegmentationTask(
        "unet", "resnet18", num_classes=3, ignore_index=255, loss_weights={"ce": 1, "dice": 1, "focal": 1}
    )
    logits = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    target[:, :8] = 255
    changed = logits.clone()
    changed[:, :, :8] = torch.randn(2, 3, 8, 32) * 10  # different scores where the truth is ignored
    assert task.criterion(logits, target)[0] == pytest.approx(float(task.criterion(changed, target)[0]), rel=1e-5)
    task.val_confusion.update(logits.argmax(1), target)
    assert int(task.val_confusion.compute().sum()) == 2 * 24 * 32


def test_loss_terms_weights_and_class_weights() -> None:
    logits, target = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    total, parts = SegmentationLoss(3, {"ce": 1.0, "dice": 0.5})(logits, target)
    assert set(parts) == {"ce", "dice"} and float(total) == pytest.approx(float(parts["ce"] + 0.5 * parts["dice"]))
    weighted, _ = SegmentationLoss(3, {"ce": 1.0}, class_weights=[1.0, 5.0, 1.0])(logits, target)
    assert float(weighted) != pytest.approx(float(parts["ce"]))
    with pytest.raises(ValueError, match="positive weight"):
        SegmentationLoss(3, {"ce": 0.0})
    binary_total, _ = SegmentationLoss(2, {"ce": 1.0, "dice": 1.0}, binary=True)(logits[:, :1], target.clamp(max=1))
    assert torch.isfinite(binary_total)


def test_binary_segmentation_predicts_one_channel_and_reports_two_classes() -> None:
    task = SegmentationTask("fpn", "resnet18", num_classes=2, binary=True)
    images = torch.randn(2, 3, 64, 64)
    assert task(images).shape == (2, 1, 64, 64)
    probs = task.class_probabilities(images)
    assert probs.shape == (2, 2, 64, 64) and torch.allclose(probs.sum(1), torch.ones(2, 64, 64))
    with pytest.raises(ValueError, match="binary segmentation has 2 classes"):
        SegmentationTask("unet", "resnet18", num_classes=3, binary=True)


def test_tiled_prediction_equals_whole_image_prediction_away_from_tile_borders(
    trained_segmenter: TrainedSegmenter,
) -> None:
    task = trained_segmenter.task
    tiles = [read_image(p) for p in sorted((trained_segmenter.root / "images" / "test").glob("*.png"))[:12]]
    image = np.concatenate([np.concatenate(tiles[i : i + 4], 1) for i in (0, 4, 8)], 0)  # 192 x 256
    with torch.inference_mode():
        whole = segment_image(task.class_probabilities, image, MEAN, STD, tile=None)
        tiled = segment_image(task.class_probabilities, image, MEAN, STD, tile=(64, 64), overlap=0.5, batch_size=5)
        probs = task.class_probabilities(normalizer(MEAN, STD, "cpu")(image[None]))[0]  # one pass, as tile=None
    assert tiled.shape == whole.shape == image.shape[:2] and (probs.argmax(0).numpy() == whole).all()
    # tile borders of the 64 px grid with stride 32: keep pixels at least 8 px from every stride-32 line, where
    # the whole-image pass is sure of its class. A 64 px tile gives the network less context than the whole
    # image (its receptive field is wider), so a briefly trained model flips some of its uncertain pixels (their
    # share depends on the machine's arithmetic during training: 0.87-0.97 overall); where it is sure, a tile
    # must agree. Misplaced or mis-blended tiles score far lower: shifting the labels by half a tile gives < 0.9.
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    interior = (np.minimum(ys % 32, 32 - ys % 32) >= 8) & (np.minimum(xs % 32, 32 - xs % 32) >= 8)
    compared = interior & (probs.max(0).values.numpy() >= 0.9)
    assert compared.sum() >= 0.4 * interior.sum()  # most of the picture is compared (0.71 of it here)
    agreement = (tiled == whole)[compared].mean()
    assert agreement >= 0.99, agreement
    shifted = (tiled[:, 32:] == whole[:, :-32])[compared[:, 32:]].mean()
    assert shifted < agreement - 0.05, (shifted, agreement)
    assert len(np.unique(whole)) >= 2  # a real prediction, not one class everywhere


def test_tiles_cover_odd_sizes_and_small_images(trained_segmenter: TrainedSegmenter) -> None:
    task = trained_segmenter.task
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for height, width in ((37, 50), (150, 97), (64, 64)):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            labels = segment_image(task.class_probabilities, image, MEAN, STD, tile=(64, 64), overlap=0.25)
            assert labels.shape == (height, width) and labels.max() < 5


def test_predict_writes_masks_overlays_and_json_at_original_size(
    trained_segmenter: TrainedSegmenter, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    test_images = sorted((trained_segmenter.root / "images" / "test").glob("*.png"))
    big = np.concatenate([read_image(p) for p in test_images[:3]], 1)[:, :170]  # 64 x 170: tiled
    Image.fromarray(big).save(photos / "wide.jpg")
    Image.open(test_images[3]).save(photos / "one.png")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    overrides = [
        f"ckpt_path={trained_segmenter.ckpt}",
        f"source={photos}",
        "expected_task=segmentation",
    ]
    cfg = compose_config(tmp_path / "out", overrides, name="predict")
    assert predict(cfg) == {"images": 2.0, "skipped": 0.0}
    out = tmp_path / "out"
    records = {Path(r["path"]).name: r for r in json.loads((out / "predictions.json").read_text())}
    for name, (height, width) in (("wide.jpg", (64, 170)), ("one.png", (64, 64))):
        mask = np.asarray(Image.open(out / records[name]["mask"]))
        assert mask.shape == (height, width) and mask.max() < 5
        assert Image.open(out / records[name]["mask"]).mode == "P"  # viewable in colour, values are class ids
        assert (out / "overlays" / Path(name).with_suffix(".png")).is_file()
        assert sum(records[name]["classes"].values()) == pytest.approx(1.0, abs=1e-4)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before  # inputs untouched
    wrong = compose_config(tmp_path / "out2", [*overrides[:2], "expected_task=detection"], name="predict")
    with pytest.raises(VisionkitError, match="holds a segmentation model"):
        predict(wrong)


def test_onnx_export_matches_the_network(trained_segmenter: TrainedSegmenter, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_onnx(build_graph(trained_segmenter.task, {}, 64), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 96, 128)  # another size than the export's: height and width are dynamic
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = trained_segmenter.task.model(images).numpy()
    assert logits.shape == (2, 5, 96, 128) and np.abs(logits - expected).max() < 1e-3


def test_encoder_weights_from_a_file_in_several_layouts(tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    classifier = torchvision.models.resnet18()
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pth")  # a torchvision classifier: fc left out
    model = build_segmentation_model("unet", "resnet18", 3, encoder_weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.encoder.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    whole = build_segmentation_model("fpn", "resnet18", 3)
    save_file({k: v.contiguous() for k, v in whole.state_dict().items()}, tmp_path / "fpn.safetensors")
    reused = build_segmentation_model("unet", "resnet18", 3, encoder_weights=str(tmp_path / "fpn.safetensors"))
    assert torch.equal(reused.encoder.conv1.weight, whole.encoder.conv1.weight)
    with pytest.raises(VisionkitError, match="do not fit this backbone"):
        build_segmentation_model("unet", "resnet34", 3, encoder_weights=str(tmp_path / "resnet18.pth"))
    task = SegmentationTask("unet", "resnet18", num_classes=3, encoder_weights=str(tmp_path / "resnet18.pth"))
    assert "encoder_weights" not in task.hparams  # checkpoints load without the file


def test_named_encoder_weights_come_from_the_hub_cache_or_fail_saying_where(tmp_path: Path) -> None:
    """`encoder_weights=imagenet` reads smp's file from the Hugging Face cache (placed there by the test);
    without it, offline, the error names the URL and the option to pass a file."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    cache = tmp_path / "hf"
    snapshot = cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    encoder_state = build_segmentation_model("unet", "resnet18", 3).encoder.state_dict()
    save_file({k: v.contiguous() for k, v in encoder_state.items()}, snapshot / "model.safetensors")
    torch.save(encoder_state["conv1.weight"], tmp_path / "expected.pt")
    script = (
        "import torch; from visionkit.models import build_segmentation_model as b\n"
        "m = b('unet', 'resnet18', 3, encoder_weights='imagenet')\n"
        f"assert torch.equal(m.encoder.conv1.weight, torch.load(r'{tmp_path / 'expected.pt'}'))\n"
    )
    env = os.environ | {"HF_HUB_CACHE": str(cache), "VISIONKIT_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    env["HF_HUB_CACHE"] = str(tmp_path / "empty")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "not available offline" in done.stderr and "model.encoder_weights=/path/to/model.safetensors" in done.stderr


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics() -> None:
    task = SegmentationTask("unet", "resnet18", num_classes=3, freeze_encoder=True)
    before = copy.deepcopy(task.model.state_dict())
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-2)
    task.train()
    loss, _ = task.criterion(task(torch.randn(2, 3, 64, 64)), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    optimizer.step()
    after = task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


def test_image_size_must_pass_the_encoder(make_cfg) -> None:
    from visionkit.run import train

    with pytest.raises(VisionkitError, match="divisible by 32"):
        train(
            make_cfg(["task=segmentation", "data.image_size=100", "++trainer.fast_dev_run=true", "data.num_workers=0"])
        )


def test_architectures_are_listed() -> None:
    assert {"unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer"} <= set(available_architectures())


MODEL_CONFIGS = sorted(
    p.stem
    for p in (config_dir() / "model").glob("*.yaml")
    if "arch" in OmegaConf.load(p) and "encoder" in OmegaConf.load(p)
)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_shipped_segmentation_model_config_builds_and_runs(name: str) -> None:
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    task = SegmentationTask(cfg.arch, cfg.encoder, num_classes=3, model_kwargs=dict(cfg.kwargs)).eval()
    with torch.no_grad():
        assert task(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_each_images_iou_is_the_mean_over_its_classes() -> None:
    from visionkit.callbacks.segmentation_report import image_ious

    mask = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 0, 1, 0], [0, 0, 1, 1], [2, 1, 1, 1]]])
    # class 0: 4 hit, union 5; class 1: 3 hit, union 5 (ignored pixels left out); class 2: 1 hit, union 2
    expected = (4 / 5 + 3 / 5 + 1 / 2) / 3
    assert image_ious(pred, mask, 3, ignore_index=255).tolist() == pytest.approx([expected])
    assert image_ious(mask.clamp(max=2), mask.clamp(max=2), 3, None).tolist() == [1.0]
