"""Shared by the benchmark scripts: each measurement runs in a fresh child process of the script."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
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
