"""How each task is attacked and scored under attack (the TARGETS table, one row per task class): the loss an
attack raises (the task's own: cross-entropy, binary cross-entropy, the segmentation loss, ultralytics' detection
loss), the metric the task's test reports (accuracy, macro mAP, mIoU, mAP50-95, with the task's own metric
objects), and what each image's answer was, for the pictures of the worst flips."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from visionkit.tasks import ClassificationTask, DetectionTask, MultiLabelTask, SegmentationTask
from visionkit.tasks.adversarial import Loss
from visionkit.tasks.base import VisionTask
from visionkit.tasks.multilabel import flag_names


@dataclass
class Answer:
    """One image's answer, for the triptychs: a caption, a score that orders the worst flips (higher: shown
    first), whether it is still right, and what to draw on the picture (a mask or (K, 6) boxes)."""

    text: str
    score: float
    right: bool
    mask: np.ndarray | None = None
    boxes: np.ndarray | None = None


class AttackTarget:
    """A task under attack. `metric` names the column of robustness.csv (the task's test metric)."""

    metric: str = ""

    def __init__(self, task: VisionTask) -> None:
        self.task = task
        self.reset()

    def head(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        """The batch's first `count` images (and their targets)."""
        size = batch["image"].shape[0]
        return {k: v[:count] if isinstance(v, Tensor) and v.shape[:1] == (size,) else v for k, v in batch.items()}

    def loss(self, batch: dict[str, Any]) -> Loss:
        """Normalized images -> the task loss on this batch's targets (summed over images)."""
        raise NotImplementedError

    def own_answers(self, images: Tensor) -> dict[str, Any]:
        """A batch whose targets are the network's own clean answers (images without labels: `source=`)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Start a new metric."""
        raise NotImplementedError

    def update(self, batch: dict[str, Any]) -> list[Answer]:
        """Score the batch (its images normalized); each image's answer."""
        raise NotImplementedError

    def compute(self) -> float:
        """The metric over every batch since `reset`."""
        raise NotImplementedError


class ClassifierTarget(AttackTarget):
    """Accuracy under cross-entropy attacks on the true label (the untargeted attack of FGSM/PGD papers)."""

    metric = "acc"
    task: ClassificationTask

    def loss(self, batch: dict[str, Any]) -> Loss:
        return lambda images: F.cross_entropy(self.task(images).float(), batch["label"], reduction="sum")

    def own_answers(self, images: Tensor) -> dict[str, Any]:
        with torch.no_grad():
            return {"image": images, "label": self.task(images).argmax(1)}

    def reset(self) -> None:
        self.correct, self.count = 0, 0

    def update(self, batch: dict[str, Any]) -> list[Answer]:
        with torch.no_grad():
            probs = self.task(batch["image"]).float().softmax(1)
        confidence, predicted = probs.max(1)
        right = predicted == batch["label"]
        self.correct += int(right.sum())
        self.count += len(right)
        names = self.task.class_names
        return [
            Answer(f"{names[p]} ({c:.2f})", c, bool(r))
            for p, c, r in zip(predicted.tolist(), confidence.tolist(), right.tolist())
        ]

    def compute(self) -> float:
        return self.correct / max(self.count, 1)


class MultiLabelTarget(AttackTarget):
    """Macro mAP under attacks on the task's binary cross-entropy (with its class weights) over the true label
    sets: an attack pushes every label the wrong way at once."""

    metric = "map"
    task: MultiLabelTask

    def loss(self, batch: dict[str, Any]) -> Loss:
        target = batch["label"].float()
        weight = self.task.pos_weight

        def bce(images: Tensor) -> Tensor:
            logits = self.task(images).float()
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="sum")

        return bce

    def own_answers(self, images: Tensor) -> dict[str, Any]:
        """The labels at or above their thresholds as the truth."""
        with torch.no_grad():
            return {"image": images, "label": (self.task(images).float().sigmoid() >= self.task.thresholds).long()}

    def reset(self) -> None:
        from torchmetrics.classification import MultilabelAveragePrecision

        self.map = MultilabelAveragePrecision(self.task.hparams.num_classes, average="macro").to(self.task.device)

    def update(self, batch: dict[str, Any]) -> list[Answer]:
        with torch.no_grad():
            probs = self.task(batch["image"]).float().sigmoid()
        truth = batch["label"].long()
        self.map.update(probs, truth)
        names = self.task.class_names
        answers = []
        for p, t in zip(probs, truth.bool()):
            given = p >= self.task.thresholds
            wrong = given != t
            text = flag_names(given, names)
            worst = float((p - self.task.thresholds).abs()[wrong].max()) if wrong.any() else 0.0
            answers.append(Answer(text, worst, not bool(wrong.any())))
        return answers

    def compute(self) -> float:
        return float(self.map.compute())


class SegmenterTarget(AttackTarget):
    """mIoU under attacks on the task's segmentation loss (cross-entropy + Dice by default) over the true masks."""

    metric = "miou"
    task: SegmentationTask

    def loss(self, batch: dict[str, Any]) -> Loss:
        return lambda images: self.task.criterion(self.task(images).float(), batch["mask"])[0] * len(images)

    def own_answers(self, images: Tensor) -> dict[str, Any]:
        with torch.no_grad():
            return {"image": images, "mask": self.task.predicted_labels(self.task(images).float())}

    def reset(self) -> None:
        self.confusion = self.task.test_confusion.clone()
        self.confusion.reset()

    def update(self, batch: dict[str, Any]) -> list[Answer]:
        with torch.no_grad():
            labels = self.task.predicted_labels(self.task(batch["image"]).float())
        self.confusion.update(labels, batch["mask"])
        ignore = self.task.hparams.ignore_index
        answers = []
        for predicted, truth in zip(labels, batch["mask"]):
            valid = truth != ignore if ignore is not None else torch.ones_like(truth, dtype=torch.bool)
            accuracy = float((predicted == truth)[valid].float().mean()) if valid.any() else 1.0
            mask = predicted.cpu().numpy()
            answers.append(Answer(f"pixel acc {accuracy:.2f}", -accuracy, accuracy >= 0.5, mask=mask))
        return answers

    def compute(self) -> float:
        from visionkit.tasks.segmentation_metrics import segmentation_scores

        return float(segmentation_scores(self.confusion.compute())["miou"])


class DetectorTarget(AttackTarget):
    """mAP50-95 under attacks on ultralytics' detection loss (box + class + DFL) over the true boxes."""

    metric = "map50_95"
    task: DetectionTask

    def __init__(self, task: DetectionTask) -> None:
        if getattr(task.model, "criterion", None) is None:
            task.model.criterion = task.model.init_criterion()
        super().__init__(task)

    def head(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        kept = batch["batch_idx"] < count
        boxes = {k: batch[k][kept] for k in ("batch_idx", "cls", "bboxes")}
        return {**batch, **boxes, "image": batch["image"][:count]}

    def own_answers(self, images: Tensor, conf: float = 0.25) -> dict[str, Any]:
        """The boxes scoring at least `conf` as the truth."""
        with torch.no_grad():
            found = self.task.detect(images, conf=conf, multi_label=False)
        truth = [{"boxes": d[:, :4], "labels": d[:, 5]} for d in found]  # the task's own conversion to its layout
        batch = self.task.batch_from_pair(images, truth)
        return {k: v.to(images.device) for k, v in batch.items()}

    def loss(self, batch: dict[str, Any]) -> Loss:
        def detection_loss(images: Tensor) -> Tensor:
            total, _ = self.task.model.loss(self.task.loss_batch({**batch, "image": images}))
            return total.sum()

        return detection_loss

    def reset(self) -> None:
        self.map = copy.deepcopy(self.task.test_map)
        self.map.reset()

    def update(self, batch: dict[str, Any]) -> list[Answer]:
        with torch.no_grad():
            found = self.task.evaluate_batch(batch, self.map, for_report=True)
        assert found is not None  # for_report=True always answers the boxes
        answers = []
        for detections, truth in zip(found["detections"], found["truths"]):
            shown = detections[detections[:, 4] >= 0.25].float().cpu().numpy()
            text = f"{len(shown)} box(es), {len(truth)} true"
            answers.append(Answer(text, -len(shown), len(shown) >= len(truth), boxes=shown))
        return answers

    def compute(self) -> float:
        return float(self.map.compute()["map"])


TARGETS: dict[type[VisionTask], type[AttackTarget]] = {
    MultiLabelTask: MultiLabelTarget,  # before ClassificationTask, its base
    ClassificationTask: ClassifierTarget,
    SegmentationTask: SegmenterTarget,
    DetectionTask: DetectorTarget,
}  # one row per task: how `visionkit-robustness` attacks and scores its checkpoints


def attack_target(task: VisionTask) -> AttackTarget:
    """The row of TARGETS for this task's class (or its nearest parent)."""
    from visionkit.errors import VisionkitError

    for cls in type(task).__mro__:
        if cls in TARGETS:
            return TARGETS[cls](task)
    raise VisionkitError(
        f"{type(task).__name__} checkpoints have no robustness check: it covers classification, multi-label, "
        "detection and segmentation checkpoints"
    )
