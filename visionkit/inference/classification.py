"""Classification inference: class probabilities per image, the top-k, a labelled picture, and the CSV/JSON
tables visionkit-predict writes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from visionkit.inference.base import Predictor
from visionkit.inference.outputs import scored_picture, write_records
from visionkit.inference.result import InputImage, Result
from visionkit.utils.arrays import softmax, to_numpy
from visionkit.utils.io import atomic_write


@dataclass
class ClassificationResult(Result):
    """Class probabilities of one image: `probs` (C,) in class-id order; `top_k(k)` ranks them."""

    task: ClassVar[str] = "classification"
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    k: int = 5  # how many ranked classes `to_dict` lists

    def top_k(self, k: int = 5) -> list[tuple[str, float]]:
        """The `k` most probable classes as (name, probability), most probable first."""
        order = np.argsort(-self.probs, kind="stable")[: max(1, k)]
        return [(self.names[i], float(self.probs[i])) for i in order]

    @property
    def label(self) -> str | None:
        """The most probable class (None when the input was skipped)."""
        return self.top_k(1)[0][0] if self.ok and len(self.probs) else None

    @property
    def confidence(self) -> float | None:
        """The probability of `label`."""
        return self.top_k(1)[0][1] if self.ok and len(self.probs) else None

    def fields(self) -> dict[str, Any]:
        ranked = [[name, round(p, 6)] for name, p in self.top_k(self.k)] if self.ok else []
        return {"label": self.label, "confidence": ranked[0][1] if ranked else None, "top_k": ranked}

    def plot(self, k: int = 3) -> np.ndarray:
        """The image with its top-k classes and probabilities written in the top-left corner."""
        return scored_picture(self.original, self.top_k(k))


def write_tables(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """`predictions.csv` (path,label,confidence,top_k as label:prob;...) and `predictions.json`."""
    path = folder / "predictions.csv"
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence", "top_k"])
        for row in records:
            ranked = ";".join(f"{label}:{prob:.4f}" for label, prob in row["top_k"])
            label = row["label"] if row["label"] is not None else "SKIPPED (unreadable)"
            writer.writerow([row["path"], label, row["confidence"] if row["confidence"] is not None else "", ranked])
    return [path, write_records(records, folder)]


class ClassificationPredictor(Predictor):
    """Class probabilities per image from a ClassificationTask checkpoint (or any network returning logits).

    top_k: how many ranked classes each result's `to_dict()` lists.
    """

    task_name = "classification"

    def __init__(self, model: Any, contract: Any, *, top_k: int = 5, **common: Any) -> None:
        self.top_k = max(1, min(int(top_k), len(contract.class_names)))
        super().__init__(model, contract, **common)

    def probabilities(self, images: Any) -> Any:
        """(B, C) softmax probabilities of normalized network inputs (a tensor, or NumPy's for an exported file)."""
        return softmax(self.model(images), axis=1)

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        return self.resize(pixels)

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        probs = to_numpy(self.probabilities(self.to_network(self.resized(items))))
        return [ClassificationResult(**self.common(i), probs=p, k=self.top_k) for i, p in zip(items, probs)]

    def skipped(self, item: InputImage) -> Result:
        return ClassificationResult(source=item.source, size=(0, 0), names=self.names, error=item.error, k=self.top_k)

    def write_summary(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        return write_tables(records, folder)
