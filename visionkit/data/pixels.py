"""What a pipeline's pixels are: how many channels, of which type, picked from which bands of a file, and how
they become 0..1 floats before normalization. 8-bit RGB (the default) keeps the photo path as it is; anything
else (a 16-bit scan, a DICOM series, a 5-band raster) is read as stored and keeps its precision until it is
normalized."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from visionkit.errors import VisionkitError
from visionkit.utils.io import UnreadableImage, read_image
from visionkit.utils.rasters import display_rgb, read_raster

PEAKS = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}  # the value that means "full scale" per type
SCALINGS = ("fixed", "percentile")


@dataclass(frozen=True)
class PixelFormat:
    """channels: 1 (grey), 3 (RGB) or N bands. dtype: what is read, cached and augmented: uint8, uint16 or
    float32 (raw values, e.g. Hounsfield units or reflectance). bands: the bands of each file to use, in order
    (None: all, which must be `channels` of them). scaling: "fixed" (x / 255, x / 65535, floats as they are) or
    "percentile" (each image's 1st..99th percentile to 0..1, for scans whose exposure differs). window: a DICOM
    (centre, width) mapped to 0..1 (CT: (40, 400) soft tissue). viz_bands: the bands pictures show."""

    channels: int = 3
    dtype: str = "uint8"
    bands: tuple[int, ...] | None = None
    scaling: str = "fixed"
    window: tuple[float, float] | None = None
    viz_bands: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if int(self.channels) < 1:
            raise VisionkitError(f"data.channels={self.channels}: give 1 (grey), 3 (RGB) or the number of bands")
        if self.dtype not in PEAKS:
            raise VisionkitError(f"data.dtype={self.dtype!r} is not a pixel type; choose one of {list(PEAKS)}")
        if self.scaling not in SCALINGS:
            raise VisionkitError(f"data.scaling={self.scaling!r}: choose one of {list(SCALINGS)}")
        if self.bands is not None and len(self.bands) != self.channels:
            raise VisionkitError(
                f"data.bands={list(self.bands)} picks {len(self.bands)} bands but data.channels={self.channels}; "
                "give as many bands as channels"
            )
        if self.window is not None and (len(self.window) != 2 or float(self.window[1]) <= 0):
            raise VisionkitError(f"data.window={list(self.window)}: give [centre, width] with a positive width")
        viz = self.viz_bands
        if viz is not None and (len(viz) not in (1, 3) or not all(0 <= int(b) < self.channels for b in viz)):
            raise VisionkitError(f"viz.bands={list(viz)}: give 1 or 3 band indices between 0 and {self.channels - 1}")

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> PixelFormat:
        """The format of a config node or a checkpoint's data state (missing keys: 8-bit RGB)."""
        settings = settings or {}

        def listed(key: str, kind: type) -> tuple | None:
            value = settings.get(key)
            return None if value is None else tuple(kind(v) for v in value)

        return cls(
            channels=int(settings.get("channels", 3) or 3),
            dtype=str(settings.get("dtype", "uint8") or "uint8"),
            bands=listed("bands", int),
            scaling=str(settings.get("scaling", "fixed") or "fixed"),
            window=listed("window", float),
            viz_bands=listed("viz_bands", int),
        )

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint's input contract."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @property
    def rgb8(self) -> bool:
        """The photo path: 8-bit RGB read by the fast JPEG/PNG decoders, normalized on the device."""
        return (self.channels, self.dtype, self.bands, self.scaling, self.window) == (3, "uint8", None, "fixed", None)

    @property
    def peak(self) -> float:
        """Full scale of the stored type: what 1.0 means after `to_unit` with fixed scaling."""
        return PEAKS[self.dtype]

    @property
    def unit_range(self) -> bool:
        """Whether `to_unit` gives values in 0..1 (what colour transforms assume); raw float32 values do not."""
        return self.dtype != "float32" or self.scaling == "percentile" or self.window is not None

    def read(self, path: str) -> np.ndarray:
        """The file as (H, W, channels) in `dtype`; a file whose bands or values do not fit is refused, named."""
        if self.rgb8:
            return read_image(path)
        return self.conform(read_raster(path), path)

    def conform(self, raster: np.ndarray, name: str) -> np.ndarray:
        """An (H, W, B) array of any type as this format's (H, W, channels) `dtype` pixels, or the reason not."""
        if raster.ndim == 2:
            raster = raster[:, :, None]
        if self.bands is not None:
            if max(self.bands) >= raster.shape[2]:
                raise self._refused(name, raster, f"data.bands={list(self.bands)} names a band it does not have")
            raster = raster[:, :, list(self.bands)]
        elif raster.shape[2] != self.channels:
            found = raster
            if raster.shape[2] in (2, 4) and self.channels in (1, 3):
                raster = raster[:, :, :-1]  # grey or RGB with alpha (an RGBA PNG for grey training): alpha dropped
            if self.channels == 3 and raster.shape[2] == 1:
                raster = np.repeat(raster, 3, axis=2)
            elif self.channels == 1 and raster.shape[2] == 3 and raster.dtype == np.uint8:
                raster = cv2.cvtColor(raster, cv2.COLOR_RGB2GRAY)[:, :, None]
            if raster.shape[2] != self.channels:
                raise self._refused(
                    name, found, f"data.channels={self.channels}; set data.channels or pick data.bands=[...]"
                )
        if self.window is not None:
            centre, width = self.window
            low = centre - width / 2
            return np.clip((raster.astype(np.float32) - low) / width, 0.0, 1.0)
        return self._as_dtype(raster, name)

    def _as_dtype(self, raster: np.ndarray, name: str) -> np.ndarray:
        if raster.dtype == np.dtype(self.dtype):
            return np.ascontiguousarray(raster)
        if self.dtype == "float32":
            return raster.astype(np.float32)
        if raster.dtype == np.uint8 and self.dtype == "uint16":
            return raster.astype(np.uint16) * np.uint16(257)  # the same full scale
        if raster.dtype == np.uint16 and self.dtype == "uint8":
            return ((raster.astype(np.float32) * (255.0 / 65535.0)) + 0.5).astype(np.uint8)
        if raster.dtype.kind in "iu" and raster.min(initial=0) >= 0 and raster.max(initial=0) <= PEAKS[self.dtype]:
            return raster.astype(self.dtype)
        raise self._refused(
            name, raster, f"its values do not fit data.dtype={self.dtype}; set data.dtype=float32 (and data.mean=auto)"
        )

    def _refused(self, name: str, raster: np.ndarray, reason: str) -> UnreadableImage:
        found = f"{raster.shape[0]}x{raster.shape[1]}, {raster.shape[2]} band(s), {raster.dtype}"
        return UnreadableImage(f"image {name} ({found}): {reason}", Path(name), f"{found}: {reason}")

    def to_unit(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, C) pixels as float32 for the augmentation: divided by the type's full scale (fixed), or each
        image's 1st..99th percentile stretched to 0..1 per channel (percentile); a window's output is 0..1 already."""
        if self.window is not None:
            return pixels.astype(np.float32, copy=False)
        if self.scaling == "percentile":
            flat = pixels.reshape(-1, pixels.shape[2]).astype(np.float32)
            low, high = np.percentile(flat, (1.0, 99.0), axis=0)
            span = np.where(high > low, high - low, 1.0)
            return np.clip((pixels.astype(np.float32) - low) / span, 0.0, 1.0)
        return pixels.astype(np.float32) * np.float32(1.0 / self.peak)

    def picture(self, pixels: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB of these pixels to draw on (the `viz_bands`, grey for one channel)."""
        return display_rgb(pixels, self.viz_bands)


RGB8 = PixelFormat()


def format_of(data: Mapping[str, Any], viz_bands: Sequence[int] | None = None) -> PixelFormat:
    """The pixel format a data config asks for (keys channels, dtype, bands, scaling, window) and the bands
    pictures show (`viz.bands`)."""
    settings = {k: data.get(k) for k in ("channels", "dtype", "bands", "scaling", "window")}
    return PixelFormat.of({**settings, "viz_bands": viz_bands})


def check_pixel_format(fmt: PixelFormat, task: str, augment: Sequence[Any], stats: Mapping[str, Any]) -> None:
    """Refuse, before any reading, what cannot work with a pixel format: `stats` (mean, std) of the wrong length,
    a task without N-channel support, augmentations that need 3 colour channels or 0..1 values."""
    from visionkit.data.augment import check_augment

    for key, value in stats.items():
        if isinstance(value, str):
            if value != "auto":
                raise VisionkitError(f"data.{key}={value!r}: give a list of {fmt.channels} values or auto")
        elif len(value) != fmt.channels:
            raise VisionkitError(
                f"data.{key}={list(value)} has {len(value)} values for data.channels={fmt.channels}; "
                f"give {fmt.channels} values or data.{key}=auto (measured on the training split)"
            )
    if fmt.rgb8:
        return
    if task not in ("classification", "segmentation"):
        raise VisionkitError(
            f"data.channels={fmt.channels}, data.dtype={fmt.dtype}: {task} reads 8-bit RGB only for now "
            "(classification, multi-label and segmentation take any channels and bit depth)"
        )
    check_augment(augment, fmt.channels, fmt.unit_range)


def check_in_memory(fmt: PixelFormat, description: str) -> None:
    """In-memory sets (the built-in digits) are 8-bit RGB: another pixel format is refused, named."""
    if not fmt.rgb8:
        raise VisionkitError(
            f"{description} is held in memory as 8-bit RGB; data.channels and data.dtype apply to image files "
            "(TIFF, DICOM, PNG)"
        )
