"""Prediction over several processes (`devices=N num_nodes=M`, or ranks torchrun/SLURM started): Lightning
Fabric launches and joins them as training's DDP does; each rank predicts its share of the files, journals it
(visionkit.inference.journal) and writes its per-image files as it goes; rank 0 merges the journals into the
run's tables and prints the throughput of every rank."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor
from visionkit.inference.journal import (
    Journal,
    check_settings,
    journaled,
    merged,
    remove_temporaries,
    save_settings,
    share,
)
from visionkit.inference.outputs import output_names
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

_RANK_ENV = ("WORLD_SIZE", "SLURM_NTASKS")  # set when a launcher (torchrun, SLURM) started this process


@dataclass
class Ranks:
    """This process's place among the prediction processes (a single process: rank 0 of 1, no Fabric)."""

    rank: int = 0
    world: int = 1
    fabric: Any = None

    @property
    def device(self) -> str | None:
        """The device Fabric gave this rank (None: the config's `device` choice stands)."""
        return str(self.fabric.device) if self.fabric is not None else None

    def barrier(self) -> None:
        if self.fabric is not None:
            self.fabric.barrier()

    def gather(self, values: Sequence[float]) -> list[list[float]]:
        """`values` of every rank, by rank."""
        if self.fabric is None:
            return [list(values)]
        import torch

        gathered = self.fabric.all_gather(torch.tensor(list(values), dtype=torch.float64))
        return gathered.reshape(self.world, len(values)).tolist()


def launch_ranks(devices: int, num_nodes: int, device: str) -> Ranks:
    """Start (or join) `devices × num_nodes` prediction processes through Fabric's DDP launcher; one process
    without it. CPU ranks share the cores: each gets cores / local ranks threads."""
    if devices < 1 or num_nodes < 1:
        raise VisionkitError(f"devices={devices} num_nodes={num_nodes}: each at least 1")
    if devices * num_nodes == 1 and not any(k in os.environ for k in _RANK_ENV):
        return Ranks()
    import torch
    from lightning.fabric import Fabric

    cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not cuda:
        raise VisionkitError(f"device={device} but this machine has no CUDA device; use device=cpu or auto")
    fabric = Fabric(accelerator="cuda" if cuda else "cpu", devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    if not cuda and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    return Ranks(fabric.global_rank, fabric.world_size, fabric)


def predict_files(
    predictor: Predictor, paths: Sequence[str], output_dir: Path, ranks: Ranks, draw: bool, settings: dict[str, Any]
) -> dict:
    """Predict this rank's share of `paths` (those no journal of `output_dir` holds yet, when its journals were
    made with the same `settings`), writing each result's files and journal record as it comes; rank 0 then
    writes the tables of every rank's records in input order (also when a rank stopped, so a run cut short keeps
    what it did). The run's counts (and on rank 0, for a detector, the objects found)."""
    from rich.progress import track

    output_dir.mkdir(parents=True, exist_ok=True)
    fresh = check_settings(output_dir, settings)  # every rank checks, so all of them stop alike
    done = journaled(output_dir)
    if fresh and ranks.rank == 0:
        save_settings(output_dir, settings)
    mine = [p for p in share(paths, ranks.rank, ranks.world) if p not in done]
    if done and ranks.rank == 0:
        log.info(f"{len(done)} of {len(paths)} image(s) already predicted in {output_dir}: doing the other ones")
        remove_temporaries(output_dir)  # what the cut run was writing when it stopped
    ranks.barrier()  # every rank has read the journals before any appends to its own
    names = dict(zip(paths, output_names(paths)))  # by source: a batch with a bad image yields its good ones first
    journal, failure, start = Journal(output_dir, ranks.rank), None, time.perf_counter()
    records: list[dict[str, Any]] = []
    try:
        label = f"predicting (rank {ranks.rank})" if ranks.world > 1 else "predicting"
        for result in track(predictor.stream(mine), total=len(mine), description=label, disable=ranks.rank > 0):
            result.save(output_dir, names[result.source], draw=draw)
            journal.write(result.to_dict())
    except VisionkitError as exc:
        failure = exc
    finally:
        journal.close()
        if ranks.world == 1:  # a run stopped by a bad image or Ctrl-C keeps the tables of what was done
            records = _merge(predictor, paths, output_dir)
    counts = predictor.counts
    seconds = time.perf_counter() - start
    rows = ranks.gather([counts["images"], counts["skipped"], seconds, predictor.network_seconds, failure is not None])
    if ranks.world > 1 and ranks.rank == 0:
        records = _merge(predictor, paths, output_dir)
    ranks.barrier()
    if failure is not None:
        raise failure
    stopped = [rank for rank, row in enumerate(rows) if row[4]]
    if stopped:
        raise VisionkitError(f"rank(s) {stopped} stopped on an error (above); run again to finish the rest")
    _log_throughput(rows, len(done))
    metrics = {"images": float(sum(r[0] for r in rows)), "skipped": float(sum(r[1] for r in rows))}
    if predictor.finds_boxes:
        metrics["objects"] = float(sum(len(r.get("detections", [])) for r in records))
    return metrics


def _merge(predictor: Predictor, paths: Sequence[str], output_dir: Path) -> list[dict[str, Any]]:
    """Every rank's records in input order, written as the run's tables; the records."""
    records = merged(paths, journaled(output_dir))
    if records:
        predictor.write_summary(records, output_dir)
    return records


def _log_throughput(rows: list[list[float]], earlier: int) -> None:
    """One line for the run and one per rank when there are several: images/s and the data wait (the share of
    the time spent outside the network: reading, resizing, writing)."""

    def rate(count: float, seconds: float, network: float, busy: float) -> str:
        wait = 1 - network / busy if busy > 0 else 0.0
        return (
            f"{count:.0f} image(s) in {seconds:.1f} s, {count / max(seconds, 1e-9):.1f} images/s, data wait {wait:.0%}"
        )

    resumed = f" ({earlier} done before)" if earlier else ""
    count, busy, network = (sum(row[i] for row in rows) for i in (0, 2, 3))
    log.info(f"throughput: {rate(count, max(row[2] for row in rows), network, busy)}{resumed}")
    if len(rows) > 1:
        for rank, (count, _, seconds, network, _) in enumerate(rows):
            log.info(f"  rank {rank}: {rate(count, seconds, network, seconds)}")
