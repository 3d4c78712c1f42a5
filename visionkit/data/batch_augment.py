"""Augmentation of a whole batch of in-memory images at once: the same albumentations transforms (Affine,
RandomBrightnessContrast, HorizontalFlip, VerticalFlip) with the same parameter ranges, probabilities and
geometry (albumentations' own affine matrix), applied with a few torch operations per batch instead of one
albumentations call per image. For small images held in memory (the built-in digits) the per-image calls cost
more than the model's step; files and other transforms keep the per-image path."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2


def _fill_value(fill: object) -> float | None:
    """A constant border fill as one number (None when it differs per channel: not batched)."""
    if isinstance(fill, (int, float)):
        return float(fill)
    values = {float(v) for v in fill} if isinstance(fill, Sequence) else set()
    return values.pop() if len(values) == 1 else None


def _uniform(rng: np.random.Generator, bounds: Sequence[float], count: int) -> np.ndarray:
    """`count` draws from U(low, high) for an albumentations range (low, high)."""
    return rng.uniform(bounds[0], bounds[1], count)


def _batchable(op: A.BasicTransform) -> bool:
    if isinstance(op, (A.HorizontalFlip, A.VerticalFlip, A.RandomBrightnessContrast)):
        return not (isinstance(op, A.RandomBrightnessContrast) and (op.ensure_safe_range or not op.brightness_by_max))
    if isinstance(op, A.Affine):
        return (
            not op.fit_output
            and not op.balanced_scale
            and op.border_mode == cv2.BORDER_CONSTANT
            and op.interpolation == cv2.INTER_LINEAR
            and _fill_value(op.fill) is not None
        )
    return False


class BatchAugment:
    """The augmenting transforms of a pipeline, for (B, H, W, 3) uint8 batches already at the output size.

    `from_pipeline` gives None unless every step is one of: a resize to the images' own size (nothing to do),
    the transforms above, and the final ToTensorV2; then the pipeline's output and this one's agree in
    distribution (same draws per image, bilinear sampling) and the result is (B, 3, H, W) uint8.
    """

    def __init__(self, ops: list[A.BasicTransform]) -> None:
        self.ops = ops
        self.rng = np.random.default_rng(0)

    @classmethod
    def from_pipeline(cls, pipeline: A.Compose, image_shape: tuple[int, int]) -> BatchAugment | None:
        steps = list(pipeline.transforms)
        if not steps or not isinstance(steps[-1], ToTensorV2):
            return None
        ops = []
        for op in steps[:-1]:
            if isinstance(op, A.Resize) and (op.height, op.width) == tuple(image_shape):
                continue  # the images are at the size already
            if not _batchable(op):
                return None
            ops.append(op)
        return cls(ops)

    def seed(self, seed: int) -> None:
        """Restart the random stream (per DataLoader worker, as the per-image pipeline's)."""
        self.rng = np.random.default_rng(seed)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if not self.ops:
            return batch.contiguous()
        pixels = batch.to(torch.float32)
        for op in self.ops:
            chosen = self.rng.random(len(images)) < op.p
            if not chosen.any():
                continue
            pick = torch.from_numpy(chosen)
            if isinstance(op, A.HorizontalFlip):
                pixels[pick] = pixels[pick].flip(3)
            elif isinstance(op, A.VerticalFlip):
                pixels[pick] = pixels[pick].flip(2)
            elif isinstance(op, A.RandomBrightnessContrast):
                pixels[pick] = self._brightness_contrast(op, pixels[pick])
            else:
                pixels[pick] = self._affine(op, pixels[pick])
        return pixels.round_().clamp_(0, 255).to(torch.uint8)

    def _brightness_contrast(self, op: A.RandomBrightnessContrast, pixels: torch.Tensor) -> torch.Tensor:
        """`x * alpha + beta * 255` with alpha = 1 + U(contrast_limit), beta = U(brightness_limit)."""
        count = len(pixels)
        alpha = 1.0 + _uniform(self.rng, op.contrast_limit, count)
        beta = _uniform(self.rng, op.brightness_limit, count) * 255.0
        view = (count, 1, 1, 1)
        out = pixels * torch.from_numpy(alpha).float().view(view) + torch.from_numpy(beta).float().view(view)
        return out.clamp_(0, 255)

    def _matrices(self, op: A.Affine, count: int, height: int, width: int) -> np.ndarray:
        """(count, 3, 3) forward matrices, drawn and composed as albumentations' Affine does (centre shift,
        scale, rotation, shear, translation in whole pixels)."""
        rng = self.rng
        scale_x = _uniform(rng, op.scale["x"], count)
        scale_y = scale_x if op.keep_ratio else _uniform(rng, op.scale["y"], count)
        if op.translate_px is not None:
            shift_x = rng.integers(op.translate_px["x"][0], op.translate_px["x"][1] + 1, count).astype(float)
            shift_y = rng.integers(op.translate_px["y"][0], op.translate_px["y"][1] + 1, count).astype(float)
        elif op.translate_percent is not None:
            shift_x = np.trunc(_uniform(rng, op.translate_percent["x"], count) * width)
            shift_y = np.trunc(_uniform(rng, op.translate_percent["y"], count) * height)
        else:
            shift_x = shift_y = np.zeros(count)
        angle = np.deg2rad(_uniform(rng, op.rotate, count) % 360)
        shear_x = np.tan(np.deg2rad(-_uniform(rng, op.shear["x"], count)))
        shear_y = np.tan(np.deg2rad(-_uniform(rng, op.shear["y"], count)))
        cx, cy = width / 2 - 0.5, height / 2 - 0.5
        cos, sin = np.cos(angle), np.sin(angle)
        rotate_scale = np.stack(
            [np.stack([cos * scale_x, sin * scale_y], 1), np.stack([-sin * scale_x, cos * scale_y], 1)], 1
        )  # rotation @ scale: (count, 2, 2)
        shear = np.stack([np.stack([np.ones(count), shear_x], 1), np.stack([shear_y, np.ones(count)], 1)], 1)
        linear = shear @ rotate_scale
        offset = np.stack([shift_x + cx, shift_y + cy], 1) - linear @ np.array([cx, cy])
        matrices = np.zeros((count, 3, 3))
        matrices[:, :2, :2], matrices[:, :2, 2], matrices[:, 2, 2] = linear, offset, 1.0
        return matrices

    def _affine(self, op: A.Affine, pixels: torch.Tensor) -> torch.Tensor:
        count, _, height, width = pixels.shape
        inverse = torch.from_numpy(np.linalg.inv(self._matrices(op, count, height, width))).float()
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        target = torch.stack([xs, ys, torch.ones_like(xs)], -1).float().view(1, -1, 3)  # output pixels
        source = (target @ inverse[:, :2, :].transpose(1, 2)).view(count, height, width, 2)  # where they come from
        grid = source * torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)]) - 1.0
        fill = _fill_value(op.fill) or 0.0
        warped = F.grid_sample(pixels - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return warped + fill
