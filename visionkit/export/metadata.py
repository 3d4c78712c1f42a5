"""What an exported file says about itself, so `load_predictor("model.onnx")` needs nothing beside it: the task, the
input contract (size, resize mode, mean/std, channels, class names), the graph's options (normalization or NMS
inside), the thresholds the task stored and the visionkit version. Stored as flat string entries (ONNX
`metadata_props`, OpenVINO `rt_info`, TorchScript extra files), one of them, `visionkit`, the whole record as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import visionkit
from visionkit.errors import VisionkitError

if TYPE_CHECKING:  # this module loads without PyTorch: exported files are read where it is not installed
    from visionkit.export.graph import ExportGraph
    from visionkit.tasks.base import VisionTask

METADATA_KEY = "visionkit"
OPENVINO_SECTION = "visionkit"  # rt_info section holding the metadata entries
METADATA_FORMAT = 1
# task attributes (buffers set on validation) that its predictor reads besides the network
STORED_ATTRIBUTES = ("threshold", "thresholds")


def _plain(value: Any) -> Any:
    """`value` as JSON (tensors and arrays as lists, NaN as None), or None when it is not data (a function)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None


def export_metadata(
    task: VisionTask, data_state: Mapping[str, Any], graph: ExportGraph, half: bool = False, int8_images: int = 0
) -> dict[str, str]:
    """The entries every export of `task` carries (string keys and values); `int8_images`: the number of images
    an INT8 copy was calibrated on (0: float)."""
    cls = type(task)
    contract = graph.contract
    hyper = {k: v for k, v in _plain(dict(task.hparams)).items() if v is not None}
    attributes = {name: _plain(getattr(task, name)) for name in STORED_ATTRIBUTES if hasattr(task, name)}
    options = graph.options
    record = {
        "format": METADATA_FORMAT,
        "visionkit_version": visionkit.__version__,
        "task": f"{cls.__module__}.{cls.__qualname__}",
        "class_names": list(contract.class_names),
        "data_state": _plain(dict(data_state)),
        "hyper_parameters": hyper,
        "attributes": attributes,
        "graph": {
            "image_size": list(contract.image_size),
            "dynamic": options.dynamic,
            "dynamic_hw": graph.dynamic_hw,
            "preprocess": options.preprocess,
            "input_dtype": str(graph.input_dtype).removeprefix("torch."),
            "nms": options.nms,
            "outputs": list(graph.output_names),
            "half": half,
            "int8": bool(int8_images),
            "calibration_images": int8_images,
        },
    }
    flat = {
        "task": task.task_name,
        "names": json.dumps(dict(enumerate(contract.class_names))),
        "imgsz": json.dumps(list(contract.image_size)),
        "resize": contract.resize,
        "mean": json.dumps(list(contract.mean)),
        "std": json.dumps(list(contract.std)),
        "channels": str(contract.pixels.channels),
        "nms": str(options.nms),
        "preprocess": str(options.preprocess),
        "int8": str(bool(int8_images)),
        "visionkit_version": visionkit.__version__,
    }
    if options.nms:
        hp = task.hparams
        flat["conf"] = str(hp.conf if options.conf is None else options.conf)
        flat["iou"] = str(hp.iou if options.iou is None else options.iou)
        flat["max_det"] = str(hp.max_det if options.max_det is None else options.max_det)
    return {**flat, METADATA_KEY: json.dumps(record)}


def parse_metadata(entries: Mapping[str, str], path: str) -> dict[str, Any]:
    """The record of an exported file's entries; a file exported by something else, or by a visionkit that did not
    describe its exports, is refused with what to do."""
    text = entries.get(METADATA_KEY)
    if not text:
        raise VisionkitError(
            f"{path} does not say what it holds (no visionkit metadata): it was exported by another tool or by an "
            "older visionkit; export it again with visionkit-export ckpt_path=<best.ckpt>, or pass the checkpoint"
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VisionkitError(f"{path}: its visionkit metadata is damaged ({exc}); export it again") from None
    if int(record.get("format", 0)) > METADATA_FORMAT:
        raise VisionkitError(
            f"{path} was exported by visionkit {record.get('visionkit_version')}, whose metadata this visionkit "
            f"({visionkit.__version__}) does not know: upgrade visionkit"
        )
    return record
