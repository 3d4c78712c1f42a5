"""Sample predictions drawn after validation epochs, for every task and any logger.

The callback keeps the first validation batch and its outputs; the task draws them
(`pl_module.sample_figure(batch, outputs, images, title)`), so each task decides what a sample looks like
while saving and logging stay here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionkit.callbacks.figures import publish, shown_images


class SamplePredictionPlot(Callback):
    """Write `plots/val_samples.png` (the latest epoch) and log it to loggers that take figures.

    num_samples: how many images of the first validation batch to draw; every_n_epochs: how often (the
    last epoch is always drawn). A drawing costs about half a second, so the default is sparse.
    """

    def __init__(self, num_samples: int = 16, every_n_epochs: int = 10, dirpath: str | None = None) -> None:
        self.num_samples = num_samples
        self.every_n_epochs = max(1, every_n_epochs)
        self.dirpath = dirpath
        self._held: tuple[Any, Any] | None = None
        self.last_path: Path | None = None

    def _wanted(self, trainer: L.Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and (
                (trainer.current_epoch + 1) % self.every_n_epochs == 0
                or trainer.current_epoch + 1 == trainer.max_epochs
            )
            and hasattr(trainer.lightning_module, "sample_figure")
        )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and self._wanted(trainer):

            def first(values: dict[str, Any]) -> dict[str, Any]:  # per-sample tensors only (not the loss)
                return {k: v[: self.num_samples].detach() for k, v in values.items() if getattr(v, "ndim", 0) > 0}

            self._held = (first(batch), first(outputs))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._held is None:
            return
        batch, outputs = self._held
        self._held = None
        title = f"validation samples, epoch {trainer.current_epoch}"
        task: Any = pl_module  # a task that draws samples: `sample_figure` was looked for before holding a batch
        fig = task.sample_figure(batch, outputs, shown_images(trainer, batch["image"]), title)
        out_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        self.last_path = publish(trainer, "val/samples", fig, out_dir / "val_samples.png")
