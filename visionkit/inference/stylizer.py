"""Fast stylizer inference: one forward pass of the trained transformation network per batch of same-sized
images, each result at its image's own size."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from visionkit.data.augment import fit_long_side
from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor
from visionkit.inference.outputs import save_picture
from visionkit.inference.result import InputImage, Result


@dataclass
class StylizedResult(Result):
    """The stylized picture of one image: `image` (H, W, 3) uint8 at the image's own size."""

    task: ClassVar[str] = "style_transfer"
    image: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), dtype=np.uint8), repr=False)
    output_file: str | None = None  # the stylized image's path relative to the folder `save` wrote to

    def fields(self) -> dict[str, Any]:
        return {"output": self.output_file}

    def plot(self) -> np.ndarray:
        """The stylized picture itself."""
        return self.image

    def save(self, folder: str | os.PathLike[str], name: str | None = None, draw: bool = True) -> list[Path]:
        """`<folder>/<name>`: the stylized image (JPEG for .jpg names, else PNG)."""
        if not self.ok:
            return []
        written = save_picture(self.image, Path(folder) / self.file_name(name))
        self.output_file = written.name
        return [written]


class StylizerPredictor(Predictor):
    """Stylized images from a StyleTransferTask checkpoint (needs neither VGG19 nor the style image).

    size: long side the network sees (None: each image's own); results come back at each image's own size.
    Consecutive images of the same network size share a forward pass (video frames batch fully).
    """

    task_name = "style_transfer"
    default_size = 256

    def __init__(self, model: Any, contract: Any, *, size: int | None = None, **common: Any) -> None:
        self.size = int(size) if size else None
        super().__init__(model, contract, **common)

    def _network_size(self, item: InputImage) -> tuple[int, int]:
        height, width = item.rgb.shape[:2]
        return fit_long_side(height, width, self.size) if self.size else (height, width)

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        if self.exported:
            return self._predict_exported(items)
        import torch

        from visionkit.style.images import resize

        results: list[Result] = []
        for size, group in groupby(items, key=self._network_size):
            members = list(group)
            images = torch.cat([resize(self.to_network([m.rgb]).clamp_(0, 1), size) for m in members])
            stylized = self.model(images).float().clamp(0, 1)
            for member, picture in zip(members, stylized):
                back = resize(picture[None], member.rgb.shape[:2])[0]
                array = back.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
                results.append(StylizedResult(**self.common(member), image=np.ascontiguousarray(array)))
        return results

    def _predict_exported(self, items: list[InputImage]) -> list[Result]:
        """`predict_batch` on NumPy for an exported file: pictures resized by OpenCV (area down, bicubic up)
        where a `size` asks for it, the network at each image's own size otherwise (then exactly as PyTorch)."""
        results: list[Result] = []
        for size, group in groupby(items, key=self._network_size):
            members = list(group)
            pictures = [_resized(m.rgb, size) for m in members]
            stylized = np.clip(self.model(self.to_network(pictures)).astype(np.float32), 0, 1)
            for member, picture in zip(members, stylized):
                array = np.round(picture.transpose(1, 2, 0) * 255).astype(np.uint8)
                array = _resized(array, member.rgb.shape[:2])
                results.append(StylizedResult(**self.common(member), image=np.ascontiguousarray(array)))
        return results

    def skipped(self, item: InputImage) -> Result:
        return StylizedResult(source=item.source, size=(0, 0), names=self.names, error=item.error)


def _resized(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxWx3 uint8 picture at (height, width): OpenCV's area resampling down, bicubic up."""
    if picture.shape[:2] == tuple(size):
        return picture
    shrinking = size[0] * size[1] < picture.shape[0] * picture.shape[1]
    return cv2.resize(picture, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


class TemporalSmoothing:
    """Less flicker in a stylized video: where the input pixel barely changed since the last frame, the output
    keeps `strength` of the last output (0 = off, 0.9 = strong); where it moved, the new stylization shows.

    Also measures flicker: the mean absolute change between consecutive output frames divided by the input's
    (`flicker`, what was written; `raw_flicker`, the stylizer's frames unsmoothed): 1 = the output changes as
    much as the scene does.
    """

    def __init__(self, strength: float = 0.0, tolerance: float = 12.0) -> None:
        if not 0.0 <= strength < 1.0:
            raise VisionkitError(f"temporal smoothing {strength}: give a value in [0, 1) (0 = off, 0.6 = medium)")
        self.strength, self.tolerance = float(strength), float(tolerance)
        self.previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # input, raw output, output
        self.sums = np.zeros(3)  # input change, raw output change, output change

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """The output frame for input `frame` whose stylization is `stylized` (both H x W x 3 uint8)."""
        current = frame.astype(np.float32)
        raw = stylized.astype(np.float32)
        output = raw
        if self.previous is not None:
            last_input, last_raw, last_output = self.previous
            if self.strength > 0:
                still = np.exp(-np.abs(current - last_input).mean(2, keepdims=True) / self.tolerance)
                keep = self.strength * still
                output = keep * last_output + (1 - keep) * raw
            self.sums += [
                np.abs(current - last_input).mean(),
                np.abs(raw - last_raw).mean(),
                np.abs(output - last_output).mean(),
            ]
        self.previous = (current, raw, output)
        return (output + 0.5).astype(np.uint8)

    @property
    def raw_flicker(self) -> float:
        return float(self.sums[1] / self.sums[0]) if self.sums[0] else float("nan")

    @property
    def flicker(self) -> float:
        return float(self.sums[2] / self.sums[0]) if self.sums[0] else float("nan")
