"""Unlabelled photos (for the fast stylizer): any folder of images, or the built-in set cut from the public
domain / CC0 sample photos scikit-image ships; plus the built-in style image, painted procedurally.

Layout: `root/*.jpg` (split by the seeded fractions) or `root/{train,val,test}/*`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from visionkit.data.cache import generated_once
from visionkit.data.sources.imagefolder import images_under, split_folders
from visionkit.data.splits import SampleSet, complete_splits
from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS

PHOTOS_VERSION = "photos_v1"
STYLE_VERSION = "strokes_style_v1"
# scikit-image sample photos in colour, all public domain or CC0 (see datasets/README.md)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
CROPS_PER_PHOTO = {"train": 24, "val": 3, "test": 3}
CROP_SIZE = 256


def _sample_photos() -> list[np.ndarray]:
    try:
        from skimage import data as samples
    except ImportError:
        raise VisionkitError(
            "the built-in photo set is cut from scikit-image's sample photos: pip install 'visionkit[style]' "
            "(or scikit-image), or pass data.root=/path/to/photos"
        ) from None
    return [np.asarray(getattr(samples, name)())[..., :3] for name in SKIMAGE_PHOTOS]


def generate_photo_crops(root: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write `CROP_SIZE`² random crops (random scale, flips) of every sample photo into root/{train,val,test}/."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for photo_index, photo in enumerate(_sample_photos()):
        image = Image.fromarray(photo)
        for split, count in CROPS_PER_PHOTO.items():
            (root / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = int(rng.uniform(0.35, 1.0) * min(image.size))
                left = int(rng.integers(0, image.size[0] - side + 1))
                top = int(rng.integers(0, image.size[1] - side + 1))
                crop = image.crop((left, top, left + side, top + side)).resize(
                    (CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS
                )
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                crop.save(root / split / f"{SKIMAGE_PHOTOS[photo_index]}_{i:03d}.jpg", quality=92)
    (root / "SOURCES.txt").write_text(
        "Crops of scikit-image sample photos (skimage.data): " + ", ".join(SKIMAGE_PHOTOS) + ".\n"
        "All public domain or CC0; see the skimage.data docstrings for credits.\n"
    )
    return root


def builtin_photos_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The built-in photo set's folder (train/, val/, test/), generated on first use."""
    return generated_once(cache_dir, PHOTOS_VERSION, generate_photo_crops, "SOURCES.txt")


def paint_strokes(size: int = 512, seed: int = 0) -> Image.Image:
    """A deterministic 'painting' of bold, blurred, curved brush strokes in a warm/cool palette."""
    rng = np.random.default_rng(seed)
    palette = [(230, 180, 40), (200, 60, 30), (30, 70, 160), (20, 120, 140), (240, 230, 200), (40, 30, 60)]
    canvas = Image.new("RGB", (size, size), palette[2])
    draw = ImageDraw.Draw(canvas)
    for _ in range(420):
        colour = tuple(int(np.clip(c + rng.normal(0, 18), 0, 255)) for c in palette[rng.integers(len(palette))])
        x, y = rng.uniform(0, size, 2)
        angle, width = rng.uniform(0, 2 * math.pi), int(rng.uniform(0.01, 0.035) * size)
        points = []
        for _ in range(8):
            angle += rng.normal(0, 0.35)
            x, y = x + math.cos(angle) * size * 0.02, y + math.sin(angle) * size * 0.02
            points.append((x, y))
        draw.line(points, fill=colour, width=width, joint="curve")
    return canvas.filter(ImageFilter.GaussianBlur(0.8))


def builtin_style_image(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the built-in style image (procedural brush strokes), generated on first use."""

    def generate(folder: Path) -> None:
        paint_strokes().save(folder / "strokes.png")

    return generated_once(cache_dir, STYLE_VERSION, generate, "strokes.png") / "strokes.png"


class PhotoSource:
    """Photos without labels: `root/` (split by the seeded fractions) or `root/{train,val,test}/`;
    `root=None` uses the built-in photo set (generated into `cache_dir`)."""

    task = "style_transfer"

    def __init__(self, root: str | None = None, cache_dir: str | None = None) -> None:
        self.root = Path(root).expanduser() if root not in (None, "") else builtin_photos_root(cache_dir)
        self.description = f"photos under {self.root}"

    def class_names(self) -> list[str]:
        """Photos have no classes."""
        return []

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Explicit train/val/test folders when present, else a seeded split of every image under root."""
        given = {}
        for name, folder in split_folders(self.root, "the images").items():
            paths = images_under(folder)
            if not paths:
                raise VisionkitError(f"data.root: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
            given[name] = SampleSet(paths, np.zeros(len(paths), dtype=np.int64))
        return complete_splits(given, val_fraction, test_fraction, seed)
