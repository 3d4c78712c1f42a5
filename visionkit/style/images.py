"""Photos in and out of style transfer: any readable file or array as RGB, resizing by long side, atomic saves."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from visionkit.errors import VisionkitError
from visionkit.utils.io import to_rgb

MIN_SIDE = 32  # VGG19 halves the size four times before relu5_1: smaller images have almost no style layers left

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def describe(image: ImageLike) -> str:
    """A short name of an image for messages: its path, or what kind of object it is."""
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"the given {type(image).__name__}"


def load_rgb(image: ImageLike) -> np.ndarray:
    """HxWx3 uint8 RGB of a path, PIL image or array (as `visionkit.utils.io.to_rgb` reads them: EXIF rotation,
    alpha, CMYK, grey, 16-bit, floats in [0, 1]); too-small images are refused with their size."""
    array = to_rgb(image, name=f"image {describe(image)}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise VisionkitError(
            f"image {describe(image)} is {width}x{height} px; style transfer needs at least {MIN_SIDE} px on each side"
        )
    return array


def to_tensor(array: np.ndarray) -> Tensor:
    """1×3×H×W float tensor in [0, 1] of an HxWx3 uint8 array."""
    return torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).div_(255.0)


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize B×3×H×W images to (height, width): antialiased bicubic down, bicubic up, clamped to [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """PIL RGB image of a 1×3×H×W or 3×H×W tensor in [0, 1]."""
    array = image.detach().float().squeeze(0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")
