"""Serving benchmark: requests/s and latency of visionkit-serve with dynamic batching (`max_batch_size=16`)
against `max_batch_size=1`, 16 concurrent clients on localhost, one JPEG per request.

Model: ResNet-18 at 224 px (random weights: speed does not depend on them), CPU, one worker, the same torch
threads on both sides. Each side: a fresh server, `--warmup` s of load not counted, then `--seconds` s counted
(every request loop is bounded in time). Rounds interleaved, who goes first alternating; medians of the rounds.

Run:  .venv/bin/python bench/bench_serve.py [--seconds 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import save_task_checkpoint
from tests.serve_requests import encoded, running_server


def _checkpoint(folder: Path) -> Path:
    from visionkit.tasks import ClassificationTask

    task = ClassificationTask("resnet18", num_classes=10).eval()
    state = {"image_size": 224, "resize": "stretch", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    return save_task_checkpoint(task, folder / "resnet18.ckpt", state)


def _load(url: str, jpeg: bytes, clients: int, warmup: float, seconds: float) -> tuple[float, list[float]]:
    """(requests/s, latencies in ms) of `clients` threads posting for `seconds` after `warmup`."""
    start = time.monotonic()
    counted_from, stop = start + warmup, start + warmup + seconds

    def client(_: int) -> list[float]:
        times = []
        with httpx.Client(timeout=60) as http:
            while (now := time.monotonic()) < stop:
                reply = http.post(f"{url}/predict", files={"image": ("p.jpg", jpeg)})
                assert reply.status_code == 200, reply.text
                if now >= counted_from:
                    times.append((time.monotonic() - now) * 1000)
        return times

    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(client, range(clients)) for t in times]
    return len(latencies) / seconds, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    picture = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpeg = encoded(picture, "JPEG")
    rows: dict[str, list[tuple[float, list[float]]]] = {"batched": [], "one": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = _checkpoint(folder)
        sides = {"batched": ["max_batch_size=16", "batch_timeout=0.01"], "one": ["max_batch_size=1"]}
        for round_index in range(args.rounds):
            order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
            for side in order:
                with running_server(ckpt, folder, *sides[side]) as server:
                    rows[side].append(_load(server.url, jpeg, args.clients, args.warmup, args.seconds))
    print(f"machine: {platform.machine()}, {platform.system()}, {os.cpu_count()} cores, py {platform.python_version()}")
    print(
        f"ResNet-18 224 px, CPU, 1 worker, {args.clients} clients, 640x480 JPEG, "
        f"{args.rounds} round(s) of {args.seconds:g} s"
    )
    print(f"{'max_batch_size':>15} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    rates = {}
    for side, label in (("batched", "16"), ("one", "1")):
        rates[side] = median(rate for rate, _ in rows[side])
        latencies = [t for _, times in rows[side] for t in times]
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"{label:>15} {rates[side]:8.1f} {p50:8.0f} {p99:8.0f}")
    print(f"batching / max_batch_size=1: {rates['batched'] / rates['one']:.2f}x (target >= 1.5)")


if __name__ == "__main__":
    main()
