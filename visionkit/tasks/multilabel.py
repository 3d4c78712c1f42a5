"""Several labels per image (tagging): a classification backbone with one sigmoid per class, binary
cross-entropy (optionally weighted by each class's rarity), macro mAP and F1, and a decision threshold per class
chosen on validation, stored in the checkpoint for prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from visionkit.errors import VisionkitError
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory
from visionkit.tasks.classification import ClassificationTask


def decision_counts(predicted: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per class, over the images axis (-2) of 0/1 decisions and targets: true positives, false positives, false
    negatives (leading axes, e.g. candidate thresholds, are kept)."""
    truth = target.bool()
    return (predicted & truth).sum(-2), (predicted & ~truth).sum(-2), (~predicted & truth).sum(-2)


def best_thresholds(probs: Tensor, target: Tensor, grid: int = 99) -> Tensor:
    """Per class, the threshold among 0.01 .. 0.99 with the highest F1 on (N, C) probabilities and 0/1 targets
    (0.5 for a class without positives)."""
    candidates = torch.linspace(0.01, 0.99, grid, device=probs.device)
    tp, fp, fn = decision_counts(probs[None] >= candidates[:, None, None], target)  # (grid, C) each
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    chosen = candidates[f1.argmax(0)]
    return torch.where(target.sum(0) > 0, chosen, torch.full_like(chosen, 0.5))


def flag_names(flags: Tensor, names: Sequence[str], none: str = "(no label)") -> str:
    """The class names of a (C,) 0/1 flag vector, comma-separated (`none` when no flag is set)."""
    return ", ".join(names[i] for i in torch.nonzero(flags).flatten().tolist()) or none


def f1_scores(probs: Tensor, target: Tensor, thresholds: Tensor) -> dict[str, float]:
    """Micro and macro F1 of (N, C) probabilities cut at per-class `thresholds`."""
    tp, fp, fn = decision_counts(probs >= thresholds, target)
    per_class = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1)
    return {"f1_micro": float(micro), "f1_macro": float(per_class.float().mean())}


class MultiLabelTask(ClassificationTask):
    """Tag images with any number of `num_classes` labels.

    Args (beyond ClassificationTask's backbone, weights, class names, dropout and fine-tuning):
        pos_weight: None, "auto" (each class's negatives / positives in the training split, as BCE's
            `pos_weight`, so rare labels are not ignored) or one weight per class.
        threshold: the decision threshold before validation chooses one per class (kept per class in the
            checkpoint's `thresholds`, used by the predictor).

    Batches: `{"image": (B, 3, H, W) float32, "label": (B, C) 0/1 flags}` (uint8 or float), or `(image, flags)`.
    """

    task_name: ClassVar[str] = "multilabel"  # what predictors, exports and messages call this task

    quality_metric = "val_map"
    # the single-label options of ClassificationTask's __init__ are not this task's hyper-parameters
    hparams_ignore = ("weights", "label_smoothing", "adversarial", "adversarial_eps", "adversarial_steps")
    thresholds: Tensor  # buffers registered in __init__, named here for the type checker
    pos_weight: Tensor

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        class_names: Sequence[str] | None = None,
        dropout: float = 0.0,
        pos_weight: str | Sequence[float] | None = None,
        threshold: float = 0.5,
        freeze_backbone: bool = False,
        finetuning: str = "none",
        unfreeze_epoch: int = 5,
        milestones: Sequence[int] = (5, 10),
        milestone_layers: int = 2,
        backbone_lr_factor: float = 0.1,
        in_channels: int = 3,
        monitor: str = "val_map",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise VisionkitError(f"task.pos_weight={pos_weight!r}: null, auto, or one weight per class")
        if pos_weight is not None and not isinstance(pos_weight, str) and len(pos_weight) != num_classes:
            raise VisionkitError(f"task.pos_weight has {len(pos_weight)} weights for {num_classes} classes")
        if not 0 < threshold < 1:
            raise VisionkitError(f"task.threshold={threshold}: a probability between 0 and 1")
        super().__init__(
            backbone,
            num_classes,
            weights,
            class_names,
            dropout,
            freeze_backbone=freeze_backbone,
            finetuning=finetuning,
            unfreeze_epoch=unfreeze_epoch,
            milestones=milestones,
            milestone_layers=milestone_layers,
            backbone_lr_factor=backbone_lr_factor,
            in_channels=in_channels,
            monitor=monitor,
            compile=compile,
            optimizer=optimizer,
            scheduler=scheduler,
        )
        self.register_buffer("thresholds", torch.full((num_classes,), float(threshold)))  # saved with the weights
        self.register_buffer("pos_weight", torch.ones(num_classes))
        if pos_weight is not None and not isinstance(pos_weight, str):
            self.pos_weight.copy_(torch.as_tensor(pos_weight, dtype=torch.float32))
        self._collected: list[tuple[Tensor, Tensor]] = []

    def configure_losses(self) -> None:
        """BCE with logits, weighted by `pos_weight` (set in `setup` when "auto")."""

    def configure_metrics(self) -> None:
        classes = self.hparams.num_classes
        collection = MetricCollection(
            {
                "map": MultilabelAveragePrecision(classes, average="macro"),
                "f1_macro_at_05": MultilabelF1Score(classes, average="macro"),
            }
        )
        self.val_metrics = collection.clone(prefix="val_")
        self.test_metrics = collection.clone(prefix="test_")

    def setup(self, stage: str) -> None:
        """With `pos_weight="auto"`, each class's negatives / positives in the data module's training split."""
        train_targets = getattr(getattr(self.trainer, "datamodule", None), "train_targets", None)
        if self.hparams.pos_weight == "auto" and stage == "fit" and callable(train_targets):
            flags = torch.as_tensor(train_targets(), dtype=torch.float32)
            positives = flags.sum(0)
            self.pos_weight.copy_(((len(flags) - positives) / positives.clamp(min=1)).clamp(max=100.0))

    def default_callbacks(self) -> list[Callback]:
        """The test report (per-class PR curves, AP and the chosen thresholds), the sample plots, fine-tuning."""
        from visionkit.callbacks.multilabel_report import MultiLabelReport
        from visionkit.callbacks.sample_predictions import SamplePredictionPlot

        return [MultiLabelReport(), SamplePredictionPlot(), *self.finetuning_callbacks()]

    def adversarial_images(self, images: Tensor, labels: Tensor) -> Tensor:
        raise VisionkitError("adversarial training is for single-label classification, not task=multilabel")

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, flags)`: (B, C) 0/1 flags."""
        flags = torch.as_tensor(target)
        if flags.ndim != 2 or flags.shape[1] != self.hparams.num_classes:
            raise VisionkitError(
                f"multi-label targets: (B, {self.hparams.num_classes}) 0/1 flags, not {tuple(flags.shape)}"
            )
        return {"image": images, "label": flags}

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        target = batch["label"].float()
        logits = self(batch["image"]).float()
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        probs = logits.detach().sigmoid()
        if stage == "train":
            self.train_stats.update(self, loss, target.shape[0])
        else:
            getattr(self, f"{stage}_metrics").update(probs, target.long())
            self._collected.append((probs, target))
            size = target.shape[0]
            self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=size, sync_dist=True)
        return {"loss": loss, "probs": probs, "target": target, "preds": probs >= self.thresholds}

    def _gathered(self) -> tuple[Tensor, Tensor]:
        parts, self._collected = self._collected, []
        probs, target = self.gathered_rows(torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts]))
        return probs, target

    def _epoch_end(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        self._log_epoch_metrics(metrics, prog_bar=stage == "val")
        if not self._collected:
            return
        probs, target = self._gathered()
        if stage == "val" and not self.trainer.sanity_checking:
            self.thresholds.copy_(best_thresholds(probs, target))
        scores = f1_scores(probs, target, self.thresholds)
        self.log_dict({f"{stage}_{k}": v for k, v in scores.items()}, prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def sample_figure(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], images: Any, title: str) -> Any:
        """Validation images titled with the predicted labels / the true ones (drawn by SamplePredictionPlot)."""
        from visionkit.utils.viz import labelled_grid_figure

        names = self.class_names

        def shown(flags: Tensor) -> str:
            return flag_names(flags, names, none="-")

        preds, target = outputs["preds"].cpu(), outputs["target"].cpu().bool()
        titles = [f"{shown(p)} / {shown(t)}" for p, t in zip(preds, target)]
        correct = [bool((p == t).all()) for p, t in zip(preds, target)]
        return labelled_grid_figure(images, titles, correct, f"{title} (predicted / true labels)")
