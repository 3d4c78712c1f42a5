"""Hugging Face `datasets` on disk: a folder written by `save_to_disk` (a Dataset or a DatasetDict of splits) or a
dataset's parquet files (the Hub's `data/train-00000-of-00001.parquet` layout, or `<split>/*.parquet`). Nothing is
downloaded. Images (and segmentation masks) are extracted once, with their original bytes, into the data cache
(`paths.data_dir`, keyed by the files' sizes and times and the column choices), so every later run reads plain files
through the one pipeline.

- classification: an Image column and a label column (ClassLabel: its names; ints; or strings, sorted);
- detection: an objects column holding `bbox` lists (`data.bbox_format`: coco x y w h pixels by default, xyxy
  pixels, or cxcywhn normalized) and `category` (or `label`) ids, ClassLabel names when the feature has them;
- segmentation: an Image column of class-id masks (`data.class_names` or `data.num_classes` name the classes).

Columns are found from the features (the first Image column is the image, the next the mask; the first ClassLabel
the label; `objects` the boxes) unless named with `data.image_column`, `data.label_column`, `data.objects_column`,
`data.mask_column`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from visionkit.data.cache import generated_once
from visionkit.data.sources.annotations import MaskedSource, box_row, box_rows, class_id_of
from visionkit.data.sources.yolo import SKIP_HINT
from visionkit.data.splits import SampleSet, complete_splits
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

TASKS = ("classification", "detection", "segmentation")
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}
BBOX_FORMATS = ("coco", "xyxy", "cxcywhn")
MANIFEST = "manifest.json"


def split_of(path: Path, root: Path) -> str | None:
    """The split a parquet file belongs to, from its folder or file-name prefix (`train-00000-of-00001`)."""
    parts = [*path.relative_to(root).parent.parts, path.stem.split("-")[0]]
    return next((SPLIT_NAMES[p.lower()] for p in reversed(parts) if p.lower() in SPLIT_NAMES), None)


def open_splits(root: Path) -> dict[str, Any]:
    """The `datasets.Dataset` of each split under `root` (saved with `save_to_disk`, or parquet files)."""
    try:
        import datasets
    except ImportError:
        raise VisionkitError("data=hf needs the datasets package: pip install 'visionkit[formats]'") from None
    datasets.disable_progress_bars()  # the extraction is one short pass; its own bars would interleave the log
    if not root.is_dir():
        raise VisionkitError(f"data.root: {root} is not a folder (a save_to_disk folder or a dataset's parquet files)")
    if any((root / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        loaded = datasets.load_from_disk(str(root))
        named = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    else:
        files: dict[str, list[str]] = {}
        for path in sorted(root.rglob("*.parquet")):
            files.setdefault(split_of(path, root) or "train", []).append(str(path))
        if not files:
            raise VisionkitError(
                f"data.root: {root} holds neither a save_to_disk dataset (dataset_dict.json or state.json) nor "
                "parquet files"
            )
        named = {split: datasets.Dataset.from_parquet(paths, keep_in_memory=True) for split, paths in files.items()}
    splits = {}
    for name, dataset in named.items():
        split = SPLIT_NAMES.get(name.lower())
        if split is None:
            log.warning(f"{root}: split {name!r} is none of train, validation, test: left out")
            continue
        splits[split] = dataset
    if "train" not in splits:
        raise VisionkitError(f"{root}: no train split (found {', '.join(named) or 'none'})")
    return splits


def _feature_columns(features: Any, kind: str) -> list[str]:
    return [name for name, feature in features.items() if type(feature).__name__ == kind]


def _fingerprint(root: Path, settings: dict[str, Any]) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    stamp = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([str(root.resolve()), stamp, settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EncodedImage(NamedTuple):
    """An Image cell's encoded bytes, the file suffix and PIL format they call for, and the picture's size."""

    data: bytes
    suffix: str
    format: str
    width: int
    height: int


def _image_bytes(value: Any, where: str) -> EncodedImage:
    """An Image cell (decode=False: {"bytes", "path"}) read once: its bytes, format and size from the header."""
    if not isinstance(value, dict) or not (value.get("bytes") or value.get("path")):
        raise VisionkitError(f"{where}: no image (an Image cell needs bytes or a path)")
    data = value.get("bytes") or Path(value["path"]).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind, (width, height) = str(img.format), img.size
    except (UnidentifiedImageError, OSError):
        raise VisionkitError(f"{where}: the image bytes are not a readable image") from None
    suffix = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}.get(kind)
    if suffix is None:
        raise VisionkitError(f"{where}: image format {kind} is not one visionkit reads; convert it to PNG")
    return EncodedImage(data, suffix, kind, width, height)


class HuggingFaceSource(MaskedSource):
    """A Hugging Face dataset on disk (see the module docstring), read for `task`.

    Args:
        root: a `save_to_disk` folder or a folder of the dataset's parquet files.
        task: "classification", "detection" or "segmentation"; the config passes `task_name`.
        class_names: names in class-id order (segmentation needs them, or `num_classes`); default the
            ClassLabel feature's names.
        image_column, label_column, objects_column, mask_column: the columns to read (None: found from features).
        bbox_format: detection boxes: "coco" (x, y, w, h pixels), "xyxy" (pixels) or "cxcywhn" (normalized).
        ignore_index: segmentation: a mask value left out of loss and metrics.
        cache_dir: where the images are extracted (`paths.data_dir`).
        skip_bad_labels: leave rows with bad labels out and count them instead of stopping.
    """

    scans_images = True  # every image is opened once when extracted

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str = "classification",
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        objects_column: str | None = None,
        mask_column: str | None = None,
        bbox_format: str = "coco",
        ignore_index: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        skip_bad_labels: bool = False,
    ) -> None:
        if root in (None, "", "???"):
            raise VisionkitError(
                "data.root is not set: pass data.root=/path/to/a/save_to_disk/folder (or parquet files)"
            )
        if task not in TASKS:
            raise VisionkitError(
                f"data.task={task}: data=hf reads classification, detection and segmentation datasets; use one of "
                "those tasks (visionkit-eval on other data: data.task=...)"
            )
        if bbox_format not in BBOX_FORMATS:
            raise VisionkitError(f"data.bbox_format={bbox_format!r}: one of {', '.join(BBOX_FORMATS)}")
        self.root = Path(root).expanduser()
        self.task = task
        self.columns = {"image": image_column, "label": label_column, "objects": objects_column, "mask": mask_column}
        self.bbox_format = bbox_format
        self.given_names = [str(n) for n in class_names] if class_names else None
        if not self.given_names and num_classes:
            self.given_names = [str(i) for i in range(int(num_classes))]
        self.ignore = ignore_index
        self.cache_dir = cache_dir
        self.skip_bad_labels = skip_bad_labels
        self.description = f"Hugging Face dataset {self.root} ({task})"
        self.reports: dict[str, Any] = {}
        self._extracted: Path | None = None

    def _folder(self) -> Path:
        """The extracted images, labels and names (extracted on first use)."""
        if self._extracted is None:
            settings = {"task": self.task, "columns": self.columns, "bbox": self.bbox_format, "names": self.given_names}
            version = f"hf-{self.root.name}-{_fingerprint(self.root, settings)}"
            self._extracted = generated_once(self.cache_dir, version, self._extract, MANIFEST)
        return self._extracted

    def class_names(self) -> list[str]:
        return list(json.loads((self._folder() / MANIFEST).read_text())["names"])

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Samples per split from the extracted files; missing val/test carved out of train."""
        folder = self._folder()
        manifest = json.loads((folder / MANIFEST).read_text())
        given = {}
        for split, rows in manifest["splits"].items():
            targets = np.empty(len(rows), dtype=object)
            if self.task == "classification":
                targets = np.asarray([r["label"] for r in rows], dtype=np.int64)
            elif self.task == "detection":
                targets[:] = [box_rows(r["boxes"]) for r in rows]
            else:
                targets[:] = [str(folder / r["mask"]) for r in rows]
            given[split] = SampleSet([str(folder / r["image"]) for r in rows], targets)
            if manifest["skipped"].get(split):
                log.warning(
                    f"{split}: {len(manifest['skipped'][split])} row(s) skipped, e.g. {manifest['skipped'][split][0]}"
                )
        return complete_splits(given, val_fraction, test_fraction, seed)

    def _columns(self, features: Any) -> dict[str, str]:
        images = _feature_columns(features, "Image")
        found = {
            "image": self.columns["image"] or (images[0] if images else None),
            "label": self.columns["label"]
            or next(iter(_feature_columns(features, "ClassLabel")), None)
            or next((c for c in ("label", "labels") if c in features), None),
            "objects": self.columns["objects"] or ("objects" if "objects" in features else None),
            "mask": self.columns["mask"] or (images[1] if len(images) > 1 else None),
        }
        needed = {
            "classification": ("image", "label"),
            "detection": ("image", "objects"),
            "segmentation": ("image", "mask"),
        }
        for role in needed[self.task]:
            column = found[role]
            if column is None or column not in features:
                shown = ", ".join(f"{n} ({type(f).__name__})" for n, f in features.items())
                raise VisionkitError(
                    f"{self.root}: no {role} column{f' {column!r}' if column else ''} for task={self.task}; the "
                    f"columns are {shown}: name it with data.{role}_column=<name>"
                )
        return {role: column for role, column in found.items() if column is not None}  # the task's roles are all in

    def _names(self, train: Any, columns: dict[str, str]) -> list[str]:
        if self.given_names:
            return self.given_names
        features = train.features
        if self.task == "classification":
            feature = features[columns["label"]]
            if hasattr(feature, "names"):
                return list(feature.names)
            values = set(train[columns["label"]])
            if all(isinstance(v, int) for v in values):
                return [str(i) for i in range(max(values) + 1)]
            return sorted(str(v) for v in values)
        if self.task == "detection":
            objects = features[columns["objects"]]
            inner = objects.feature if hasattr(objects, "feature") else objects
            inner = inner[0] if isinstance(inner, list) else inner
            for key in ("category", "label", "labels"):
                feature = inner.get(key) if isinstance(inner, dict) else None
                feature = getattr(feature, "feature", feature)
                feature = feature[0] if isinstance(feature, list) else feature
                names = getattr(feature, "names", None)
                if names is not None:
                    return list(names)
            ids = [c for row in train[columns["objects"]] for c in self._object_fields(row, "?")[1]]
            return [str(i) for i in range(int(max(ids, default=-1)) + 1)]
        raise VisionkitError(
            f"{self.root}: a segmentation dataset's masks hold ids without names: set data.class_names=[background,...]"
            " or data.num_classes=N"
        )

    @staticmethod
    def _object_fields(objects: Any, where: str) -> tuple[list[Any], list[Any]]:
        if isinstance(objects, list):  # a list of {"bbox": ..., "category": ...}
            objects = {k: [o.get(k) for o in objects] for k in ("bbox", "category", "label")} if objects else {}
        if not isinstance(objects, dict):
            raise VisionkitError(f"{where}: the objects cell must hold 'bbox' and 'category' lists")
        boxes = objects.get("bbox") or []
        classes = objects.get("category")
        classes = (objects.get("label") or []) if classes is None else classes
        if len(boxes) != len(classes):
            raise VisionkitError(f"{where}: {len(boxes)} boxes but {len(classes)} categories")
        return list(boxes), list(classes)

    def _corners(self, box: Any, width: int, height: int, where: str) -> tuple[float, ...]:
        try:
            a, b, c, d = (float(v) for v in box)
        except (TypeError, ValueError):
            raise VisionkitError(f"{where}: bbox {box!r} is not four numbers") from None
        if self.bbox_format == "coco":
            return a, b, a + c, b + d
        if self.bbox_format == "xyxy":
            return a, b, c, d
        return (a - c / 2) * width, (b - d / 2) * height, (a + c / 2) * width, (b + d / 2) * height

    def _extract(self, folder: Path) -> None:
        splits = open_splits(self.root)
        columns = self._columns(splits["train"].features)
        names = self._names(splits["train"], columns)
        manifest: dict[str, Any] = {"names": names, "columns": columns, "splits": {}, "skipped": {}}
        from datasets import Image as ImageFeature

        for split, dataset in splits.items():
            for role in ("image", "mask"):
                if role == "image" or self.task == "segmentation":
                    dataset = dataset.cast_column(columns[role], ImageFeature(decode=False))
            (folder / split).mkdir()
            rows, skipped = [], []
            for index, record in enumerate(dataset):
                where = f"{self.root}: split {split}, row {index}"
                try:
                    rows.append(self._row(record, columns, names, folder, split, index, where))
                except VisionkitError as exc:
                    if not self.skip_bad_labels:
                        raise VisionkitError(f"{exc}; {SKIP_HINT}") from None
                    skipped.append(str(exc))
            if not rows:
                raise VisionkitError(f"{self.root}: split {split} has no usable rows")
            manifest["splits"][split], manifest["skipped"][split] = rows, skipped
        (folder / MANIFEST).write_text(json.dumps(manifest))

    def _row(
        self,
        record: dict[str, Any],
        columns: dict[str, str],
        names: list[str],
        folder: Path,
        split: str,
        index: int,
        where: str,
    ) -> dict[str, Any]:
        """One row's image written into `folder`, with its label, boxes or mask."""
        encoded = _image_bytes(record[columns["image"]], where)
        image = f"{split}/{index:07d}{encoded.suffix}"
        (folder / image).write_bytes(encoded.data)
        row: dict[str, Any] = {"image": image}
        if self.task == "classification":
            label = record[columns["label"]]
            row["label"] = int(label) if isinstance(label, (int, np.integer)) else class_id_of(str(label), names, where)
            if not 0 <= row["label"] < len(names):
                raise VisionkitError(f"{where}: label {label} is not one of 0..{len(names) - 1}")
        elif self.task == "detection":
            width, height = encoded.width, encoded.height
            boxes, classes = self._object_fields(record[columns["objects"]], where)
            rows = []
            for k, (box, cls) in enumerate(zip(boxes, classes)):
                place = f"{where}, object {k}"
                class_id = int(cls) if isinstance(cls, (int, np.integer)) else class_id_of(str(cls), names, place)
                if not 0 <= class_id < len(names):
                    raise VisionkitError(f"{place}: category {cls} is not one of 0..{len(names) - 1}")
                rows.append(box_row(self._corners(box, width, height, place), width, height, class_id, place))
            row["boxes"] = rows
        else:
            mask = _image_bytes(record[columns["mask"]], f"{where} (mask)")
            row["mask"] = f"{split}/{index:07d}.mask.png"
            if mask.format == "PNG":  # kept as it is; other formats are decoded and written as PNG
                (folder / row["mask"]).write_bytes(mask.data)
            else:
                with Image.open(io.BytesIO(mask.data)) as img:
                    img.save(folder / row["mask"], format="PNG")
        return row
