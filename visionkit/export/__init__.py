"""Deployable copies of a trained task (ONNX, TorchScript, OpenVINO; ultralytics `.pt` for detection), each
checked against PyTorch by its own runtime, and the format benchmark."""

from __future__ import annotations

import importlib
from typing import Any

# each public name and the module that holds it: imported on first use, so the light modules below (an
# exported file's metadata and runtimes, the input contract) load without PyTorch
_WHERE = {
    "CheckResult": "visionkit.export.check",
    "check_export": "visionkit.export.check",
    "EXPORT_FILES": "visionkit.export.formats",
    "EXPORT_FORMATS": "visionkit.export.formats",
    "export_onnx": "visionkit.export.formats",
    "export_openvino": "visionkit.export.formats",
    "export_torchscript": "visionkit.export.formats",
    "export_ultralytics": "visionkit.export.formats",
    "ExportGraph": "visionkit.export.graph",
    "GraphOptions": "visionkit.export.graph",
    "build_graph": "visionkit.export.graph",
    "ExportRequest": "visionkit.export.pipeline",
    "check_exports": "visionkit.export.pipeline",
    "file_size_mb": "visionkit.export.pipeline",
    "write_exports": "visionkit.export.pipeline",
    "load_runtime": "visionkit.export.runtimes",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
