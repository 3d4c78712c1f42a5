"""Reading visionkit checkpoints (weights_only, offline): the task class that wrote one, the task rebuilt from
it, and its data contract. Shared by every entry point that takes a checkpoint; `key` names the option the
user set (`ckpt_path`, `--model`) in messages."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from visionkit.data.datamodule import VisionDataModule
from visionkit.errors import VisionkitError
from visionkit.tasks.base import VisionTask


def check_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> Path | None:
    """The checkpoint's path (None when not set); an error naming `key` when the file does not exist."""
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise VisionkitError(f"{key}: checkpoint {path} does not exist")
    return path


def read_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> tuple[dict[str, Any], type[VisionTask]]:
    """(the checkpoint's contents, the task class that wrote it), read with weights_only."""
    path = check_checkpoint(ckpt_path, key)
    if path is None:
        raise VisionkitError(f"{key} is not set: pass {key}=/path/to/best.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise VisionkitError(f"{key}: {path} is not a readable checkpoint ({reason})") from None
    name = (checkpoint.get("visionkit") or {}).get("task", "") if isinstance(checkpoint, Mapping) else ""
    if not name.startswith("visionkit.tasks."):
        raise VisionkitError(f"{key}: {path} was not written by a visionkit task (no visionkit metadata)")
    module, _, attr = name.rpartition(".")
    return checkpoint, getattr(importlib.import_module(module), attr)


def build_from_checkpoint(checkpoint: Mapping[str, Any], task_cls: type[VisionTask]) -> VisionTask:
    """The task rebuilt from its hyper-parameters with the saved weights, in eval mode: what
    LightningModule.load_from_checkpoint does, on a checkpoint already read (it would read it again)."""
    task = task_cls(**checkpoint.get("hyper_parameters", {}))
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    return task.eval()


def load_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> tuple[VisionTask, dict[str, Any]]:
    """The task a visionkit checkpoint holds (weights_only, offline) and its data contract
    (image size, resize mode, mean/std, class names) as the data module saved it."""
    checkpoint, task_cls = read_checkpoint(ckpt_path, key)
    data_state = dict(checkpoint.get(VisionDataModule.__qualname__, {}))
    return build_from_checkpoint(checkpoint, task_cls), data_state
