"""What a detector's test leaves to look at: the precision-recall curve per class at IoU 0.5, precision / recall /
F1 against confidence with the best-F1 threshold (the `conf` to predict with), the detection confusion matrix
with a background row and column, and a per-class table of images, instances, P, R, AP50 and AP50-95.

Each number comes from the library that defines it: AP from COCO's evaluation (faster-coco-eval, the same as the
logged test mAP), the confidence curves and P/R at the best F1 from ultralytics' `ap_per_class`, the confusion
matrix from ultralytics' `ConfusionMatrix`; this file matches detections to truths and draws."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.aggregation import CatMetric

from visionkit.callbacks.confusion_matrix import write_confusion_csv
from visionkit.callbacks.figures import publish
from visionkit.data.sources.annotations import ignored_class
from visionkit.tasks.base import class_names_of
from visionkit.utils.io import atomic_write
from visionkit.utils.viz import confusion_matrix_figure

log = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's, in float64 as pycocotools has them
RECALL_POINTS = np.linspace(0, 1, 101)
CONFUSION_CONF = 0.25  # ultralytics' validator: detections above this enter the confusion matrix ...
CONFUSION_IOU = 0.45  # ... and match a truth above this IoU


@dataclass
class DetectionScores:
    """Per class (index = class id; NaN where the class has no test instance): images and instances holding it,
    precision / recall / F1 at the best-F1 confidence, COCO AP at the ten IoU thresholds; the curves behind
    the plots; the (classes + 1)² confusion matrix, a row per true class and a column per predicted class, the
    last of each being the background."""

    images: np.ndarray
    instances: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    ap: np.ndarray  # (classes, 10): AP at IoU 0.50, 0.55, ..., 0.95
    best_conf: float
    best_f1: float
    recall_points: np.ndarray  # (101,): COCO's recall thresholds
    pr_precision: np.ndarray  # (classes, 101): interpolated precision at IoU 0.5
    confidence: np.ndarray  # (1000,)
    p_curve: np.ndarray  # (classes, 1000): precision, recall and F1 against confidence at IoU 0.5
    r_curve: np.ndarray
    f1_curve: np.ndarray
    confusion: np.ndarray
    test_images: int

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, 0]

    @property
    def ap50_95(self) -> np.ndarray:
        return self.ap.mean(1)


def match_detections(pred_cls: torch.Tensor, true_cls: torch.Tensor, iou: torch.Tensor | None) -> np.ndarray:
    """(N, 10) booleans: is each detection (in descending confidence) a true positive at each IoU threshold?
    Each detection claims the best unclaimed truth of its class, as ultralytics' validator and COCO match."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), dtype=bool)
    if iou is None or not len(pred_cls) or not len(true_cls):
        return correct
    overlap = (iou * (true_cls[:, None] == pred_cls[None, :])).cpu().numpy()  # truths x detections
    claimed = np.zeros((overlap.shape[0], len(IOU_THRESHOLDS)), dtype=bool)
    columns = np.arange(len(IOU_THRESHOLDS))
    for j in np.flatnonzero((overlap >= IOU_THRESHOLDS[0]).any(0)):
        available = np.where(claimed, 0.0, overlap[:, j, None])
        best = available.argmax(0)
        correct[j] = available[best, columns] >= IOU_THRESHOLDS
        claimed[best, columns] |= correct[j]
    return correct


def _coco_precision(
    detections: list[np.ndarray], truths: list[np.ndarray], num_classes: int, max_det: int
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's (faster-coco-eval) per-class AP at the ten IoU thresholds, NaN for a class without truths, and
    its interpolated precision at IoU 0.5 on the 101 recall points."""
    from faster_coco_eval import COCO, COCOeval_faster

    def xywh(box: np.ndarray) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for image_id, (found, truth) in enumerate(zip(detections, truths)):
        for row in truth:
            w, h = float(row[3] - row[1]), float(row[4] - row[2])
            ignored = row[0] < 0  # VOC's difficult boxes: COCO's crowd regions, neither hits nor misses
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(ignored_class(row[0]) if ignored else row[0]),
                    "bbox": xywh(row[1:5]),
                    "area": w * h,
                    "iscrowd": int(ignored),
                }
            )
        for row in found:
            results.append(
                {
                    "id": len(results) + 1,
                    "image_id": image_id,
                    "category_id": int(row[5]),
                    "bbox": xywh(row[:4]),
                    "score": float(row[4]),
                    "area": float((row[2] - row[0]) * (row[3] - row[1])),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": str(c)} for c in range(num_classes)]
    images = [{"id": i} for i in range(len(truths))]
    ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    curve = np.full((num_classes, 101), np.nan)
    if not annotations:
        return ap, curve
    with contextlib.redirect_stdout(io.StringIO()):
        truth_set = COCO({"images": images, "annotations": annotations, "categories": categories})
        found_set = COCO({"images": images, "annotations": results, "categories": categories})
        evaluation = COCOeval_faster(truth_set, found_set, iouType="bbox")
        evaluation.params.maxDets = [1, 10, max_det]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = np.asarray(evaluation.eval["precision"])[:, :, :, 0, -1]  # (iou, recall, class) at all areas
    for k, class_id in enumerate(evaluation.params.catIds):
        values = precision[:, :, k]
        if (values > -1).any():
            ap[class_id] = [row[row > -1].mean() if (row > -1).any() else np.nan for row in values]
            curve[class_id] = np.where(values[0] > -1, values[0], 0.0)
    return ap, curve


def without_ignored(found: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections and truths without its ignored truths (negative classes: VOC's `difficult`) and
    the detections on them (IoU ≥ `iou` with an ignored box of their class), as VOC's evaluation leaves both out."""
    ignored = truth[:, 0] < 0
    if not ignored.any():
        return found, truth
    from torchvision.ops import box_iou

    overlap = box_iou(torch.as_tensor(found[:, :4]).float(), torch.as_tensor(truth[ignored, 1:5]).float()).numpy()
    same_class = found[:, 5][:, None] == ignored_class(truth[ignored, 0])[None, :]
    on_ignored = ((overlap >= iou) & same_class).any(1) if len(found) else np.zeros(0, dtype=bool)
    return found[~on_ignored], truth[~ignored]


def score_detection(
    detections: list[np.ndarray], truths: list[np.ndarray], num_classes: int, max_det: int = 300
) -> DetectionScores:
    """Score per-image detections ((K, 6): x1 y1 x2 y2 score class, pixels) against truths ((M, 5): class x1 y1
    x2 y2) over the whole test set."""
    from ultralytics.utils.metrics import ConfusionMatrix, ap_per_class, box_iou, smooth

    matrix = ConfusionMatrix(names={c: str(c) for c in range(num_classes)}, task="detect")
    tps, confs, pred_classes, true_classes = [], [], [], []
    images = np.zeros(num_classes, dtype=np.int64)
    for found, truth in zip(detections, truths):
        found, truth = without_ignored(found, truth)
        found = found[np.argsort(-found[:, 4], kind="stable")]
        boxes, true_cls = torch.as_tensor(truth[:, 1:5]).float(), torch.as_tensor(truth[:, 0]).long()
        found_boxes, pred_cls = torch.as_tensor(found[:, :4]).float(), torch.as_tensor(found[:, 5]).long()
        iou = box_iou(boxes, found_boxes) if len(truth) and len(found) else None
        tps.append(match_detections(pred_cls, true_cls, iou))
        confs.append(found[:, 4])
        pred_classes.append(found[:, 5])
        true_classes.append(truth[:, 0])
        images[np.unique(truth[:, 0]).astype(np.int64)] += 1
        matrix.process_batch(
            {"bboxes": found_boxes, "conf": torch.as_tensor(found[:, 4]), "cls": pred_cls},
            {"bboxes": boxes, "cls": true_cls},
            conf=CONFUSION_CONF,
            iou_thres=CONFUSION_IOU,
        )
    target_cls = np.concatenate(true_classes) if true_classes else np.zeros(0)
    instances = np.bincount(target_cls.astype(np.int64), minlength=num_classes)
    curves = ap_per_class(
        np.concatenate(tps) if tps else np.zeros((0, 10), bool),
        np.concatenate(confs) if confs else np.zeros(0),
        np.concatenate(pred_classes) if pred_classes else np.zeros(0),
        target_cls,
    )
    _, _, p, r, f1, _, present, p_curve, r_curve, f1_curve, x, _ = curves
    best = int(smooth(f1_curve.mean(0), 0.1).argmax()) if len(present) else 0

    def per_class(values: np.ndarray) -> np.ndarray:  # ultralytics keeps a row per class with truths
        out = np.full((num_classes, *np.shape(values)[1:]), np.nan)
        out[present] = values[: len(present)]
        return out

    ap, pr_precision = _coco_precision(detections, truths, num_classes, max_det)
    absent = instances == 0
    ap[absent], pr_precision[absent] = np.nan, np.nan
    return DetectionScores(
        images=images,
        instances=instances,
        precision=per_class(p),
        recall=per_class(r),
        f1=per_class(f1),
        ap=ap,
        best_conf=float(x[best]),
        best_f1=float(f1_curve.mean(0)[best]) if len(present) else 0.0,
        recall_points=RECALL_POINTS,
        pr_precision=pr_precision,
        confidence=x,
        p_curve=per_class(p_curve),
        r_curve=per_class(r_curve),
        f1_curve=per_class(f1_curve),
        confusion=matrix.matrix.T.astype(np.int64),  # ultralytics: a row per prediction; here a row per truth
        test_images=len(truths),
    )


def _mean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if len(present) else float("nan")


def _legend_label(name: str, value: float) -> str:
    return f"{name} (absent)" if np.isnan(value) else f"{name} {value:.3f}"


def pr_figure(scores: DetectionScores, names: list[str]) -> Figure:
    """COCO's interpolated precision against recall at IoU 0.5, a thin line per class and their mean."""
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    many = len(names) > 20
    for curve, name, value in zip(scores.pr_precision, names, scores.ap50):
        ax.plot(scores.recall_points, curve, linewidth=0.8 if many else 1.2, label=_legend_label(name, value))
    mean = np.nanmean(scores.pr_precision, 0) if np.isfinite(scores.pr_precision).any() else None
    if mean is not None:
        ax.plot(scores.recall_points, mean, color="black", linewidth=2.5, label=f"all classes {_mean(scores.ap50):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"precision-recall at IoU 0.5 (mAP50 {_mean(scores.ap50):.3f})")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if many:  # the mean alone; the table lists every class
        handles, labels = handles[-1:], labels[-1:]
    ax.legend(handles, labels, fontsize=7, title="AP50", loc="lower left")
    return fig


def confidence_figure(scores: DetectionScores, names: list[str]) -> Figure:
    """Precision, recall and F1 against the confidence threshold at IoU 0.5, per class and for the mean, with
    the best-F1 threshold marked."""
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, curves, label in zip(
        axes, (scores.p_curve, scores.r_curve, scores.f1_curve), ("precision", "recall", "F1")
    ):
        for curve, name in zip(curves, names):
            if np.isfinite(curve).all():
                ax.plot(scores.confidence, curve, linewidth=0.8, alpha=0.7, label=name if len(names) <= 20 else None)
        if np.isfinite(curves).any():
            mean = np.nanmean(curves, 0)
            ax.plot(scores.confidence, mean, color="black", linewidth=2.5, label="all classes")
        ax.axvline(scores.best_conf, color="tab:red", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold", ylabel=label, title=f"{label} vs confidence")
        ax.grid(alpha=0.3)
    axes[2].set_title(f"F1 vs confidence: best {scores.best_f1:.3f} at conf {scores.best_conf:.3f}")
    axes[2].legend(fontsize=7, loc="lower center")
    return fig


def _number(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.6f}"


def write_detection_tables(scores: DetectionScores, names: list[str], tables: Path) -> None:
    """tables/per_class.csv (with an `all` row, means over the classes present), pr_curve.csv,
    confidence_curves.csv and confusion_matrix.csv: the numbers behind the plots."""
    with atomic_write(tables / "per_class.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "class", "images", "instances", "precision", "recall", "f1", "ap50", "ap50_95"])
        for i, name in enumerate(names):
            values = (scores.precision[i], scores.recall[i], scores.f1[i], scores.ap50[i], scores.ap50_95[i])
            writer.writerow([i, name, scores.images[i], scores.instances[i], *map(_number, values)])
        means = (scores.precision, scores.recall, scores.f1, scores.ap50, scores.ap50_95)
        writer.writerow(["", "all", scores.test_images, scores.instances.sum(), *(_number(_mean(v)) for v in means)])
    with atomic_write(tables / "pr_curve.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "recall", "precision"])
        for name, curve in zip(names, scores.pr_precision):
            if np.isfinite(curve).all():
                writer.writerows([name, f"{r:.2f}", f"{p:.6f}"] for r, p in zip(scores.recall_points, curve))
    with atomic_write(tables / "confidence_curves.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "confidence", "precision", "recall", "f1"])
        for i, name in enumerate(names):
            if np.isfinite(scores.f1_curve[i]).all():
                rows = zip(scores.confidence, scores.p_curve[i], scores.r_curve[i], scores.f1_curve[i])
                writer.writerows([name, *(f"{v:.6f}" for v in row)] for row in rows)
    write_confusion_csv(scores.confusion, [*names, "background"], tables / "confusion_matrix.csv")


def write_detection_report(scores: DetectionScores, names: list[str], trainer: L.Trainer, root: Path) -> None:
    """The tables under `root/tables`, the plots under `root/plots` (also sent to the loggers)."""
    write_detection_tables(scores, names, root / "tables")
    title = (
        f"test detections (conf > {CONFUSION_CONF}, IoU > {CONFUSION_IOU})\n"
        "background: missed (column), false alarm (row)"
    )
    figures = {
        "confusion_matrix": confusion_matrix_figure(scores.confusion, [*names, "background"], title),
        "pr": pr_figure(scores, names),
        "confidence": confidence_figure(scores, names),
    }
    for name, fig in figures.items():
        publish(trainer, f"test/{name}", fig, root / "plots" / f"{name}.png")


class DetectionReport(L.Callback):
    """At test time: collect every rank's detections and truths (torchmetrics' synced CatMetric), score them
    on rank 0 (`score_detection`), write the tables and plots, log `test_best_f1` / `test_best_conf` and say
    which `conf` to predict with."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.scores: DetectionScores | None = None
        self.scored: tuple[list[np.ndarray], list[np.ndarray]] | None = None  # (detections, truths) per image

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.found, self.truth, self.seen = (CatMetric().to(pl_module.device) for _ in range(3))
        self.images = 0

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or "detections" not in outputs:
            return
        rank = float(trainer.global_rank)
        for found, truth in zip(outputs["detections"], outputs["truths"]):
            key = found.new_tensor([rank, float(self.images)])
            # flat rows: a rank with none sends an empty 1-D tensor like the others' (gathering needs equal ranks)
            self.found.update(torch.cat([key.expand(len(found), 2), found.float()], 1).flatten())
            self.truth.update(torch.cat([key.expand(len(truth), 2), truth.float()], 1).flatten())
            self.seen.update(key)
            self.images += 1

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.seen.update_count:
            return
        seen = gathered_rows(self.seen, 2)  # from every rank
        found, truth = gathered_rows(self.found, 8), gathered_rows(self.truth, 7)
        if trainer.is_global_zero:
            classes = int(pl_module.hparams["num_classes"])
            names = class_names_of(pl_module, classes)
            started = time.perf_counter()
            self.scored = (_split_by_image(seen, found), _split_by_image(seen, truth))
            max_det = int(getattr(pl_module.hparams, "max_det", 300))
            self.scores = scores = score_detection(*self.scored, classes, max_det)
            write_detection_report(scores, names, trainer, Path(self.dirpath or trainer.default_root_dir))
            log.info(
                f"detection report: {len(seen)} images, {len(found)} detections scored and drawn in "
                f"{time.perf_counter() - started:.1f} s"
            )
            if scores.best_f1 > 0:
                log.info(
                    f"best F1 {scores.best_f1:.3f} at confidence {scores.best_conf:.3f}: pass "
                    f"conf={scores.best_conf:.2f} to visionkit-predict for the best balance of precision and recall"
                )
            else:
                log.info("no test detection matched a truth (F1 0 at every confidence): no conf to suggest yet")
            pl_module.log("test_best_f1", scores.best_f1, rank_zero_only=True)
            pl_module.log("test_best_conf", scores.best_conf, rank_zero_only=True)


def gathered_rows(metric: CatMetric, width: int) -> np.ndarray:
    """A CatMetric's values as (N, width) rows. One never given a value computes to an empty list (torchmetrics
    keeps no empty tensor): a test set where the detector found nothing, or whose images are all backgrounds."""
    values = metric.compute()
    if isinstance(values, list):
        return np.zeros((0, width), dtype=np.float32)
    return values.reshape(-1, width).cpu().numpy()


def _split_by_image(seen: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Rows keyed by (rank, image) in their first two columns, as one array per image of `seen`, in its order."""
    keys, row_keys = seen[:, 0] * 2**24 + seen[:, 1], rows[:, 0] * 2**24 + rows[:, 1]
    order = np.argsort(keys)
    image = order[np.searchsorted(keys[order], row_keys)]
    rows = rows[np.argsort(image, kind="stable"), 2:]
    return np.split(rows, np.cumsum(np.bincount(image, minlength=len(seen)))[:-1])
