"""What a Lightning checkpoint lacks for an exact resume: the random states and the training loader's position.

Saved in every checkpoint under `visionkit_resume`, in types `torch.load(weights_only=True)` reads; on resume
the loader continues after the batches already trained on (`ResumableSampler`), and the random states are
put back just before the first resumed training step, the point where the uninterrupted run had them.
"""

from __future__ import annotations

import random
from typing import Any, cast

import lightning as L
import numpy as np
import torch

KEY = "visionkit_resume"


def collect_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA random states as tensors, lists and numbers (safe for weights_only)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    states: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what `collect_rng_states` took."""
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(L.Callback):
    """Saves and restores the random states and data position, so a run killed and resumed from its newest
    checkpoint trains on the same batches with the same draws as one that was never stopped."""

    def __init__(self) -> None:
        self._states: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != "fit":
            return
        checkpoint[KEY] = {
            "rng": collect_rng_states(),
            "epoch": trainer.current_epoch,
            "batches_done": trainer.fit_loop.epoch_loop.batch_progress.current.processed,  # type: ignore[attr-defined]  # a _ProcessedTracker at run time
            "batches_per_epoch": trainer.num_training_batches,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get(KEY)
        if saved is None or trainer.state.fn != "fit":
            return  # a checkpoint from before this callback: Lightning's own resume, not exact
        epoch, done = int(saved["epoch"]), int(saved["batches_done"])
        if done >= saved["batches_per_epoch"]:
            epoch, done = epoch + 1, 0
        resume_at = getattr(getattr(trainer, "datamodule", None), "resume_at", None)  # visionkit's data module
        if callable(resume_at):
            resume_at(epoch, done)
        self._states = saved["rng"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        fetcher = trainer.fit_loop._data_fetcher
        if sampler is not None and sampler.resume_pending and fetcher is not None:
            # the loader was iterated before the checkpoint was read (strategies that restore after their
            # setup, e.g. FSDP, where `estimated_stepping_batches` builds it first): restart from the resume point
            iter(fetcher)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self._states is not None:
            set_rng_states(self._states)
            self._states = None
