"""Loose image files for prediction and explanation: one file, a folder (searched recursively), a glob pattern or
a .txt list of paths."""

from __future__ import annotations

import glob
from pathlib import Path

from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS


def list_images(source: str, key: str = "source") -> list[str]:
    """Image paths named by `source` (file, folder, glob, or a .txt list of paths), sorted (a list keeps its
    order); an error naming `key` when there are none."""
    if not source:
        raise VisionkitError(f"{key} is not set: pass {key}=<image file | folder | glob pattern>")
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        return _listed(path, key)
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


def _listed(path: Path, key: str) -> list[str]:
    """The image paths of a list file (one per line, relative ones from the file's folder; blank lines and
    `#` comments skipped), each checked to exist."""
    images = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        image = Path(entry).expanduser()
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise VisionkitError(f"{key}: {path}:{number}: {entry} is not a file (one image path per line)")
        images.append(str(image))
    if not images:
        raise VisionkitError(f"{key}: {path} lists no images (one image path per line)")
    return images
