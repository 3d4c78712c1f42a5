"""Segmentation datasets as image/mask pairs with matching names (the mask a PNG of class ids), in either of
the two common layouts, found automatically:

- `root/images/` + `root/masks/`, each either one pool (split by the data config) or `train/ val/ test/` subfolders;
- `root/{train,val,test}/images/` + `root/{train,val,test}/masks/` (the usual Kaggle layout; val/test optional).

Every pair is scanned once before training (image readable, mask readable with valid ids, same size); a
problem stops with the file named, or with `skip_bad_masks` the pair is left out and counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.mask_files import MaskReader
from visionkit.data.splits import SPLITS, SampleSet, complete_splits, split_pool
from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS, check_image, shown_size

SKIP_HINT = "fix it, or set data.skip_bad_masks=true to leave such pairs out"


@dataclass
class MaskScanReport:
    """What the scan of one split found: pairs kept, pixel share per class, pairs left out."""

    split: str
    class_names: Sequence[str]
    layout: str = ""
    pairs: int = 0
    pixels: np.ndarray = field(init=False)  # per class, summed over the masks kept
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pixels = np.zeros(len(self.class_names), dtype=np.int64)

    def summary(self) -> str:
        text = f"{self.split}: {self.pairs} image/mask pairs" + (f" (layout {self.layout})" if self.layout else "")
        if self.pixels.sum() > 0:
            share = self.pixels / self.pixels.sum()
            shown = ", ".join(f"{name} {100 * s:.1f}%" for name, s in list(zip(self.class_names, share))[:12])
            text += f"; pixels: {shown}"
            absent = [name for name, count in zip(self.class_names, self.pixels) if count == 0]
            if absent:
                text += f"; no pixels of {', '.join(absent[:5])}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped (e.g. {self.skipped[0]})"
        return text


def files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files under `folder` keyed by their path relative to it, without suffix."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith("."):
            found.setdefault(str(path.relative_to(folder).with_suffix("")), path)
    return found


def check_mask_pair(reader: MaskReader, image: Path, mask: Any) -> tuple[str | None, np.ndarray | None]:
    """(None, pixel count per class) when the image and its mask (a file, or shapes to draw) are usable
    together, else (the reason, None)."""
    reason = check_image(image)
    if reason is not None:
        return f"image {image}: {reason}", None
    try:
        ids = reader.read(mask)
    except VisionkitError as exc:
        return str(exc), None
    height, width = shown_size(image)
    if ids.shape != (height, width):
        return (
            f"mask {mask} is {ids.shape[1]}x{ids.shape[0]} px but its image {image} is {width}x{height}; "
            "a mask must have its image's size",
            None,
        )
    return None, np.bincount(ids.ravel().astype(np.int64), minlength=reader.num_classes)[: reader.num_classes]


class MaskSource:
    """Image/mask pairs under `root` (see the module docstring); class names and ignore_index from the config.

    Args:
        root: folder holding `images/` and `masks/`, or `train/`, `val/`, `test/` each holding them (names
            configurable).
        class_names: names in class-id order (id 0 first, usually "background"); for `binary` masks the
            default is ["background", "foreground"]; without names, `num_classes` gives "0".."N-1".
        num_classes: the number of classes when no names are given.
        ignore_index: mask value left out of loss and metrics (e.g. 255 for object borders), or None.
        binary: non-zero pixels are the one foreground class (0/1 and 0/255 masks).
        colors: one [r, g, b] per class to read colour-coded RGB masks.
        skip_bad_masks: leave bad pairs out and count them instead of stopping.
    """

    task = "segmentation"
    scans_images = True  # the pair scan checks every image too

    def __init__(
        self,
        root: str | os.PathLike[str],
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        binary: bool = False,
        colors: Sequence[Sequence[int]] | None = None,
        images: str = "images",
        masks: str = "masks",
        skip_bad_masks: bool = False,
        threads: int = 8,
        num_classes: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.image_dir, self.mask_dir = self.root / images, self.root / masks
        self.folders = (images, masks)
        if not self.root.is_dir():
            raise VisionkitError(
                f"data.root: {self.root} is not a folder; expected {images}/ and {masks}/ (or train/{images}/ and "
                f"train/{masks}/) inside it, with matching file names (see datasets/README.md)"
            )
        if self.image_dir.is_dir() and self.mask_dir.is_dir():
            self.layout = f"root/{images}/ + root/{masks}/"
        elif any((self.root / split / images).is_dir() for split in SPLITS):
            self.layout = f"root/{{train,val,test}}/{images}/ + {masks}/"
        else:
            raise VisionkitError(
                f"data.root: {self.root} holds neither {images}/ and {masks}/ nor train/{images}/ and train/{masks}/; "
                "put the pairs in one of these layouts, with matching file names (see datasets/README.md)"
            )
        if class_names is None and binary:
            class_names = ["background", "foreground"]
        if not class_names and num_classes:
            class_names = [str(i) for i in range(int(num_classes))]
        if not class_names:
            raise VisionkitError(
                "data.class_names is not set: list the classes in id order, e.g. "
                "data.class_names=[background,road,car], "
                "or give their number with data.num_classes=N (then named 0..N-1)"
            )
        if binary and len(class_names) != 2:
            raise VisionkitError(f"data.binary=true needs 2 class names (background, foreground), got {class_names}")
        self.names = [str(n) for n in class_names]
        self.mask_reader = MaskReader.make(len(self.names), ignore_index, binary, colors)
        self.skip_bad_masks = skip_bad_masks
        self.threads = threads
        self.description = f"masks {self.root}"
        self.reports: dict[str, MaskScanReport] = {}

    @property
    def ignore_index(self) -> int | None:
        return self.mask_reader.ignore_index

    def class_names(self) -> list[str]:
        return list(self.names)

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned pairs per split: from `<split>/images/` folders (the Kaggle layout), from `images/<split>/`
        subfolders when `images/train` exists, else one pool split with the fractions and seed."""
        images, masks = self.folders
        if not self.image_dir.is_dir():
            given = {
                split: self._scan(split, self.root / split / images, self.root / split / masks)
                for split in SPLITS
                if (self.root / split / images).is_dir()
            }
            if "train" not in given:
                raise VisionkitError(f"data.root: {self.root}/train/{images}/ is missing; the training pairs go there")
            return complete_splits(given, val_fraction, test_fraction, seed)
        if (self.image_dir / "train").is_dir():
            given = {
                split: self._scan(split, self.image_dir / split, self.mask_dir / split)
                for split in SPLITS
                if (self.image_dir / split).is_dir()
            }
            return complete_splits(given, val_fraction, test_fraction, seed)
        return split_pool(self._scan("all", self.image_dir, self.mask_dir), val_fraction, test_fraction, seed)

    def _scan(self, split: str, image_dir: Path, mask_dir: Path) -> SampleSet:
        images = files_by_stem(image_dir)
        masks = files_by_stem(mask_dir) if mask_dir.is_dir() else {}
        report = MaskScanReport(split, self.names, self.layout)
        problems = [
            f"mask {masks[s]} has no image in {image_dir} (same name, any image suffix)"
            for s in masks
            if s not in images
        ]
        problems += [
            f"image {images[s]} has no mask in {mask_dir} (expected {mask_dir / s}.png)"
            for s in images
            if s not in masks
        ]
        pairs = [(images[s], masks[s]) for s in images if s in masks]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            results = list(pool.map(lambda pair: check_mask_pair(self.mask_reader, *pair), pairs))
        kept: list[tuple[Path, Path]] = []
        for pair, (reason, counts) in zip(pairs, results):
            if reason is None:
                kept.append(pair)
                report.pixels += counts
            else:
                problems.append(reason)
        if problems and not self.skip_bad_masks:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise VisionkitError(f"{problems[0]}{more}; {SKIP_HINT}")
        report.skipped = problems
        if not kept:
            raise VisionkitError(f"{split}: no usable image/mask pairs found in {image_dir} and {mask_dir}")
        report.pairs = len(kept)
        self.reports[split] = report
        targets = np.empty(len(kept), dtype=object)
        targets[:] = [str(mask) for _, mask in kept]
        return SampleSet([str(image) for image, _ in kept], targets)
