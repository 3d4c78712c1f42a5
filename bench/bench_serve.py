"""Serving benchmark: requests/s and latency of visionkit-serve with dynamic batching (`max_batch_size=16`)
against `max_batch_size=1`, 16 concurrent clients on localhost, one JPEG per request; then a fault stream.

Models: ResNet-18 at 224 px and YOLOv8-n at 640 px (random weights: speed does not depend on them), CPU, one
worker, the same torch threads on both sides. Each side: a fresh server, `--warmup` s of load not counted, then
`--seconds` s counted (every request loop is bounded in time). Rounds interleaved, who goes first alternating;
medians of the rounds. The "model alone" row is the predictor in this process at batch 1 and batch 16 on the
same picture: the most batching can give on this machine.

Faults: `--bad` bad requests of issue 19's kinds (not an image, truncated JPEG, zero bytes, a 20,000 x 20,000
PNG, wrong content type, malformed base64/JSON, missing field, wrong API key) shuffled into `--good` good ones,
sent by 16 clients to one batched ResNet-18 server: every bad one must get its 4xx JSON error, every good one
the right answer, no 5xx, and the worker processes must be the same before and after.

`--compare runtime` puts PyTorch serving against OpenVINO serving instead (both batched, `max_batch_size=16`; the
checkpoint exported on the server's first start with `runtime=openvino`, float32, the same input contract).

`--precision bf16` runs both sides (and the model-alone row) in bfloat16: on a CPU with AMX tiles a batch of 16
computes far more images per second than one image does, which float32 does not.

Run:  .venv/bin/python bench/bench_serve.py [--models resnet18 yolov8n] [--seconds 20] [--rounds 1] [--precision bf16]
      [--compare batching|runtime]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_model

from tests.conftest import save_task_checkpoint
from tests.serve_requests import bad_requests, encoded, running_server

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
API_KEY = "bench-key"


def _checkpoint(folder: Path, model: str) -> Path:
    """A checkpoint of `model` with random weights and the input contract the benchmark names."""
    from visionkit.tasks import ClassificationTask, DetectionTask

    if model == "resnet18":
        task = ClassificationTask("resnet18", num_classes=10).eval()
        state = {"image_size": 224, "resize": "stretch", **IMAGENET}
    else:
        task = DetectionTask("yolov8n.yaml", num_classes=80).eval()
        state = {"image_size": 640, "resize": "letterbox", "mean": [0.0] * 3, "std": [1.0] * 3}
    return save_task_checkpoint(task, folder / f"{model}.ckpt", state)


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


def _model_alone(ckpt: Path, picture: np.ndarray, seconds: float, precision: str) -> dict[int, float]:
    """Images/s of the predictor in this process at batch 1 and 16 (each timed for about `seconds`)."""
    from visionkit.inference import load_predictor

    predictor = load_predictor(ckpt, device="cpu", precision=precision)
    rates = {}
    for batch in (1, 16):
        images = [picture] * batch
        predictor(images)  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            predictor(images)
            count += batch
        rates[batch] = count / (time.perf_counter() - start)
    return rates


def _speed(model: str, folder: Path, jpeg: bytes, picture: np.ndarray, args: argparse.Namespace) -> None:
    ckpt = _checkpoint(folder, model)
    precision = f"precision={args.precision}"
    batched = ["max_batch_size=16", "batch_timeout=0.01", precision]
    if args.compare == "runtime":
        sides = {"openvino": [*batched, "runtime=openvino"], "pytorch": [*batched, "runtime=pytorch"]}
        labels = {"openvino": "OpenVINO, 16", "pytorch": "PyTorch, 16"}
    else:
        sides = {"batched": batched, "one": ["max_batch_size=1", precision]}
        labels = {"batched": "16", "one": "1"}
    rows: dict[str, list[tuple[float, list[float]]]] = {side: [] for side in sides}
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            with running_server(ckpt, folder, *sides[side]) as server:
                rows[side].append(_load(server.url, jpeg, args.clients, args.warmup, args.seconds))
    setup = f"{args.clients} clients, 640x480 JPEG, {args.precision}, {args.rounds} round(s) of {args.seconds:g} s"
    print(f"\n{model}, CPU, 1 worker, {setup}")
    heading = "max_batch_size" if args.compare == "batching" else "runtime, batch"
    print(f"{heading:>15} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    rates = {}
    for side, label in labels.items():
        rates[side] = median(rate for rate, _ in rows[side])
        latencies = [t for _, times in rows[side] for t in times]
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"{label:>15} {rates[side]:8.1f} {p50:8.0f} {p99:8.0f}")
    first, second = list(sides)
    target = " (target >= 1.5)" if args.compare == "batching" else ""
    print(f"{labels[first]} / {labels[second]}: {rates[first] / rates[second]:.2f}x{target}")
    if args.compare == "batching":
        alone = _model_alone(ckpt, picture, args.seconds / 2, args.precision)
        print(f"model alone, images/s: batch 1 {alone[1]:.1f}, batch 16 {alone[16]:.1f} ({alone[16] / alone[1]:.2f}x)")


def _workers(server_pid: int) -> set[tuple[int, float]]:
    """(pid, start time) of every process under the server: a restarted worker changes the set."""
    return {(p.pid, p.create_time()) for p in psutil.Process(server_pid).children(recursive=True)}


def _faults(folder: Path, jpeg: bytes, args: argparse.Namespace) -> bool:
    ckpt = _checkpoint(folder, "resnet18")
    headers = {"X-API-Key": API_KEY}
    kinds = bad_requests(jpeg, headers)
    stream = [None] * args.good + [kinds[i % len(kinds)] for i in range(args.bad)]
    order = np.random.default_rng(0).permutation(len(stream)).tolist()
    with running_server(ckpt, folder, "max_batch_size=16", api_key=API_KEY) as server, httpx.Client(timeout=60) as http:
        expected = http.post(f"{server.url}/predict", files={"image": ("p.jpg", jpeg)}, headers=headers).json()
        before = _workers(server.process.pid)
        deadline = time.monotonic() + args.fault_timeout

        def send(index: int) -> tuple[object, int, object]:
            if time.monotonic() > deadline:
                return stream[index], -1, None
            case = stream[index]
            request = case.request if case else {"files": {"image": ("p.jpg", jpeg)}, "headers": headers}
            reply = http.post(f"{server.url}/predict", **request)
            try:
                body = reply.json()
            except ValueError:
                body = None
            return case, reply.status_code, body

        with ThreadPoolExecutor(args.clients) as pool:
            replies = list(pool.map(send, order))
        after = _workers(server.process.pid)
        log = server.log_text()
    tally: Counter[str] = Counter()
    wrong = []
    for case, status, body in replies:
        name = case.name if case else "good"
        if status == -1:
            tally[f"{name}: not sent (time limit)"] += 1
        elif case is None and status == 200 and body and body[0]["top_k"][0][0] == expected[0]["top_k"][0][0]:
            tally["good: right answer"] += 1
        elif case is not None and status == case.status and isinstance(body, dict) and body.get("detail"):
            tally[f"{name}: {status} with a message"] += 1
        else:
            wrong.append(f"{name}: {status} {str(body)[:120]}")
    five = sum(1 for _, status, _ in replies if status >= 500)
    print(f"\nFault stream: {args.bad} bad + {args.good} good requests, {args.clients} clients, batched ResNet-18")
    for line, count in sorted(tally.items()):
        print(f"  {count:4d}  {line}")
    print(f"  5xx answers: {five}; wrong answers: {len(wrong)}; workers restarted: {before != after}")
    print(f"  tracebacks in the server log: {log.count('Traceback')}")
    for line in wrong[:10]:
        print(f"  wrong: {line}")
    return not wrong and not five and before == after and "Traceback" not in log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet18", "yolov8n"], choices=["resnet18", "yolov8n"])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="both sides' precision")
    parser.add_argument("--compare", default="batching", choices=["batching", "runtime"], help="what sides differ in")
    parser.add_argument("--bad", type=int, default=200, help="bad requests in the fault stream (0: skip it)")
    parser.add_argument("--good", type=int, default=200, help="good requests in the fault stream")
    parser.add_argument("--fault-timeout", type=float, default=300, help="seconds the fault stream may take")
    args = parser.parse_args()
    picture = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    jpeg = encoded(picture, "JPEG")
    print(
        f"machine: {cpu_model()}, {platform.machine()}, {platform.system()}, {os.cpu_count()} cores, "
        f"py {platform.python_version()}"
    )
    passed = True
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            _speed(model, Path(tmp), jpeg, picture, args)
        if args.bad:
            passed = _faults(Path(tmp), jpeg, args)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
