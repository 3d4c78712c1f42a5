"""Built-in synthetic shapes for detection: deterministic, generated once into the dataset cache.

Several classes and objects per image, sizes from small to large, rotations, occlusion (boxes follow the
visible part; mostly hidden objects are not labelled), cluttered backgrounds with unlabelled distractor
outlines, and about one image in ten with no object. Written in the YOLO layout ultralytics reads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionkit.data.cache import generated_once

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
DEFAULT_COUNTS = {"train": 600, "val": 100, "test": 100}
VERSION = "shapes_det_v2"  # v2: data.yaml without `path` (ultralytics then reads it relative to the yaml)
MIN_VISIBLE = 0.35  # objects hidden more than this are left unlabelled


def polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a square, triangle or cross of radius `r` centred at (cx, cy), rotated by `angle`."""

    def rotate(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if kind == "square":
        return rotate([(-r, -r), (r, -r), (r, r), (-r, r)])
    if kind == "triangle":
        return rotate([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    t = r / 3  # cross: a plus sign of arm width 2t
    arm = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    return rotate(arm)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth colour gradient with noise and unlabelled distractor outlines."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(40, 200, 3), rng.uniform(-60, 60, (2, 3))
    base = a + xs[..., None] * b[0] + ys[..., None] * b[1] + rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(0, size, 2)
        x1, y1 = x0 + rng.uniform(-size / 2, size / 2), y0 + rng.uniform(-size / 2, size / 2)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
        else:
            box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
            draw.ellipse(box, outline=colour, width=1)
    return image


def _render(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[list[float]]]:
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, 7))
    masks: list[tuple[int, np.ndarray]] = []
    for _ in range(count):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        r = rng.uniform(0.05, 0.22) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        mask = Image.new("L", (size, size))
        mask_draw = ImageDraw.Draw(mask)
        if SHAPE_CLASSES[cls] == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(box, fill=colour)
            mask_draw.ellipse(box, fill=255)
        else:
            points = polygon(SHAPE_CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * math.pi))
            draw.polygon(points, fill=colour)
            mask_draw.polygon(points, fill=255)
        masks.append((cls, np.asarray(mask) > 0))
    labels: list[list[float]] = []
    covered = np.zeros((size, size), dtype=bool)
    for cls, mask in reversed(masks):  # later shapes cover earlier ones
        visible = mask & ~covered
        covered |= mask
        if mask.sum() == 0 or visible.sum() / mask.sum() < MIN_VISIBLE:
            continue
        ys, xs = np.nonzero(visible)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        labels.append([cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size])
    return image, labels


def generate_shapes_detection(
    root: str | os.PathLike[str], counts: dict[str, int] | None = None, image_size: int = 128, seed: int = 0
) -> Path:
    """Write the dataset (images/, labels/, data.yaml) under `root`; the same seed gives the same files."""
    root = Path(root)
    for split_index, (split, count) in enumerate((counts or DEFAULT_COUNTS).items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image, labels = _render(rng, image_size)
            image.save(root / "images" / split / f"{i:05d}.png")
            lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels]
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(SHAPE_CLASSES))
    splits = "".join(f"{split}: images/{split}\n" for split in (counts or DEFAULT_COUNTS))
    (root / "data.yaml").write_text(
        f"# visionkit built-in synthetic shapes ({VERSION}); no `path`: folders are relative to this file\n"
        f"{splits}names:\n{names}\n"
    )
    return root / "data.yaml"


def shapes_detection_yaml(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The built-in dataset's data.yaml, generating it first if the cache does not hold it yet."""
    return generated_once(cache_dir, VERSION, generate_shapes_detection, "data.yaml") / "data.yaml"
