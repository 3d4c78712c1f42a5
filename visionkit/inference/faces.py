"""Identities in photos and videos: a detection checkpoint finds the faces (or any objects), each box is cropped
with a margin and embedded by an embedding checkpoint, and a gallery, when given, names it. A photo of several
people gives one identity per face; on video the boxes are tracked first, so an identity holds over frames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np

from visionkit.inference.base import Predictor
from visionkit.inference.detection import DetectionPredictor, DetectionResult
from visionkit.inference.embedding import EmbeddingPredictor
from visionkit.inference.result import InputImage, Result
from visionkit.utils.arrays import to_numpy, unit_rows
from visionkit.utils.palette import box_colour


@dataclass
class IdentityResult(DetectionResult):
    """Detected boxes with the identity features of each: `embeddings` (K, D) unit float32, and with a gallery
    the `identities` (K,) it judged them to be (`unknown` past its threshold) at `distances` (K,)."""

    task: ClassVar[str] = "identities"
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    identities: list[str] = field(default_factory=list)
    distances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def detections(self) -> list[dict[str, Any]]:
        out = super().detections()
        for i, det in enumerate(out):
            if i < len(self.embeddings):
                det["embedding"] = [float(v) for v in self.embeddings[i]]
            if i < len(self.identities):
                det["identity"] = self.identities[i]
                det["distance"] = round(float(self.distances[i]), 6)
        return out

    def plot(self) -> np.ndarray:
        """The image with each box labelled by its identity and distance (`#track identity 0.21` when tracked);
        without a gallery, by its class as detection draws it."""
        if not self.identities:
            return super().plot()
        names = sorted(set(self.identities))
        texts = [f"{identity} {distance:.2f}" for identity, distance in zip(self.identities, self.distances)]
        grey = (128, 128, 128)
        colours = [grey if i == "unknown" else box_colour(names.index(i)) for i in self.identities]
        return self.drawn(texts, colours)


def crop_box(image: np.ndarray, box: Sequence[float], margin: float) -> np.ndarray:
    """The box (x1 y1 x2 y2) grown by `margin` of its size on each side, as a square around its centre (faces
    embed best uncut and unstretched), clipped to the image and padded with grey where it leaves it."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    size = max(1, round(side))
    out = np.full((size, size, 3), 114, np.uint8)
    height, width = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + size, width), min(top + size, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
    return out


class IdentityPredictor(Predictor):
    """Boxes from `detector`, an embedding per box from `embedder` (each crop grown by `margin`), and with a
    `gallery` (`visionkit.inference.gallery.Gallery`) the identity of each. Takes the detector's inputs, batching
    and tracking; the embedding runs after the tracker so each embedded box is one the video shows."""

    task_name = "identities"
    finds_boxes = True

    def __init__(
        self, embedder: EmbeddingPredictor, detector: DetectionPredictor, gallery: Any = None, margin: float = 0.2
    ) -> None:
        self.embedder, self.detector, self.gallery, self.margin = embedder, detector, gallery, float(margin)
        common: dict[str, Any] = {
            "device": detector.device,
            "batch_size": detector.batch_size,
            "num_workers": detector.num_workers,
        }
        super().__init__(detector.model, detector.contract, **common, skip_bad_images=detector.skip_bad_images)
        self.precision = detector.precision

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        return self.detector.prepare_input(pixels)

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        return [IdentityResult(**vars(r)) for r in self.detector.predict_batch(items)]

    def skipped(self, item: InputImage) -> Result:
        return IdentityResult(source=item.source, size=(0, 0), names=self.names, error=item.error)

    def finish(self, result: Result, tracker: Any = None) -> Result:
        """Tracked (when a tracker is given), then each box embedded and, with a gallery, named."""
        result = cast(IdentityResult, super().finish(result, tracker))
        if not result.ok or not len(result.boxes):
            return result
        crops = [self.embedder.resize(crop_box(result.original, box, self.margin)) for box in result.boxes.tolist()]
        with self.embedder.network_mode():
            vectors = self.embedder.model(self.embedder.to_network(crops))
        result.embeddings = to_numpy(unit_rows(vectors))
        if self.gallery is not None:
            decided = [self.gallery.decide(m) for m in self.gallery.search(result.embeddings, 1)]
            result.identities = [identity for identity, _ in decided]
            result.distances = np.asarray([d if math.isfinite(d) else 2.0 for _, d in decided], np.float32)
        return result


def with_detector(
    embedder: Predictor,
    detector: str,
    gallery: str | None = None,
    threshold: float | None = None,
    margin: float = 0.2,
    **detector_options: Any,
) -> IdentityPredictor:
    """The embedding predictor behind a detection checkpoint's boxes (`visionkit-predict ... detector=det.ckpt`),
    naming them with a gallery folder when given (at its threshold, or `threshold`)."""
    from visionkit.errors import VisionkitError
    from visionkit.inference import load_task_predictor
    from visionkit.inference.gallery import Gallery

    if not isinstance(embedder, EmbeddingPredictor):
        raise VisionkitError(
            f"detector= embeds each detected box: ckpt_path must be an embedding checkpoint, not {embedder.task_name}"
        )
    boxes = cast(
        DetectionPredictor, load_task_predictor(detector, "detection", "detector", "a detector", **detector_options)
    )
    known = Gallery.load(gallery, "gallery") if gallery else None
    if known is not None and threshold is not None:
        known.threshold = float(threshold)
    return IdentityPredictor(embedder, boxes, known, margin)
