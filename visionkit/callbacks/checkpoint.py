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

    def _save_last_anyway(self, trainer: L.Trainer, at_epoch_end: bool) -> None:
        """Write `last.ckpt` when this save point (epoch end or validation end, as Lightning chose) wrote nothing:
        Lightning 2.6 writes last.ckpt only when a top-k checkpoint was written in the same step, so a run whose
        last epochs did not improve the monitored metric kept an older last.ckpt and a resume repeated them."""
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._should_save_on_train_epoch_end(trainer) == at_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_anyway(trainer, at_epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._every_n_train_steps and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        self._save_last_anyway(trainer, at_epoch_end=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """When the data stopped coming (an object store that no longer answers), write `last.ckpt` at the
        batches trained so far, so the run resumes there exactly. One process only: under DDP the other ranks
        may wait in a collective, so step saves (`every_n_train_steps`) are the resume points there."""
        from visionkit.data.shards import StoreUnreachable

        if (
            isinstance(exception, StoreUnreachable)
            and self.save_last
            and trainer.world_size == 1
            and trainer.state.fn == "fit"
            and trainer.global_step > 0
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
