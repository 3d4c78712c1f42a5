"""What a segmenter's test leaves to look at: per-class IoU and Dice as bars, the pixel confusion matrix
(row-normalized) and the test images with the lowest IoU as image | truth | prediction rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from visionkit.callbacks.confusion_matrix import write_confusion_csv
from visionkit.callbacks.figures import publish, shown_images
from visionkit.tasks.base import class_names_of
from visionkit.utils.viz import (
    confusion_matrix_figure,
    segmentation_grid_figure,
)

WORST = 6


def image_ious(preds: torch.Tensor, masks: torch.Tensor, classes: int, ignore_index: int | None) -> torch.Tensor:
    """Each image's mean IoU over the classes in its truth or prediction (ignored pixels left out)."""
    ious = []
    for pred, mask in zip(preds.long(), masks.long()):
        valid = mask != ignore_index if ignore_index is not None else torch.ones_like(mask, dtype=torch.bool)
        pairs = torch.bincount(mask[valid] * classes + pred[valid], minlength=classes * classes)
        confusion = pairs.reshape(classes, classes).double()
        hits = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - hits
        ious.append((hits[union > 0] / union[union > 0]).mean() if (union > 0).any() else torch.tensor(1.0))
    return torch.stack(ious).float()


def class_scores_figure(names: list[str], iou: np.ndarray, dice: np.ndarray) -> Figure:
    """Per-class IoU and Dice side by side; a class absent from truth and prediction is marked, not drawn."""
    fig = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    ax.bar(x - 0.2, np.nan_to_num(iou), width=0.4, label="IoU")
    ax.bar(x + 0.2, np.nan_to_num(dice), width=0.4, label="Dice")
    labels = [f"{n}\n(absent)" if np.isnan(v) else n for n, v in zip(names, iou)]
    ax.set(xticks=x, ylim=(0, 1.05), ylabel="score", title=f"test per class (mIoU {np.nanmean(iou):.3f})")
    ax.set_xticklabels(labels, rotation=45 if len(names) > 8 else 0, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


class SegmentationReport(L.Callback):
    """Keeps the `WORST` test images by IoU (rank 0's) and, when the test ends, draws `plots/per_class.png`,
    `plots/confusion_matrix.png` (+ `tables/confusion_matrix.csv`) and `plots/lowest_iou.png` from the task's
    synced test confusion matrix."""

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.worst: list[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        hp = pl_module.hparams
        ious = image_ious(outputs["preds"], outputs["mask"], int(hp["num_classes"]), hp["ignore_index"])
        for i, iou in enumerate(ious.tolist()):
            self.worst.append((iou, batch["image"][i].cpu(), outputs["mask"][i].cpu(), outputs["preds"][i].cpu()))
        self.worst = sorted(self.worst, key=lambda item: item[0])[:WORST]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        confusion = getattr(pl_module, "last_confusion", None)
        scores = getattr(pl_module, "last_scores", None)
        if not trainer.is_global_zero or confusion is None or scores is None or not trainer.default_root_dir:
            return
        root = Path(trainer.default_root_dir)
        names = class_names_of(pl_module, int(pl_module.hparams["num_classes"]))
        counts = confusion.cpu().numpy()
        write_confusion_csv(counts, names, root / "tables" / "confusion_matrix.csv")
        accuracy = float(np.trace(counts) / max(counts.sum(), 1))
        figures = {
            "per_class": class_scores_figure(names, scores["iou"].cpu().numpy(), scores["dice"].cpu().numpy()),
            "confusion_matrix": confusion_matrix_figure(counts, names, f"test pixels (accuracy {accuracy:.3f})"),
        }
        if self.worst:
            images = shown_images(trainer, torch.stack([w[1] for w in self.worst]))
            figures["lowest_iou"] = segmentation_grid_figure(
                images,
                [w[2].numpy() for w in self.worst],
                [w[3].numpy() for w in self.worst],
                names,
                "lowest IoU: " + ", ".join(f"{w[0]:.2f}" for w in self.worst),
                pl_module.hparams["ignore_index"],
            )
        for name, fig in figures.items():
            publish(trainer, f"test/{name}", fig, root / "plots" / f"{name}.png")
