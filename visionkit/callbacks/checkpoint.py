"""Lightning's ModelCheckpoint with step saves that a killed run resumes from without skipping an epoch's end."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch import callbacks


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's `ModelCheckpoint` (same name, so checkpoints keep their callback state key); with
    `every_n_train_steps` it also saves at each epoch's end, after the validation, in place of the step save that
    would land on the epoch's last batch.

    Lightning resumes from a checkpoint of an epoch's last batch past that epoch's validation and epoch-end hooks
    (best.ckpt, early stopping and epoch schedules would miss the epoch), and with step saves alone best.ckpt is
    judged on the previous validation. A run killed before the epoch's save resumes from the step before and
    trains the last batch again.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._every_n_train_steps and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # saved at the epoch's end instead
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._every_n_train_steps and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
