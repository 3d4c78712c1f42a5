"""Multi-label inference: a probability per class, the set of labels at or above each class's threshold (chosen on
validation and stored in the checkpoint), a labelled picture, and the CSV/JSON tables visionkit-predict writes."""

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
from visionkit.utils.arrays import sigmoid, to_numpy
from visionkit.utils.io import atomic_write


@dataclass
class MultiLabelResult(Result):
    """Per-class probabilities of one image (`probs`, class-id order) and the thresholds that decide its labels."""

    task: ClassVar[str] = "multilabel"
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    @property
    def labels(self) -> list[tuple[str, float]]:
        """The labels whose probability reaches their class's threshold, as (name, probability), most probable
        first."""
        if not self.ok:
            return []
        chosen = np.flatnonzero(self.probs >= self.thresholds)
        return [(self.names[i], float(self.probs[i])) for i in chosen[np.argsort(-self.probs[chosen], kind="stable")]]

    def fields(self) -> dict[str, Any]:
        return {
            "labels": [[name, round(p, 6)] for name, p in self.labels],
            "scores": {name: round(float(p), 6) for name, p in zip(self.names, self.probs)} if self.ok else {},
        }

    def plot(self) -> np.ndarray:
        """The image with its labels and probabilities written in the top-left corner."""
        return scored_picture(self.original, self.labels or [("(no label)", float(self.probs.max(initial=0.0)))])


def write_tables(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """`predictions.csv` (path, labels as label:prob;...) and `predictions.json`."""
    path = folder / "predictions.csv"
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels"])
        for row in records:
            shown = ";".join(f"{label}:{prob:.4f}" for label, prob in row["labels"])
            writer.writerow([row["path"], shown if row.get("error") is None else "SKIPPED (unreadable)"])
    return [path, write_records(records, folder)]


class MultiLabelPredictor(Predictor):
    """Per-class probabilities and label sets from a MultiLabelTask checkpoint.

    thresholds: one probability (every class) or one per class instead of the checkpoint's.
    """

    task_name = "multilabel"

    def __init__(
        self, model: Any, contract: Any, *, thresholds: float | Sequence[float] | None = None, **common: Any
    ) -> None:
        stored = getattr(model, "thresholds", None)
        classes = len(contract.class_names)
        chosen = to_numpy(stored) if stored is not None else np.full(classes, 0.5)
        if thresholds is not None:
            chosen = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (classes,))
        self.thresholds = np.asarray(chosen, dtype=np.float32).copy()
        super().__init__(model, contract, **common)

    def probabilities(self, images: Any) -> Any:
        """(B, C) per-class sigmoid probabilities of normalized network inputs (each compared with its threshold)."""
        return sigmoid(self.model(images))

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        return self.resize(pixels)

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        probs = to_numpy(self.probabilities(self.to_network(self.resized(items))))
        return [MultiLabelResult(**self.common(i), probs=p, thresholds=self.thresholds) for i, p in zip(items, probs)]

    def skipped(self, item: InputImage) -> Result:
        return MultiLabelResult(source=item.source, size=(0, 0), names=self.names, error=item.error)

    def write_summary(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        return write_tables(records, folder)
