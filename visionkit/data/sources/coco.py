"""Detection datasets in the COCO json format: one `instances_*.json` per split and a folder of its images.

Boxes (`bbox`: x, y, width, height in pixels) become normalized `class cx cy w h` rows like YOLO labels;
category ids (any numbers) map to class ids 0..K-1 in id order; crowd annotations (`iscrowd: 1`) are kept as
ignored boxes, as COCO's evaluation treats them: out of the loss, and a detection on one is neither a hit nor a
false positive (ultralytics' converter drops them). Problems name the json file and the annotation (id and index).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.sources.annotations import box_row, ignored_class
from visionkit.data.sources.yolo import SKIP_HINT, ScanReport, SplitScan
from visionkit.data.splits import SampleSet, as_tags, complete_splits
from visionkit.errors import VisionkitError
from visionkit.utils.io import check_image
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed json, with a clear error for a missing file, bad json or missing top-level keys."""
    if not path.is_file():
        raise VisionkitError(f"COCO annotations: file {path} does not exist")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VisionkitError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in spec]
    if missing:
        raise VisionkitError(f"{path}: missing key(s) {', '.join(missing)} (needs images, annotations, categories)")
    return spec


def coco_categories(spec: dict[str, Any], path: Path) -> tuple[dict[int, int], list[str]]:
    """category id -> class id (0..K-1 in category-id order), and the names in class-id order."""
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in spec["categories"])
    except (KeyError, TypeError, ValueError):
        raise VisionkitError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    if not categories:
        raise VisionkitError(f"{path}: 'categories' is empty")
    grouping = grouping_categories(spec)
    categories = [(cat_id, name) for cat_id, name in categories if cat_id not in grouping]
    return {cat_id: index for index, (cat_id, _) in enumerate(categories)}, [name for _, name in categories]


def grouping_categories(spec: dict[str, Any]) -> dict[int, str]:
    """Categories that only group others (the `supercategory` of other categories, with no annotation of their
    own), which are no class to learn: Roboflow's COCO exports put one at id 0 ("cells" over "Platelets", ...)."""
    used = {ann.get("category_id") for ann in spec["annotations"] if isinstance(ann, dict)}
    parents = {
        str(c.get("supercategory")) for c in spec["categories"] if c.get("supercategory") not in (None, c.get("name"))
    }
    return {int(c["id"]): str(c["name"]) for c in spec["categories"] if c["name"] in parents and c["id"] not in used}


def _box_row(ann: dict[str, Any], image: dict[str, Any], where: str, class_id: int) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise VisionkitError(f"{where}: 'bbox' must be [x, y, width, height] numbers") from None
    return box_row((x, y, x + w, y + h), float(image["width"]), float(image["height"]), class_id, where)


def scan_coco_split(
    split: str, json_path: Path, images_dir: Path, names: list[str] | None, skip_bad: bool
) -> tuple[SampleSet, ScanReport, list[str]]:
    """Images and (N, 5) `class cx cy w h` arrays of one split, checked annotation by annotation."""
    spec = read_coco_json(json_path)
    mapping, split_names = coco_categories(spec, json_path)
    if names is not None and split_names != names:
        raise VisionkitError(f"{json_path}: categories {split_names} differ from the train split's {names}")
    if not images_dir.is_dir():
        raise VisionkitError(f"COCO images: folder {images_dir} (for {json_path.name}) does not exist")
    images: dict[Any, dict[str, Any]] = {}
    for index, image in enumerate(spec["images"]):
        if not {"id", "file_name", "width", "height"} <= set(image):
            raise VisionkitError(f"{json_path}: images[{index}] needs id, file_name, width and height")
        images[image["id"]] = image
    rows: dict[Any, list[list[float]]] = defaultdict(list)
    bad: dict[Any, str] = {}
    seen: dict[tuple[Any, tuple[float, ...]], str] = {}
    for index, ann in enumerate(spec["annotations"]):
        where = f"{json_path}: annotations[{index}] (id {ann.get('id', '?')})"
        try:
            image = images.get(ann.get("image_id"))
            if image is None:
                raise VisionkitError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
            if int(ann.get("category_id", -1)) not in mapping:
                raise VisionkitError(f"{where}: category_id {ann.get('category_id')} is not in 'categories'")
            row = _box_row(ann, image, where, mapping[int(ann["category_id"])])
            if ann.get("iscrowd", 0):
                row[0] = ignored_class(int(row[0]))
            key = (image["id"], tuple(round(v, 6) for v in row))
            if key in seen:
                raise VisionkitError(f"{where}: duplicate of {seen[key].split(': ', 1)[1]}")
            seen[key] = where
            rows[image["id"]].append(row)
        except VisionkitError as exc:
            if not skip_bad or image is None:
                hint = "" if skip_bad else f"; {SKIP_HINT}"
                raise VisionkitError(f"{exc}{hint}") from None
            bad.setdefault(image["id"], str(exc))
    scan = SplitScan(split)
    for image_id, image in images.items():
        path = images_dir / str(image["file_name"])
        problem = bad.get(image_id) or (f"bad image {path}: {reason}" if (reason := check_image(path)) else None)
        if problem:
            if not skip_bad:
                raise VisionkitError(f"{problem}; {SKIP_HINT}")
            scan.report.skipped.append(problem)
            continue
        scan.keep(path, np.asarray(rows.get(image_id, []), dtype=np.float32).reshape(-1, 5))
    samples, report = scan.samples(str(json_path))
    return samples, report, split_names


class CocoSource:
    """A detection dataset in COCO json format: a json and an images folder per split (val/test optional;
    missing ones are carved out of train with the seeded split). `reports` holds each split's scan."""

    task = "detection"
    scans_images = True

    def __init__(
        self,
        train_json: str,
        train_images: str,
        val_json: str | None = None,
        val_images: str | None = None,
        test_json: str | None = None,
        test_images: str | None = None,
        skip_bad_labels: bool = False,
        multilabel: bool = False,
    ) -> None:
        self.task = "multilabel" if multilabel else "detection"  # multilabel: each image tagged with its classes
        self.files: dict[str, tuple[Path, Path]] = {}
        for split, json_path, images in (
            ("train", train_json, train_images),
            ("val", val_json, val_images),
            ("test", test_json, test_images),
        ):
            if json_path in (None, "", "???"):
                if split == "train":
                    raise VisionkitError("data.train_json is not set: pass data.train_json=/path/instances_train.json")
                continue
            if images in (None, "", "???"):
                raise VisionkitError(f"data.{split}_images is not set: the folder the {split} json's file_names are in")
            self.files[split] = (Path(json_path).expanduser(), Path(images).expanduser())
        self.skip_bad_labels = skip_bad_labels
        self.description = f"COCO dataset {self.files['train'][0]}"
        self.reports: dict[str, ScanReport] = {}
        self._names: list[str] | None = None

    def class_names(self) -> list[str]:
        """Category names in category-id order (from the train json, read once)."""
        if self._names is None:
            path = self.files["train"][0]
            spec = read_coco_json(path)
            self._names = coco_categories(spec, path)[1]
            for cat_id, name in grouping_categories(spec).items():
                log.info(f"{path}: category {cat_id} {name!r} only groups others (no annotation of its own): no class")
        return list(self._names)

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned samples per split; targets are (N, 5) arrays of `class cx cy w h`."""
        names = self.class_names()
        given: dict[str, SampleSet] = {}
        for split, (json_path, images) in self.files.items():
            given[split], self.reports[split], _ = scan_coco_split(
                split, json_path, images, names, self.skip_bad_labels
            )
        if self.task == "multilabel":
            given = as_tags(given, len(names))
        return complete_splits(given, val_fraction, test_fraction, seed)
