"""What the explore page shows about the network's layers, computed once in Python and embedded in the page:
every conv / pool / activation stage in the order it ran, with its output shape and feature maps, the real numbers
a convolution or max-pooling step reads (its input, kernels, bias and PyTorch's output), receptive fields, and the
patches that excite each channel most. Tensors travel as base64 float32, pictures as PNG data URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from visionkit.explain.receptive_field import LAYER_TYPES
from visionkit.explain.subjects import Subject

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.Hardswish, nn.ELU)


@dataclass(frozen=True)
class ExploreOptions:
    """channels: feature maps embedded per stage (the page shows 8 first, the rest on demand); step_mb: the
    float32 data the step-throughs of convolutions, pooling and activations may embed, in forward order, as many
    as fit (the others show their maps; `serve=true` gives every step-through); map_size: the largest side of an
    embedded map; patches: the strongest patches kept per channel; data_images: validation images searched."""

    channels: int = 16
    step_mb: float = 3.0
    map_size: int = 56
    patches: int = 3
    data_images: int = 64


def png_url(picture: np.ndarray) -> str:
    """An H×W(×3) uint8 array as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def floats(array: Tensor | np.ndarray) -> str:
    """Little-endian float32 values in C order, base64 (the page decodes them into a Float32Array)."""
    if isinstance(array, Tensor):
        array = array.detach().float().cpu().numpy()
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()


def viridis(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values as viridis colours (uint8 RGB), `low` to `high` spanning the colour map."""
    from matplotlib import colormaps

    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return (colormaps["viridis"](np.clip(scaled, 0, 1))[..., :3] * 255).astype(np.uint8)


def map_strip(maps: Tensor, size: int) -> dict[str, Any]:
    """The channels side by side as one PNG (each at most `size` px a side, one colour scale for all), the
    scale's low and high values and the size of one tile."""
    maps = maps.detach().float().cpu()
    if max(maps.shape[-2:]) > size:
        scale = size / max(maps.shape[-2:])
        shape = (max(1, round(maps.shape[-2] * scale)), max(1, round(maps.shape[-1] * scale)))
        maps = F.interpolate(maps[None], size=shape, mode="area")[0]
    low, high = float(maps.min()), float(maps.max())
    strip = torch.cat(list(maps), dim=1).numpy()
    tile = list(maps.shape[-2:])
    return {"maps": png_url(viridis(strip, low, high)), "channels": int(maps.shape[0]), "low": low, "high": high,
            "tile": tile}  # fmt: skip


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


@dataclass
class Ran:
    """A module as it ran: its name, the module, its first input and its output (batch of one)."""

    name: str
    module: nn.Module
    inputs: Tensor
    output: Tensor


def run_stages(network: nn.Module, image: Tensor) -> list[Ran]:
    """Every conv, pool and activation module with a 4-D output, in the order it ran on `image`."""
    wanted = (*LAYER_TYPES, *ACTIVATIONS)
    seen: list[Ran] = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            first = inputs[0] if inputs else None
            if isinstance(output, Tensor) and output.dim() == 4 and isinstance(first, Tensor) and first.dim() == 4:
                called = name
                if any(r.name == name for r in seen) and seen:  # one module used in many places (ultralytics'
                    # shared SiLU): named after the block of the stage it follows
                    called = f"{seen[-1].name.rsplit('.', 1)[0]}.{name.rsplit('.', 1)[-1]}"
                seen.append(Ran(called, module, first.detach(), output.detach()))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in network.named_modules() if n and isinstance(m, wanted)]
    try:
        with torch.no_grad():
            network(image)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def step_data(ran: Ran, channels: int) -> dict[str, Any] | None:
    """The numbers a step-through needs: a convolution's whole input, the kernels and biases of its first
    `channels` filters and PyTorch's outputs of them; for max pooling, its first channels in and out."""
    module, inputs, output = ran.module, ran.inputs[0].float().cpu(), ran.output[0].float().cpu()
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        return None
    shown = min(channels, output.shape[0])
    common = {"stride": _pair(module.stride), "padding": _pair(module.padding), "dilation": _pair(module.dilation)}
    if isinstance(module, nn.Conv2d) and module.groups == 1 and isinstance(module.padding, (tuple, int)):
        bias = module.bias.detach()[:shown] if module.bias is not None else torch.zeros(shown)
        return {
            "op": "conv", "kernel": list(module.kernel_size), **common,
            "in_shape": list(inputs.shape), "out_shape": [shown, *output.shape[1:]],
            "input": floats(inputs), "weight": floats(module.weight[:shown]),
            "bias": [float(b) for b in bias], "output": floats(output[:shown]),
        }  # fmt: skip
    if isinstance(module, nn.MaxPool2d) and not module.ceil_mode:
        stride = module.stride if module.stride is not None else module.kernel_size
        return {
            "op": "maxpool", "kernel": _pair(module.kernel_size), **common, "stride": _pair(stride),
            "in_shape": [shown, *inputs.shape[1:]], "out_shape": [shown, *output.shape[1:]],
            "input": floats(inputs[:shown]), "output": floats(output[:shown]),
        }  # fmt: skip
    return None


def step_bytes(ran: Ran, channels: int) -> int:
    """The float32 bytes the stage's step-through embeds (`step_data`, `activation_data`)."""
    if isinstance(ran.module, ACTIVATIONS):
        return 4 * ran.inputs[0, :channels].numel()
    if not isinstance(ran.module, (nn.Conv2d, nn.MaxPool2d)):
        return 0
    if isinstance(ran.module, nn.Conv2d):
        return 4 * (ran.inputs[0].numel() + ran.module.weight[:channels].numel() + ran.output[0, :channels].numel())
    return 4 * (ran.inputs[0, :channels].numel() + ran.output[0, :channels].numel())


def activation_data(ran: Ran, channels: int) -> dict[str, Any]:
    """An activation's function and its first channels' inputs (the page applies the function to show it)."""
    module = ran.module
    slope = float(getattr(module, "negative_slope", 0.0))
    return {"op": "activation", "function": type(module).__name__, "slope": slope,
            "in_shape": [min(channels, ran.inputs.shape[1]), *ran.inputs.shape[2:]],
            "input": floats(ran.inputs[0, :channels])}  # fmt: skip


def stage_rows(
    subject: Subject, image: Tensor, options: ExploreOptions, every_step: bool = False
) -> tuple[list[dict[str, Any]], list[Ran]]:
    """One dict per stage (name, kind, output shape, maps, receptive field, step-through data within the
    budget, or all of them with `every_step`) and the stages as they ran."""
    ran = run_stages(subject.network, image)
    fields = {r.name: (r.receptive_field, r.jump) for r in subject.layer_rows(image)}
    budget = options.step_mb * 2**20
    rows, field = [], ("1×1", "1×1")
    for stage in ran:
        field = fields.get(stage.name, field)  # activations see what the layer before them saw
        row: dict[str, Any] = {
            "name": stage.name,
            "kind": type(stage.module).__name__,
            "shape": list(stage.output.shape[1:]),
            "receptive_field": field[0],
            "jump": field[1],
            **map_strip(stage.output[0, : options.channels], options.map_size),
        }
        cost = step_bytes(stage, options.channels)
        if every_step or cost <= budget:
            found = activation_data if isinstance(stage.module, ACTIVATIONS) else step_data
            row["step"] = found(stage, options.channels)
            budget -= cost if row["step"] is not None else 0
        rows.append(row)
    return rows, ran


def field_box(cell: tuple[int, int], out_hw: Sequence[int], in_hw: Sequence[int], field: str) -> list[float]:
    """The receptive field of output cell (row, col) as x1 y1 x2 y2 in input pixels: `field` (H×W) centred on
    the cell's centre mapped to the input, clipped to the image."""
    size_h, size_w = (float(v) for v in field.split("×"))
    centre_y = (cell[0] + 0.5) * in_hw[0] / out_hw[0]
    centre_x = (cell[1] + 0.5) * in_hw[1] / out_hw[1]
    return [
        max(0.0, centre_x - size_w / 2), max(0.0, centre_y - size_h / 2),
        min(float(in_hw[1]), centre_x + size_w / 2), min(float(in_hw[0]), centre_y + size_h / 2),
    ]  # fmt: skip


def strongest_cells(maps: Tensor, count: int) -> list[list[tuple[float, int, int]]]:
    """Per channel of a C×H×W map, the `count` strongest cells as (value, row, col), best first."""
    flat = maps.flatten(1)
    values, index = flat.topk(min(count, flat.shape[1]), dim=1)
    width = maps.shape[-1]
    return [
        [(float(v), int(i) // width, int(i) % width) for v, i in zip(vs, ids)]
        for vs, ids in zip(values.tolist(), index.tolist())
    ]


def image_patches(rows: list[dict[str, Any]], ran: list[Ran], in_hw: Sequence[int], options: ExploreOptions) -> None:
    """Add to each stage, per channel, the boxes of this image's strongest cells (the page crops them)."""
    for row, stage in zip(rows, ran):
        cells = strongest_cells(stage.output[0, : options.channels].float().cpu(), options.patches)
        field, out_hw = row["receptive_field"], stage.output.shape[2:]
        row["patches"] = [
            [{"value": v, "cell": [r, c], "box": field_box((r, c), out_hw, in_hw, field)} for v, r, c in channel]
            for channel in cells
        ]


def data_patches(
    subject: Subject, rows: list[dict[str, Any]], pictures: Iterable[np.ndarray], options: ExploreOptions
) -> int:
    """Add to each conv stage, per channel, the validation-image patches that excite it most (PNG crops of the
    receptive field at the strongest cell of each image); the number of images searched."""
    convs = {row["name"]: row for row in rows if row["kind"] in ("Conv2d", "ConvTranspose2d")}
    best: dict[str, list[list[tuple[float, str]]]] = {name: [] for name in convs}
    searched = 0
    for picture in pictures:
        if searched >= options.data_images:
            break
        tensor, shown = subject.prepare(picture)
        searched += 1
        for stage in run_stages(subject.network, tensor):
            if stage.name not in convs:
                continue
            row, maps = convs[stage.name], stage.output[0, : options.channels].float().cpu()
            kept = best[stage.name]
            while len(kept) < maps.shape[0]:
                kept.append([])
            for channel, ((value, r, c),) in enumerate(strongest_cells(maps, 1)):
                box = field_box((r, c), maps.shape[1:], shown.shape[:2], row["receptive_field"])
                x1, y1, x2, y2 = (round(v) for v in box)
                crop = shown[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
                kept[channel].append((value, png_url(_thumbnail(crop))))
                kept[channel].sort(key=lambda item: -item[0])
                del kept[channel][options.patches :]
    for name, row in convs.items():
        row["data_patches"] = [[{"value": v, "png": png} for v, png in channel] for channel in best[name]]
    return searched


def _thumbnail(crop: np.ndarray, size: int = 48) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(crop))
    scale = size / max(image.size)
    size_wh = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size_wh, Image.Resampling.NEAREST))
