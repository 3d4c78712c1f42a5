"""YOLO object detection: an ultralytics network and loss trained as a Lightning task on the shared data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from visionkit.models.yolo import build_yolo
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, TrainStepStats, VisionTask


def _xywhn_to_xyxy(boxes: Tensor, height: int, width: int) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


class DetectionTask(VisionTask):
    """Detect objects of `num_classes` classes with any ultralytics detection yaml (v8, 11, ...).

    Args:
        model: ultralytics model yaml, e.g. "yolov8n.yaml" or "yolo11s.yaml" (built from scratch).
        num_classes: from the data (`data.num_classes` / the data.yaml names).
        class_names: names in class-id order, stored in checkpoints.
        conf, iou, max_det: NMS settings for validation/test mAP (ultralytics' validator: 0.001, 0.7, 300).
        optimizer, scheduler: factories (Hydra partials).
    Images come in as floats in 0..1 (model config mean 0, std 1), batches in ultralytics' loss layout.
    """

    monitor = "val_map50_95"
    monitor_mode = "max"

    def __init__(
        self,
        model: str = "yolov8n.yaml",
        num_classes: int = 80,
        class_names: Sequence[str] | None = None,
        conf: float = 0.001,
        iou: float = 0.7,
        max_det: int = 300,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        self.class_names = self.resolve_class_names(class_names, num_classes)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model = build_yolo(model, num_classes)
        self.train_stats = TrainStepStats()
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
        self.test_map = self.val_map.clone()

    def on_fit_start(self) -> None:
        """Build ultralytics' criterion here, on the final device and outside inference mode."""
        self.model.criterion = self.model.init_criterion()

    def forward(self, images: Tensor) -> Any:
        """Raw network output (training: feature maps; eval: decoded predictions and feature maps)."""
        return self.model(images)

    @staticmethod
    def _loss_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"img": batch["image"], "batch_idx": batch["batch_idx"], "cls": batch["cls"], "bboxes": batch["bboxes"]}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.model.loss(self._loss_batch(batch))
        total = loss.sum()  # box + cls + dfl, each scaled by the batch size as ultralytics' trainer does
        self.train_stats.update(self, total / batch["image"].shape[0], batch["image"].shape[0])
        return total

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def detect(self, images: Tensor, conf: float | None = None, iou: float | None = None) -> list[Tensor]:
        """Boxes per image after NMS: (K, 6) rows of x1 y1 x2 y2 (input pixels), score, class."""
        from ultralytics.utils.nms import non_max_suppression

        hp = self.hparams
        preds = self.model(images)
        return non_max_suppression(
            preds[0] if isinstance(preds, (list, tuple)) else preds,
            conf_thres=hp.conf if conf is None else conf,
            iou_thres=hp.iou if iou is None else iou,
            multi_label=True,
            max_det=hp.max_det,
            max_time_img=2.0,
        )

    def _evaluate(self, batch: dict[str, Tensor], metric: MeanAveragePrecision) -> None:
        images = batch["image"]
        height, width = images.shape[-2:]
        detections = self.detect(images)
        preds = [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()} for d in detections]
        targets = []
        for i in range(images.shape[0]):
            mine = batch["batch_idx"] == i
            boxes = _xywhn_to_xyxy(batch["bboxes"][mine], height, width)
            targets.append({"boxes": boxes, "labels": batch["cls"][mine].view(-1).long()})
        metric.update(preds, targets)

    def _log_map(self, metric: MeanAveragePrecision, stage: str) -> None:
        result = metric.compute()  # synced across ranks by torchmetrics
        self.log(f"{stage}_map50", result["map_50"], prog_bar=True)
        self.log(f"{stage}_map50_95", result["map"], prog_bar=True)
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_map)

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")
