"""What `visionkit-export` and `visionkit-benchmark` do with a checkpoint: one request (formats and graph
options, checked once), the files written into one folder, and the check of each file against PyTorch."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from visionkit.data.datamodule import VisionDataModule
from visionkit.errors import VisionkitError
from visionkit.export.check import CheckResult, check_export
from visionkit.export.formats import (
    EXPORT_FORMATS,
    export_file,
    export_onnx,
    export_openvino,
    export_torchscript,
    export_ultralytics,
)
from visionkit.export.graph import ExportGraph, GraphOptions, build_graph
from visionkit.export.metadata import export_metadata
from visionkit.export.quantize import INT8_FORMATS, calibration_batches
from visionkit.export.runtimes import load_runtime
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

HALF_FORMATS = ("onnx", "openvino")  # TorchScript on the CPU runs float32; ultralytics' .pt keeps its dtype


@dataclass(frozen=True)
class ExportRequest:
    """The formats to write and how (conf/export.yaml documents every key)."""

    formats: tuple[str, ...]
    graph: GraphOptions = field(default_factory=GraphOptions)
    image_size: Any = None
    opset: int = 17
    half: bool = False
    simplify: bool = False
    int8: bool = False
    calibration_images: int = 300
    int8_tolerance: float = 0.01

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(EXPORT_FORMATS))
        if not self.formats or unknown:
            raise VisionkitError(
                f"formats={list(self.formats)}: choose from {list(EXPORT_FORMATS)}, e.g. formats=[onnx,openvino]"
            )
        if "ultralytics" in self.formats and (self.graph.nms or self.graph.preprocess):
            raise VisionkitError(
                "nms=true and preprocess=true change the graph; format=ultralytics writes the network as "
                "ultralytics trains it: export them separately"
            )
        if self.half and not set(self.formats) & set(HALF_FORMATS):
            raise VisionkitError(f"half=true applies to {list(HALF_FORMATS)}; formats={list(self.formats)}")
        if self.int8:
            others = sorted(set(self.formats) - set(INT8_FORMATS))
            if others or self.half:
                raise VisionkitError(
                    f"int8=true writes {list(INT8_FORMATS)} only; "
                    + (f"export {others} separately" if others else "half=true and int8=true exclude each other")
                )
            if self.calibration_images < 1 or not 0 <= self.int8_tolerance < 1:
                raise VisionkitError(
                    f"calibration_images={self.calibration_images}, int8_tolerance={self.int8_tolerance}: calibrate "
                    "on at least 1 image (300 is the default) and allow a metric drop from 0 to 1 (0.01 default)"
                )
        if not 11 <= self.opset <= 21:
            raise VisionkitError(f"opset={self.opset}: choose an ONNX opset from 11 to 21 (17 is the default)")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ExportRequest:
        """The request of a composed export (or benchmark) config; `pytorch` in formats is the reference."""
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(plain, dict)
        formats = tuple(str(f).lower() for f in plain.get("formats") or [] if str(f).lower() != "pytorch")
        graph = GraphOptions(
            dynamic=bool(plain.get("dynamic", True)),
            preprocess=bool(plain.get("preprocess", False)),
            nms=bool(plain.get("nms", False)),
            conf=plain.get("nms_conf"),
            iou=plain.get("nms_iou"),
            max_det=plain.get("nms_max_det"),
        )
        return cls(
            formats=formats,
            graph=graph,
            image_size=plain.get("image_size"),
            opset=int(plain.get("opset", 17)),
            half=bool(plain.get("half", False)),
            simplify=bool(plain.get("simplify", False)),
            int8=bool(plain.get("int8", False)),
            calibration_images=int(plain.get("calibration_images", 300)),
            int8_tolerance=float(plain.get("int8_tolerance", 0.01)),
        )

    def is_half(self, format: str) -> bool:
        """Whether `format`'s file holds float16 weights."""
        return self.half and format in HALF_FORMATS


def file_size_mb(path: str | os.PathLike[str]) -> float:
    """A file's size, or the sum of a folder's files (OpenVINO), in MB."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def write_exports(
    task: VisionTask,
    data_state: Mapping[str, Any],
    request: ExportRequest,
    folder: str | os.PathLike[str],
    data: VisionDataModule | None = None,
) -> tuple[ExportGraph, dict[str, Path]]:
    """Write every requested format of `task` into `folder` (names from `export_file`): (the graph, format ->
    path). An INT8 request is calibrated on `data`'s training images."""
    graph = build_graph(task, data_state, request.image_size, request.graph)
    folder = Path(folder)
    calibration = None
    if request.int8:
        if data is None:
            raise VisionkitError("int8=true calibrates on the checkpoint's training images: pass its data")
        if task.quality_metric is None:
            raise VisionkitError(
                f"int8=true is checked by the task's validation metric and a {task.task_name} task has none: "
                "export it in float32 (or half=true)"
            )
        calibration = calibration_batches(graph, data, request.calibration_images)
    detection = task.task_name == "detection"
    written: dict[str, Path] = {}
    for format in request.formats:
        path = folder / export_file(format, request.int8)
        metadata = export_metadata(task, data_state, graph, request.is_half(format), len(calibration or ()))
        if format == "onnx":
            export_onnx(graph, path, request.opset, request.half, request.simplify, metadata, calibration, detection)
        elif format == "torchscript":
            export_torchscript(graph, path, metadata)
        elif format == "openvino":
            export_openvino(graph, path, request.opset, request.half, metadata, calibration, detection)
        else:
            export_ultralytics(task, path, graph.contract.image_size)
        written[format] = path
    return graph, written


def check_exports(
    task: VisionTask,
    graph: ExportGraph,
    request: ExportRequest,
    written: Mapping[str, Path],
    data: VisionDataModule,
    folder: str | os.PathLike[str],
    max_batches: int | None = None,
) -> list[CheckResult]:
    """Check each written file that has a runtime against PyTorch (see `check_export`), log one line each, save
    them as check.json in `folder`, and fail naming every export that answered differently."""
    results = []
    for format, path in written.items():
        if format == "ultralytics":  # its own tests: ultralytics.YOLO(path).val() (see docs/guide/export.md)
            continue
        runtime = load_runtime(format, path)
        result = check_export(
            task,
            graph,
            format,
            runtime,
            data,
            half=request.is_half(format),
            int8_tolerance=request.int8_tolerance if request.int8 else None,
            max_batches=max_batches,
        )
        log.info(result.summary())
        results.append(result)
    with atomic_write(Path(folder) / "check.json", "w") as handle:
        json.dump([r.to_dict() for r in results], handle, indent=2)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "\n  ".join(r.summary() for r in failed)
        raise VisionkitError(
            f"{len(failed)} export(s) answer differently from PyTorch (files kept in {folder} to inspect):\n  {lines}"
            + ("\n  raise calibration_images= or int8_tolerance=, or export in float32" if request.int8 else "")
        )
    return results
