"""visionkit.explain and visionkit-explain: receptive fields, feature maps, Grad-CAM, and the CLI on the
checkpoints of every task and on the VGG19 of style transfer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import TrainedDetector, TrainedSegmenter
from tests.console_runs import run_console
from visionkit.errors import VisionkitError
from visionkit.explain import (
    default_layers,
    explain_image,
    feature_maps,
    first_conv_filters,
    grad_cam,
    layer_table,
    list_layers,
    subject_from_checkpoint,
    vgg19_subject,
)
from visionkit.explain.cam import ClassScore


def _row(rows, name):
    return next(r for r in rows if r.name == name)


def explain(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(cwd / "torch-home")}  # an empty hub cache: never the user's weights
    proc, killed = run_console("visionkit-explain", args, cwd, env, timeout=300)
    assert not killed, f"visionkit-explain {args} ran past 300 s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_receptive_fields_of_known_networks() -> None:
    import torchvision

    rows = layer_table(torchvision.models.resnet18().eval(), torch.rand(1, 3, 224, 224))
    assert (_row(rows, "conv1").receptive_field, _row(rows, "conv1").output) == ("7×7", "112×112×64")
    assert _row(rows, "maxpool").receptive_field == "11×11"
    assert _row(rows, "layer3.1.conv2").receptive_field == "211×211"  # published values for ResNet-18
    last = _row(rows, "layer4.1.conv2")
    assert (last.receptive_field, last.jump, last.output) == ("435×435", "32×32", "7×7×512")
    vgg = layer_table(vgg19_subject("random").network, torch.rand(1, 3, 224, 224))
    assert _row(vgg, "features.conv1_2").receptive_field == "5×5"
    assert (_row(vgg, "features.conv5_4").receptive_field, _row(vgg, "features.pool5").receptive_field) == (
        "252×252",
        "268×268",
    )


class _Branches(nn.Module):
    """dilated conv → pool → upsample → conv, plus a 1×1 skip added at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.dilated = nn.Conv2d(3, 4, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.skip = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(self.pool(self.dilated(x)))) + self.skip(x)


def test_receptive_field_through_dilation_upsampling_and_skips() -> None:
    rows = layer_table(_Branches(), torch.rand(1, 3, 32, 32))
    assert [r.name for r in rows] == ["dilated", "pool", "conv", "skip"]  # forward order
    assert _row(rows, "dilated").receptive_field == "5×5"  # 1 + (3 - 1) * 2
    assert (_row(rows, "pool").receptive_field, _row(rows, "pool").jump) == ("6×6", "2×2")
    conv = _row(rows, "conv")  # after upsampling the step is 1 px again: 6 + (3 - 1) * 1
    assert (conv.receptive_field, conv.jump, conv.output) == ("8×8", "1×1", "32×32×4")
    assert (_row(rows, "skip").kernel, _row(rows, "skip").receptive_field) == ("1×1", "1×1")


def _bright_square_net() -> nn.Module:
    """Class 0 = mean brightness, class 1 = its negative: a network whose evidence is where the pixels are bright."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    with torch.no_grad():
        net[0].weight.fill_(1 / 27), net[0].bias.zero_()
        net[2].weight.copy_(torch.eye(4)[:, :, None, None]), net[2].bias.zero_()
        net[6].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4])), net[6].bias.zero_()
    return net.eval()


def test_grad_cam_lights_up_where_the_evidence_is() -> None:
    image = torch.zeros(1, 3, 64, 64)
    image[..., 8:24, 40:56] = 1.0  # a bright square top right
    net = _bright_square_net()
    heat = grad_cam(net, image, [net[2]], ClassScore(0))
    assert heat.shape == (64, 64) and heat.min() >= 0.0 and heat.max() <= 1.0
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert 8 <= peak[0] < 24 and 40 <= peak[1] < 56
    inside = heat[8:24, 40:56].mean()
    outside = np.delete(heat.ravel(), np.ravel_multi_index(np.mgrid[8:24, 40:56].reshape(2, -1), heat.shape)).mean()
    assert inside > 5 * outside
    assert grad_cam(net, image, [net[2]], ClassScore(1)).max() == 0.0  # no evidence for "dark": an empty map


def test_filters_feature_maps_and_layer_names() -> None:
    net = _bright_square_net()
    image = torch.rand(1, 3, 20, 20)
    filters = first_conv_filters(net)
    assert filters.shape == (4, 3, 3, 3) and filters.min() >= 0 and filters.max() <= 1
    names = [layer.name for layer in list_layers(net, image)]
    assert names[:4] == ["0", "1", "2", "3"]
    assert default_layers(net, image) == ["0", "2", "4"]  # two convs: the pooling layer counts too
    maps = feature_maps(net, image, ["0", "3"])
    assert maps["0"].shape == (4, 20, 20) and (maps["3"] >= 0).all()
    with pytest.raises(VisionkitError, match="no layer named 'conv9'"):
        feature_maps(net, image, ["conv9"])
    with pytest.raises(VisionkitError, match="not a feature map"):
        feature_maps(net, image, ["6"])


def test_explain_cli_on_a_classifier_writes_every_picture_and_the_table(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, image = digits_checkpoint
    out = explain([f"ckpt_path={ckpt}", f"source={image}", "output_dir=ex", "top_k=3"], tmp_path).stdout
    folder = tmp_path / "ex" / "digit"
    written = {p.name for p in folder.iterdir()}
    assert {"input.png", "filters.png", "gradcam.png", "layers.csv", "layers.md", "explain.json"} <= written
    assert len([n for n in written if n.startswith("features_")]) == 3  # early, middle, deep
    summary = json.loads((folder / "explain.json").read_text())
    assert len(summary["gradcam"]) == 3 and all((folder / g["file"]).is_file() for g in summary["gradcam"])
    assert "| layer | type | kernel | stride | padding | output H×W×C | receptive field | jump |" in out
    assert Image.open(folder / "input.png").size == (32, 32)  # what the network saw: the training size
    layers = explain([f"ckpt_path={ckpt}", "list_layers=true"], tmp_path).stdout
    assert "backbone" in layers or "features" in layers
    names = [line.split()[0] for line in layers.splitlines()[1:4]]
    args = [f"ckpt_path={ckpt}", f"source={image}", "hydra.run.dir=one", f"layers=[{names[0]},{names[2]}]"]
    explain([*args, "target_class=[3,7]"], tmp_path)  # Hydra lists, the run folder chosen with hydra.run.dir
    written = {p.name for p in (tmp_path / "one" / "digit").iterdir()}
    assert {f"features_{names[0]}.png", f"features_{names[2]}.png"} <= written
    assert {n for n in written if n.startswith("gradcam_")} == {"gradcam_1_3.png", "gradcam_2_7.png"}
    bad = explain([f"ckpt_path={ckpt}", f"source={image}", "layers=[nope]"], tmp_path, ok=False)
    assert "no layer named 'nope'" in bad.stderr and "list_layers=true" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_explain_cli_skips_unreadable_images_and_keeps_going(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, image = digits_checkpoint
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(image.read_bytes())
    (photos / "broken.png").write_bytes(b"not a png")
    proc = explain([f"ckpt_path={ckpt}", f"source={photos}", "output_dir=ex"], tmp_path, ok=False)
    assert proc.returncode == 1 and "skipped" in proc.stderr and "broken.png" in proc.stderr
    assert (tmp_path / "ex" / "a" / "gradcam.png").is_file()
    missing = explain(["ckpt_path=/no/model.ckpt", f"source={image}"], tmp_path, ok=False)
    assert "checkpoint /no/model.ckpt does not exist" in missing.stderr
    nothing = explain([f"source={image}"], tmp_path, ok=False)
    assert "pass ckpt_path=" in nothing.stderr


def test_explain_a_segmenter_for_a_chosen_class(trained_segmenter: TrainedSegmenter, tmp_path: Path) -> None:
    subject = subject_from_checkpoint(str(trained_segmenter.ckpt))
    assert subject.cam_layers and subject.cam_layers[0].startswith("encoder.")
    image = next((trained_segmenter.root / "images" / "test").glob("*.png"))
    result = explain_image(subject, image, tmp_path / "seg", classes=["circle"])
    assert [h.title.split(" (")[0] for h in result.heatmaps] == ["circle"]
    assert result.heatmaps[0].heat.shape == (64, 64) and result.heatmaps[0].picture.shape == (64, 64, 3)
    assert (tmp_path / "seg" / "gradcam_circle.png").is_file()
    assert result.layers[-1].receptive_field != "nan×nan" and result.layers[-1].output.startswith("64×64×")
    default = explain_image(subject, image)  # no folder: arrays and figures only
    assert len(default.heatmaps) == 1 and default.files == [] and "filters" in default.figures
    with pytest.raises(VisionkitError, match="not a class of this model"):
        explain_image(subject, image, classes=["hexagon"])


def test_explain_cli_on_a_detector_draws_one_map_per_box(trained_detector: TrainedDetector, tmp_path: Path) -> None:
    image = sorted((trained_detector.data_yaml.parent / "images" / "test").glob("*.png"))[0]
    args = [f"ckpt_path={trained_detector.ckpt}", f"source={image}", "output_dir=ex", "conf=0.01", "top_k=2"]
    explain(args, tmp_path)
    folder = tmp_path / "ex" / image.stem
    summary = json.loads((folder / "explain.json").read_text())
    head = trained_detector.task.model.model[-1]
    assert summary["cam_layers"] == [f"model.{i}" for i in head.f]  # the feature maps the Detect head reads
    assert 1 <= len(summary["gradcam"]) <= 2
    for cam in summary["gradcam"]:
        assert cam["file"].startswith("gradcam_box") and len(cam["box"]) == 4 and (folder / cam["file"]).is_file()


def test_explain_the_style_vgg19(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(image)
    out = explain(["model=vgg19", "weights=random", f"source={image}", "image_size=64", "top_k=1"], tmp_path).stdout
    (run,) = (tmp_path / "outputs" / "explain").glob("*/*")  # the default run folder
    folder = run / "photo"
    for layer in ("relu1_1", "relu3_1", "relu5_1"):  # the style layers by their style-transfer names
        assert (folder / f"features_features.{layer}.png").is_file()
    assert "features.pool5" in out and (folder / "gradcam.png").is_file()
    features_only = tmp_path / "features.pth"
    renamed = vgg19_subject("random").network.state_dict()  # features.conv1_1.weight, ...: not torchvision's keys
    torch.save({k: v for k, v in renamed.items() if k.startswith("features.")}, features_only)
    note = explain(["model=vgg19", f"weights={features_only}", "list_layers=true"], tmp_path, ok=False)
    assert "not a torchvision vgg19 state dict" in note.stderr  # keys are conv1_1..., not torchvision's 0, 2, ...
    import torchvision

    torch.save(torchvision.models.vgg19().features.state_dict(), features_only)
    note = explain(["model=vgg19", f"weights={features_only}", "list_layers=true"], tmp_path).stderr
    assert "features only" in note
    offline = explain(["model=vgg19", f"source={image}"], tmp_path, ok=False)
    assert "vgg19-dcbb9e9d.pth" in offline.stderr and "Traceback" not in offline.stderr
