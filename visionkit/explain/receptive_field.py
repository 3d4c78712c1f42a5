"""Output shape and receptive field of every conv/pool layer, for any network (branches and skips included).

A TorchFunctionMode follows one forward pass op by op and carries, for every tensor, the size of the
input window one of its cells sees (the receptive field) and the input-pixel step between neighbouring
cells (the jump): conv/pool grow the field by (kernel - 1) x dilation x jump and multiply the jump by the
stride; upsampling divides the jump; element-wise ops and concatenation keep the largest field of their
inputs. So residual blocks, U-Net skips and YOLO's necks come out right, which a layer-list formula cannot.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from visionkit.explain.hooks import run_hooked
from visionkit.utils.io import atomic_write
from visionkit.utils.tensors import nested_tensors

LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation")


@dataclass(frozen=True)
class LayerRow:
    """One conv/pool layer: its settings, output size and receptive field (in input pixels, height x width)."""

    name: str
    kind: str
    kernel: str
    stride: str
    padding: str
    output: str  # H×W×C
    receptive_field: str  # H×W input pixels
    jump: str  # input pixels between neighbouring output cells


@dataclass
class _Field:
    jump: tuple[float, float]
    size: tuple[float, float]


def _pair(value: Any, default: int = 1) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


class _Tracker(TorchFunctionMode):
    """Carries a `_Field` for every tensor derived from the input image."""

    def __init__(self, image: Tensor) -> None:
        super().__init__()
        self.fields: dict[int, tuple[Tensor, _Field]] = {}
        self._set(image, _Field((1.0, 1.0), (1.0, 1.0)))

    def _set(self, tensor: Tensor, field: _Field) -> None:
        self.fields[id(tensor)] = (tensor, field)  # the tensor is kept so its id cannot be reused

    def field(self, tensor: Tensor) -> _Field | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [f for t in nested_tensors((args, kwargs)) if (f := self.field(t)) is not None]
        if not inputs:
            return out
        widest = max(inputs, key=lambda f: f.size[0] * f.size[1])
        field = self._through(getattr(func, "__name__", ""), args, kwargs, widest, out)
        for tensor in nested_tensors(out):
            if tensor.is_floating_point() or tensor.dim() == 4:
                self._set(tensor, field)
        return out

    @staticmethod
    def _through(name: str, args: tuple, kwargs: dict, field: _Field, out: Any) -> _Field:
        """The field after op `name` on an input with `field`."""
        jump, size = field.jump, field.size
        if name == "conv2d":
            a = {**dict(zip(_CONV_ARGS, args)), **kwargs}
            kernel, stride, dilation = a["weight"].shape[-2:], _pair(a.get("stride")), _pair(a.get("dilation"))
            return _grow(jump, size, tuple(kernel), stride, dilation)
        if name in ("max_pool2d", "avg_pool2d", "lp_pool2d", "max_pool2d_with_indices"):
            a = {**dict(zip(_POOL_ARGS, args)), **kwargs}
            kernel = _pair(a["kernel_size"])
            stride = _pair(a.get("stride") or kernel)
            dilation = _pair(a.get("dilation")) if name != "avg_pool2d" else (1, 1)
            return _grow(jump, size, kernel, stride, dilation)
        if name == "conv_transpose2d":
            a = {**dict(zip(_CONV_T_ARGS, args)), **kwargs}
            stride = _pair(a.get("stride"))
            fine = (jump[0] / stride[0], jump[1] / stride[1])
            return _grow(fine, size, tuple(a["weight"].shape[-2:]), (1, 1), _pair(a.get("dilation")))
        source = next(nested_tensors(args), None)
        result = next(nested_tensors(out), None)
        if source is None or result is None or source.dim() != 4 or result.dim() != 4:
            return field
        (h_in, w_in), (h_out, w_out) = source.shape[-2:], result.shape[-2:]
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            kernel = (-(-h_in // h_out), -(-w_in // w_out))  # ceil: the widest window PyTorch uses
            return _grow(jump, size, kernel, (h_in // h_out, w_in // w_out), (1, 1))
        if (h_in, w_in) != (h_out, w_out):  # interpolate / upsample / pixel shuffle: only the step changes
            return _Field((jump[0] * h_in / h_out, jump[1] * w_in / w_out), size)
        return field


def _grow(
    jump: tuple[float, float],
    size: tuple[float, float],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> _Field:
    height, width = (size[i] + (int(kernel[i]) - 1) * int(dilation[i]) * jump[i] for i in range(2))
    return _Field((jump[0] * int(stride[0]), jump[1] * int(stride[1])), (height, width))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    pair = _pair(value, 0)
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def _size(values: Sequence[float]) -> str:
    h, w = (round(v, 2) for v in values)
    h, w = (int(v) if float(v).is_integer() else v for v in (h, w))
    return f"{h}×{w}"


def _settings(module: nn.Module) -> tuple[str, str, str, str]:
    """(type, kernel, stride, padding) as shown in the table."""
    kind = type(module).__name__
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return kind, f"adaptive → {_text(module.output_size)}", "-", "0"
    kernel = _pair(module.kernel_size)
    stride = module.stride if module.stride is not None else module.kernel_size
    return kind, f"{kernel[0]}×{kernel[1]}", _text(stride), _text(module.padding)


def layer_table(model: nn.Module, image: Tensor) -> list[LayerRow]:
    """One row per conv/pool layer of `model`, in the order the forward pass runs them, for input `image`
    (a 1×C×H×W tensor); the receptive field is in input pixels and may exceed the image (padding)."""
    outputs: list[tuple[str, nn.Module, Tensor]] = []

    def keep(name: str, module: nn.Module, output: object) -> None:
        if isinstance(output, Tensor):
            outputs.append((name, module, output))

    image = image.detach().clone()
    tracker = _Tracker(image)
    hooks = [(m, partial(keep, n)) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    run_hooked(model, image, hooks, context=tracker)
    rows = []
    for name, module, output in outputs:
        field = tracker.field(output) or _Field((float("nan"),) * 2, (float("nan"),) * 2)
        kind, kernel, stride, padding = _settings(module)
        h, w = output.shape[-2:]
        rows.append(
            LayerRow(
                name=name,
                kind=kind,
                kernel=kernel,
                stride=stride,
                padding=padding,
                output=f"{h}×{w}×{output.shape[1]}",
                receptive_field=_size(field.size),
                jump=_size(field.jump),
            )
        )
    return rows


def table_markdown(rows: Sequence[LayerRow]) -> str:
    """The rows as a Markdown table."""
    head = "| layer | type | kernel | stride | padding | output H×W×C | receptive field | jump |"
    lines = [head, "|---|---|---|---|---|---|---:|---:|"]
    lines += [
        f"| {r.name} | {r.kind} | {r.kernel} | {r.stride} | {r.padding} | {r.output} | {r.receptive_field} | {r.jump} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_layer_table(rows: Sequence[LayerRow], directory: Path) -> tuple[Path, Path]:
    """`layers.csv` and `layers.md` in `directory`, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LayerRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    paths = directory / "layers.csv", directory / "layers.md"
    with atomic_write(paths[0], "w") as handle:
        handle.write(buffer.getvalue())
    with atomic_write(paths[1], "w") as handle:
        handle.write(table_markdown(rows))
    return paths
