"""Deployable copies of a trained task: ONNX, TorchScript and OpenVINO of any task (all three from one
`ExportGraph`) and, for detection, an ultralytics `.pt`.

Files are written to a temporary name and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionkit.data.augment import size_hw
from visionkit.errors import VisionkitError
from visionkit.export.graph import ExportGraph
from visionkit.export.metadata import OPENVINO_SECTION
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_dir, atomic_path
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

# format -> the file (or, for OpenVINO, the folder of .xml + .bin) written into the export folder
EXPORT_FILES = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript",
    "openvino": "model_openvino",
    "ultralytics": "model.pt",
}
EXPORT_FORMATS = tuple(EXPORT_FILES)
INT8_FILES = {"onnx": "model_int8.onnx", "openvino": "model_int8_openvino"}


def export_file(format: str, int8: bool = False) -> str:
    """The name `format` is written under in an export folder (INT8 copies say so in their name)."""
    return INT8_FILES[format] if int8 else EXPORT_FILES[format]


def _needs(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise VisionkitError(f"{what} needs {module}: pip install 'visionkit[export]'") from None


def export_onnx(
    graph: ExportGraph,
    path: str | os.PathLike[str],
    opset: int = 17,
    half: bool = False,
    simplify: bool = False,
    metadata: Mapping[str, str] | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    detection: bool = False,
) -> Path:
    """Write `graph` as ONNX: input `images` (B, 3, H, W), outputs named by the graph; `half` makes weights and
    compute float16 (inputs and outputs stay float32), `simplify` folds constants and fuses nodes (onnxslim);
    `calibration` (graph inputs) makes it INT8 (`quantize_onnx`; `detection` keeps box decoding float32);
    `metadata` goes into the file's `metadata_props` (`export_metadata`)."""
    _needs("onnx", "ONNX export")
    if simplify:
        _needs("onnxslim", "simplify=true")
    if half:
        _needs("onnxconverter_common", "half=true")
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            graph.module,
            (graph.example(),),
            str(tmp),
            input_names=["images"],
            output_names=list(graph.output_names),
            dynamic_axes=graph.axes() or None,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter handles YOLO heads; ultralytics exports the same way
        )
        if simplify:
            import onnxslim

            onnxslim.slim(str(tmp), str(tmp))
        if half:
            import onnx
            from onnxconverter_common import float16

            model = float16.convert_float_to_float16(onnx.load(str(tmp)), keep_io_types=True)
            onnx.save(_casts_follow_float16(model), str(tmp))
        if calibration is not None:
            from visionkit.export.quantize import quantize_onnx

            float32 = tmp.with_name(tmp.stem + ".float32.onnx")
            tmp.replace(float32)
            try:
                quantize_onnx(float32, tmp, calibration, detection)
            finally:
                float32.unlink(missing_ok=True)
        if metadata:
            import onnx

            model = onnx.load(str(tmp))
            onnx.helper.set_model_props(model, dict(metadata))
            onnx.save(model, str(tmp))
    return path


def _casts_follow_float16(model: Any) -> Any:
    """The cast of `preprocess`'s uint8 input to float: the float16 converter retypes its result as float16 but
    leaves the cast saying float, and onnxruntime refuses the graph; make it cast to float16."""
    from onnx import TensorProto, helper

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    integer_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type not in floats}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in integer_inputs:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                    attribute.CopyFrom(helper.make_attribute("to", TensorProto.FLOAT16))
    return model


def export_torchscript(
    graph: ExportGraph, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write `graph` traced as TorchScript (`torch.jit.load` runs it without visionkit; float32); `metadata` as
    extra files (`<key>.txt`, read back with `_extra_files`)."""
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        traced = torch.jit.trace(graph.module, (graph.example(),), check_trace=False)
        extra = {f"{key}.txt": value for key, value in (metadata or {}).items()}
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


def export_openvino(
    graph: ExportGraph,
    path: str | os.PathLike[str],
    opset: int = 17,
    half: bool = False,
    metadata: Mapping[str, str] | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    detection: bool = False,
) -> Path:
    """Write `graph` as OpenVINO IR (a folder with model.xml and model.bin), converted from the same ONNX graph
    the ONNX export writes; `half` stores float16 weights (OpenVINO's CPU plugin computes in float32);
    `calibration` (graph inputs) makes it INT8 (`quantize_openvino`; `detection` keeps box decoding float32);
    `metadata` in the model's `rt_info` under `visionkit`."""
    _needs("openvino", "OpenVINO export")
    import openvino as ov

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch, atomic_dir(path) as tmp:
        onnx_file = export_onnx(graph, Path(scratch) / "model.onnx", opset=opset)
        model = convert_onnx(onnx_file)
        if calibration is not None:
            from visionkit.export.quantize import quantize_openvino

            model = quantize_openvino(model, calibration, detection)
        for key, value in (metadata or {}).items():
            model.set_rt_info(value, [OPENVINO_SECTION, key])
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=half)
    return path


def convert_onnx(onnx_file: Path) -> Any:
    """OpenVINO's `convert_model` of an ONNX file with OpenVINO's usage telemetry off for the call: its sender posts
    each event from a process it forks off a thread, and in a process with other threads running (OpenVINO's own, a
    server's) that child can deadlock; Python then waits for it at exit, forever (a test run hung so). The converter
    reuses the telemetry object made here, with its consent withdrawn; nothing else changes."""
    import openvino as ov

    try:
        from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry

        init_ovc_telemetry().consent = False
    except (ImportError, AttributeError):  # another OpenVINO layout: convert as it is
        pass
    return ov.convert_model(str(onnx_file))


def export_ultralytics(task: VisionTask, path: str | os.PathLike[str], image_size: int | Sequence[int]) -> Path:
    """Write a detection task as an ultralytics checkpoint: `ultralytics.YOLO(path)` predicts, validates,
    exports and fine-tunes it like one of its own (`model` holds the network, class names and args)."""
    network = getattr(task, "model", None)
    if network is None or not hasattr(network, "yaml") or task.task_name != "detection":
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
