"""Reading visionkit checkpoints (weights_only, offline): the task class that wrote one, the task rebuilt from
it, and its data contract. Shared by every entry point that takes a checkpoint; `key` names the option the
user set (`ckpt_path`, `--model`) in messages."""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from visionkit.data.contract import InputContract, data_state
from visionkit.errors import VisionkitError
from visionkit.tasks.base import VisionTask

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def archive_problem(path: Path) -> str | None:
    """None when `path` is a complete PyTorch zip archive, else what is wrong with it, as a sentence's end
    (a cheap look at its first bytes and its zip directory; nothing is unpickled)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
        if head != ZIP_MAGIC:
            return "is not a checkpoint (not a PyTorch zip archive: a different kind of file, or an empty one)"
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except zipfile.BadZipFile:
        return "is truncated: its end is missing (a save or a copy that was cut short, or a full disk)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def readable_alternative(path: Path) -> Path | None:
    """The newest other checkpoint in `path`'s folder that is a complete archive (to resume or predict from)."""
    others = [p for p in path.parent.glob("*.ckpt") if p.resolve() != path.resolve() and p.is_file()]
    for other in sorted(others, key=lambda p: p.stat().st_mtime, reverse=True):
        if archive_problem(other) is None:
            return other
    return None


def unreadable_message(path: Path, key: str, problem: str) -> str:
    """`key: <path> <problem>` and the newest readable checkpoint beside it, if any, as the fix."""
    other = readable_alternative(path)
    fix = f"; the newest readable checkpoint beside it is {other}: pass {key}={other}" if other else ""
    return f"{key}: {path} {problem}{fix}"


def check_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> Path | None:
    """The checkpoint's path (None when not set); an error naming `key` when the file does not exist or is not a
    complete checkpoint archive (truncated, or another kind of file)."""
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise VisionkitError(f"{key}: checkpoint {path} does not exist")
    problem = archive_problem(path)
    if problem is not None:
        raise VisionkitError(unreadable_message(path, key, problem))
    return path


def read_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> tuple[dict[str, Any], type[VisionTask]]:
    """(the checkpoint's contents, the task class that wrote it), read with weights_only."""
    path = check_checkpoint(ckpt_path, key)
    if path is None:
        raise VisionkitError(f"{key} is not set: pass {key}=/path/to/best.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        unsafe = "weights_only" in str(exc) or isinstance(exc, pickle.UnpicklingError)
        problem = (
            "holds Python objects that are not plain weights; visionkit loads checkpoints with weights_only=True "
            "and will not run code from a file (write it again with a visionkit task)"
            if unsafe
            else f"could not be read as a checkpoint ({type(exc).__name__})"
        )
        raise VisionkitError(unreadable_message(path, key, problem)) from None
    name = (checkpoint.get("visionkit") or {}).get("task", "") if isinstance(checkpoint, Mapping) else ""
    if not name.startswith("visionkit.tasks."):
        raise VisionkitError(f"{key}: {path} was not written by a visionkit task (no visionkit metadata)")
    module, _, attr = name.rpartition(".")
    return checkpoint, getattr(importlib.import_module(module), attr)


def build_from_checkpoint(checkpoint: dict[str, Any], task_cls: type[VisionTask]) -> VisionTask:
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
    return build_from_checkpoint(checkpoint, task_cls), data_state(checkpoint)


__all__ = [  # InputContract and data_state live in data.contract (read without PyTorch); offered here too
    "InputContract",
    "archive_problem",
    "build_from_checkpoint",
    "check_checkpoint",
    "data_state",
    "load_checkpoint",
    "read_checkpoint",
    "readable_alternative",
    "unreadable_message",
]
