"""INT8 copies of an export: ONNX Runtime static quantization (`formats=[onnx] int8=true`) and NNCF post-training
quantization for OpenVINO (`formats=[openvino] int8=true`), both calibrated on training images as the graph takes
them. A detector's box decoding stays float32: one INT8 scale over box pixels (0..640) and class scores (0..1)
would round every score to zero."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

if TYPE_CHECKING:
    from visionkit.data.datamodule import VisionDataModule
    from visionkit.export.graph import ExportGraph

log = get_logger(__name__)

INT8_FORMATS = ("onnx", "openvino")
# calibration batches ONNX Runtime holds before merging their ranges: the same ranges, a bounded memory
RANGES_MERGED_EVERY = 8


def calibration_batches(graph: ExportGraph, data: VisionDataModule, count: int) -> list[np.ndarray]:
    """`count` training images (`VisionDataModule.calibration_set`) as the graph takes them, one per batch."""
    loader = DataLoader(data.calibration_set(count), batch_size=1, collate_fn=data.collate_fn)
    with torch.no_grad():
        batches = [graph.graph_input(data.normalize_batch(batch)["image"]).contiguous().numpy() for batch in loader]
    log.info(f"int8: calibrating on {len(batches)} training images (calibration_images={count})")
    return batches


def decoding_ops(names: Sequence[str], types: Sequence[str]) -> list[str]:
    """The ops of a YOLO graph that decode boxes (in the head's own scope, where the class-score Sigmoid is, and
    its DFL) and those around the network (NMS, normalization at the top level): all kept float32. The class
    Sigmoid is the shallowest one (the SiLU activations' sit in `act` modules deeper down); none: no ops."""
    sigmoids = [name for name, kind in zip(names, types, strict=True) if kind == "Sigmoid" and "/" in name.strip("/")]
    if not sigmoids:
        return []
    classes = min(reversed(sigmoids), key=lambda name: name.count("/"))
    scope = re.escape(classes.rsplit("/", 1)[0])
    pattern = re.compile(rf"^{scope}/([^/]+|dfl/.*)$|^/[^/]+$")  # the head's own ops and its DFL; top-level ops
    return [name for name in names if pattern.match(name)]


def quantize_onnx(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    calibration: Sequence[np.ndarray],
    detection: bool,
) -> Path:
    """Write `source` (a float32 ONNX file) as INT8 to `target`: QDQ, weights per channel, activations per tensor,
    their ranges measured on `calibration` (graph inputs). Every op ONNX Runtime has an INT8 kernel for is
    quantized (a detector's box decoding excepted): with the convolutions alone, each activation between two of
    them went back to float and INT8 again, and YOLOv8-n ran no faster than in float32 (0.95-1.07×; 1.5× now)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ranges are measured RANGES_MERGED_EVERY batches at a time (ONNX Runtime's strided min/max) and merged, so
    # the memory stays that of a few images' activations; ONNX Runtime wants whole strides, and repeating batches
    # (cycling, for fewer batches than a stride) to fill the last one leaves the min/max ranges as they are
    strides = -(-len(calibration) // RANGES_MERGED_EVERY)
    padded = [calibration[i % len(calibration)] for i in range(strides * RANGES_MERGED_EVERY)]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(padded))

        def __len__(self) -> int:
            return len(padded)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.batches = iter(padded[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    prepared = Path(target).with_name(Path(target).stem + ".prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # free sizes defeat the symbolic pass
    graph = onnx.load(str(prepared)).graph
    names, types = [n.name for n in graph.node], [n.op_type for n in graph.node]
    kept = set(decoding_ops(names, types)) if detection else set()
    excluded = sorted(kept)
    try:
        quantize_static(
            str(prepared),
            str(target),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
            extra_options={"CalibStridedMinMax": RANGES_MERGED_EVERY},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return Path(target)


def quantize_openvino(model: Any, calibration: Sequence[np.ndarray], detection: bool) -> Any:
    """An INT8 copy of an OpenVINO model (NNCF, mixed preset: symmetric weights, asymmetric activations),
    calibrated on every batch of `calibration`."""
    try:
        import nncf
    except ImportError:
        raise VisionkitError("formats=[openvino] int8=true needs nncf: pip install 'visionkit[export]'") from None
    operations = model.get_ordered_ops()
    names = [op.get_friendly_name() for op in operations]
    types = [op.get_type_name() for op in operations]
    ignored = decoding_ops(names, types) if detection else []
    parameters = {op.get_friendly_name() for op in model.get_parameters()}
    ignored = [name for name in ignored if name not in parameters]
    return nncf.quantize(
        model,
        nncf.Dataset(list(calibration)),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        fast_bias_correction=False,  # the full bias correction: class scores a third closer to float32 on YOLO
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
    )
