"""Deployable copies of a trained task: ONNX (any task) and, for detection, an ultralytics `.pt`.

Files are written to a temporary name and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from visionkit.data.augment import size_hw
from visionkit.errors import VisionkitError
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_path

EXPORT_FORMATS = ("onnx", "ultralytics")


def export_onnx(
    task: VisionTask, path: str | os.PathLike[str], image_size: int | Sequence[int], opset: int = 17
) -> Path:
    """Write the task's inference graph as ONNX with a dynamic batch (and, for detection, image size).

    Input `images` (B, 3, H, W) preprocessed as in training; outputs as `task.export_module()` documents them.
    """
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise VisionkitError("ONNX export needs onnx: pip install 'visionkit[export]'") from None
    module, output_names, dynamic = task.export_module()
    height, width = size_hw(image_size)
    example = torch.rand(1, 3, height, width)
    axes: dict[str, dict[int, str]] = {"images": {0: "batch"}}
    if dynamic:
        axes["images"].update({2: "height", 3: "width"})
    for name in output_names:
        axes[name] = {0: "batch"}
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            module.eval(),
            (example,),
            str(tmp),
            input_names=["images"],
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter handles YOLO heads; ultralytics exports the same way
        )
    return path


def export_ultralytics(task: VisionTask, path: str | os.PathLike[str], image_size: int | Sequence[int]) -> Path:
    """Write a detection task as an ultralytics checkpoint: `ultralytics.YOLO(path)` predicts, validates,
    exports and fine-tunes it like one of its own (`model` holds the network, class names and args)."""
    network = getattr(task, "model", None)
    if not hasattr(network, "yaml") or type(task).__name__ != "DetectionTask":
        raise VisionkitError(f"format=ultralytics is for detection checkpoints; this one is a {type(task).__name__}")
    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT

    height, width = size_hw(image_size)
    args: dict[str, Any] = {**DEFAULT_CFG_DICT, "imgsz": max(height, width), "task": "detect"}
    model = copy.deepcopy(network).float().eval().to(memory_format=torch.contiguous_format)
    model.criterion = None
    model.args = args
    model.names = dict(enumerate(task.class_names))
    for param in model.parameters():
        param.requires_grad_(False)
    checkpoint = {
        "date": datetime.now().astimezone().isoformat(),
        "version": __version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": args,
        "train_metrics": {},
        "exported_by": "visionkit",
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path
