"""LabelMe's annotations: one JSON per image (`shapes` with `label`, `points`, `shape_type`; `imagePath` relative
to the JSON), anywhere under `root`, or under `root/{train,val,test}/` as the splits.

Detection reads rectangles as boxes and polygons (and mask shapes) as their bounding boxes; segmentation paints
polygons, rectangles and mask shapes in file order (later over earlier, as LabelMe's own labelme2voc does) on
background 0. Circles, lines and points are counted and left out. Class names come from `data.class_names`, else
a `labels.txt` in `root` (labelme2voc's: `__ignore__` and `_background_` first, then one name per line), else
the labels found, sorted (background first for segmentation).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionkit.data.sources.annotations import (
    BACKGROUND_NAMES,
    IGNORE_NAME,
    AnnotationScan,
    AnnotationToolSource,
    Shape,
    task_names,
)
from visionkit.data.sources.imagefolder import split_folders
from visionkit.data.splits import SampleSet, complete_splits, split_pool
from visionkit.errors import VisionkitError


def read_labels_txt(path: Path) -> list[str]:
    """The class names of a labelme2voc `labels.txt`, without `__ignore__` (background first when listed)."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [name for name in names if name != IGNORE_NAME]


def _mask_shape(shape: dict[str, Any], where: str) -> tuple[float, float, np.ndarray]:
    """A LabelMe mask shape (`points`: its box's top-left and bottom-right, `mask`: base64 PNG) as left, top, bits."""
    try:
        (x0, y0), (x1, y1) = (tuple(round(float(v)) for v in point) for point in shape["points"])
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as img:
            bits = np.asarray(img.convert("L")) > 0
    except (KeyError, TypeError, ValueError, OSError):
        raise VisionkitError(f"{where}: a mask shape needs 'points' (two corners) and 'mask' (base64 PNG)") from None
    if bits.shape != (y1 - y0 + 1, x1 - x0 + 1):
        raise VisionkitError(
            f"{where}: the mask is {bits.shape[1]}x{bits.shape[0]} px but its corners {x0},{y0} and {x1},{y1} span "
            f"{x1 - x0 + 1}x{y1 - y0 + 1}"
        )
    return x0, y0, bits


def read_labelme_json(path: Path) -> tuple[Path, tuple[int, int], list[Shape], Counter[str]]:
    """The image a LabelMe JSON names, its (height, width) as stated, its usable shapes and a count of the shape
    types left out (circles, lines, points)."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VisionkitError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(spec, dict) or "shapes" not in spec or not spec.get("imagePath"):
        raise VisionkitError(f"{path}: not a LabelMe file (needs 'shapes' and 'imagePath')")
    image = (path.parent / str(spec["imagePath"]).replace("\\", "/")).resolve()
    size = (int(spec.get("imageHeight") or 0), int(spec.get("imageWidth") or 0))
    shapes, left_out = [], Counter[str]()
    for number, shape in enumerate(spec["shapes"], start=1):
        label = str(shape.get("label", "")).strip()
        kind = shape.get("shape_type") or "polygon"
        where = f"{path}: shape {number} ({label or 'no label'}, {kind})"
        if kind not in ("rectangle", "polygon", "mask"):
            left_out[kind] += 1
            continue
        if kind == "mask":
            shapes.append(Shape(label, kind, _mask_shape(shape, where), where))
            continue
        try:
            points = [float(v) for point in shape["points"] for v in point]
        except (KeyError, TypeError, ValueError):
            raise VisionkitError(f"{where}: 'points' must be a list of [x, y] pairs") from None
        needed = 2 if kind == "rectangle" else 3
        if len(points) < 2 * needed or len(points) % 2:
            raise VisionkitError(f"{where}: {len(points) // 2} point(s); a {kind} needs at least {needed}")
        shapes.append(Shape(label, kind, tuple(points), where))
    return image, size, shapes, left_out


class LabelMeSource(AnnotationToolSource):
    """LabelMe JSON files under `root` (see the module docstring), read for `task` detection or segmentation.

    Args:
        root: the folder of JSON files (and their images), or one with `train/` (`val/`, `test/`) folders of them.
        task: "detection" or "segmentation"; the config passes `task_name`.
        class_names: names in class-id order (segmentation: background first); default `labels.txt`, else the
            labels found.
        ignore_index: segmentation: the mask value of pixels labelled `__ignore__`, left out of loss and metrics.
        skip_bad_labels: leave images with bad annotations out and count them instead of stopping.
    """

    folder_hint = "the LabelMe json files"

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str = "detection",
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = 255,
        skip_bad_labels: bool = False,
    ) -> None:
        super().__init__(root, task, class_names, ignore_index, skip_bad_labels)
        self.root = self.path
        self.folders = split_folders(self.root, "the JSON files")
        self.description = f"LabelMe files under {self.root} ({task})"
        self._names: list[str] | None = None
        self._files: dict[str, list[Path]] = {
            split: sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))
            for split, folder in self.folders.items()
        }
        if not self._files.get("train"):
            raise VisionkitError(f"data.root: no LabelMe .json files under {self.folders['train']}")

    def class_names(self) -> list[str]:
        if self._names is None:
            if self.given_names:
                names = self.given_names
            elif (self.root / "labels.txt").is_file():
                names = read_labels_txt(self.root / "labels.txt")
            else:
                found = {s.label for path in self._files["train"] for s in read_labelme_json(path)[2]}
                names = sorted(found - {IGNORE_NAME, *BACKGROUND_NAMES})
            self._names = task_names(names, self.task)
        return list(self._names)

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned samples per split: the `train/`, `val/`, `test/` folders, or one pool split by the fractions."""
        given = {split: self._scan(split, files) for split, files in self._files.items() if files}
        if set(self.folders) == {"train"} and self.folders["train"] == self.root:
            return split_pool(given["train"], val_fraction, test_fraction, seed)
        return complete_splits(given, val_fraction, test_fraction, seed)

    def _scan(self, split: str, files: list[Path]) -> SampleSet:
        scan = AnnotationScan(split, self.task, self.class_names(), self.mask_reader, self.skip_bad_labels, "LabelMe")
        for path in files:
            with scan.problems():
                image, stated, shapes, left_out = read_labelme_json(path)
                scan.left_out += left_out
                scan.add(image, stated, shapes, str(path))
        samples, self.reports[split] = scan.samples(str(self.folders.get(split, self.root)))
        return samples
