"""Albumentations transforms visionkit adds to the presets."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class RandomHSVGain(A.ImageOnlyTransform):
    """Multiply hue, saturation and value by random gains in 1 ± (hue, saturation, value), through lookup
    tables in OpenCV's HSV space: ultralytics' colour augmentation (hsv_h 0.015, hsv_s 0.7, hsv_v 0.4)."""

    def __init__(self, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.hue, self.saturation, self.value = hue, saturation, value

    def get_params(self) -> dict[str, Any]:
        gains = self.py_random.uniform(-1, 1), self.py_random.uniform(-1, 1), self.py_random.uniform(-1, 1)
        return {"gains": np.array(gains) * (self.hue, self.saturation, self.value) + 1}

    def apply(self, img: np.ndarray, gains: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            return img
        hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
        x = np.arange(256, dtype=np.float32)
        lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
        lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
        lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
        merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
        return cv2.cvtColor(merged, cv2.COLOR_HSV2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("hue", "saturation", "value")
