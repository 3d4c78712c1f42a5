"""Multi-process prediction: `visionkit-predict ... devices=2` (two DDP CPU processes sharing the cores) against
one process on the same files, the same checkpoint and batch, interleaved rounds, whole commands timed (start-up
included) and the throughput each run prints (prediction alone); then the exactness check: the two folders'
files are equal byte for byte.

Run:  .venv/bin/python bench/bench_predict_ranks.py [--images 600] [--rounds 3] [--backbone resnet18] [--size 128]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
from bench_predict import _classifier_checkpoint
from common import cpu_model

EXE = Path(sys.executable).with_name("visionkit-predict")


def _run(ckpt: str, folder: Path, out: Path, devices: int) -> tuple[float, float]:
    """(wall seconds of the whole command, images/s it reports for prediction)."""
    args = [str(EXE), f"ckpt_path={ckpt}", f"source={folder}", f"hydra.run.dir={out}", f"devices={devices}"]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    rate = re.search(r"throughput: \d+ image\(s\) in [\d.]+ s, ([\d.]+) images/s", done.stderr + done.stdout)
    return wall, float(rate.group(1))


def _same(one: Path, other: Path) -> bool:
    names = {p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.parts[len(one.parts)] == "images"}
    tables = [Path("predictions.csv"), Path("predictions.json")]
    return all(filecmp.cmp(one / n, other / n, shallow=False) for n in [*names, *tables])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = _classifier_checkpoint(root, args.backbone, args.size)
        folder = root / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for index in range(args.images):
            pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)
        results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            for devices in (1, 2):
                results[devices].append(_run(ckpt, folder, root / f"out{devices}_{round_}", devices))
        same = _same(root / "out1_0", root / "out2_0")
    one, two = ([median(r[i] for r in results[d]) for i in (0, 1)] for d in (1, 2))
    note = f"{args.backbone}, {args.size} px, {args.images} JPEGs of 256 px, batch 16, median of {args.rounds} rounds"
    print(f"| | 1 process | 2 processes (devices=2) | ratio |\n|---|---:|---:|---:|  ({note})")
    print(f"| whole command, s | {one[0]:.1f} | {two[0]:.1f} | {one[0] / two[0]:.2f}x |")
    print(f"| prediction, images/s | {one[1]:.1f} | {two[1]:.1f} | {two[1] / one[1]:.2f}x |")
    print(f"outputs equal file by file: {same}")


if __name__ == "__main__":
    main()
