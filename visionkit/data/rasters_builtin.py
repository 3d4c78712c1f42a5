"""Two built-in raster sets that an 8-bit RGB pipeline cannot learn, generated once into the dataset cache as
TIFF files in `{train,val,test}/<class>/` folders (no download):

- `scans16`: 16-bit single-channel scans with one bright blob each; the class is how much brighter the blob is
  than the tissue around it (80, 160 or 240 grey levels of 65,535): less than one 8-bit level, so squeezing
  the scans to 8 bits merges the classes, while the 16-bit values keep them apart.
- `bands5`: 5-band rasters (red, green, blue, near-infrared, short-wave infrared; reflectance x 10,000 as uint16)
  with one patch each: water, vegetation, or green paint, which has vegetation's colour but not its
  near-infrared reflectance: told apart only by band 3.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from visionkit.data.cache import generated_once

SCANS_VERSION = "scans16_v1"
BANDS_VERSION = "bands5_v1"
COUNTS = {"train": 600, "val": 150, "test": 300}
SCAN_CLASSES = {"faint": 80, "medium": 160, "bright": 240}  # blob contrast in 16-bit grey levels
BAND_NAMES = ("red", "green", "blue", "nir", "swir")
PATCHES = {  # reflectance x 10,000 per band
    "water": (600, 900, 1300, 300, 150),
    "vegetation": (700, 1600, 600, 4800, 2200),
    "paint": (700, 1600, 600, 1400, 2200),
}
SOIL = (2600, 2300, 1900, 3000, 3600)


def _write_tiff(path: Path, pixels: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig" if pixels.ndim == 3 else None)


def _disc(size: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """A soft-edged disc (0..1) of random radius and centre on a size x size grid."""
    r = rng.uniform(*radius)
    cy, cx = rng.uniform(r, size - r, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(r - distance + 0.5, 0.0, 1.0)


def scan_image(contrast: float, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One 16-bit scan: tissue at a random level near 30,000 with a gentle gradient and noise, and one blob
    `contrast` grey levels brighter."""
    level = rng.uniform(29_500, 30_500)
    yy, xx = np.mgrid[0:size, 0:size] / size
    gradient = rng.uniform(-60, 60) * yy + rng.uniform(-60, 60) * xx
    image = level + gradient + contrast * _disc(size, rng, (5, 10)) + rng.normal(0, 6, (size, size))
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


def band_image(patch: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One 5-band raster: soil with texture, one patch of `patch`, a random illumination and sensor noise."""
    shape = _disc(size, rng, (6, 12))[:, :, None]
    texture = rng.normal(1.0, 0.06, (size, size, 1))
    soil = np.asarray(SOIL, dtype=np.float64) * texture
    cover = np.asarray(PATCHES[patch], dtype=np.float64) * rng.normal(1.0, 0.04, (size, size, 1))
    image = (soil * (1 - shape) + cover * shape) * rng.uniform(0.85, 1.15) + rng.normal(0, 60, (size, size, 5))
    return np.clip(np.round(image), 0, 10_000).astype(np.uint16)


def _generate(root: Path, classes: list[str], make: Callable[[str, np.random.Generator], np.ndarray]) -> Path:
    for split_index, (split, count) in enumerate(COUNTS.items()):
        for index in range(count):
            rng = np.random.default_rng([split_index, index])
            label = classes[index % len(classes)]
            _write_tiff(root / split / label / f"{split}_{index:04d}.tif", make(label, rng))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def scans16_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The built-in 16-bit scans (generated on first use; about 4 MB)."""
    classes = list(SCAN_CLASSES)

    def generate(root: Path) -> Path:
        return _generate(root, classes, lambda label, rng: scan_image(SCAN_CLASSES[label], rng))

    return generated_once(cache_dir, SCANS_VERSION, generate, "classes.txt")


def bands5_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The built-in 5-band rasters (generated on first use; about 11 MB)."""
    classes = list(PATCHES)

    def generate(root: Path) -> Path:
        return _generate(root, classes, band_image)

    return generated_once(cache_dir, BANDS_VERSION, generate, "classes.txt")
