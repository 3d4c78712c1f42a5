"""Segmentation inference: every image at its own resolution through overlapping tiles of the training size,
a class id per pixel; masks as palette PNGs, colour overlays and the class shares in JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from visionkit.data.contract import SIZE_MULTIPLE, check_input_size
from visionkit.data.mask_files import mask_image
from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor
from visionkit.inference.outputs import save_picture
from visionkit.inference.result import InputImage, Result
from visionkit.inference.tiling import segment_image, segment_small
from visionkit.utils.arrays import concat, full_like
from visionkit.utils.io import atomic_write
from visionkit.utils.palette import overlay


@dataclass
class SegmentationResult(Result):
    """One class id per pixel: `mask` (H, W) at the image's own size; `class_shares` the share of each class."""

    task: ClassVar[str] = "segmentation"
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint8), repr=False)
    mask_file: str | None = None  # the mask PNG's path relative to the folder `save` wrote to

    @property
    def class_shares(self) -> dict[str, float]:
        """Share of the image's pixels per class found (classes with no pixel left out), by class name."""
        if not self.mask.size:
            return {}
        counts = np.bincount(self.mask.ravel(), minlength=len(self.names))
        return {self.names[i]: round(float(c) / self.mask.size, 6) for i, c in enumerate(counts) if c}

    def fields(self) -> dict[str, Any]:
        return {"mask": self.mask_file, "classes": self.class_shares}

    def plot(self, alpha: float = 0.5) -> np.ndarray:
        """The image with every non-background pixel tinted in its class colour."""
        return overlay(self.original, self.mask, alpha)

    def save(self, folder: str | os.PathLike[str], name: str | None = None, draw: bool = True) -> list[Path]:
        """`masks/<name>.png` (palette PNG: pixel values are class ids, shown in colour) and, with `draw`,
        `overlays/<name>.png`."""
        if not self.ok:
            return []
        folder, name = Path(folder), self.file_name(name)
        self.mask_file = str(Path("masks") / Path(name).with_suffix(".png"))
        with atomic_write(folder / self.mask_file) as handle:
            mask_image(self.mask).save(handle, format="PNG")
        written = [folder / self.mask_file]
        if draw:
            written.append(save_picture(self.plot(), (folder / "overlays" / name).with_suffix(".png")))
        return written


class SegmentationPredictor(Predictor):
    """A class per pixel from a SegmentationTask checkpoint, at each image's own resolution.

    tile_size: sliding-window tile (height, width), multiples of 32 (None: the training size); tile_overlap:
    fraction shared by neighbouring tiles (blended); scale: resize images by this factor first (masks come back
    at the original size). The batch size counts tiles per forward pass.
    """

    task_name = "segmentation"
    default_size = 512

    def __init__(
        self,
        model: Any,
        contract: Any,
        *,
        tile_size: int | tuple[int, int] | None = None,
        tile_overlap: float = 0.25,
        scale: float = 1.0,
        **common: Any,
    ) -> None:
        tile = tile_size or contract.image_size
        check_input_size(tile, "tile_size")
        if not 0 <= tile_overlap < 1:
            raise VisionkitError(f"tile_overlap={tile_overlap} must be in [0, 1)")
        if scale <= 0:
            raise VisionkitError(f"scale={scale} must be positive (e.g. 0.5 for images twice the training scale)")
        self.tile = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
        self.tile_overlap, self.scale = float(tile_overlap), float(scale)
        super().__init__(model, contract, **common)

    @property
    def binary(self) -> bool:
        """Whether the model predicts one foreground class with a single sigmoid channel."""
        return bool(self.model.hparams.get("binary", False))

    def scores(self, images: Any) -> Any:
        """(N, C, H, W) per-class scores whose arg-max is the predicted class: softmax probabilities, or for a
        binary model (the task's threshold, foreground probability), so blending tiles keeps its threshold."""
        probs = self.model.class_probabilities(images)
        if not self.binary:
            return probs
        return concat([full_like(probs[:, 1:], float(self.model.hparams.threshold)), probs[:, 1:]], axis=1)

    def label_scores(self, images: Any) -> Any:
        """Scores for one pass with no tiles to blend, where only their arg-max counts: a softmax model's logits
        as they are (softmax keeps their order; half a ms an image at 256 px less), else `scores`."""
        return self.scores(images) if self.binary else self.model(images)

    @property
    def network_device(self) -> Any:
        """Where the network's inputs go: the predictor's device, or None (NumPy) for an exported file."""
        return None if self.exported else self.device

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        if self.scale == 1.0:
            return image
        height, width = image.shape[:2]
        size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        if image.dtype != np.uint8 or image.shape[2] != 3:  # 0..1 floats of any channel count
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            return scaled[:, :, None] if scaled.ndim == 2 else scaled
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))

    def _at_size(self, labels: np.ndarray, height: int, width: int) -> np.ndarray:
        if labels.shape != (height, width):
            resized = Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
            labels = np.asarray(resized)
        return labels.astype(np.uint8 if len(self.names) <= 256 else np.int32)

    def _tiled(self, seen: np.ndarray) -> np.ndarray:
        """Class ids of an image (already resized by `scale`) through overlapping tiles."""
        return segment_image(
            self.scores,
            seen,
            self.contract.mean,
            self.contract.std,
            tile=self.tile,
            overlap=self.tile_overlap,
            batch_size=self.batch_size,
            multiple=SIZE_MULTIPLE,
            device=self.network_device,
            peak=self.contract.peak,
        )

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        """Images that fit in one tile share forward passes; larger ones are tiled one by one."""
        seen = [self._scaled(item.network) for item in items]
        small = [i for i, image in enumerate(seen) if image.shape[0] <= self.tile[0] and image.shape[1] <= self.tile[1]]
        labels: dict[int, np.ndarray] = {}
        if small:
            batch = [seen[i] for i in small]
            contract = self.contract
            found = segment_small(
                self.label_scores, batch, contract.mean, contract.std, self.tile, self.network_device, contract.peak
            )
            labels = dict(zip(small, found))
        return [
            SegmentationResult(
                **self.common(item),
                mask=self._at_size(labels[i] if i in labels else self._tiled(seen[i]), *item.rgb.shape[:2]),
            )
            for i, item in enumerate(items)
        ]

    def skipped(self, item: InputImage) -> Result:
        return SegmentationResult(source=item.source, size=(0, 0), names=self.names, error=item.error)
