"""Loose image files for prediction: one file, a folder (searched recursively) or a glob pattern."""

from __future__ import annotations

import glob
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS, read_image


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


class ImageFiles(Dataset):
    """`{"image": tensor, "index": int}` for each path; an unreadable file stops with its path, or is
    marked (`"ok": False`) and given a blank image when `skip_bad_images` is on."""

    def __init__(self, paths: list[str], transform: A.Compose, skip_bad_images: bool = False) -> None:
        self.paths = paths
        self.transform = transform
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        try:
            image = read_image(self.paths[index])
            ok = True
        except VisionkitError:
            if not self.skip_bad_images:
                raise
            image, ok = np.zeros((8, 8, 3), dtype=np.uint8), False  # a stand-in, reported as skipped
        return {
            "image": self.transform(image=image)["image"],
            "index": torch.tensor(index),
            "ok": torch.tensor(ok),
            "size": torch.tensor(image.shape[:2]),  # original height, width
        }
