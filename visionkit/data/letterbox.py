"""Letterbox geometry: where an image lands inside the network input, and the way back to its pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visionkit.data.augment import size_hw


@dataclass(frozen=True)
class Letterbox:
    """An `height` x `width` image scaled by `scale` (aspect kept) and padded by `left`/`top` to the input size,
    exactly as the `letterbox` resize mode (albumentations LongestMaxSize + centred PadIfNeeded) does it."""

    scale_x: float
    scale_y: float
    left: int
    top: int

    @classmethod
    def fit(cls, height: int, width: int, input_size: int | Sequence[int]) -> Letterbox:
        target_h, target_w = size_hw(input_size)
        scale = min(target_h / height, target_w / width)
        new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
        return cls(new_w / width, new_h / height, (target_w - new_w) // 2, (target_h - new_h) // 2)

    def to_image(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """x1 y1 x2 y2 boxes in input pixels -> original image pixels, clipped to the image."""
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: the work is done in place
        np.clip((xs - self.left) / self.scale_x, 0, width, out=xs)
        np.clip((ys - self.top) / self.scale_y, 0, height, out=ys)
        return out
