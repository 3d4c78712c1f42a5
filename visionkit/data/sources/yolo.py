"""Detection datasets in the YOLO format ultralytics reads: a data.yaml, images/ and labels/*.txt.

Every label line is `class cx cy w h` (normalized to 0..1); polygon lines (`class x1 y1 x2 y2 ...`) are
turned into their bounding box. Problems are reported with file and line; with `skip_bad_labels`
the image they belong to is left out and counted instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from visionkit.data.splits import SPLITS, SampleSet, as_tags, complete_splits
from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS, check_image


@dataclass
class ScanReport:
    """What a scan of one split found, printed before training (like ultralytics' dataset scan)."""

    split: str
    images: int = 0
    boxes: int = 0
    ignored: int = 0  # of the boxes, those evaluation ignores (VOC's difficult)
    backgrounds: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ignored = f" ({self.ignored} ignored: difficult)" if self.ignored else ""
        text = f"{self.split}: {self.images} images, {self.boxes} boxes{ignored}, {self.backgrounds} without objects"
        if self.skipped:
            text += f", {len(self.skipped)} skipped (e.g. {self.skipped[0]})"
        return text


SKIP_HINT = "fix it, or set data.skip_bad_labels=true to skip such images"


class SplitScan:
    """The images a scan keeps, with their (N, 5) `class cx cy w h` arrays, and its report (YOLO and COCO)."""

    def __init__(self, split: str) -> None:
        self.report = ScanReport(split)
        self.paths: list[str] = []
        self.targets: list[np.ndarray] = []

    def keep(self, path: Path, boxes: np.ndarray) -> None:
        self.paths.append(str(path))
        self.targets.append(boxes)
        self.report.boxes += len(boxes)
        self.report.ignored += int((boxes[:, 0] < 0).sum())
        self.report.backgrounds += len(boxes) == 0

    def samples(self, source: str) -> tuple[SampleSet, ScanReport]:
        """The kept samples (an error naming `source` when none are left) and the completed report."""
        if not self.paths:
            raise VisionkitError(f"{self.report.split}: no usable images found in {source}")
        self.report.images = len(self.paths)
        targets = np.empty(len(self.targets), dtype=object)
        targets[:] = self.targets
        return SampleSet(self.paths, targets), self.report


def label_path_for(image: Path) -> Path:
    """ultralytics' convention: the last `images` folder in the path becomes `labels`, suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, num_classes: int) -> np.ndarray:
    """(N, 5) float32 rows of `class cx cy w h`; raise VisionkitError naming `path:line` on a bad line."""
    rows: list[list[float]] = []
    seen: dict[tuple[float, ...], int] = {}
    for line_no, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        where = f"{path}:{line_no}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise VisionkitError(f"{where}: expected numbers 'class cx cy w h', got {raw.strip()!r}") from None
        if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
            raise VisionkitError(
                f"{where}: expected 5 fields 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 ...'), "
                f"got {len(values)}"
            )
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise VisionkitError(f"{where}: class id {fields[0]} is not one of 0..{num_classes - 1} (data.yaml names)")
        if len(values) > 5:  # polygon -> its bounding box
            xs, ys = np.asarray(values[1::2]), np.asarray(values[2::2])
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            box = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
            corners = [x0, y0, x1, y1]
        else:
            box = values[1:]
            cx, cy, w, h = box
            corners = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if min(corners) < -1e-6 or max(corners) > 1 + 1e-6:
            raise VisionkitError(
                f"{where}: box {raw.strip()!r} reaches outside the image (coordinates must be in 0..1)"
            )
        if box[2] <= 0 or box[3] <= 0:
            raise VisionkitError(f"{where}: box {raw.strip()!r} has zero width or height")
        key = (cls, *(round(v, 6) for v in box))
        if key in seen:
            raise VisionkitError(f"{where}: duplicate of line {seen[key]}")
        seen[key] = line_no
        rows.append([cls, *box])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def read_data_yaml(path: str | os.PathLike[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """Image folders/lists per split and the class names from an ultralytics data.yaml."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VisionkitError(f"data.yaml: file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise VisionkitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    for key in ("train", "val", "names"):
        if key not in spec:
            raise VisionkitError(f"{path}: missing key {key!r} (needs path, train, val, names; test optional)")
    names = spec["names"]
    if isinstance(names, dict):
        if sorted(int(k) for k in names) != list(range(len(names))):
            raise VisionkitError(f"{path}: names must be numbered 0..{len(names) - 1}")
        names = [names[k] for k in sorted(names, key=int)]
    names = [str(n) for n in names]
    if "nc" in spec and int(spec["nc"]) != len(names):
        raise VisionkitError(f"{path}: nc is {spec['nc']} but {len(names)} names are listed")
    root = path.parent / Path(spec.get("path") or ".").expanduser()  # `path:` is relative to the yaml's folder
    root = root if root.is_absolute() else root.resolve()
    splits: dict[str, list[Path]] = {}
    for split in SPLITS:
        entries = spec.get(split)
        if not entries:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        splits[split] = [_split_entry(root, str(entry), f"{path}: {split}") for entry in entries]
    return splits, names


def _split_entry(root: Path, entry: str, where: str) -> Path:
    """The folder or list file a split names, under `root` unless absolute. Roboflow's exports write `../train/images`
    beside a data.yaml that sits next to `train/`: such a path is also looked for without its `../`, as ultralytics
    does."""
    found = root / Path(entry).expanduser()
    if not found.exists() and entry.startswith("../") and (root / entry[3:]).exists():
        found = root / entry[3:]
    if not found.exists():
        raise VisionkitError(f"{where} points at {found}, which does not exist")
    return found


def _images_of(entries: Sequence[Path]) -> list[Path]:
    images: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            images += sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:  # a .txt list of image paths, relative to its own folder
            for line in entry.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    p = Path(line.strip())
                    images.append(p if p.is_absolute() else (entry.parent / p).resolve())
    return images


def scan_split(split: str, entries: Sequence[Path], num_classes: int, skip_bad: bool) -> tuple[SampleSet, ScanReport]:
    """Images and their (N, 5) label arrays for one split, checked line by line."""
    scan = SplitScan(split)
    images = _images_of(entries)
    for image in images:
        try:
            problem = check_image(image)
            if problem:
                raise VisionkitError(f"bad image {image}: {problem}")
            label = label_path_for(image)
            boxes = parse_label_file(label, num_classes) if label.is_file() else np.zeros((0, 5), np.float32)
        except VisionkitError as exc:
            if not skip_bad:
                raise VisionkitError(f"{exc}; {SKIP_HINT}") from None
            scan.report.skipped.append(str(exc))
            continue
        scan.keep(image, boxes)
    expected_labels = {label_path_for(image).resolve() for image in images}
    for entry in entries:
        labels_dir = label_path_for(entry / "x.jpg").parent if entry.is_dir() else None
        if labels_dir is None or not labels_dir.is_dir():
            continue
        for orphan in sorted(p for p in labels_dir.rglob("*.txt") if p.resolve() not in expected_labels):
            message = f"label file {orphan} has no image"
            if not skip_bad:
                raise VisionkitError(f"{message}; add the image or delete the label, or set data.skip_bad_labels=true")
            scan.report.skipped.append(message)
    return scan.samples(", ".join(map(str, entries)))


class YoloSource:
    """A detection dataset described by an ultralytics `data.yaml`.

    Splits named in the yaml are used as they are; a missing test split is carved out of train with the
    seeded split. `reports` holds each split's scan summary after `splits()`.
    """

    task = "detection"
    scans_images = True

    def __init__(self, yaml: str, skip_bad_labels: bool = False, multilabel: bool = False) -> None:
        if yaml in (None, "", "???"):
            raise VisionkitError("data.yaml is not set: pass data.yaml=/path/to/data.yaml")
        self.yaml = Path(yaml).expanduser()
        self.skip_bad_labels = skip_bad_labels
        self.task = "multilabel" if multilabel else "detection"  # multilabel: each image tagged with its classes
        self.description = f"YOLO dataset {self.yaml}"
        self.reports: dict[str, ScanReport] = {}

    def class_names(self) -> list[str]:
        """Class names in id order, from the yaml's `names`."""
        return read_data_yaml(self.yaml)[1]

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned samples per split; targets are (N, 5) arrays of `class cx cy w h`."""
        entries, names = read_data_yaml(self.yaml)
        given: dict[str, SampleSet] = {}
        for split, split_entries in entries.items():
            given[split], self.reports[split] = scan_split(split, split_entries, len(names), self.skip_bad_labels)
        if self.task == "multilabel":
            given = as_tags(given, len(names))
        return complete_splits(given, val_fraction, test_fraction, seed)
