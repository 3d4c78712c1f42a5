"""The small base every task shares: model/loss/metric hooks, optimizer and scheduler from partials."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

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


class StepLossLogger:
    """Training-loss logging at Lightning's `log_every_n_steps` cadence plus an exact epoch mean.

    `self.log(..., on_step=True)` every step costs about a millisecond in Lightning's result bookkeeping,
    which is most of a small model's step; this keeps the progress bar and loggers fed for a fraction.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.total: Tensor | None = None
        self.count = 0

    def accumulate(self, module: L.LightningModule, loss: Tensor, batch_size: int) -> None:
        """Add one step's loss; log it when the trainer would log this step."""
        value = loss.detach() * batch_size
        self.total = value if self.total is None else self.total + value
        self.count += batch_size
        trainer = module.trainer
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0 or trainer.fast_dev_run:
            module.log(f"{self.name}_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)

    def log_epoch(self, module: L.LightningModule) -> None:
        """Log the sample-weighted mean loss of the epoch (averaged across ranks) and reset."""
        if self.total is not None and self.count:
            module.log(f"{self.name}_epoch", self.total / self.count, sync_dist=True)
        self.total, self.count = None, 0


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
