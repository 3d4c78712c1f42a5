"""Does an export answer like the checkpoint? Its runtime and the PyTorch graph run side by side on the
checkpoint's validation split: the largest output difference, and the task's validation metric of each."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from visionkit.data.datamodule import VisionDataModule
from visionkit.errors import VisionkitError
from visionkit.export.graph import ExportGraph
from visionkit.export.runtimes import PyTorchRuntime, Runtime
from visionkit.tasks.base import VisionTask
from visionkit.utils.logging import one_line_per_message

# Largest |export - PyTorch| allowed, relative to the largest |PyTorch output| (float32 runtimes differ in the
# order of their sums: about 1e-6; float16 weights and compute: about 1e-3), and the metric move allowed.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
METRIC_TOLERANCE = 0.005


@dataclass(frozen=True)
class CheckResult:
    """One export's check: the largest output difference (absolute, and relative to the outputs' scale), the
    validation metric with PyTorch and with the export, and whether both are within their tolerances. An INT8
    export (`int8`) is judged by its metric alone: the drop from float32 at most `metric_tolerance`."""

    format: str
    runtime: str
    images: int
    max_diff: float
    relative_diff: float
    tolerance: float
    metric: str | None
    pytorch: float | None
    exported: float | None
    metric_tolerance: float = METRIC_TOLERANCE
    int8: bool = False

    @property
    def metric_move(self) -> float | None:
        """How far the metric moved (INT8: how far it dropped)."""
        if self.pytorch is None or self.exported is None:
            return None
        return self.pytorch - self.exported if self.int8 else abs(self.exported - self.pytorch)

    @property
    def passed(self) -> bool:
        move = self.metric_move
        metric_ok = move is None or move <= self.metric_tolerance
        return metric_ok if self.int8 else self.relative_diff <= self.tolerance and metric_ok

    def summary(self) -> str:
        """One line for the log: the differences, the metrics and the verdict."""
        judged = "not judged for INT8" if self.int8 else f"tolerance {self.tolerance:g}"
        line = (
            f"{self.format}{' INT8' if self.int8 else ''} ({self.runtime}) on {self.images} validation images: "
            f"max |diff| {self.max_diff:.3g} ({self.relative_diff:.2g} of the output scale; {judged})"
        )
        if self.metric is not None and self.pytorch is not None and self.exported is not None:
            if self.int8:
                line += (
                    f", {self.metric} {self.pytorch:.4f} float32 vs {self.exported:.4f} INT8 "
                    f"({self.exported - self.pytorch:+.4f}; a drop of at most {self.metric_tolerance:g} allowed)"
                )
            else:
                line += f", {self.metric} {self.pytorch:.4f} PyTorch vs {self.exported:.4f} export"
        return line + (" - OK" if self.passed else " - FAILED")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metric_move": self.metric_move, "passed": self.passed}


class _StandIn(nn.Module):
    """Takes the place of a task's network in validation: the images the task gives its network, converted to
    the graph's input, answered by `run` (a runtime or the PyTorch graph)."""

    def __init__(self, graph: ExportGraph, run: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.graph, self.run = graph, run

    def forward(self, images: Tensor) -> Tensor:
        return answer(self.graph, self.run, self.graph.graph_input(images.contiguous()).contiguous())


def answer(graph: ExportGraph, run: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """`run` on a batch of graph inputs as float; one image at a time when the graph fixes the batch at 1."""
    if graph.options.dynamic:
        return run(inputs).float()
    return torch.cat([run(inputs[i : i + 1]).float() for i in range(inputs.shape[0])])


def _validation_metric(
    task: VisionTask, graph: ExportGraph, run: Runtime | PyTorchRuntime, data: VisionDataModule, batches: Any
) -> float:
    """The task's validation metric with its network answered by `run` (on a copy of the task)."""
    metric = task.quality_metric
    if metric is None:
        raise VisionkitError(f"the {task.task_name} task names no quality metric to check an export against")
    subject = copy.deepcopy(task).cpu().eval()
    stand_in = _StandIn(graph, run)
    if graph.options.nms:  # the graph's final boxes replace the task's own NMS; padding rows score 0
        detector: Any = subject  # a DetectionTask
        detector.detect = lambda images, **_: [rows[rows[:, 4] > 0] for rows in stand_in(images)]
    else:
        setattr(subject, subject.networks[0], stand_in)
    one_line_per_message()  # Lightning may have been imported after the command set up logging
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        limit_val_batches=batches,
        callbacks=[],
    )
    results = trainer.validate(subject, datamodule=data, verbose=False)
    if not results or metric not in results[0]:
        raise VisionkitError(f"the validation of the export logged no {metric}")
    return float(results[0][metric])


def check_export(
    task: VisionTask,
    graph: ExportGraph,
    format: str,
    runtime: Runtime,
    data: VisionDataModule,
    *,
    half: bool = False,
    int8_tolerance: float | None = None,
    max_batches: int | None = None,
) -> CheckResult:
    """Run `runtime` and the PyTorch graph on the validation split of `data` (`max_batches` of it, or all):
    the largest output difference, and the task's `quality_metric` of each (when the task has one). An INT8
    export (`int8_tolerance` given) may drop the metric by that much."""
    data.setup("validate")
    loader = data.val_dataloader()
    reference = PyTorchRuntime(graph.module)
    max_diff, scale, images = 0.0, 0.0, 0
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        inputs = graph.graph_input(data.normalize_batch(batch)["image"]).contiguous()
        expected, actual = answer(graph, reference, inputs), answer(graph, runtime, inputs)
        if expected.shape != actual.shape:
            raise VisionkitError(
                f"{format}: output shape {tuple(actual.shape)} differs from PyTorch's {tuple(expected.shape)}"
            )
        max_diff = max(max_diff, float((actual - expected).abs().max()))
        scale = max(scale, float(expected.abs().max()))
        images += inputs.shape[0]
    if images == 0:
        raise VisionkitError("the checkpoint's data has no validation images to check the export on")
    metric = task.quality_metric
    batches = max_batches if max_batches is not None else 1.0
    pytorch = exported = None
    if metric is not None:
        pytorch = _validation_metric(task, graph, reference, data, batches)
        exported = _validation_metric(task, graph, runtime, data, batches)
    return CheckResult(
        format=format,
        runtime=runtime.name,
        images=images,
        max_diff=max_diff,
        relative_diff=max_diff / max(scale, 1e-12),
        tolerance=TOLERANCE["fp16" if half else "fp32"],
        metric=metric,
        pytorch=pytorch,
        exported=exported,
        metric_tolerance=METRIC_TOLERANCE if int8_tolerance is None else int8_tolerance,
        int8=int8_tolerance is not None,
    )
