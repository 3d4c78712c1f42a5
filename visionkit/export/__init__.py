"""Deployable copies of a trained task (ONNX, TorchScript, OpenVINO; ultralytics `.pt` for detection), each
checked against PyTorch by its own runtime, and the format benchmark."""

from visionkit.export.check import CheckResult, check_export
from visionkit.export.formats import (
    EXPORT_FILES,
    EXPORT_FORMATS,
    export_onnx,
    export_openvino,
    export_torchscript,
    export_ultralytics,
)
from visionkit.export.graph import ExportGraph, GraphOptions, build_graph
from visionkit.export.pipeline import ExportRequest, check_exports, file_size_mb, write_exports
from visionkit.export.runtimes import load_runtime

__all__ = [
    "EXPORT_FILES",
    "EXPORT_FORMATS",
    "CheckResult",
    "ExportGraph",
    "ExportRequest",
    "GraphOptions",
    "build_graph",
    "check_export",
    "check_exports",
    "export_onnx",
    "export_openvino",
    "export_torchscript",
    "export_ultralytics",
    "file_size_mb",
    "load_runtime",
    "write_exports",
]
