"""Shared by the benchmark scripts: each measurement runs in a fresh child process of the script."""

from __future__ import annotations

import json
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
