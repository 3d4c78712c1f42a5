"""The small base every task shares: model/loss/metric hooks, optimizer and scheduler from partials."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weights of conv/linear layers (decayed) and biases/norms (not)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


class VisionTask(L.LightningModule):
    """Base LightningModule: subclasses build `self.model` and metrics; this class owns optimization.

    optimizer / scheduler: callables that take the parameters / the optimizer (Hydra `_partial_: true`
    configs, or `functools.partial(torch.optim.AdamW, lr=1e-3)` in Python). They are not saved in the
    checkpoint's hyper-parameters, so a checkpoint loads without them.
    """

    monitor: ClassVar[str] = "val_loss"
    monitor_mode: ClassVar[str] = "min"

    def __init__(self, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
        self.scheduler_factory = scheduler

    def configure_optimizers(self) -> Any:
        """Optimizer over the trainable parameters (frozen ones are added back by the fine-tuning callback)."""
        optimizer = self.optimizer_factory(parameter_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        target = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        interval = "epoch"
        if target is torch.optim.lr_scheduler.OneCycleLR:
            scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
            interval = "step"
        else:
            scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.monitor},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which task class wrote the checkpoint, so `visionkit-eval` can rebuild it."""
        cls = type(self)
        checkpoint["visionkit"] = {"task": f"{cls.__module__}.{cls.__qualname__}"}
