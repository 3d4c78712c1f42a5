"""Confusion matrix at test time: counted on every rank, summed across ranks, drawn by rank 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassConfusionMatrix

from visionkit.callbacks.figures import publish
from visionkit.tasks.base import class_names_of
from visionkit.utils.io import atomic_write
from visionkit.utils.viz import confusion_matrix_figure


def write_confusion_csv(counts: np.ndarray, names: list, path: Path) -> Path:
    """A confusion matrix as CSV: a row per true class, a column per predicted class, counts in the cells."""
    with atomic_write(path, "w") as handle:
        handle.write("true\\predicted," + ",".join(map(str, names)) + "\n")
        for name, row in zip(names, counts):
            handle.write(f"{name}," + ",".join(str(int(v)) for v in row) + "\n")
    return path


class ConfusionMatrixPlot(Callback):
    """Collect `preds`/`target` from `test_step` outputs; write `confusion_matrix.png` and `.csv`.

    dirpath: where to write (default: `<trainer.default_root_dir>/plots`). Works with any logger; the
    picture is also sent to loggers that accept figures.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.matrix: MulticlassConfusionMatrix | None = None
        self.last_path: Path | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        num_classes = int(pl_module.hparams["num_classes"])
        self.matrix = MulticlassConfusionMatrix(num_classes).to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.matrix is not None and isinstance(outputs, dict) and "preds" in outputs:
            self.matrix.update(outputs["preds"], outputs["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.matrix is None or trainer.sanity_checking:
            return
        counts = self.matrix.compute().cpu().numpy()  # all-reduced across ranks
        self.matrix = None
        if not trainer.is_global_zero:
            return
        names = class_names_of(pl_module, len(counts))
        out_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        accuracy = np.trace(counts) / max(counts.sum(), 1)
        fig = confusion_matrix_figure(counts, names, f"test confusion matrix (accuracy {accuracy:.3f})")
        self.last_path = publish(trainer, "test/confusion_matrix", fig, out_dir / "confusion_matrix.png")
        write_confusion_csv(counts, names, out_dir / "confusion_matrix.csv")
