"""Image classifiers: a backbone from torchvision, timm or LeNet-5, plus a new head sized from the data."""

from __future__ import annotations

import difflib
from functools import cache
from typing import cast

from torch import Tensor, nn

from visionkit.errors import VisionkitError
from visionkit.models.lenet import LeNet5
from visionkit.models.weights import (
    adapt_input_convs,
    is_weights_file,
    load_backbone_state,
    offline,
    read_weights_file,
    torchvision_weights_state,
    with_input_channels,
)

TIMM_PREFIX = "timm:"
# Classifier keys of timm checkpoints saved with their ImageNet head (dropped when loading a backbone).
_TIMM_HEAD_KEYS = {f"{p}.{s}" for p in ("head", "fc", "classifier", "head.fc") for s in ("weight", "bias")}


class ImageClassifier(nn.Module):
    """`backbone` (images → feature vectors) followed by `head` (dropout + linear to class scores)."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


@cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def available_backbones(source: str | None = None) -> list[str]:
    """Backbone names for `model.backbone`: "lenet5", torchvision classification models (plain names),
    and every timm model as "timm:<name>" (plain timm names work too when torchvision has no such model).

    source: "visionkit", "torchvision" or "timm" to list one family only.
    """
    families = {
        "visionkit": ["lenet5"],
        "torchvision": sorted(_torchvision_names()),
        "timm": [TIMM_PREFIX + n for n in _timm_names()],
    }
    if source is not None and source not in families:
        raise ValueError(f"source must be one of {sorted(families)}")
    return [name for family, names in families.items() if source in (None, family) for name in names]


def _unknown_backbone(name: str) -> VisionkitError:
    pool = list(dict.fromkeys(["lenet5", *_torchvision_names(), *_timm_names()]))
    close = difflib.get_close_matches(name.removeprefix(TIMM_PREFIX), pool, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return VisionkitError(f"unknown backbone {name!r}{hint} (visionkit.models.available_backbones() lists all of them)")


def _cut_last_linear(net: nn.Module) -> tuple[nn.Module, int, set[str]]:
    """Replace the network's last nn.Linear with Identity: (headless net, feature size, old head's keys)."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise VisionkitError(f"{type(net).__name__} has no linear classifier layer to replace with a new head")
    name, layer = linears[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return net, layer.in_features, {f"{name}.weight", f"{name}.bias"}


def _create_timm(name: str, weights: str | None, in_channels: int = 3) -> nn.Module:
    import timm

    pretrained = weights is not None and not is_weights_file(weights)
    if pretrained and offline():
        raise VisionkitError(
            f"pretrained timm weights for {name} cannot be downloaded offline: save them on a machine with "
            f"internet (timm.create_model({name!r}, pretrained=True).state_dict() → torch.save) and pass "
            "model.weights=/path/to/file.pth, or fill the Hugging Face cache (HF_HOME)"
        )
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels)
    except Exception as exc:
        if not pretrained:
            raise
        raise VisionkitError(
            f"pretrained timm weights for {name} could not be loaded ({type(exc).__name__}: {exc}); pass "
            "model.weights=/path/to/file.pth with a state dict saved where the hub is reachable"
        ) from None


def build_classifier(
    backbone: str, num_classes: int, weights: str | None = None, dropout: float = 0.0, in_channels: int = 3
) -> ImageClassifier:
    """Backbone `backbone` with a fresh `num_classes`-way head, taking images of `in_channels` channels.

    weights: None (random init), a torchvision enum name ("DEFAULT", "IMAGENET1K_V1"), any value for timm
    hub weights ("DEFAULT"), or a path to a state dict / checkpoint of the same backbone. RGB weights given to
    a backbone of another channel count have their first layer adapted as timm does (`adapt_input_convs`).
    """
    if num_classes < 1:
        raise VisionkitError(f"num_classes must be at least 1, got {num_classes}")
    name = backbone.strip()
    weights = None if weights in (None, "", "none", "None") else str(weights)
    named_weights = weights is not None and not is_weights_file(weights)
    head_keys: set[str] = set()
    if name.lower() in ("lenet5", "lenet-5", "lenet"):
        if named_weights:
            raise VisionkitError("lenet5 has no published pretrained weights; use model.weights=/path/to/file")
        body, features, head_keys = _cut_last_linear(LeNet5(in_channels=in_channels))
    elif not name.startswith(TIMM_PREFIX) and name in _torchvision_names():
        import torchvision

        net = with_input_channels(torchvision.models.get_model(name, weights=None), in_channels)
        if named_weights and weights is not None:
            net.load_state_dict(adapt_input_convs(torchvision_weights_state(name, weights), net.state_dict()))
        body, features, head_keys = _cut_last_linear(net)
    elif name.removeprefix(TIMM_PREFIX) in _timm_names():
        body = _create_timm(name.removeprefix(TIMM_PREFIX), weights, in_channels)
        features = int(cast(int, body.num_features))
        head_keys = _TIMM_HEAD_KEYS
    else:
        raise _unknown_backbone(name)
    if weights is not None and not named_weights:
        load_backbone_state(body, read_weights_file(weights), head_keys, f"file {weights}")
    return ImageClassifier(body, features, num_classes, dropout)


class EmbeddingNet(nn.Module):
    """`backbone` (images → feature vectors) and a BN-neck (linear to `embedding_dim`, batch norm), L2-normalized:
    the identity features an embedding task trains and exports (Luo et al.'s bag of tricks for re-identification)."""

    def __init__(self, backbone: nn.Module, num_features: int, embedding_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.neck = nn.Sequential(nn.Linear(num_features, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.neck(self.backbone(x)), dim=1)


def build_embedder(backbone: str, embedding_dim: int, weights: str | None = None) -> EmbeddingNet:
    """Backbone `backbone` (any `build_classifier` takes, with its weights) under a BN-neck of `embedding_dim`."""
    if embedding_dim < 2:
        raise VisionkitError(f"task.embedding_dim must be at least 2, got {embedding_dim}")
    classifier = build_classifier(backbone, 1, weights=weights)
    return EmbeddingNet(classifier.backbone, classifier.num_features, embedding_dim)
