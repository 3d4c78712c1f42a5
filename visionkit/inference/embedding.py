"""Embedding inference: an L2-normalized identity vector per image, the distance of two of them against the
checkpoint's threshold, and `embeddings.npy` + `embeddings.csv` (the row of each source) for a run."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
from PIL import Image, ImageDraw

from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor, expand_inputs
from visionkit.inference.result import ImageInput, InputImage, Result
from visionkit.utils.arrays import to_numpy, unit_rows
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class EmbeddingResult(Result):
    """The identity features of one image: `embedding` (D,) float32, unit length (empty when skipped)."""

    task: ClassVar[str] = "embedding"
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def fields(self) -> dict[str, Any]:
        return {"embedding": [float(v) for v in self.embedding]}

    def plot(self) -> np.ndarray:
        """The image with its embedding drawn as a strip of cells under it (blue negative, red positive)."""
        image = Image.fromarray(self.original)
        width = image.width
        cells = self.embedding / max(float(np.abs(self.embedding).max()), 1e-12)
        strip_h = max(6, width // 16)
        canvas = Image.new("RGB", (width, image.height + strip_h), (255, 255, 255))
        canvas.paste(image, (0, 0))
        draw = ImageDraw.Draw(canvas)
        step = width / max(len(cells), 1)
        for i, v in enumerate(cells):
            colour = (255, int(255 * (1 - v)), int(255 * (1 - v))) if v >= 0 else (int(255 * (1 + v)),) * 2 + (255,)
            draw.rectangle([i * step, image.height, (i + 1) * step, image.height + strip_h], fill=colour)
        return np.asarray(canvas)

    def save(self, folder: str | os.PathLike[str], name: str | None = None, draw: bool = True) -> list[Path]:
        """Nothing per image: the run's embeddings go into one array (`write_summary`)."""
        return []


def write_embeddings(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """`embeddings.npy` (N, D float32, one row per readable input) and `embeddings.csv` (row, path, frame,
    time; skipped inputs listed with an empty row and their error)."""
    rows = [r for r in records if not r.get("skipped")]
    dim = len(rows[0]["embedding"]) if rows else 0
    array = np.asarray([r["embedding"] for r in rows], dtype=np.float32).reshape(len(rows), dim)
    npy, index = folder / "embeddings.npy", folder / "embeddings.csv"
    with atomic_write(npy) as handle:
        np.save(handle, array)
    with atomic_write(index, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "path", "frame", "time", "error"])
        row = 0
        for record in records:
            if record.get("skipped"):
                writer.writerow(["", record["path"], record.get("frame", ""), record.get("time", ""), record["error"]])
            else:
                writer.writerow([row, record["path"], record.get("frame", ""), record.get("time", ""), ""])
                row += 1
    return [npy, index]


class EmbeddingPredictor(Predictor):
    """Identity embeddings per image from an EmbeddingTask checkpoint; `threshold` is the cosine distance the
    checkpoint's validation set gave for its false accept rate (`task.far`): below it, two images are judged
    the same identity (`verify`)."""

    task_name = "embedding"
    default_size = 112

    def __init__(self, model: Any, contract: Any, **common: Any) -> None:
        threshold = getattr(model, "threshold", None)
        self.threshold = float(threshold) if threshold is not None else math.nan
        far = model.hparams.get("far") if hasattr(model, "hparams") else None
        self.far = float(far) if far is not None else None
        super().__init__(model, contract, **common)

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        return self.resize(pixels)

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        vectors = to_numpy(unit_rows(self.model(self.to_network(self.resized(items)))))
        return [EmbeddingResult(**self.common(i), embedding=v) for i, v in zip(items, vectors)]

    def skipped(self, item: InputImage) -> Result:
        return EmbeddingResult(source=item.source, size=(0, 0), names=self.names, error=item.error)

    def embed(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """(N, D) float32 unit embeddings of the inputs, a row each: the first unreadable input stops with its own
        error, whatever `skip_bad_images` says (a skipped row would shift the rows after it)."""
        inputs = list(enumerate(expand_inputs(images)))
        if not inputs:
            raise VisionkitError("embed: no images given")
        vectors = []
        for start in range(0, len(inputs), self.batch_size):
            items = self._read(inputs[start : start + self.batch_size])
            bad = next((item for item in items if item.error is not None), None)
            if bad is not None:
                raise VisionkitError(str(bad.error))
            vectors += [cast(EmbeddingResult, r).embedding for r in self._predicted(items)[1]]
        return np.stack(vectors)

    def verify(self, a: ImageInput, b: ImageInput, threshold: float | None = None) -> dict[str, Any]:
        """Whether two images show the same identity: {"same", "distance" (1 − cos), "threshold"}."""
        first, second = self.embed([a, b])
        distance = float(max(0.0, 1.0 - float(first @ second)))
        limit = self.threshold if threshold is None else float(threshold)
        if math.isnan(limit):
            log.warning("the checkpoint stores no threshold (it never validated): pass threshold=")
        return {"same": bool(distance <= limit), "distance": distance, "threshold": limit}

    def write_summary(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        return write_embeddings(records, folder)
