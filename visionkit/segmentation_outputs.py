"""Segmentation predictions as files: mask PNGs of class ids, colour overlays and predictions.json (atomic)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionkit.data.mask_files import mask_image
from visionkit.utils.io import atomic_write
from visionkit.utils.palette import overlay


def segmentation_record(path: str, labels: np.ndarray, names: Sequence[str], mask_file: str) -> dict[str, Any]:
    """One image's result as a JSON-ready dict: size, mask file and the share of pixels of each class found."""
    counts = np.bincount(labels.ravel(), minlength=len(names))
    shares = {names[i]: round(float(c) / labels.size, 6) for i, c in enumerate(counts) if c}
    return {"path": path, "height": labels.shape[0], "width": labels.shape[1], "mask": mask_file, "classes": shares}


def write_segmentation(
    image: np.ndarray, labels: np.ndarray, name: str, output_dir: Path, draw: bool = True, alpha: float = 0.5
) -> str:
    """`masks/<name>.png` (palette PNG: the pixel values are class ids, shown in colour) and, with `draw`,
    `overlays/<name>.png` (the image tinted by class); returns the mask's path relative to `output_dir`."""
    relative = str(Path("masks") / Path(name).with_suffix(".png"))
    with atomic_write(output_dir / relative) as handle:
        mask_image(labels).save(handle, format="PNG")
    if draw:
        with atomic_write((output_dir / "overlays" / name).with_suffix(".png")) as handle:
            Image.fromarray(overlay(image, labels, alpha)).save(handle, format="PNG")
    return relative


def write_records(records: Sequence[dict[str, Any]], output_dir: Path) -> Path:
    """`predictions.json`: one record per input image (skipped ones marked)."""
    path = output_dir / "predictions.json"
    with atomic_write(path, "w") as handle:
        json.dump(list(records), handle, indent=1)
    return path
