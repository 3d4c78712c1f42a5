"""`visionkit-benchmark`: every format of one checkpoint side by side (like `yolo benchmark`): file size, the
validation metric through its own runtime, and milliseconds per image at each batch size."""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from visionkit.data.datamodule import VisionDataModule
from visionkit.export.check import answer, check_export
from visionkit.export.graph import ExportGraph
from visionkit.export.pipeline import file_size_mb
from visionkit.export.runtimes import RUNTIME_NAMES, PyTorchRuntime, Runtime, load_runtime
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_write


@dataclass(frozen=True)
class BenchmarkRow:
    """One format's line of the table; `metric` is None for a task without a validation metric (stylizer)."""

    format: str
    runtime: str
    file: str
    size_mb: float
    metric_name: str | None
    metric: float | None
    max_diff: float
    ms_per_image: dict[int, float]


def time_per_image(graph: ExportGraph, runtime: Runtime, batch: int, seconds: float) -> float:
    """Milliseconds per image of `runtime` on random inputs of the export size in batches of `batch`: one
    warm-up call, then calls for at least `seconds` (and at least 3)."""
    inputs = graph.example(batch)
    answer(graph, runtime, inputs)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        answer(graph, runtime, inputs)
        calls += 1
    return (time.perf_counter() - start) / (calls * batch) * 1000


def benchmark_formats(
    task: VisionTask,
    graph: ExportGraph,
    ckpt_path: str | os.PathLike[str],
    written: Mapping[str, Path],
    data: VisionDataModule,
    *,
    batch_sizes: Sequence[int] = (1, 16),
    rounds: int = 3,
    seconds: float = 1.0,
    max_batches: int | None = None,
    int8: bool = False,
) -> list[BenchmarkRow]:
    """The PyTorch row (the checkpoint, eager) and one per written format (`int8`: INT8 copies): metric and
    difference from the export check, speed as the median of `rounds` rounds that visit every format in turn
    (interleaved)."""
    torch.set_grad_enabled(False)
    runtimes: dict[str, Runtime] = {"pytorch": PyTorchRuntime(graph.module)}  # type: ignore[dict-item]  # tensors only
    runtimes.update({f: load_runtime(f, p) for f, p in written.items() if f != "ultralytics"})
    exported = {f: r for f, r in runtimes.items() if f != "pytorch"}
    tolerance = 1.0 if int8 else None  # the table reports the metric; `visionkit-export` judges it
    checks = {
        f: check_export(task, graph, f, r, data, int8_tolerance=tolerance, max_batches=max_batches)
        for f, r in exported.items()
    }
    first = next(iter(checks.values()))  # each check ran PyTorch too: the reference row's metric
    checks["pytorch"] = replace(first, format="pytorch", exported=first.pytorch, max_diff=0.0, relative_diff=0.0)
    times: dict[str, dict[int, list[float]]] = {f: {b: [] for b in batch_sizes} for f in runtimes}
    for _ in range(rounds):
        for batch in batch_sizes:
            for format, runtime in runtimes.items():
                times[format][batch].append(time_per_image(graph, runtime, batch, seconds))
    files = {"pytorch": Path(ckpt_path), **written}
    return [
        BenchmarkRow(
            format=format,
            runtime=RUNTIME_NAMES[format] + (" INT8" if int8 and format != "pytorch" else ""),
            file=str(files[format]),
            size_mb=file_size_mb(files[format]),
            metric_name=checks[format].metric,
            metric=checks[format].exported,
            max_diff=checks[format].max_diff,
            ms_per_image={b: statistics.median(t) for b, t in times[format].items()},
        )
        for format in runtimes
    ]


def format_table(rows: Sequence[BenchmarkRow]) -> str:
    """The rows as a Markdown table (printed, and pasted into docs/benchmarks.md)."""
    batches = list(rows[0].ms_per_image) if rows else []
    metric = rows[0].metric_name if rows else None
    head = ["format", "runtime", "size MB", metric or "metric", "max diff", *[f"ms/img b{b}" for b in batches]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for row in rows:
        cells = [
            row.format,
            row.runtime,
            f"{row.size_mb:.1f}",
            "-" if row.metric is None else f"{row.metric:.4f}",
            f"{row.max_diff:.2g}",
            *[f"{row.ms_per_image[b]:.2f}" for b in batches],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_tables(rows: Sequence[BenchmarkRow], folder: str | os.PathLike[str]) -> str:
    """Write the rows into `folder` as benchmark.md (the Markdown table, returned) and benchmark.csv (one
    column per batch size: `ms_per_image_b<N>`)."""
    table = format_table(rows)
    with atomic_write(Path(folder) / "benchmark.md", "w") as handle:
        handle.write(table + "\n")
    path = Path(folder) / "benchmark.csv"
    records = []
    for row in rows:
        record = {k: v for k, v in asdict(row).items() if k != "ms_per_image"}
        record.update({f"ms_per_image_b{b}": round(ms, 4) for b, ms in row.ms_per_image.items()})
        records.append(record)
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return table
