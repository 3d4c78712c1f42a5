"""Checkpoint writes that a kill cannot tear: Lightning's own go through a temporary file in the system's temp
folder and a move, which is a copy (not atomic) when that folder is on another filesystem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from visionkit.utils.io import atomic_write


def save_atomically(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary file beside `path`, flushed to disk, then renamed over `path`: a reader sees
    the previous complete file or the new complete one, never a part."""
    with atomic_write(path) as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with `save_atomically` for local paths (remote URLs keep Lightning's)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomically(checkpoint, Path(path))
