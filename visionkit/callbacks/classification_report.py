"""What a classifier's test leaves to look at: per-class precision/recall/F1/support, one-vs-rest ROC and
precision-recall curves with AUC / average precision, a reliability diagram with the expected calibration error,
and the most confident mistakes, computed by torchmetrics on the test predictions of every rank."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchmetrics.functional.classification as tmf
from matplotlib.figure import Figure
from torchmetrics.aggregation import CatMetric

from visionkit.callbacks.figures import publish, shown_images
from visionkit.tasks.base import class_names_of
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger
from visionkit.utils.viz import labelled_grid_figure

log = get_logger(__name__)

CALIBRATION_BINS = 15
MISTAKES = 16


@dataclass
class ClassificationScores:
    """Per class (index = class id): precision, recall, F1, support, ROC AUC, average precision (NaN for a
    class absent from the targets), the curves, and the reliability bins with the ECE."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    roc_auc: np.ndarray
    average_precision: np.ndarray
    roc: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per class (fpr, tpr, thresholds)
    pr: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per class (precision, recall, thresholds)
    bins: np.ndarray  # (bins, 5): low, high, count, mean confidence, accuracy
    ece: float


def score_classification(probs: torch.Tensor, target: torch.Tensor) -> ClassificationScores:
    """The scores of (N, C) class probabilities against (N,) class ids; precision/recall/F1 as scikit-learn's
    `classification_report` defines them (0 where undefined), ECE as torchmetrics' l1 calibration error."""
    probs, target = probs.float().cpu(), target.long().cpu()
    classes = probs.shape[1]
    stats = tmf.multiclass_stat_scores(probs, target, classes, average=None).double()  # tp, fp, tn, fn, support
    tp, fp, support = stats[:, 0], stats[:, 1], stats[:, 4]
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    present = (support > 0).numpy()
    auc = tmf.multiclass_auroc(probs, target, classes, average=None).double().numpy()
    ap = tmf.multiclass_average_precision(probs, target, classes, average=None).double().numpy()
    fpr, tpr, roc_thresholds = tmf.multiclass_roc(probs, target, classes)
    pr_precision, pr_recall, pr_thresholds = tmf.multiclass_precision_recall_curve(probs, target, classes)
    confidence, predicted = probs.max(1)
    correct = (predicted == target).double()
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    index = np.clip(np.searchsorted(edges, confidence.numpy(), side="left") - 1, 0, CALIBRATION_BINS - 1)
    bins = np.zeros((CALIBRATION_BINS, 5))
    for b in range(CALIBRATION_BINS):
        chosen = index == b
        bins[b] = [
            edges[b],
            edges[b + 1],
            chosen.sum(),
            *(
                (confidence.numpy()[chosen].mean(), correct.numpy()[chosen].mean())
                if chosen.any()
                else (np.nan, np.nan)
            ),
        ]
    ece = float(tmf.multiclass_calibration_error(probs, target, classes, n_bins=CALIBRATION_BINS, norm="l1"))
    return ClassificationScores(
        precision=precision.numpy(),
        recall=recall.numpy(),
        f1=f1.numpy(),
        support=support.numpy().astype(np.int64),
        roc_auc=np.where(present, auc, np.nan),
        average_precision=np.where(present, ap, np.nan),
        roc=[(f.numpy(), t.numpy(), th.numpy()) for f, t, th in zip(fpr, tpr, roc_thresholds)],
        pr=[(p.numpy(), r.numpy(), th.numpy()) for p, r, th in zip(pr_precision, pr_recall, pr_thresholds)],
        bins=bins,
        ece=ece,
    )


def _curves_figure(
    curves: list[tuple[np.ndarray, np.ndarray]], names: list[str], values: np.ndarray, kind: str
) -> Figure:
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for (x, y), name, value in zip(curves, names, values):
        label = f"{name} (absent)" if np.isnan(value) else f"{name} {value:.3f}"
        ax.plot(x, y, linewidth=1.2, label=label)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"ROC, one vs rest (mean AUC {np.nanmean(values):.3f})",
        )
    else:
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title=f"precision-recall, one vs rest (mean AP {np.nanmean(values):.3f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if len(names) <= 20:
        ax.legend(
            fontsize=7, title="AUC" if kind == "roc" else "AP", loc="lower right" if kind == "roc" else "lower left"
        )
    return fig


def _reliability_figure(bins: np.ndarray, ece: float) -> Figure:
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    filled = bins[:, 2] > 0
    centres, width = (bins[:, 0] + bins[:, 1]) / 2, bins[0, 1] - bins[0, 0]
    ax.bar(centres[filled], bins[filled, 4], width=width * 0.95, color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (top class)",
        ylabel="accuracy",
        title=f"reliability (ECE {ece:.3f}, {CALIBRATION_BINS} bins)",
    )
    ax.legend(loc="upper left", fontsize=8)
    return fig


def write_scores(scores: ClassificationScores, names: list[str], tables: Path) -> None:
    """tables/per_class.csv, roc_curve.csv, pr_curve.csv and reliability.csv: the numbers behind the plots."""
    with atomic_write(tables / "per_class.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "class", "precision", "recall", "f1", "support", "roc_auc", "average_precision"])
        for i, name in enumerate(names):
            auc, ap = scores.roc_auc[i], scores.average_precision[i]
            writer.writerow(
                [
                    i,
                    name,
                    f"{scores.precision[i]:.6f}",
                    f"{scores.recall[i]:.6f}",
                    f"{scores.f1[i]:.6f}",
                    scores.support[i],
                    "" if np.isnan(auc) else f"{auc:.6f}",
                    "" if np.isnan(ap) else f"{ap:.6f}",
                ]
            )
    for file, curves, header in (
        ("roc_curve.csv", scores.roc, ["class", "fpr", "tpr", "threshold"]),
        ("pr_curve.csv", scores.pr, ["class", "precision", "recall", "threshold"]),
    ):
        with atomic_write(tables / file, "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for name, (a, b, thresholds) in zip(names, curves):
                padded = np.concatenate([thresholds, [np.nan] * (len(a) - len(thresholds))])
                writer.writerows([name, f"{x:.6f}", f"{y:.6f}", f"{t:.6f}"] for x, y, t in zip(a, b, padded))
    with atomic_write(tables / "reliability.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["bin_low", "bin_high", "count", "confidence", "accuracy"])
        writer.writerows([f"{v:.6f}" if k != 2 else int(v) for k, v in enumerate(row)] for row in scores.bins)


class ClassificationReport(L.Callback):
    """At test time: collect every rank's probabilities and labels (torchmetrics' synced CatMetric) and the most
    confident mistakes of rank 0; then write the tables under `<run>/tables/` and the plots under
    `<run>/plots/` (roc.png, pr.png, reliability.png, confident_mistakes.png), also sent to the loggers."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.scores: ClassificationScores | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probs, self.target = CatMetric().to(pl_module.device), CatMetric().to(pl_module.device)
        self.mistakes: list[tuple[float, torch.Tensor, int, int]] = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        probs, target = outputs["probs"], outputs["target"]
        self.probs.update(probs)
        self.target.update(target.float())
        confidence, predicted = probs.max(1)
        for i in torch.nonzero(predicted != target).flatten().tolist():
            self.mistakes.append(
                (float(confidence[i]), batch["image"][i].detach().cpu(), int(predicted[i]), int(target[i]))
            )
        self.mistakes = sorted(self.mistakes, key=lambda m: -m[0])[:MISTAKES]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.probs.update_count:
            return
        classes = int(pl_module.hparams["num_classes"])
        probs = self.probs.compute().reshape(-1, classes)  # gathered from every rank
        target = self.target.compute().reshape(-1).long()
        if not trainer.is_global_zero:
            return
        names = class_names_of(pl_module, classes)
        self.scores = scores = score_classification(probs, target)
        absent = [names[i] for i in np.flatnonzero(scores.support == 0)]
        if absent:
            log.info(f"no test image of {', '.join(absent)}: recall, ROC AUC and AP left out (NaN)")
        root = Path(self.dirpath or trainer.default_root_dir)
        write_scores(scores, names, root / "tables")
        figures = {
            "roc": _curves_figure([(f, t) for f, t, _ in scores.roc], names, scores.roc_auc, "roc"),
            "pr": _curves_figure([(r, p) for p, r, _ in scores.pr], names, scores.average_precision, "pr"),
            "reliability": _reliability_figure(scores.bins, scores.ece),
        }
        if self.mistakes:
            images = shown_images(trainer, torch.stack([m[1] for m in self.mistakes]))
            titles = [f"{names[p]} {c:.2f} / {names[t]}" for c, _, p, t in self.mistakes]
            figures["confident_mistakes"] = labelled_grid_figure(
                images, titles, [False] * len(titles), "most confident mistakes (prediction confidence / truth)"
            )
        for name, fig in figures.items():
            publish(trainer, f"test/{name}", fig, root / "plots" / f"{name}.png")
