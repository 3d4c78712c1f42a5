"""What predictions write: result pictures (scored labels drawn on the image, saved atomically in the name's type),
`predictions.json`, and one unique file name per input."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionkit.utils.fonts import label_font
from visionkit.utils.io import SAVE_FORMATS, atomic_write, save_image


def scored_picture(image: np.ndarray, scored: Sequence[tuple[str, float]]) -> np.ndarray:
    """`image` with one `name probability` line per entry written white on black in its top-left corner (the
    pictures of classification and multi-label results)."""
    from PIL import ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = label_font(max(8, round(max(canvas.size) / 24)), [name for name, _ in scored])
    y = 2.0
    for name, prob in scored:
        text = f"{name} {prob:.2f}"
        left, top, right, bottom = draw.textbbox((2, y), text, font=font)
        draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(0, 0, 0))
        draw.text((2, y), text, fill=(255, 255, 255), font=font)
        y = bottom + 3
    return np.asarray(canvas)


def save_picture(picture: np.ndarray, path: Path) -> Path:
    """An HxWx3 uint8 picture in its name's image type (.png when the name has none), atomically."""
    target = path if path.suffix.lower() in SAVE_FORMATS else path.with_suffix(".png")
    return save_image(Image.fromarray(picture), target, quality=92)


def write_records(records: Sequence[dict[str, Any]], folder: Path) -> Path:
    """`predictions.json`: every result's `to_dict()`, in input order."""
    path = folder / "predictions.json"
    with atomic_write(path, "w") as handle:
        json.dump(list(records), handle, indent=1)
    return path


def output_names(paths: Sequence[str]) -> list[str]:
    """A unique relative name per input (its path below the inputs' common folder), for files written per image."""
    parents = [str(Path(p).resolve().parent) for p in paths]
    root = Path(os.path.commonpath(parents)) if parents else Path()
    return [str(Path(p).resolve().relative_to(root)) for p in paths]
