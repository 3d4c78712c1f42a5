"""Shared by the benchmark scripts: each measurement runs in a fresh child process of the script."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(script: str, args: list[str]) -> dict:
    """Run `script --child args...` and return the JSON its last output line holds (exit with its errors)."""
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"{args[0]} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), which every benchmark row must carry; VMs that hide the model
    ("Intel(R) Xeon(R) Processor") get the vendor features that tell the generations apart (AMX: Sapphire
    Rapids or later; AVX-512; AVX2 only, as on the AMD EPYCs these machines have been)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = [f for f, flag in (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2")) if flag in flags]
    return f"{name} ({', '.join(features)})" if features else name


def rgb_array(image: object) -> object:
    """An image array as H x W x 3 (grey repeated, alpha dropped): scikit-image's pictures come in all three."""
    import numpy as np

    image = np.asarray(image)
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]


PHOTO_PICTURES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def photo_pictures() -> list:
    """The colour pictures scikit-image ships that the photo benchmarks are made from, as RGB arrays."""
    import numpy as np
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)())[:, :, :3] for name in PHOTO_PICTURES]


def camera_photo(picture: object, rng: object, size: tuple[int, int], trim: int, interpolation: int) -> object:
    """A camera-like photo of `picture`: a random crop (up to 1/`trim` off each axis), flipped half the time,
    resized to `size` (width, height), tinted per channel and given sensor-like noise; uint8 RGB."""
    import cv2
    import numpy as np

    h, w = picture.shape[:2]
    top, left = rng.integers(0, h // trim + 1), rng.integers(0, w // trim + 1)
    crop = picture[top : top + h - h // trim, left : left + w - w // trim]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    photo = cv2.resize(np.ascontiguousarray(crop), size, interpolation=interpolation).astype(np.float32)
    return np.clip(photo * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 4, photo.shape), 0, 255).astype(np.uint8)


def train_metrics(overrides: list[str], workdir: Path, metric: str) -> dict:
    """Run `visionkit-train overrides...` in `workdir` (logger=csv); its `test_<metric>` and best `val_<metric>`
    from the run's metrics.csv (stop with its stderr when it fails)."""
    import csv

    exe = Path(sys.executable).with_name("visionkit-train")
    done = subprocess.run([str(exe), *overrides, "logger=csv"], cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    rows = list(csv.DictReader(next(workdir.rglob("metrics.csv")).open()))
    test = next(r for r in rows if r.get(f"test_{metric}"))
    val = max(float(r[f"val_{metric}"]) for r in rows if r.get(f"val_{metric}"))
    return {f"test_{metric}": float(test[f"test_{metric}"]), f"val_{metric}": val}


def seed_table(
    seeds: int,
    metric: str,
    plain: Callable[[int], dict],
    ours: Callable[[int], dict],
    names: tuple[str, str],
    row: Callable[[str], None] = print,
    second: tuple[str, str] | None = None,
    first_seed: int = 0,
) -> None:
    """The plain loop and visionkit's default, seed after seed (each pair run back to back), as a table of test
    `metric` with the means: the mean over the seeds decides, one seed moves too much. In parentheses: the best
    validation `metric`, or `second` = (key in the results, its label) when given. Seeds first_seed and on."""
    from statistics import mean

    key, label = second or (f"val_{metric}", f"best val {metric}")
    row(f"| seed | {names[0]}: test {metric} ({label}) | {names[1]}: test {metric} ({label}) |")
    row("|---:|---:|---:|")
    theirs_all, ours_all = [], []
    for seed in range(first_seed, first_seed + seeds):
        theirs, mine = plain(seed), ours(seed)
        theirs_all.append(theirs[f"test_{metric}"])
        ours_all.append(mine[f"test_{metric}"])
        cells = [f"{r[f'test_{metric}']:.3f} ({r[key]:.3f})" for r in (theirs, mine)]
        row(f"| {seed} | {cells[0]} | {cells[1]} |")
    verdict = "reached" if mean(ours_all) >= mean(theirs_all) else "NOT reached"
    row(f"| mean | {mean(theirs_all):.3f} | **{mean(ours_all):.3f}** (target ≥ the plain loop: {verdict}) |")
