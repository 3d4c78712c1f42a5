"""Image classification: any backbone, a new head sized from the data, transfer learning, torchmetrics."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from visionkit.models.classifier import build_classifier
from visionkit.tasks.adversarial import TRAINING_ATTACKS, PixelSpace, training_attack
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, VisionTask, labelled_batch
from visionkit.tasks.finetuning import STRATEGIES, BackboneFinetuning


class ClassificationTask(VisionTask):
    """Classify images into `num_classes` classes.

    Args:
        backbone: "lenet5", a torchvision model name ("resnet18", "vgg16", ...) or "timm:<name>";
            see `visionkit.models.available_backbones()`.
        num_classes: size of the new head; comes from the data (`data.num_classes`).
        weights: pretrained weights: torchvision enum name ("DEFAULT", "IMAGENET1K_V1"), "DEFAULT" for
            timm hub weights, or a local file. Not saved in hyper-parameters: checkpoints load offline.
        class_names: names in class-id order, stored in checkpoints for plots and prediction.
        dropout: dropout before the new head.
        label_smoothing: cross-entropy label smoothing (0 = none).
        freeze_backbone: train only the head for the whole run (same as `finetuning="freeze"`).
        finetuning: "none", "freeze", "freeze_unfreeze" (unfreeze at `unfreeze_epoch`) or
            "unfreeze_milestones" (last `milestone_layers` blocks at milestones[0], the rest at milestones[1]).
        backbone_lr_factor: learning rate of unfrozen backbone blocks relative to the head's.
        adversarial: train on attacked batches: "none", "fgsm_rs" (FGSM from a random start, step 1.25 ε; Wong
            et al. 2020) or "pgd" (`adversarial_steps` steps from a random start; Madry et al.), at L∞
            `adversarial_eps` (/255 pixel units) around each training image.
        monitor: the metric plateau schedulers watch (config: `monitor.metric`).
        optimizer, scheduler: factories (Hydra partials); default AdamW(lr=1e-3), no scheduler.

    Batches: a dict `{"image": (B, 3, H, W) float32, "label": (B,) int64 class ids}`, or the `(image, label)`
    pair torchvision datasets give. Images are normalized floats: a VisionDataModule sends uint8 and normalizes
    them on the device with the model's mean/std; your own loader normalizes them itself (uint8 images from it
    are only scaled to 0..1).
    Checkpoints carry the input contract (size, mean/std) that `load_predictor` applies only when a
    VisionDataModule trained them; without one they say ImageNet mean/std, so normalize with those (or predict
    with your own preprocessing).
    """

    task_name: ClassVar[str] = "classification"  # what predictors, exports and messages call this task

    quality_metric = "val_acc"

    hparams_ignore: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        class_names: Sequence[str] | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        finetuning: str = "none",
        unfreeze_epoch: int = 5,
        milestones: Sequence[int] = (5, 10),
        milestone_layers: int = 2,
        backbone_lr_factor: float = 0.1,
        adversarial: str = "none",
        adversarial_eps: float = 8.0,
        adversarial_steps: int = 7,
        in_channels: int = 3,
        monitor: str = "val_loss",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        if finetuning not in STRATEGIES:
            raise ValueError(f"finetuning={finetuning!r} is not one of {STRATEGIES}")
        if adversarial not in TRAINING_ATTACKS:
            raise ValueError(f"adversarial={adversarial!r} is not one of {TRAINING_ATTACKS}")
        self.class_names = self.resolve_class_names(class_names, num_classes)
        self.pretrained = weights
        super().__init__(monitor, optimizer, scheduler, compile)

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_classifier(
            hp.backbone, hp.num_classes, weights=self.pretrained, dropout=hp.dropout, in_channels=hp.in_channels
        )

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        num_classes = self.hparams.num_classes
        metrics: dict[str, Any] = {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        collection = MetricCollection(metrics)
        # Training reports loss and accuracy from running sums (TrainStepStats): cheaper every step.
        self.val_metrics = collection.clone(prefix="val_")
        self.test_metrics = collection.clone(prefix="test_")

    def default_callbacks(self) -> list[Callback]:
        """The confusion matrix, the test report (per-class table, ROC/PR, calibration, confident mistakes), the
        sample plots and the fine-tuning schedule."""
        from visionkit.callbacks.classification_report import ClassificationReport
        from visionkit.callbacks.confusion_matrix import ConfusionMatrixPlot
        from visionkit.callbacks.sample_predictions import SamplePredictionPlot

        return [ConfusionMatrixPlot(), ClassificationReport(), SamplePredictionPlot(), *self.finetuning_callbacks()]

    def finetuning_callbacks(self) -> list[Callback]:
        """The fine-tuning schedule `finetuning` (or `freeze_backbone`) asks for, if any."""
        callbacks: list[Callback] = []
        hp = self.hparams
        strategy = "freeze" if hp.freeze_backbone and hp.finetuning == "none" else hp.finetuning
        if strategy != "none":
            callbacks.append(
                BackboneFinetuning(
                    strategy,
                    unfreeze_epoch=hp.unfreeze_epoch,
                    milestones=hp.milestones,
                    milestone_layers=hp.milestone_layers,
                    lr_factor=hp.backbone_lr_factor,
                )
            )
        return callbacks

    def forward(self, images: Tensor) -> Tensor:
        """Class scores (logits) for a batch of normalized images."""
        return self.model(images)

    def pixel_space(self) -> PixelSpace:
        """The mean/std the batches were normalized with: the data module's, else ImageNet's (the contract a
        checkpoint trained without a VisionDataModule states)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        mean, std = getattr(datamodule, "mean", IMAGENET_MEAN), getattr(datamodule, "std", IMAGENET_STD)
        return PixelSpace(mean, std)

    def adversarial_images(self, images: Tensor, labels: Tensor) -> Tensor:
        """The training batch attacked as `adversarial` says (in training mode, as Wong et al. and Madry et al.
        generate them)."""
        hp = self.hparams

        def loss(attacked: Tensor) -> Tensor:
            return F.cross_entropy(self(attacked).float(), labels, reduction="sum")

        space = self.pixel_space()
        return training_attack(hp.adversarial, loss, images, hp.adversarial_eps / 255, space, hp.adversarial_steps)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        target = batch["label"]
        images = batch["image"]
        if stage == "train" and self.hparams.adversarial != "none":
            images = self.adversarial_images(images, target)
        logits = self(images)
        loss = self.criterion(logits, target)
        preds = logits.detach().argmax(dim=1)
        if stage == "train":
            self.train_stats.update(self, loss, target.shape[0], correct=(preds == target).sum())
        else:
            getattr(self, f"{stage}_metrics").update(logits.detach(), target)
            size = target.shape[0]
            self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=size, sync_dist=True)
        out = {"loss": loss, "preds": preds, "target": target}
        if stage == "test":  # for the test report's curves and calibration
            out["probs"] = logits.detach().float().softmax(dim=1)
        return out

    def _log_epoch_metrics(self, metrics: MetricCollection, prog_bar: bool) -> None:
        # Computed once per epoch (synced across ranks by torchmetrics) rather than logging the metric
        # objects each step, which costs Lightning about a millisecond per metric per step. The values are the
        # same on every rank; sync_dist says so to Lightning (its mean of equal values changes nothing).
        self.log_dict(metrics.compute(), prog_bar=prog_bar, sync_dist=True)
        metrics.reset()

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, labels)`: labels as a (B,) tensor or a list of ints."""
        return labelled_batch(images, target, "labels")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "train")

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics(self.val_metrics, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(self.test_metrics, prog_bar=False)

    def sample_figure(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], images: Any, title: str) -> Any:
        """Validation images titled `prediction / truth` (drawn by SamplePredictionPlot)."""
        from visionkit.utils.viz import labelled_grid_figure

        preds, target = outputs["preds"].tolist(), outputs["target"].tolist()
        titles = [f"{self.class_names[p]} / {self.class_names[t]}" for p, t in zip(preds, target)]
        correct = [p == t for p, t in zip(preds, target)]
        return labelled_grid_figure(images, titles, correct, f"{title} (prediction / truth)")

    def export_module(self) -> tuple[torch.nn.Module, list[str], bool]:
        """The network for ONNX: `logits` (B, classes) for images of the training size."""
        return copy.deepcopy(self.model).float().eval(), ["logits"], False
