"""A model's input contract (network size, resize mode, mean/std, pixel format, class names) as its checkpoint or
exported file stores it, read without PyTorch: predictors apply it, so users never repeat it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, size_hw
from visionkit.data.pixels import RGB8, PixelFormat
from visionkit.errors import VisionkitError

DATA_STATE_KEY = "VisionDataModule"  # where a checkpoint holds its data module's saved state (its class name)
SIZE_MULTIPLE = 32  # segmentation encoders and YOLO downsample 5 times: their inputs must be multiples of 32


def check_input_size(size: int | Sequence[int], key: str, networks: str = "segmentation networks") -> None:
    """An error naming `key` (and a size that works) when `size` cannot pass the five downsamplings of a
    segmentation encoder or a YOLO network (whose feature maps of odd sizes stopped in a bare RuntimeError)."""
    sizes = [size] if isinstance(size, int) else list(size)
    if any(int(s) % SIZE_MULTIPLE for s in sizes):
        raise VisionkitError(
            f"{key}={size}: {networks} need sizes divisible by {SIZE_MULTIPLE} "
            f"(e.g. {max(SIZE_MULTIPLE, round(int(sizes[0]) / SIZE_MULTIPLE) * SIZE_MULTIPLE)})"
        )


def data_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The data contract a checkpoint's data module saved (size, resize mode, mean/std, class names); {} if none."""
    return dict(checkpoint.get(DATA_STATE_KEY, {}))


@dataclass(frozen=True)
class InputContract:
    """How a model's inputs were prepared in training, as its checkpoint stores it: the network size
    (height, width), the resize mode, the normalization and the class names. Predictors apply it, so users
    never repeat it."""

    image_size: tuple[int, int]
    resize: str
    mean: tuple[float, ...]  # one per channel (3 for RGB, N for N bands)
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    pixels: PixelFormat = RGB8  # channels, type and bands; 8-bit RGB unless the data module stored another

    @classmethod
    def of(
        cls,
        data_state: Mapping[str, Any],
        class_names: Sequence[str],
        image_size: int | Sequence[int] | None = None,
        default_size: int = 224,
    ) -> InputContract:
        """The contract a data module saved (`image_size` overrides the training size)."""
        size = image_size or data_state.get("image_size") or default_size
        return cls(
            image_size=size_hw(size),
            resize=str(data_state.get("resize", "stretch")),
            mean=tuple(float(v) for v in data_state.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in data_state.get("std", IMAGENET_STD)),
            class_names=tuple(str(n) for n in class_names),
            pixels=PixelFormat.of(data_state.get("pixels")),
        )

    @property
    def peak(self) -> float:
        """What the network input's pixels are divided by before mean/std: 255 for 8-bit RGB; 1 for other formats,
        whose pixels reach the network as 0..1 floats (`PixelFormat.to_unit`)."""
        return 255.0 if self.pixels.rgb8 else 1.0

    def with_viz_bands(self, bands: Sequence[int] | None) -> InputContract:
        """The same contract drawing pictures from other bands (`viz.bands`); None keeps the stored ones."""
        return self if bands is None else replace(self, pixels=replace(self.pixels, viz_bands=tuple(bands)))

    def with_resize(self, resize: str) -> InputContract:
        """The same contract with another resize mode (detectors always letterbox, as ultralytics does)."""
        return replace(self, resize=resize)
