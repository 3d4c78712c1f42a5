"""Where a training run's time goes: waiting for data or computing, said at the end of every fit (printed and
written as `speed.json` in the run folder), with the settings that would help."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from statistics import median
from typing import Any

import lightning as L
import torch

from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

BOUND_SHARE = 0.1  # with loader workers, waiting more than this share of the time means they fall behind


def children_peak_rss() -> int:
    """Peak resident memory (bytes) summed over this process's live children (DataLoader workers; Linux)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            children = Path(f"/proc/self/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
    return total


def _batch_size(batch: Any) -> int:
    image = batch.get("image") if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(image.shape[0]) if isinstance(image, torch.Tensor) and image.ndim else 0


class SpeedReport(L.Callback):
    """Times every training batch: the wait for it (the loader's `next`, timed by visionkit's loaders; with
    other loaders all the time between two steps) and the model step (forward, backward, optimizer, and the
    loop's other per-batch work: moving the batch, callbacks, logging). Each epoch's first batch, when loader
    workers start, is left out.

    The loader's rate X: without workers loading runs between steps, so X = batch / wait; with workers it
    overlaps the steps, so when the model waits at all X = batch / (wait + step). The model's rate Y =
    batch / step. Input-bound when X < Y (no workers) or the model waits more than 10 % of the time (workers).
    """

    def __init__(self, filename: str = "speed.json") -> None:
        self.filename = filename
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.overheads: list[float] = []  # the rest of the time between two steps
        self.images = 0
        self._last_end: float | None = None
        self._start: float | None = None
        self._wait: float | None = None
        self._peak_workers = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.waits, self.steps, self.overheads, self.images, self._peak_workers = [], [], [], 0, 0
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = None  # the first batch of an epoch waits for worker start-up: not counted

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._start = time.perf_counter()
        if self._last_end is None:
            self._wait = None
            return
        gap = self._start - self._last_end  # fetching the next batch, moving this one, other callbacks' work
        fetched = getattr(trainer.train_dataloader, "last_wait", None)  # visionkit's loaders time the fetch
        self._wait = min(fetched, gap) if fetched is not None else gap
        self.overheads.append(gap - self._wait)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the step's kernels, not just their launch
        end = time.perf_counter()
        if self._wait is not None and self._start is not None:
            self.waits.append(self._wait)
            self.steps.append(end - self._start + self.overheads[-1])  # the loop's own work counts as the step
            self.images += _batch_size(batch)
        self._last_end = end

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._peak_workers = max(self._peak_workers, children_peak_rss())  # workers are alive until the end

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = None  # validation in the middle of an epoch is not a wait for training data

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = self.report(trainer, pl_module)
        if report is None or not trainer.is_global_zero:
            return
        log.info(format_report(report))
        if trainer.default_root_dir:
            path = Path(trainer.default_root_dir) / self.filename
            with atomic_write(path, "w") as handle:
                json.dump(report, handle, indent=2)

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any] | None:
        """The measurements, verdict and advice as a JSON-ready dict (None before two batches ran)."""
        if not self.steps:
            return None
        wait, step = median(self.waits), median(self.steps)
        batch = self.images / len(self.steps)
        total = sum(self.waits) + sum(self.steps)
        share = sum(self.waits) / total if total else 0.0
        datamodule = getattr(trainer, "datamodule", None)
        workers = int(getattr(datamodule, "num_workers", 0) or 0)
        model_rate = batch / step if step else float("inf")
        if workers:
            loader_rate = batch / (wait + step) if share > BOUND_SHARE else None  # None: keeps up, rate unseen
            bound = share > BOUND_SHARE
        else:
            loader_rate = batch / wait if wait else None
            bound = loader_rate is not None and loader_rate < model_rate
        device = pl_module.device
        return {
            "verdict": "input-bound" if bound else "model-bound",
            "images_per_s": round(self.images / total, 1) if total else None,
            "images_per_s_all_ranks": round(self.images / total * trainer.world_size, 1) if total else None,
            "data_wait_share": round(share, 3),
            "data_wait_ms": round(wait * 1000, 3),
            "model_step_ms": round(step * 1000, 3),
            "loop_overhead_ms": round(median(self.overheads) * 1000, 3) if self.overheads else 0.0,
            "loader_images_per_s": None if loader_rate is None else round(loader_rate, 1),
            "model_images_per_s": round(model_rate, 1),
            "batch_size": round(batch, 1),
            "batches_measured": len(self.steps),
            "num_workers": workers,
            "cache": getattr(datamodule, "cache", None),
            "device": str(device),
            "world_size": trainer.world_size,
            "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "workers_rss_peak_mb": round(self._peak_workers / 2**20, 1),
            "cuda_peak_mb": (
                round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
            ),
            "advice": advice(bound, workers, datamodule, device),
        }


def advice(bound: bool, workers: int, datamodule: Any, device: torch.device) -> list[str]:
    """The settings that would help this run, most useful first."""
    if not bound:
        tips = ["the model step is the limit: trainer.precision=bf16-mixed or task.compile=true may shorten it"]
        if device.type == "cpu":
            tips.append("on a GPU (trainer=gpu) the step is many times shorter")
        return tips
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    tips = []
    if workers < cores:
        wanted = min(cores, max(2, workers * 2))
        tips.append(f"data.num_workers={wanted} (now {workers}; this machine has {cores} cores)")
    dataset = getattr(datamodule, "datasets", {}).get("train")
    reader = getattr(dataset, "reader", None)
    if reader is not None and getattr(datamodule, "cache", None) is None:
        tips.append("data.cache=ram (each image decoded once; data.cache=disk when it does not fit in memory)")
        paths = list(getattr(reader, "paths", []))[:200]
        others = sum(Path(p).suffix.lower() not in (".jpg", ".jpeg") for p in paths)
        if paths and others > len(paths) / 2:
            tips.append("smaller decode: photos stored as JPEG are decoded at reduced size, PNG and others in full")
    if device.type == "cuda" and not getattr(datamodule, "pin_memory", True):
        tips.append("data.pin_memory=true")
    return tips or ["a lighter augmentation (augment=light or none) or a smaller data.image_size"]


def format_report(report: dict[str, Any]) -> str:
    """The report as the few lines printed at the end of training."""
    loader = report["loader_images_per_s"]
    lines = [
        f"speed: {report['images_per_s']} images/s on {report['device']} "
        f"({report['batches_measured']} batches of {report['batch_size']:g}); "
        f"model step {report['model_step_ms']:.1f} ms, waiting for data {report['data_wait_ms']:.1f} ms a batch "
        f"({report['data_wait_share']:.0%} of the time)",
    ]
    if report["verdict"] == "input-bound":
        lines.append(
            f"input-bound: the loader delivers {loader} images/s, the model could take {report['model_images_per_s']}"
        )
    else:
        delivers = f"{loader} images/s" if loader else "enough"
        lines.append(
            f"model-bound: the loader delivers {delivers}, the model takes {report['model_images_per_s']} images/s"
        )
    memory = f"peak memory: {report['rss_peak_mb']:.0f} MB RSS"
    if report["workers_rss_peak_mb"]:
        memory += f" + {report['workers_rss_peak_mb']:.0f} MB in loader workers"
    if report["cuda_peak_mb"] is not None:
        memory += f", {report['cuda_peak_mb']:.0f} MB CUDA"
    lines.append(memory)
    lines += [f"  - {tip}" for tip in report["advice"]]
    return "\n".join(lines)
