"""Built-in synthetic shapes for semantic segmentation: deterministic, generated once into the dataset cache.

Four shape classes plus background. Shapes are filled with textures (solid, stripes, checks, dots, noise),
have soft anti-aliased edges, may overlap a little (the mask follows what is visible) and lie on cluttered
backgrounds with unlabelled distractor lines and outlines; a few images hold no shape. Written in the
image/mask layout `data=masks` reads, masks as palette PNGs of class ids.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from visionkit.data.cache import generated_once
from visionkit.data.mask_files import mask_image
from visionkit.data.shapes import SHAPE_CLASSES, background, polygon

SEG_CLASSES = ("background", *SHAPE_CLASSES)
DEFAULT_COUNTS = {"train": 600, "val": 100, "test": 100}
VERSION = "shapes_seg_v2"  # v2: shapes inside the image, at most 25 % of one hidden by others
RADIUS = (0.08, 0.25)  # shape radius as a share of the image side
MAX_HIDDEN = 0.25
PLACEMENT_TRIES = 10  # attempts per wanted shape before settling for fewer
SUPERSAMPLE = 4  # shapes are drawn 4x larger and shrunk: anti-aliased edges


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 float fill: solid, stripes, checks, dots or noise in two random colours."""
    first, second = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(5)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(4, 12)
    if kind == 0:
        weight = np.zeros((size, size), np.float32)
    elif kind == 1:
        angle = rng.uniform(0, math.pi)
        weight = (np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period) > 0).astype(np.float32)
    elif kind == 2:
        weight = ((xs // period + ys // period) % 2).astype(np.float32)
    elif kind == 3:
        weight = ((np.hypot(xs % period - period / 2, ys % period - period / 2)) < period / 4).astype(np.float32)
    else:
        weight = rng.uniform(0, 1, (size, size)).astype(np.float32)
    return first * (1 - weight[..., None]) + second * weight[..., None]


def _coverage(rng: np.random.Generator, kind: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """The shape's anti-aliased, slightly blurred coverage in 0..1 (the soft edge)."""
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE))
    draw = ImageDraw.Draw(big)
    s = SUPERSAMPLE
    if kind == "circle":
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))], fill=255)
    small = big.resize((size, size), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return np.asarray(small, dtype=np.float32) / 255.0


def render_segmentation_sample(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One (HxWx3 uint8 image, HxW uint8 class-id mask) pair.

    Shapes lie inside the image and may overlap, but together they hide at most MAX_HIDDEN of any one:
    a shape's class must stay readable from what is visible, else the labels are a guess, not a task.
    """
    image = np.asarray(background(rng, size), dtype=np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    instances = np.zeros((size, size), dtype=np.uint8)  # which shape covers each pixel, 0 = none
    areas: list[int] = []
    count = 0 if rng.random() < 0.05 else int(rng.integers(1, 6))
    for _ in range(count * PLACEMENT_TRIES):
        if len(areas) == count:
            break
        cls = int(rng.integers(1, len(SEG_CLASSES)))
        r = rng.uniform(*RADIUS) * size
        reach = r * math.sqrt(2) if SEG_CLASSES[cls] == "square" else r  # farthest point from the centre
        cx, cy = rng.uniform(reach, size - reach, 2)
        alpha = _coverage(rng, SEG_CLASSES[cls], cx, cy, r, size)
        inside = alpha >= 0.5
        visible = np.bincount(instances.ravel(), minlength=len(areas) + 1)[1:]
        hidden = np.bincount(instances[inside], minlength=len(areas) + 1)[1:]
        if np.any(visible - hidden < (1 - MAX_HIDDEN) * np.asarray(areas)):
            continue  # would hide too much of an earlier shape: place it elsewhere
        image = image * (1 - alpha[..., None]) + _texture(rng, size) * alpha[..., None]
        mask[inside] = cls
        areas.append(int(inside.sum()))
        instances[inside] = len(areas)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def generate_shapes_segmentation(
    root: str | os.PathLike[str], counts: dict[str, int] | None = None, image_size: int = 128, seed: int = 0
) -> Path:
    """Write images/<split>/*.png and masks/<split>/*.png under `root`; the same seed gives the same files."""
    root = Path(root)
    for split_index, (split, count) in enumerate((counts or DEFAULT_COUNTS).items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = render_segmentation_sample(np.random.default_rng([seed, 100 + split_index, i]), image_size)
            Image.fromarray(image).save(root / "images" / split / f"{i:05d}.png")
            mask_image(mask).save(root / "masks" / split / f"{i:05d}.png")
    (root / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n")
    return root


def shapes_segmentation_root(cache_dir: str | os.PathLike[str] | None = None, train_images: int = 600) -> Path:
    """The built-in set's folder (images/, masks/), generating it first if the cache does not hold it yet.

    `train_images` other than the default 600 gives a larger (or smaller) training split in its own folder;
    validation and test images are the same in every size (each image is seeded by its split and index).
    """
    counts = {**DEFAULT_COUNTS, "train": int(train_images)}
    version = VERSION if counts == DEFAULT_COUNTS else f"{VERSION}_train{int(train_images)}"

    def generate(root: Path) -> Path:
        return generate_shapes_segmentation(root, counts)

    return generated_once(cache_dir, version, generate, "classes.txt")
