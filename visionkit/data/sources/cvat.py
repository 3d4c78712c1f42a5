"""CVAT's "CVAT for images 1.1" XML: `annotations.xml` (or one `<subset>.xml` per split, as datumaro writes them)
and the images it names, under `images/` or beside the XML:

    export/
      annotations.xml        <image name= width= height= [subset=]> holding <box>, <polygon>, <mask> elements
      images/<name>          (CVAT's export; datumaro's: images/<subset>/<name>)

Detection reads boxes, and polygons and masks as their bounding boxes; segmentation paints polygons, boxes and
masks by `z_order` (then file order) on background 0. Polylines, points, ellipses and skeletons are counted and
left out. Splits come from the images' `subset` (Train, Validation, Test), or from the file names of
per-subset XMLs; the rest is carved out of train. Class names: `data.class_names`, else the XML's `<labels>`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionkit.data.sources.annotations import AnnotationScan, AnnotationToolSource, Shape, task_names
from visionkit.data.splits import SampleSet, complete_splits, split_pool
from visionkit.errors import VisionkitError

SUBSETS = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
KINDS = {"box": "rectangle", "polygon": "polygon", "mask": "mask"}


def parse_xml(path: Path) -> ET.Element:
    """The root of an XML file; VisionkitError with the line when it is not valid XML."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise VisionkitError(f"{path}:{exc.position[0]}: not valid XML ({exc})") from None
    except OSError as exc:
        raise VisionkitError(f"{path}: cannot be read ({exc.strerror})") from None


def cvat_labels(root: ET.Element) -> list[str]:
    """The label names the XML's <meta> declares (task, project or job), in order."""
    return [name.text.strip() for name in root.iterfind("meta/*/labels/label/name") if name.text]


def rle_mask(counts: str, width: int, height: int, where: str) -> np.ndarray:
    """CVAT's mask RLE (alternating runs of 0 and 1 over the box, row by row, starting with 0) as a bool array."""
    try:
        runs = [int(v) for v in counts.replace(" ", "").split(",") if v]
    except ValueError:
        raise VisionkitError(f"{where}: rle must be comma-separated counts") from None
    if sum(runs) != width * height:
        raise VisionkitError(f"{where}: rle covers {sum(runs)} pixels, the mask's box {width}x{height}")
    values = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return values.reshape(height, width)


def image_shapes(image: ET.Element, path: Path) -> tuple[list[Shape], dict[str, int]]:
    """One <image>'s boxes, polygons and masks (ordered by z_order, then file order) and a count of the elements
    left out, by tag."""
    found, left_out = [], dict[str, int]()
    for number, element in enumerate(image, start=1):
        label = element.get("label", "")
        where = f"{path}: image {image.get('name')!r}, {element.tag} {number} ({label})"
        kind = KINDS.get(element.tag)
        if kind is None:
            left_out[element.tag] = left_out.get(element.tag, 0) + 1
            continue
        points: tuple[float, ...] | tuple[int, int, np.ndarray]  # a box or polygon's numbers, or a mask's corner
        try:
            if kind == "rectangle":
                points = tuple(float(element.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
            elif kind == "polygon":
                points = tuple(float(v) for pair in element.get("points", "").split(";") for v in pair.split(","))
                if len(points) < 6 or len(points) % 2:
                    raise VisionkitError(f"{where}: {len(points) // 2} point(s); a polygon needs at least 3")
            else:
                left, top, width, height = (int(float(element.get(k, ""))) for k in ("left", "top", "width", "height"))
                points = (left, top, rle_mask(element.get("rle", ""), width, height, where))
        except (TypeError, ValueError):
            raise VisionkitError(f"{where}: missing or non-numeric coordinates") from None
        found.append((int(element.get("z_order", 0) or 0), number, Shape(label, kind, points, where)))
    return [shape for _, _, shape in sorted(found, key=lambda item: item[:2])], left_out


class CvatSource(AnnotationToolSource):
    """A CVAT for images 1.1 export (see the module docstring), read for `task` detection or segmentation.

    Args:
        root: the export's folder (holding annotations.xml or <subset>.xml files, and images/), or its XML file.
        task: "detection" or "segmentation"; the config passes `task_name`.
        class_names: names in class-id order (segmentation: background first); default the XML's labels.
        ignore_index: segmentation: the mask value left out of loss and metrics (for masks that use it).
        skip_bad_labels: leave images with bad annotations out and count them instead of stopping.
    """

    folder_hint = "a CVAT export"

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str = "detection",
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        skip_bad_labels: bool = False,
    ) -> None:
        super().__init__(root, task, class_names, ignore_index, skip_bad_labels)
        path = self.path
        if path.is_file():
            self.root, self.files = path.parent, [path]
        elif path.is_dir():
            self.root = path
            found = [path / "annotations.xml"] if (path / "annotations.xml").is_file() else sorted(path.glob("*.xml"))
            self.files = found
        else:
            raise VisionkitError(f"data.root: {path} does not exist (a CVAT export folder with annotations.xml)")
        if not self.files:
            raise VisionkitError(f"data.root: {path} holds no annotations.xml (CVAT for images 1.1 export)")
        self.description = f"CVAT export {self.root} ({task})"
        self._parsed = {file: parse_xml(file) for file in self.files}
        for file, root_element in self._parsed.items():
            if root_element.tag != "annotations":
                raise VisionkitError(f"{file}: not a CVAT for images XML (its root is <{root_element.tag}>)")

    def class_names(self) -> list[str]:
        if self.given_names:
            return task_names(self.given_names, self.task)
        names: list[str] = []
        for root_element in self._parsed.values():
            names += [n for n in cvat_labels(root_element) if n not in names]
        if not names:
            found = {element.get("label", "") for r in self._parsed.values() for element in r.iterfind("image/*")}
            names = sorted(found - {""})
        return task_names(names, self.task)

    def _split_of(self, file: Path, image: ET.Element) -> str:
        subset = (image.get("subset") or (file.stem if len(self.files) > 1 else "")).strip().lower()
        return SUBSETS.get(subset, "pool")

    def _image_path(self, file: Path, image: ET.Element) -> Path:
        name = image.get("name", "")
        candidates = [self.root / "images" / name, file.parent / name]
        if image.get("subset") or len(self.files) > 1:
            candidates.insert(1, self.root / "images" / (image.get("subset") or file.stem) / name)
        return next((c for c in candidates if c.is_file()), candidates[0])

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned samples per split (see the module docstring)."""
        names, reader = self.class_names(), self.mask_reader
        scans: dict[str, AnnotationScan] = {}
        for file, root_element in self._parsed.items():
            for image in root_element.iterfind("image"):
                split = self._split_of(file, image)
                scan = scans.setdefault(
                    split, AnnotationScan(split, self.task, names, reader, self.skip_bad_labels, "CVAT")
                )
                with scan.problems():
                    shapes, left_out = image_shapes(image, file)
                    scan.left_out.update(left_out)
                    stated = (int(image.get("height", 0) or 0), int(image.get("width", 0) or 0))
                    scan.add(self._image_path(file, image), stated, shapes, f"{file}: image {image.get('name')!r}")
        if not scans:
            raise VisionkitError(f"{', '.join(map(str, self.files))}: no <image> elements")
        given = {}
        for split, scan in scans.items():
            given[split], self.reports[split] = scan.samples(str(self.root))
        if "pool" in given:
            pool = given.pop("pool")
            if "train" not in given:
                return split_pool(pool, val_fraction, test_fraction, seed)
            given["train"] = SampleSet(
                [*given["train"].images, *pool.images], np.concatenate([given["train"].targets, pool.targets])
            )
        if "train" not in given:
            raise VisionkitError(f"{self.root}: no image of the train subset (found {', '.join(sorted(given))})")
        return complete_splits(given, val_fraction, test_fraction, seed)
