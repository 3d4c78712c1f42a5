"""Reading visionkit checkpoints (weights_only, offline): the task class that wrote one, the task rebuilt from
it, and its data contract. Shared by every entry point that takes a checkpoint; `key` names the option the
user set (`ckpt_path`, `--model`) in messages."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, size_hw
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


def data_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The data contract a checkpoint's data module saved (size, resize mode, mean/std, class names); {} if none."""
    return dict(checkpoint.get(VisionDataModule.__qualname__, {}))


def load_checkpoint(ckpt_path: str | None, key: str = "ckpt_path") -> tuple[VisionTask, dict[str, Any]]:
    """The task a visionkit checkpoint holds (weights_only, offline) and its data contract
    (image size, resize mode, mean/std, class names) as the data module saved it."""
    checkpoint, task_cls = read_checkpoint(ckpt_path, key)
    return build_from_checkpoint(checkpoint, task_cls), data_state(checkpoint)


@dataclass(frozen=True)
class InputContract:
    """How a model's inputs were prepared in training, as its checkpoint stores it: the network size
    (height, width), the resize mode, the normalization and the class names. Predictors apply it, so users
    never repeat it."""

    image_size: tuple[int, int]
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]

    @classmethod
    def of(
        cls,
        data_state: Mapping[str, Any],
        class_names: Sequence[str],
        image_size: int | Sequence[int] | None = None,
        default_size: int = 224,
    ) -> InputContract:
        """The contract a data module saved (`image_size` overrides the training size)."""
        size = image_size or data_state.get("image_size") or default_size
        return cls(
            image_size=size_hw(size),
            resize=str(data_state.get("resize", "stretch")),
            mean=tuple(float(v) for v in data_state.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in data_state.get("std", IMAGENET_STD)),
            class_names=tuple(str(n) for n in class_names),
        )

    def with_resize(self, resize: str) -> InputContract:
        """The same contract with another resize mode (detectors always letterbox, as ultralytics does)."""
        return replace(self, resize=resize)
