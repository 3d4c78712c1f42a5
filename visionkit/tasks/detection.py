"""YOLO object detection: an ultralytics network and loss trained as a Lightning task on the shared data."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import lightning as L
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from visionkit.callbacks.detection_recipe import AccumulationRamp, CloseMosaic, RampedEMA
from visionkit.callbacks.detection_report import IOU_THRESHOLDS, RECALL_POINTS
from visionkit.data.contract import check_input_size
from visionkit.data.sources.annotations import ignored_class
from visionkit.errors import VisionkitError
from visionkit.models.yolo import build_yolo, freeze_layers
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, VisionTask


def _xywhn_to_xyxy(boxes: Tensor, height: int, width: int) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def decoded_output(preds: Any) -> Tensor:
    """The decoded predictions (B, 4 + classes, anchors) of a YOLO network in eval mode, which returns them
    alone when exporting and with its feature maps otherwise."""
    return preds[0] if isinstance(preds, (list, tuple)) else preds


def boxes_after_nms(
    decoded: Tensor, conf: float, iou: float, max_det: int, multi_label: bool = True, return_anchors: bool = False
) -> Any:
    """Per image (K, 6) rows x1 y1 x2 y2 score class of decoded YOLO predictions (B, 4 + classes, anchors) after
    ultralytics' NMS (with `return_anchors`, also each box's anchor): what the task and an exported graph share."""
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(
        decoded,
        conf_thres=conf,
        iou_thres=iou,
        multi_label=multi_label,
        max_det=max_det,
        max_time_img=2.0,
        return_idxs=return_anchors,
    )


def _pad(rows: list[Tensor], width: int) -> Tensor:
    """Per-image (K_i, width) rows as one (B, max K, width) tensor; padding rows hold -1."""
    longest = max((len(r) for r in rows), default=0)
    out = rows[0].new_full((len(rows), max(longest, 1), width), -1.0) if rows else torch.empty(0, 1, width)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class DetectionTask(VisionTask):
    """Detect objects of `num_classes` classes with any ultralytics detection yaml (v8, 11, ...).

    Args:
        model: ultralytics model yaml, e.g. "yolov8n.yaml" or "yolo11s.yaml".
        num_classes: from the data (`data.num_classes` / the data.yaml names).
        class_names: names in class-id order, stored in checkpoints and exports.
        weights: an ultralytics `.pt` to start from (same architecture; a new class head when the classes
            differ). Not saved in the hyper-parameters: a checkpoint of this task loads without the file.
        freeze: number of leading network layers kept frozen (10 = the YOLOv8 backbone), their BN fixed.
        conf, iou, max_det: NMS settings for validation/test mAP (ultralytics' validator: 0.001, 0.7, 300).
        gradient_clip: max gradient norm (ultralytics: 10); None to turn off.
        nominal_batch_size: gradients are accumulated up to about this many images per optimizer step
            (ultralytics: 64); None to step every batch. An explicit trainer.accumulate_grad_batches wins.
        ema_decay: decay of the weight EMA used for validation and checkpoints (ultralytics: 0.9999 with a
            ramp); None to turn off.
        close_mosaic: epochs at the end trained without mosaic (ultralytics: 10).
        monitor: the metric plateau schedulers watch (config: `monitor.metric`).
        optimizer, scheduler: factories (Hydra partials).
    Batches: a dict in ultralytics' loss layout, `{"image": (B, 3, H, W) float32 in 0..1, "cls": (N, 1) class
    ids, "bboxes": (N, 4) normalized centre x, y, width, height, "batch_idx": (N,) the image of each box}`, or the
    `(images, targets)` pair of torchvision's detection convention: images a (B, 3, H, W) tensor or a list of
    same-sized (3, H, W) tensors, targets one dict per image with "boxes" (K, 4) x1 y1 x2 y2 in pixels and
    "labels" (K,) class ids. Images are not normalized (the model config's mean 0, std 1): 0..1 floats, or uint8
    (scaled to 0..1 here). A VisionDataModule sends uint8 and scales them on the device.
    """

    task_name: ClassVar[str] = "detection"  # what predictors, exports and messages call this task

    quality_metric = "val_map50_95"

    hparams_ignore = ("weights",)
    channels_last_on_cpu = True  # YOLOv8-n steps 25 % faster on 2 cores

    def __init__(
        self,
        model: str = "yolov8n.yaml",
        num_classes: int = 80,
        class_names: Sequence[str] | None = None,
        weights: str | None = None,
        freeze: int = 0,
        conf: float = 0.001,
        iou: float = 0.7,
        max_det: int = 300,
        gradient_clip: float | None = 10.0,
        nominal_batch_size: int | None = 64,
        ema_decay: float | None = 0.9999,
        close_mosaic: int = 10,
        monitor: str = "val_map50_95",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        self.class_names = self.resolve_class_names(class_names, num_classes)
        self.pretrained = weights
        super().__init__(monitor, optimizer, scheduler, compile)

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_yolo(hp.model, hp.num_classes, weights=self.pretrained)
        self.model.names = dict(enumerate(self.class_names))
        freeze_layers(self.model, hp.freeze)

    def configure_losses(self) -> None:
        """Nothing yet: ultralytics' criterion holds tensors on the network's device, so it is built when fitting
        starts (`on_fit_start`), on the final device."""

    def configure_metrics(self) -> None:
        logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # it prints its table at INFO
        self.val_map = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            backend="faster_coco_eval",
            max_detection_thresholds=[1, 10, self.hparams.max_det],  # mAP over all kept detections, as ultralytics
            # COCO's thresholds: torchmetrics' defaults come from a float32 torch.linspace (0.55 -> 0.55000001),
            # which moved mAP50 by 4e-4 from pycocotools' and the test report's on the same detections
            iou_thresholds=IOU_THRESHOLDS.tolist(),
            rec_thresholds=RECALL_POINTS.tolist(),
        )
        self.val_map.warn_on_many_detections = False
        self.test_map = cast(MeanAveragePrecision, self.val_map.clone())

    def default_callbacks(self) -> list[L.Callback]:
        """The sample plot, the test report, and the recipe's growing warm-up accumulation, EMA of the weights and
        closing of mosaic for the last epochs."""
        from visionkit.callbacks.detection_report import DetectionReport
        from visionkit.callbacks.sample_predictions import SamplePredictionPlot

        callbacks: list[L.Callback] = [
            AccumulationRamp(),
            CloseMosaic(self.hparams.close_mosaic),
            SamplePredictionPlot(),
            DetectionReport(),
        ]
        if self.hparams.ema_decay:
            callbacks.append(RampedEMA(self.hparams.ema_decay))
        return callbacks

    def setup(self, stage: str) -> None:
        """Stop early on a training size YOLO's strides cannot divide; accumulate gradients up to the nominal
        batch (before the optimizer and schedule are built)."""
        super().setup(stage)
        nominal = self.hparams.nominal_batch_size
        trainer = self._trainer
        size = getattr(getattr(trainer, "datamodule", None), "image_size", None)
        if size is not None:
            check_input_size(size, "data.image_size", "YOLO networks")
        if stage != "fit" or not nominal or trainer is None or trainer.accumulate_grad_batches != 1:
            return
        batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if batch_size:
            trainer.accumulate_grad_batches = max(round(nominal / (batch_size * trainer.world_size)), 1)

    def train(self, mode: bool = True) -> DetectionTask:
        """Training mode, except frozen layers keep their BatchNorm statistics fixed."""
        super().train(mode)
        if mode and self.hparams.freeze:
            for layer in list(self.model.model)[: self.hparams.freeze]:
                layer.eval()
        return self

    def on_fit_start(self) -> None:
        """Build ultralytics' criterion here, on the final device and outside inference mode."""
        self.model.criterion = self.model.init_criterion()
        super().on_fit_start()

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by norm at `gradient_clip` unless the trainer sets its own clipping."""
        value = gradient_clip_val if gradient_clip_val is not None else self.hparams.gradient_clip
        if value:
            self.clip_gradients(
                optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm or "norm"
            )

    def forward(self, images: Tensor) -> Any:
        """Raw network output (training: feature maps; eval: decoded predictions and feature maps)."""
        return self.model(images)

    @staticmethod
    def loss_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch in the keys ultralytics' loss reads; ignored boxes (negative classes, e.g. VOC's `difficult`)
        are left out: the loss neither rewards nor punishes a detection on one."""
        kept = batch["cls"].view(-1) >= 0
        return {
            "img": batch["image"],
            "batch_idx": batch["batch_idx"][kept],
            "cls": batch["cls"][kept],
            "bboxes": batch["bboxes"][kept],
        }

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, targets)` in torchvision's detection convention (see the class docstring) in the loss layout."""
        if not isinstance(target, (list, tuple)) or len(target) != images.shape[0]:
            raise VisionkitError(
                f"detection targets: give one dict per image ({images.shape[0]}) with 'boxes' (K, 4) x1 y1 x2 y2 in "
                "pixels and 'labels' (K,); a collate_fn that keeps them as a list (e.g. lambda b: tuple(zip(*b)))"
            )
        height, width = images.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes, classes, owners = [], [], []
        for index, one in enumerate(target):
            if not isinstance(one, dict) or "boxes" not in one or "labels" not in one:
                raise VisionkitError(f"detection target {index}: expected a dict with 'boxes' and 'labels'")
            xyxy = torch.as_tensor(one["boxes"], dtype=torch.float32).cpu().reshape(-1, 4)
            centre = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
            boxes.append(centre / scale)
            classes.append(torch.as_tensor(one["labels"], dtype=torch.float32).cpu().reshape(-1, 1))
            owners.append(torch.full((len(xyxy),), float(index)))
        return {"image": images, "bboxes": torch.cat(boxes), "cls": torch.cat(classes), "batch_idx": torch.cat(owners)}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.model.loss(self.loss_batch({**batch, "image": self.in_layout(batch["image"])}))
        total = loss.sum()  # box + cls + dfl, each scaled by the batch size as ultralytics' trainer does
        self.train_stats.update(self, total / batch["image"].shape[0], batch["image"].shape[0])
        # Lightning divides the loss by the accumulation count; ultralytics sums accumulated gradients, and its
        # clipping threshold (10) refers to that sum, so undo the division.
        return total * self.trainer.accumulate_grad_batches

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def export_module(self) -> tuple[torch.nn.Module, list[str], bool]:
        """The network for ONNX: `output0` (B, 4 + classes, anchors) = cx cy w h in input pixels, then class
        scores (ultralytics' ONNX layout, NMS left to the runtime); any image size divisible by 32."""
        network = copy.deepcopy(self.model).float().eval().to(memory_format=torch.contiguous_format)
        for module in network.modules():
            if hasattr(module, "export") and hasattr(module, "format"):
                module.export, module.format, module.dynamic = True, "onnx", True
        return network, ["output0"], True

    def detect(
        self,
        images: Tensor,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        multi_label: bool = True,
        return_anchors: bool = False,
    ) -> Any:
        """Boxes per image after NMS: (K, 6) rows of x1 y1 x2 y2 (input pixels), score, class; with
        `return_anchors`, also per image the index of the anchor (output column) each box came from.

        Defaults are the mAP settings; `multi_label=False` keeps one class per box (ultralytics' predict).
        """
        hp = self.hparams
        return boxes_after_nms(
            decoded_output(self.model(images)),
            hp.conf if conf is None else conf,
            hp.iou if iou is None else iou,
            hp.max_det if max_det is None else max_det,
            multi_label,
            return_anchors,
        )

    def fuse_for_inference(self) -> DetectionTask:
        """Fold BatchNorm into the convolutions (as ultralytics does before predicting): same outputs, about
        a third less time. Only for inference: the fused network cannot be trained or saved as a checkpoint."""
        self.model.fuse(verbose=False)
        if self.device.type == "cpu":  # oneDNN convolutions run faster on channels-last tensors
            self.model.to(memory_format=torch.channels_last)
        return self.eval()

    def evaluate_batch(
        self, batch: dict[str, Tensor], metric: MeanAveragePrecision, for_plot: bool = False, for_report: bool = False
    ) -> dict[str, Any] | None:
        """Update `metric`; with `for_plot`, also return the batch's boxes for the sample-prediction plot; with
        `for_report`, every image's detections (K, 6) and truths (M, 5: class x1 y1 x2 y2) for DetectionReport."""
        images = batch["image"]
        height, width = images.shape[-2:]
        detections = self.detect(images)
        preds = [{"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()} for d in detections]
        targets, truth = [], []  # truth: class x1 y1 x2 y2 rows, ignored boxes with their negative class
        for i in range(images.shape[0]):
            mine = batch["batch_idx"] == i
            boxes = _xywhn_to_xyxy(batch["bboxes"][mine], height, width)
            labels = batch["cls"][mine].view(-1).long()
            ignored = labels < 0  # evaluation ignores them as COCO's crowd regions
            classes = torch.where(ignored, ignored_class(labels), labels)
            targets.append({"boxes": boxes, "labels": classes, "iscrowd": ignored.long()})
            truth.append(torch.cat([labels[:, None].float(), boxes], 1))
        metric.update(preds, targets)
        if for_report:
            return {"detections": detections, "truths": truth}
        if not for_plot:
            return None
        # per-image, padded (class -1 = none) for the sample-prediction plot
        shown = [d[d[:, 4] >= 0.25][:50] for d in detections]
        return {"pred_boxes": _pad(shown, 6), "true_boxes": _pad(truth, 5)}

    def sample_figure(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], images: Any, title: str) -> Any:
        """Validation images with true boxes and predictions scoring ≥ 0.25 (drawn by SamplePredictionPlot)."""
        from visionkit.utils.viz import detection_grid_figure

        preds = [p[p[:, 5] >= 0].cpu().numpy() for p in outputs["pred_boxes"]]
        truths = [t[t[:, 0] >= 0].cpu().numpy() for t in outputs["true_boxes"]]
        return detection_grid_figure(images, preds, truths, self.class_names, title)

    def _log_map(self, metric: MeanAveragePrecision, stage: str) -> None:
        result = metric.compute()  # synced across ranks by torchmetrics
        self.log(f"{stage}_map50", result["map_50"], prog_bar=True, sync_dist=True)  # equal on every rank
        self.log(f"{stage}_map50_95", result["map"], prog_bar=True, sync_dist=True)
        metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self.evaluate_batch(batch, self.val_map, for_plot=batch_idx == 0)  # the plot draws the first batch

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any] | None:
        return self.evaluate_batch(batch, self.test_map, for_report=True)

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")
