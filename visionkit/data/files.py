"""Loose image files for prediction and explanation: one file, a folder (searched recursively) or a glob pattern."""

from __future__ import annotations

import glob
from pathlib import Path

from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS


def list_images(source: str, key: str = "source") -> list[str]:
    """Image paths named by `source` (file, folder or glob), sorted; an error naming `key` when there are none."""
    if not source:
        raise VisionkitError(f"{key} is not set: pass {key}=<image file | folder | glob pattern>")
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    elif any(ch in source for ch in "*?["):
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    else:
        raise VisionkitError(f"{key}: {source} is neither a file, a folder nor a glob pattern that exists")
    images = sorted(str(p) for p in found if not p.name.startswith("."))
    if not images:
        raise VisionkitError(f"{key}: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {source}")
    return images
