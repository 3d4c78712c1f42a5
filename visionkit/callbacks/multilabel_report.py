"""What a multi-label test leaves to look at: per class its average precision, the threshold chosen on validation
and the precision / recall / F1 there, and the precision-recall curves (torchmetrics, every rank's predictions)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torchmetrics.functional.classification as tmf
from matplotlib.figure import Figure
from torchmetrics.aggregation import CatMetric

from visionkit.callbacks.figures import publish
from visionkit.tasks.base import class_names_of
from visionkit.tasks.multilabel import decision_counts
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


def per_class_scores(probs: torch.Tensor, target: torch.Tensor, thresholds: torch.Tensor) -> dict[str, np.ndarray]:
    """Per class: support, average precision (NaN without positives), and precision, recall, F1 at `thresholds`."""
    classes = probs.shape[1]
    target = target.long()
    ap = tmf.multilabel_average_precision(probs, target, classes, average=None).double().numpy()
    tp, fp, fn = (count.double() for count in decision_counts(probs >= thresholds, target))
    support = tp + fn
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    ap[(support == 0).numpy()] = np.nan
    return {
        "support": support.numpy(),
        "average_precision": ap,
        "threshold": thresholds.double().numpy(),
        "precision": precision.numpy(),
        "recall": recall.numpy(),
        "f1": f1.numpy(),
    }


def _pr_figure(probs: torch.Tensor, target: torch.Tensor, names: list[str], scores: dict[str, np.ndarray]) -> Figure:
    precision, recall, _ = tmf.multilabel_precision_recall_curve(probs, target.long(), len(names))
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for k, name in enumerate(names):
        ap = scores["average_precision"][k]
        line = ax.plot(recall[k], precision[k], linewidth=1.2, label=f"{name} {ap:.3f}" if not np.isnan(ap) else name)
        at = scores["recall"][k], scores["precision"][k]
        ax.plot(*at, "o", color=line[0].get_color(), markersize=5)  # where the chosen threshold operates
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"precision-recall per class (mAP {np.nanmean(scores['average_precision']):.3f}; dots: thresholds)",
    )
    ax.grid(alpha=0.3)
    if len(names) <= 20:
        ax.legend(fontsize=7, title="AP", loc="lower left")
    return fig


class MultiLabelReport(L.Callback):
    """At test time: gather every rank's probabilities and flags; write `tables/per_class.csv` (support, AP,
    threshold, precision, recall, F1) and `plots/pr.png`, also sent to the loggers; report.html shows both."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.scores: dict[str, np.ndarray] | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probs, self.target = CatMetric().to(pl_module.device), CatMetric().to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "probs" in outputs:
            self.probs.update(outputs["probs"])
            self.target.update(outputs["target"].float())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.probs.update_count:
            return
        classes = int(pl_module.hparams["num_classes"])
        probs = self.probs.compute().reshape(-1, classes).float().cpu()
        target = self.target.compute().reshape(-1, classes).cpu()
        if not trainer.is_global_zero:
            return
        names = class_names_of(pl_module, classes)
        thresholds = cast(torch.Tensor, pl_module.thresholds).detach().float().cpu()  # a MultiLabelTask's buffer
        self.scores = scores = per_class_scores(probs, target, thresholds)
        absent = [names[k] for k in np.flatnonzero(np.asarray(scores["support"]) == 0)]
        if absent:
            log.info(f"no test image tagged {', '.join(absent)}: average precision left out (NaN)")
        root = Path(self.dirpath or trainer.default_root_dir)
        (root / "tables").mkdir(parents=True, exist_ok=True)
        with atomic_write(root / "tables" / "per_class.csv", "w") as handle:
            writer = csv.writer(handle)
            columns = ["support", "average_precision", "threshold", "precision", "recall", "f1"]
            writer.writerow(["class_id", "class", *columns])
            for k, name in enumerate(names):
                values = [scores[c][k] for c in columns]
                writer.writerow([k, name, int(values[0]), *("" if np.isnan(v) else f"{v:.6f}" for v in values[1:])])
        publish(trainer, "test/pr", _pr_figure(probs, target, names, scores), root / "plots" / "pr.png")
