"""Backbones and pretrained-weight loading (torch hub cache, local files), with their offline errors."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from visionkit.errors import VisionkitError
from visionkit.models import available_backbones, build_classifier


@pytest.mark.parametrize(
    ("backbone", "size", "features"),
    [
        ("lenet5", 32, 84),
        ("alexnet", 64, 4096),
        ("vgg11", 32, 4096),
        ("resnet18", 32, 512),
        ("timm:resnet10t", 32, 512),
    ],
)
def test_backbones_get_a_head_sized_from_the_data(backbone: str, size: int, features: int) -> None:
    model = build_classifier(backbone, num_classes=7).eval()
    assert model.num_features == features
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_available_backbones_lists_every_family() -> None:
    names = available_backbones()
    for expected in ("lenet5", "alexnet", "vgg11", "vgg16", "vgg19", "resnet18", "resnet50", "timm:convnext_atto"):
        assert expected in names
    assert all(n.startswith("timm:") for n in available_backbones("timm"))


def test_unknown_backbone_lists_close_matches() -> None:
    with pytest.raises(
        VisionkitError, match=r"unknown backbone 'resnt18'; did you mean resnet18, .*available_backbones"
    ):
        build_classifier("resnt18", 3)


def _fake_hub_cache(torch_home: Path, arch: str, enum: str) -> dict[str, torch.Tensor]:
    """Put a state dict where torchvision's downloader caches `arch`'s `enum` weights (TORCH_HOME)."""
    entry = torchvision.models.get_model_weights(arch)[enum]
    target = torch_home / "hub" / "checkpoints" / Path(urlparse(entry.url).path).name
    target.parent.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    torch.save(state, target)
    return state


def test_torchvision_enum_weights_load_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _fake_hub_cache(tmp_path, "resnet18", "IMAGENET1K_V1")
    model = build_classifier("resnet18", 4, weights="IMAGENET1K_V1")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert model.head[1].out_features == 4  # new head, not the 1000-class ImageNet one


def test_weights_unavailable_offline_say_where_to_put_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = (
        r"pretrained weights resnet18 IMAGENET1K_V1 are not available offline: download https://\S+ on a machine "
        rf"with internet and copy it to {re.escape(str(expected))} .* "
        r"or pass model.weights=/path/to/resnet18-f37072fd.pth"
    )
    with pytest.raises(VisionkitError, match=message):
        build_classifier("resnet18", 4, weights="IMAGENET1K_V1")
    with pytest.raises(VisionkitError, match="is not a weight set of resnet18; choose one of DEFAULT, IMAGENET1K_V1"):
        build_classifier("resnet18", 4, weights="IMAGENET22K")
    with pytest.raises(VisionkitError, match="pretrained timm weights for resnet10t cannot be downloaded offline"):
        build_classifier("timm:resnet10t", 4, weights="DEFAULT")


def test_local_weights_file_full_model_or_visionkit_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(2)
    imagenet_model = torchvision.models.resnet18()
    torch.save(imagenet_model.state_dict(), tmp_path / "resnet18.pth")  # with its 1000-class head
    model = build_classifier("resnet18", 3, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.backbone.conv1.weight, imagenet_model.conv1.weight)

    trained = build_classifier("resnet18", 5)  # a visionkit run's checkpoint: model.backbone.* keys
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "run.ckpt")
    reused = build_classifier("resnet18", 2, weights=str(tmp_path / "run.ckpt"))
    assert torch.equal(reused.backbone.layer1[0].conv1.weight, trained.backbone.layer1[0].conv1.weight)


def test_weights_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pth")
    with pytest.raises(VisionkitError, match=r"do not fit this backbone: \d+ missing keys \(e.g. conv1.weight\)"):
        build_classifier("resnet18", 3, weights=str(tmp_path / "alexnet.pth"))
    with pytest.raises(VisionkitError, match=r"model\.weights: file .* does not exist"):
        build_classifier("resnet18", 3, weights=str(tmp_path / "missing.pth"))
