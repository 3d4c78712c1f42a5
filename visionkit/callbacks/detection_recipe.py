"""Callbacks of the YOLO training recipe: an EMA of the weights, closing mosaic for the last epochs, and the
warm-up's growing accumulation."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

from visionkit.tasks.schedules import WarmupLinearLR
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


class RampedEMA(WeightAveraging):
    """Exponential moving average of all weights and BN statistics, updated every optimizer step with
    ultralytics' ramped decay `decay * (1 - exp(-updates / tau))` (fast at first, 0.9999 later).

    Validation, the saved checkpoints and the final model use the averaged weights (Lightning swaps them in).
    """

    def __init__(self, decay: float = 0.9999, tau: float = 2000.0) -> None:
        self.decay = decay
        self.tau = tau
        super().__init__(use_buffers=True, avg_fn=self._average)

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current  # integer buffers (BN step counters) follow the model
        d = self.decay * (1 - math.exp(-float(num_averaged + 1) / self.tau))
        return averaged * d + current.to(averaged.dtype) * (1 - d)


class CloseMosaic(L.Callback):
    """Turn the training set's mosaic off for the last `epochs` epochs (train on whole, unmixed images)."""

    def __init__(self, epochs: int = 10) -> None:
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_epochs = trainer.max_epochs or 0
        if self.epochs <= 0 or max_epochs <= 0 or trainer.current_epoch < max_epochs - self.epochs:
            return
        datamodule: Any = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("train") if datamodule is not None else None
        if dataset is not None and getattr(dataset, "mosaic_probability", 0.0) > 0:
            dataset.set_mosaic(0.0)
            log.info(f"epoch {trainer.current_epoch}: mosaic closed for the last {self.epochs} epochs")


class AccumulationRamp(L.Callback):
    """Make Lightning step the optimizer on the batches the schedule planned (`WarmupLinearLR.step_plan` with
    `ramp_accumulation`): during the warm-up a step gathers 1, 2, ... up to the nominal batches, as in
    ultralytics' trainer, so early training takes more, smaller steps.

    Lightning steps after batch b of an epoch when (b + 1) % accumulate_grad_batches == 0 and zeroes gradients
    before it when b % accumulate_grad_batches == 0; setting the count to b + 1 (step) or b + 2 (gather) before
    each batch follows any plan, and the gradients are zeroed here where a step's batches begin. The detection
    task multiplies its loss by the count Lightning divides by, so every batch adds its whole loss (ultralytics).
    """

    carries_out_step_plan = True

    def __init__(self) -> None:
        self._ends: frozenset[int] = frozenset()
        self._nominal = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plans = [
            config.scheduler.step_plan
            for config in trainer.lr_scheduler_configs
            if isinstance(config.scheduler, WarmupLinearLR) and config.scheduler.ramp_accumulation
        ]
        self._ends = frozenset(plans[0]) if plans else frozenset()
        self._nominal = trainer.accumulate_grad_batches

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if not self._ends:
            return
        index = trainer.current_epoch * int(trainer.num_training_batches) + idx
        if idx > 0 and index - 1 in self._ends:  # the first batch of a step: drop the last step's gradients
            for optimizer in trainer.optimizers:
                optimizer.zero_grad(set_to_none=True)
        trainer.accumulate_grad_batches = idx + 1 if index in self._ends else idx + 2

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._ends:
            trainer.accumulate_grad_batches = self._nominal
