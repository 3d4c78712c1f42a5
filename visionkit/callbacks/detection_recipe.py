"""Callbacks of the YOLO training recipe: an EMA of the weights and closing mosaic for the last epochs."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

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
        datamodule: Any = trainer.datamodule
        dataset = getattr(datamodule, "datasets", {}).get("train") if datamodule is not None else None
        if dataset is not None and getattr(dataset, "mosaic_probability", 0.0) > 0:
            dataset.set_mosaic(0.0)
            log.info(f"epoch {trainer.current_epoch}: mosaic closed for the last {self.epochs} epochs")
