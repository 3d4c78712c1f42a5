"""Exported files as predictors: `load_predictor("model.onnx")`, `load_predictor("model_openvino/")` and
`load_predictor("model.torchscript")` give the same predictor and results as the checkpoint they came from. The
file's own metadata (`visionkit.export.metadata`) says the task, input contract and thresholds; its runtime
(ONNX Runtime, OpenVINO, torch.jit) runs the network, and the predictor's pre- and post-processing stay ours, in
NumPy: an ONNX or OpenVINO file predicts where PyTorch is not installed (`pip install 'visionkit[runtime]'`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.contract import DATA_STATE_KEY, InputContract
from visionkit.errors import VisionkitError
from visionkit.export.metadata import parse_metadata
from visionkit.export.runtimes import RUNTIME_NAMES, PixelRuntime, Runtime, StreamRuntime, load_runtime
from visionkit.utils.arrays import class_probabilities
from visionkit.utils.logging import get_logger
from visionkit.utils.timing import best_seconds

log = get_logger(__name__)

EXPORTED = "exported"  # the key of a checkpoint-like state that stands for an exported file


def exported_format(path: str | os.PathLike[str]) -> str | None:
    """ "onnx", "openvino" or "torchscript" for an exported file (an OpenVINO folder or its .xml), else None."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.xml").is_file():
        return "openvino"
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return "openvino"
    return {".onnx": "onnx", ".torchscript": "torchscript"}.get(suffix)


def read_exported(path: str | os.PathLike[str], key: str = "ckpt_path") -> tuple[dict[str, Any], str]:
    """(a checkpoint-like state, the qualified name of the task that was exported) of an exported file: its
    runtime loaded once (kept in the state for `exported_model`), its data contract and hyper-parameters from its
    metadata. The task is named, not imported: that would need PyTorch."""
    format = exported_format(path)
    if format is None:
        raise VisionkitError(f"{key}: {path} is not an exported file (.onnx, .torchscript, an OpenVINO folder or .xml)")
    location = Path(path).expanduser()
    if format == "openvino" and location.suffix.lower() == ".xml":
        location = location.parent
    if not location.exists():
        raise VisionkitError(f"{key}: {path} does not exist")
    runtime = load_runtime(format, location)
    record = parse_metadata(runtime.metadata(), f"{key}: {path}")
    task = str(record["task"])
    if not task.startswith("visionkit.tasks."):
        raise VisionkitError(f"{key}: {path} names task {task!r}, not a visionkit task")
    state = {
        "visionkit": {"task": task},
        "hyper_parameters": dict(record.get("hyper_parameters", {})),
        DATA_STATE_KEY: dict(record.get("data_state", {})),
        EXPORTED: {"format": format, "path": str(location), "runtime": runtime, "record": record},
    }
    return state, task


class Settings(dict):
    """The task's stored hyper-parameters, read as `settings.name` or `settings.get("name")` (as a task's
    `hparams`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class ExportedModel:
    """An exported graph standing in for the task a predictor calls, on NumPy arrays: the call (normalized
    images in, the task's output out), and the few task methods and stored values predictors use
    (`class_probabilities`, `detect`, `threshold`, `thresholds`, `hparams`). `exported` names the runtime."""

    def __init__(self, runtime: Runtime, record: dict[str, Any], format: str) -> None:
        self.runtime, self.format = runtime, format
        self.exported = RUNTIME_NAMES[format]
        self.graph = dict(record["graph"])
        self.hparams = Settings(record.get("hyper_parameters", {}))
        self.class_names = list(record.get("class_names", []))
        for name, value in (record.get("attributes") or {}).items():
            setattr(self, name, np.asarray(math.nan if value is None else value, dtype=np.float32))
        # the contract the graph was exported with (InputContract.of on the same stored data state)
        self.contract = InputContract.of(record.get("data_state", {}), self.class_names)
        # 8-bit RGB pictures go as they are to a runtime that normalizes them itself (`__call__`)
        self._pixels: Callable[[np.ndarray], np.ndarray] | None = None
        self._faster: dict[int, bool] = {}  # batch size -> whether streams won (`faster_in_streams`)
        if isinstance(runtime, PixelRuntime) and self.contract.pixels.rgb8 and not self.graph.get("preprocess"):
            peak = self.contract.peak
            runtime.accept_pixels([m * peak for m in self.contract.mean], [s * peak for s in self.contract.std])
            self._pixels = runtime.pixels

    @property
    def any_size(self) -> bool:
        """Whether the graph takes pictures of any height and width."""
        return takes_any_size(self.graph)

    def streams(self, batch_size: int) -> int:
        """How many batches of `batch_size` the runtime can run at once, each from a thread that called
        `run_in_streams` (OpenVINO's CPU streams, for a batch smaller than their number); 1 for one at a time."""
        return self.runtime.streams(batch_size) if isinstance(self.runtime, StreamRuntime) else 1

    def faster_in_streams(self, batch_size: int) -> bool:
        """Whether `streams` batches of `batch_size` run faster together in streams than one after the other over
        every core: timed here once per batch size on zeros at the graph's input size (each way's best of
        interleaved rounds, after a first call that compiles its models), the choice logged. Streams ran YOLOv8-n
        1.1-1.2x faster at batch 1 on a 2-core AMD EPYC and ResNet-18 0.6x as fast on a 2-vCPU Intel Xeon
        (docs/benchmarks.md): no rule holds for every CPU."""
        lanes = self.streams(batch_size)
        if lanes < 2:
            return False
        if batch_size in self._faster:
            return self._faster[batch_size]
        height, width = self.graph.get("image_size") or self.contract.image_size
        channels = self.contract.pixels.channels
        if self.takes_pixels:
            probe = np.zeros((batch_size, height, width, channels), np.uint8)
        else:
            probe = np.zeros((batch_size, channels, height, width), np.float32)
        with ThreadPoolExecutor(lanes, "visionkit-stream", initializer=self.run_in_streams) as pool:
            calls = {
                "one batch at a time": lambda: [self(probe) for _ in range(lanes)],
                f"{lanes} streams": lambda: list(pool.map(self, [probe] * lanes)),
            }
            seconds = best_seconds(calls, budget_s=2.0)
        alone, together = seconds.values()
        table = ", ".join(f"{name} {time * 1000 / lanes:.1f} ms a batch" for name, time in seconds.items())
        log.info(
            f"{self.exported}: {'streams' if together < alone else 'one batch at a time'} chosen by timing "
            f"{lanes} batches of {batch_size} on this machine ({table})"
        )
        self._faster[batch_size] = together < alone
        return self._faster[batch_size]

    def run_in_streams(self) -> None:
        """Make the calling thread's batches run in one of the runtime's `streams`."""
        if isinstance(self.runtime, StreamRuntime):
            self.runtime.run_in_streams()

    @property
    def takes_pixels(self) -> bool:
        """Whether the call takes the uint8 (B, H, W, C) pictures themselves (the runtime normalizes them)."""
        return self._pixels is not None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """The graph's output for normalized (B, C, H, W) float32 images (a graph that normalizes itself gets the
        pixels back: uint8, rounded, or 0..1 floats for scans and bands), or, where `takes_pixels`, for the uint8
        (B, H, W, C) pictures themselves."""
        if self._pixels is not None and images.dtype == np.uint8:
            return self._pixels(images)
        if self.graph.get("preprocess"):
            contract = self.contract
            mean = np.asarray(contract.mean, dtype=np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(contract.std, dtype=np.float32).reshape(1, -1, 1, 1)
            images = (images * std + mean) * np.float32(contract.peak)
            if self.graph.get("input_dtype") == "uint8":
                images = np.clip(np.round(images), 0, 255).astype(np.uint8)
        return self.runtime(images)

    def class_probabilities(self, images: np.ndarray) -> np.ndarray:
        """Segmentation: per-class probabilities (the task's own rule, binary models included)."""
        return class_probabilities(self(images), bool(self.hparams.get("binary", False)))

    def detect(
        self,
        images: np.ndarray,
        conf: float,
        iou: float,
        max_det: int,
        multi_label: bool = False,
        return_anchors: bool = False,
    ) -> Any:
        """Detection: per image (K, 6) rows x1 y1 x2 y2 score class, by our NMS on the graph's output (with
        `return_anchors`, also each row's anchor), or read from a graph that holds NMS (its own IoU threshold;
        `conf` and `max_det` applied again)."""
        output = self(images)
        if not self.graph.get("nms"):
            from visionkit.inference.nms import yolo_nms

            rows, anchors = yolo_nms(output, conf, iou, max_det, multi_label)
            return (rows, anchors) if return_anchors else rows
        if return_anchors:
            raise VisionkitError("anchors=true needs the network's raw output: export without nms=true")
        return [rows[rows[:, 4] > conf][:max_det] for rows in output]


def takes_any_size(graph: dict[str, Any]) -> bool:
    """Whether an exported graph takes any height and width: exported `dynamic` from a network that allows it."""
    return bool(graph.get("dynamic") and graph.get("dynamic_hw"))


def exported_model(
    state: dict[str, Any], image_size: Any, device: str = "cpu", precision: str = "fp32"
) -> ExportedModel:
    """The ExportedModel of a state `read_exported` gave (its runtime loaded again for a GPU `device` or another
    `precision`, where the runtime offers it); a size the graph cannot take is refused."""
    exported = state[EXPORTED]
    record = exported["record"]
    graph = record["graph"]
    if image_size is not None and not takes_any_size(graph):
        from visionkit.data.augment import size_hw

        if list(size_hw(image_size)) != list(graph["image_size"]):
            raise VisionkitError(
                f"image_size={image_size}: {exported['path']} takes {graph['image_size'][0]}×"
                f"{graph['image_size'][1]} images only (exported with a fixed size); export it again at that size"
            )
    runtime = exported["runtime"]
    if str(device).startswith("cuda") or precision != "fp32":
        runtime = load_runtime(exported["format"], exported["path"], str(device), precision)
    return ExportedModel(runtime, record, exported["format"])
