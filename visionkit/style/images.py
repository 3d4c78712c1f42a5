"""Photos in and out of style transfer: any readable file or array as RGB, resizing by long side, atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write, pil_to_rgb, read_image

MIN_SIDE = 32  # VGG19 halves the size four times before relu5_1: smaller images have almost no style layers left
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF"}

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def describe(image: ImageLike) -> str:
    """A short name of an image for messages: its path, or what kind of object it is."""
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"the given {type(image).__name__}"


def load_rgb(image: ImageLike) -> np.ndarray:
    """HxWx3 uint8 RGB from a path (EXIF rotation, alpha, CMYK, grayscale and 16-bit handled), a PIL image
    or an array (HxW, HxWx3/4; uint8, or float in [0, 1]); too-small images are refused with their size."""
    if isinstance(image, (str, os.PathLike)):
        array = read_image(image)
    elif isinstance(image, Image.Image):
        array = pil_to_rgb(image)
    elif isinstance(image, np.ndarray):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = np.clip(array.astype(np.float32) * (255.0 if array.max(initial=0) <= 1.0 else 1.0), 0, 255)
            array = array.round().astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise VisionkitError(f"image array of shape {image.shape}: expected HxW, HxWx3 or HxWx4")
        array = np.ascontiguousarray(array[:, :, :3])
    else:
        raise VisionkitError(f"cannot read an image from {type(image).__name__}; pass a path, PIL image or array")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise VisionkitError(
            f"image {describe(image)} is {width}x{height} px; style transfer needs at least {MIN_SIDE} px on each side"
        )
    return array


def to_tensor(array: np.ndarray) -> Tensor:
    """1×3×H×W float tensor in [0, 1] of an HxWx3 uint8 array."""
    return torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).div_(255.0)


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is `long_side`, aspect kept, each side at least 1 px."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize B×3×H×W images to (height, width): antialiased bicubic down, bicubic up, clamped to [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """PIL RGB image of a 1×3×H×W or 3×H×W tensor in [0, 1]."""
    array = image.detach().float().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def save_image(image: Image.Image, path: str | os.PathLike[str], quality: int = 95) -> Path:
    """Write `image` to `path` atomically (a crash leaves no half-written file); format from the suffix."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise VisionkitError(f"output {path}: unknown image type {path.suffix!r}; use one of {sorted(SAVE_FORMATS)}")
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path) as handle:
        image.save(handle, format=fmt, **options)
    return path
