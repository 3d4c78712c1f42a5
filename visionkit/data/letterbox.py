"""Letterbox geometry: where an image lands inside the network input, and the way back to its pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from visionkit.data.augment import size_hw


@dataclass(frozen=True)
class Letterbox:
    """An `height` x `width` image scaled by `scale` (aspect kept) and padded by `left`/`top` to the input size,
    exactly as the `letterbox` resize mode (albumentations LongestMaxSize + centred PadIfNeeded) does it.
    `shape`: the (height, width) of the input it lands in."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    shape: tuple[int, int]

    @classmethod
    def fit(cls, height: int, width: int, input_size: int | Sequence[int], multiple: int | None = None) -> Letterbox:
        """The image fitted inside `input_size`; with `multiple`, the input shrinks to the smallest multiple of it
        on each side that holds the scaled image (rectangular inference: a 4:3 picture at 640 runs 640 x 480)."""
        target_h, target_w = size_hw(input_size)
        scale = min(target_h / height, target_w / width)
        new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
        if multiple:
            target_h = min(target_h, math.ceil(new_h / multiple) * multiple)
            target_w = min(target_w, math.ceil(new_w / multiple) * multiple)
        left, top = (target_w - new_w) // 2, (target_h - new_h) // 2
        return cls(new_w / width, new_h / height, left, top, (target_h, target_w))

    def within(self, shape: tuple[int, int]) -> Letterbox:
        """The same image in a larger input of `shape`, this letterbox's input centred in it (a batch of pictures
        of several shapes runs at the largest)."""
        top, left = _centred(self.shape, shape)
        return Letterbox(self.scale_x, self.scale_y, self.left + left, self.top + top, shape)

    def widen(self, picture: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
        """`picture`, this letterbox's input, centred in a larger input of `shape` (as `within` places it)."""
        return _pasted(picture, shape, *_centred(self.shape, shape), fill)

    def place(self, image: np.ndarray, fill: float) -> np.ndarray:
        """`image` scaled (bilinear, as the resize mode) and padded with `fill` into this letterbox's input; an
        image that fills the input as it is comes back as it is."""
        height, width = image.shape[:2]
        new_w, new_h = round(width * self.scale_x), round(height * self.scale_y)
        if (new_h, new_w) == (height, width) == self.shape:
            return image
        if (new_h, new_w) != (height, width):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            image = image[:, :, None] if image.ndim == 2 else image  # OpenCV drops a single channel's axis
        return _pasted(image, self.shape, self.top, self.left, fill)

    def to_image(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """x1 y1 x2 y2 boxes in input pixels -> original image pixels, clipped to the image."""
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: the work is done in place
        np.clip((xs - self.left) / self.scale_x, 0, width, out=xs)
        np.clip((ys - self.top) / self.scale_y, 0, height, out=ys)
        return out


def _centred(inner: tuple[int, int], outer: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of an `inner` (height, width) centred in `outer`, the extra pixel (odd) below and right."""
    return (outer[0] - inner[0]) // 2, (outer[1] - inner[1]) // 2


def _pasted(picture: np.ndarray, shape: tuple[int, int], top: int, left: int, fill: float) -> np.ndarray:
    """A `shape` canvas of `fill` with `picture` at (`top`, `left`)."""
    height, width = picture.shape[:2]
    out = np.full((*shape, picture.shape[2]), fill, dtype=picture.dtype)
    out[top : top + height, left : left + width] = picture
    return out
