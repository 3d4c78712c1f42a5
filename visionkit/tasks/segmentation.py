"""Semantic segmentation: any segmentation-models-pytorch architecture and encoder trained as a Lightning
task on the shared data, with CE/Dice/focal losses and IoU/Dice/pixel-accuracy metrics."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from visionkit.data.contract import check_input_size
from visionkit.errors import VisionkitError
from visionkit.models.segmentation import build_segmentation_model
from visionkit.models.segmentation import freeze_encoder as freeze_encoder_of
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, VisionTask
from visionkit.tasks.segmentation_loss import SegmentationLoss
from visionkit.tasks.segmentation_metrics import segmentation_scores
from visionkit.utils.arrays import class_probabilities
from visionkit.utils.io import atomic_write


class SegmentationTask(VisionTask):
    """Label every pixel with one of `num_classes` classes (class 0 usually background).

    Args:
        arch: smp architecture ("unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer", ...).
        encoder: smp encoder ("resnet34", "efficientnet-b0", "mit_b0", ...) or any timm model as "tu-<name>".
        num_classes: classes including background; from the data (`data.class_names`).
        class_names: names in class-id order, stored in checkpoints for plots and prediction.
        encoder_weights: "imagenet" (Hugging Face cache; never downloaded offline), a local file, or None.
            Not saved in hyper-parameters, so checkpoints load offline.
        freeze_encoder: train only the decoder and head (encoder gradients off, BatchNorm statistics fixed).
        binary: one foreground class predicted with a single sigmoid channel (num_classes must be 2).
        ignore_index: mask value left out of the loss and metrics (e.g. 255), or None.
        loss_weights: weights of the loss terms `ce` (BCE when binary), `dice` and `focal`.
        class_weights: one weight per class for the loss terms (rare classes up), or None.
        threshold: foreground probability threshold when binary.
        model_kwargs: extra arguments for the smp constructor (decoder_channels, encoder_depth, ...).
        monitor: the metric plateau schedulers watch (config: `monitor.metric`).
        optimizer, scheduler: factories (Hydra partials).

    Batches: a dict `{"image": (B, 3, H, W) float32, "mask": (B, H, W) int64 class ids}` (`ignore_index`
    pixels left out), or an `(image, mask)` pair, the mask (B, H, W) or (B, 1, H, W) of any integer type. Images
    are normalized floats: a VisionDataModule sends uint8 and normalizes them on the device with the model's
    mean/std; your own loader normalizes them itself (uint8 images from it are only scaled to 0..1).
    Checkpoints carry the input contract (size, mean/std) that `load_predictor` applies only when a
    VisionDataModule trained them; without one they say ImageNet mean/std, so normalize with those (or predict
    with your own preprocessing).
    """

    task_name: ClassVar[str] = "segmentation"  # what predictors, exports and messages call this task

    quality_metric = "val_miou"

    hparams_ignore = ("encoder_weights",)
    channels_last_on_cpu = True  # U-Net/ResNet-18 steps 15 % faster on 2 cores

    def __init__(
        self,
        arch: str = "unet",
        encoder: str = "resnet34",
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        encoder_weights: str | None = None,
        freeze_encoder: bool = False,
        binary: bool = False,
        ignore_index: int | None = None,
        loss_weights: dict[str, float] | None = None,
        class_weights: Sequence[float] | None = None,
        threshold: float = 0.5,
        model_kwargs: dict[str, Any] | None = None,
        in_channels: int = 3,
        monitor: str = "val_miou",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        if binary and num_classes != 2:
            raise ValueError(f"binary segmentation has 2 classes (background, foreground), not {num_classes}")
        self.class_names = self.resolve_class_names(class_names, num_classes)
        self.pretrained = encoder_weights
        super().__init__(monitor, optimizer, scheduler, compile)

    def configure_models(self) -> None:
        hp = self.hparams
        channels = 1 if hp.binary else hp.num_classes
        kwargs = dict(hp.model_kwargs or {})
        self.model = build_segmentation_model(
            hp.arch, hp.encoder, channels, encoder_weights=self.pretrained, in_channels=hp.in_channels, **kwargs
        )
        if hp.freeze_encoder:
            freeze_encoder_of(self.model)

    def configure_losses(self) -> None:
        hp = self.hparams
        self.criterion = SegmentationLoss(
            hp.num_classes,
            dict(hp.loss_weights or {"ce": 1.0, "dice": 1.0}),
            binary=hp.binary,
            class_weights=hp.class_weights,
            ignore_index=hp.ignore_index,
        )

    def configure_metrics(self) -> None:
        hp = self.hparams
        confusion = MulticlassConfusionMatrix(hp.num_classes, ignore_index=hp.ignore_index, validate_args=False)
        self.val_confusion = confusion
        self.test_confusion = confusion.clone()
        self.last_scores: dict[str, Tensor] = {}

    def default_callbacks(self) -> list[L.Callback]:
        """The validation sample grid (image | truth | prediction) and the test report (per-class bars, pixel
        confusion matrix, lowest-IoU images)."""
        from visionkit.callbacks.sample_predictions import SamplePredictionPlot
        from visionkit.callbacks.segmentation_report import SegmentationReport

        return [SamplePredictionPlot(num_samples=8), SegmentationReport()]

    def setup(self, stage: str) -> None:
        """Stop early when the training size cannot pass through the encoder's five downsamplings."""
        super().setup(stage)
        size = getattr(getattr(self._trainer, "datamodule", None), "image_size", None)
        if size is not None:
            check_input_size(size, "data.image_size")

    def train(self, mode: bool = True) -> SegmentationTask:
        """Training mode, except a frozen encoder keeps its BatchNorm statistics fixed."""
        super().train(mode)
        if mode and self.hparams.freeze_encoder:
            self.model.get_submodule("encoder").eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Logits (N, C, H, W) for normalized images (C = 1 when binary)."""
        return self.model(self.in_layout(images))

    def class_probabilities(self, images: Tensor) -> Tensor:
        """Per-class probabilities (N, num_classes, H, W); binary models give background and foreground."""
        return class_probabilities(self(images).float(), bool(self.hparams.binary))

    def predicted_labels(self, logits: Tensor) -> Tensor:
        """Class ids per pixel (N, H, W) from logits (binary: the foreground above `threshold`)."""
        if self.hparams.binary:
            return (torch.sigmoid(logits[:, 0]) > self.hparams.threshold).long()
        return logits.argmax(dim=1)

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, masks)`: masks (B, H, W) or (B, 1, H, W) of class ids, the images' height and width."""
        masks = torch.as_tensor(target)
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.ndim != 3 or masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
            raise VisionkitError(
                f"masks of shape {tuple(masks.shape)} for images of shape {tuple(images.shape)}: expected "
                "(B, H, W) or (B, 1, H, W) class ids at the images' size"
            )
        if masks.is_floating_point():
            raise VisionkitError(
                "masks hold floats: give class ids as integers (ToTensor scales masks; use PILToTensor)"
            )
        return {"image": images, "mask": masks.long()}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self.criterion(self(batch["image"]), batch["mask"])
        self.train_stats.update(self, loss, batch["image"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def _evaluate(self, batch: dict[str, Tensor], stage: str, for_plot: bool) -> dict[str, Tensor] | None:
        logits = self(batch["image"])
        loss, _ = self.criterion(logits, batch["mask"])
        self.log(
            f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=logits.shape[0], sync_dist=True
        )
        preds = self.predicted_labels(logits.detach())
        getattr(self, f"{stage}_confusion").update(preds, batch["mask"])
        return {"preds": preds.to(torch.uint8), "mask": batch["mask"]} if for_plot else None

    def _log_scores(self, stage: str) -> dict[str, Tensor]:
        confusion = getattr(self, f"{stage}_confusion")
        self.last_confusion = confusion.compute()  # synced across ranks by torchmetrics
        scores = segmentation_scores(self.last_confusion)
        confusion.reset()
        headline = {f"{stage}_{key}": scores[key] for key in ("miou", "mdice", "pixel_acc")}
        self.log_dict(headline, prog_bar=True, sync_dist=True)  # equal on every rank (a synced confusion)
        for name, iou in zip(self.class_names, scores["iou"]):
            if not torch.isnan(iou):
                self.log(f"{stage}_iou/{name}", iou, sync_dist=True)
        self.last_scores = scores
        return scores

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, "val", for_plot=batch_idx == 0)  # the plot draws the first batch

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        return self._evaluate(batch, "test", for_plot=True)  # the test report keeps the worst images

    def on_test_epoch_end(self) -> None:
        scores = self._log_scores("test")
        if self.trainer.is_global_zero and self.trainer.default_root_dir:
            self.write_class_table(scores, Path(self.trainer.default_root_dir) / "test_per_class.csv")

    def write_class_table(self, scores: dict[str, Tensor], path: Path) -> Path:
        """The per-class IoU and Dice table as CSV (classes absent from truth and prediction left empty)."""
        lines = ["class_id,class,iou,dice"]
        for index, (name, iou, dice) in enumerate(zip(self.class_names, scores["iou"], scores["dice"])):
            cells = ["" if torch.isnan(v) else f"{float(v):.4f}" for v in (iou, dice)]
            lines.append(f"{index},{name},{cells[0]},{cells[1]}")
        with atomic_write(path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def sample_figure(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], images: Any, title: str) -> Any:
        """Validation samples as `image | truth | prediction` (drawn by SamplePredictionPlot)."""
        from visionkit.utils.viz import segmentation_grid_figure

        shown = 8  # rows of two samples stay readable
        truths = outputs["mask"][:shown].cpu().numpy()
        preds = outputs["preds"][:shown].cpu().numpy()
        return segmentation_grid_figure(
            images[:shown], truths, preds, self.class_names, title, self.hparams.ignore_index
        )

    def export_module(self) -> tuple[torch.nn.Module, list[str], bool]:
        """The network for ONNX: `logits` (B, C, H, W), any H and W divisible by 32."""
        return copy.deepcopy(self.model).float().eval(), ["logits"], True
