"""What the layers hold: the first convolution's filters and the feature maps of chosen layers, as arrays
and as picture grids. Layers are found by their module names (`list_layers`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor, nn

from visionkit.errors import VisionkitError
from visionkit.explain.hooks import run_hooked
from visionkit.explain.receptive_field import LAYER_TYPES


@dataclass(frozen=True)
class LayerName:
    """A module that can be inspected: its name, type and output shape (C×H×W) for the probe image."""

    name: str
    kind: str
    output: str


def forward_order(model: nn.Module, image: Tensor) -> list[tuple[str, nn.Module, Tensor]]:
    """(name, module, output) of every named module with a 4-D tensor output, in the order they ran."""
    seen: list[tuple[str, nn.Module, Tensor]] = []

    def keep(name: str, module: nn.Module, output: object) -> None:
        if isinstance(output, Tensor) and output.dim() == 4:
            seen.append((name, module, output.detach()))

    run_hooked(model, image, [(m, partial(keep, n)) for n, m in model.named_modules() if n])
    return seen


def list_layers(model: nn.Module, image: Tensor) -> list[LayerName]:
    """Every module whose output is a feature map (N×C×H×W), in forward order: the names `layers=` takes."""
    return [LayerName(name, type(mod).__name__, "×".join(map(str, out.shape[1:]))) for name, mod, out in
            forward_order(model, image)]  # fmt: skip


def default_layers(model: nn.Module, image: Tensor) -> list[str]:
    """One early, one middle and one deep layer: the first, middle and last convolution that runs (pooling
    layers count too when there are fewer than three convolutions, as in LeNet-5)."""
    ran = forward_order(model, image)
    convs = [name for name, mod, _ in ran if isinstance(mod, LAYER_TYPES[:2])]
    if len(convs) < 3:
        convs = [name for name, mod, _ in ran if isinstance(mod, LAYER_TYPES)]
    if not convs:
        raise VisionkitError("the network has no convolution layers to show")
    picks = [convs[0], convs[len(convs) // 2], convs[-1]]
    return list(dict.fromkeys(picks))


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """The modules called `names`; an unknown name gets an error listing close matches."""
    modules = dict(model.named_modules())
    found = {}
    for name in names:
        if name not in modules or not name:
            close = [n for n in modules if n and (name in n or n.endswith(name.split(".")[-1]))][:8]
            hint = f"; close: {', '.join(close)}" if close else ""
            raise VisionkitError(f"layers: no layer named {name!r}{hint} (run with list_layers=true to see them all)")
        found[name] = modules[name]
    return found


def feature_maps(model: nn.Module, image: Tensor, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The output of each named layer for a 1×C×H×W `image`, as C×H×W float32 arrays."""
    modules = resolve_layers(model, names)
    maps: dict[str, np.ndarray] = {}

    def keep(name: str, _module: nn.Module, output: object) -> None:
        maps.setdefault(name, _first_map(output, name))

    run_hooked(model, image, [(module, partial(keep, name)) for name, module in modules.items()])
    missing = [name for name in names if name not in maps]
    if missing:
        raise VisionkitError(f"layers: {', '.join(missing)} did not run for this image (a training-only branch?)")
    return {name: maps[name] for name in names}


def _first_map(output: object, name: str) -> np.ndarray:
    tensor = output[0] if isinstance(output, (list, tuple)) else output
    if not isinstance(tensor, Tensor) or tensor.dim() != 4:
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise VisionkitError(f"layers: {name} outputs {shape}, not a feature map (N×C×H×W)")
    return tensor[0].detach().float().cpu().numpy()


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first 2-D convolution in the module tree (the one that sees the pixels)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise VisionkitError("the network has no Conv2d layer")


def first_conv_filters(model: nn.Module) -> np.ndarray:
    """The first convolution's filters as out×kh×kw×3 (RGB input) or out×kh×kw×1 images, each scaled to [0, 1]
    symmetrically around zero, so grey is 0 and colour shows what the filter responds to."""
    _, conv = first_conv(model)
    weights = conv.weight.detach().float().cpu().numpy()  # out, in, kh, kw
    if weights.shape[1] != 3:
        weights = weights.mean(axis=1, keepdims=True)
    scale = np.abs(weights).reshape(len(weights), -1).max(axis=1).reshape(-1, 1, 1, 1) + 1e-12
    return (weights / scale * 0.5 + 0.5).transpose(0, 2, 3, 1).astype(np.float32)


def _grid(count: int, max_cols: int = 16) -> tuple[int, int]:
    cols = min(max_cols, max(1, int(np.ceil(np.sqrt(count)))))
    return (count + cols - 1) // cols, cols


def filter_grid_figure(filters: np.ndarray, title: str) -> Figure:
    """Filters (from `first_conv_filters`) in a grid, pixels drawn as blocks."""
    rows, cols = _grid(len(filters))
    fig = Figure(figsize=(cols * 0.7 + 0.4, rows * 0.7 + 0.7))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, f in zip(axes, filters):
        ax.imshow(f[..., 0] if f.shape[-1] == 1 else f, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def strongest_channels(maps: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` channels with the largest mean activation (the ones that light up)."""
    strength = np.abs(maps).reshape(len(maps), -1).mean(axis=1)
    return np.argsort(-strength, kind="stable")[:count]


def feature_map_figure(maps: np.ndarray, title: str, max_channels: int = 32) -> Figure:
    """The `max_channels` most active channels of one layer (C×H×W), each normalized to its own range."""
    channels = strongest_channels(maps, max_channels)
    rows, cols = _grid(len(channels), 8)
    fig = Figure(figsize=(cols * 1.3 + 0.3, rows * 1.4 + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, c in zip(axes, channels):
        ax.imshow(maps[c], cmap="viridis", interpolation="nearest")
        ax.set_title(f"ch {c}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
