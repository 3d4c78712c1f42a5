"""Classification from a CSV of `path,label[,split]` rows (header optional); with `multilabel`, the label cell
holds any number of labels separated by `;` ("cat;dog", empty for none) and targets are multi-hot rows."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.splits import SPLITS, SampleSet, complete_splits, multi_hot
from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS

_HEADER_PATH = {"path", "image", "file", "filename", "filepath", "image_path"}


class CsvSource:
    """Rows of `path,label` with an optional third `split` column (train/val/test).

    Relative paths are resolved against `root` (default: the CSV's folder). Class names come from
    `class_names` when given (then every label must be one of them), else from the labels found:
    integer labels are class ids 0..max, text labels are sorted.
    """

    def __init__(
        self, csv: str, root: str | None = None, class_names: Sequence[str] | None = None, multilabel: bool = False
    ) -> None:
        if csv in (None, "", "???"):
            raise VisionkitError("data.csv is not set: pass data.csv=/path/to/labels.csv (rows of path,label)")
        self.csv = Path(csv).expanduser()
        self.root = Path(root).expanduser() if root else self.csv.parent
        self.given_names = [str(n) for n in class_names] if class_names else None
        self.multilabel = bool(multilabel)
        self.task = "multilabel" if multilabel else "classification"
        self.description = f"CSV {self.csv}"
        self._rows: list[tuple[int, str, str, str | None]] | None = None

    def read_rows(self) -> list[tuple[int, str, str, str | None]]:
        """(line number, path, label, split) for every data row, with the file's problems reported by line."""
        if self._rows is not None:
            return self._rows
        if not self.csv.is_file():
            raise VisionkitError(f"data.csv: file {self.csv} does not exist")
        rows: list[tuple[int, str, str, str | None]] = []
        with self.csv.open(newline="", encoding="utf-8-sig") as handle:
            for line, fields in enumerate(csv.reader(handle), start=1):
                fields = [f.strip() for f in fields]
                if not fields or all(not f for f in fields):
                    continue
                if line == 1 and self._is_header(fields[0]):
                    continue
                if len(fields) not in (2, 3) or not fields[0] or not (fields[1] or self.multilabel):
                    raise VisionkitError(
                        f"{self.csv}:{line}: expected 'path,label' or 'path,label,split', got {','.join(fields)!r}"
                    )
                split = fields[2].lower() if len(fields) == 3 else None
                if split is not None and split not in SPLITS:
                    raise VisionkitError(f"{self.csv}:{line}: split {fields[2]!r} is not one of train, val, test")
                rows.append((line, fields[0], fields[1], split))
        if not rows:
            raise VisionkitError(f"data.csv: {self.csv} has no rows (expected lines of path,label)")
        self._rows = rows
        return rows

    def _is_header(self, first: str) -> bool:
        """Whether the first line's first cell is a column name: a known one (`path`, `filename`, ...), or any
        word that names no file and has no image extension (`image_id`, `img`, Kaggle's headers)."""
        if first.lower() in _HEADER_PATH:
            return True
        return self._existing(first) is None and not first.lower().endswith(IMAGE_EXTENSIONS)

    def _existing(self, rel_path: str) -> Path | None:
        """The file a cell names (relative to `root`), also written with Windows' backslashes; None if absent."""
        for written in dict.fromkeys((rel_path, rel_path.replace("\\", "/"))):
            path = Path(written).expanduser()
            path = path if path.is_absolute() else self.root / path
            if path.is_file():
                return path
        return None

    def resolve(self, line: int, rel_path: str) -> str:
        """The image file a row names (relative to `root`); an error naming the row when it does not exist."""
        path = self._existing(rel_path)
        if path is None:
            raise VisionkitError(
                f"{self.csv}:{line}: image file {self.root / Path(rel_path).expanduser()} does not exist"
            )
        return str(path)

    def class_names(self) -> list[str]:
        """The given class names, or those found in the label column."""
        if self.given_names is not None:
            return self.given_names
        labels = {label for _, _, cell, _ in self.read_rows() for label in self._labels(cell)}
        if not labels:
            raise VisionkitError(f"{self.csv}: no row has a label")
        if all(label.isdigit() for label in labels):
            return [str(i) for i in range(max(int(label) for label in labels) + 1)]
        return sorted(labels)

    def _labels(self, cell: str) -> list[str]:
        return [label.strip() for label in cell.split(";") if label.strip()] if self.multilabel else [cell]

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Samples per split (the split column where present, else seeded stratified); targets are class ids, or
        (N, classes) multi-hot uint8 rows with `multilabel`."""
        names = self.class_names()
        index = {name: i for i, name in enumerate(names)}
        by_split: dict[str, tuple[list[str], list[Any]]] = {}
        for line, rel_path, cell, split in self.read_rows():
            ids = []
            for label in self._labels(cell):
                if label not in index and label.isdigit() and int(label) < len(names):
                    label = names[int(label)]  # an integer label is a class id into the given names
                if label not in index:
                    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                    raise VisionkitError(f"{self.csv}:{line}: unknown label {label!r} (known labels: {shown})")
                ids.append(index[label])
            paths, labels = by_split.setdefault(split or "train", ([], []))
            paths.append(self.resolve(line, rel_path))
            labels.append(multi_hot(ids, len(names)) if self.multilabel else ids[0])
        if "train" not in by_split:
            raise VisionkitError(f"{self.csv}: no training rows (rows without a split column, or split=train)")
        dtype = np.uint8 if self.multilabel else np.int64
        given = {name: SampleSet(p, np.asarray(y, dtype=dtype)) for name, (p, y) in by_split.items()}
        return complete_splits(given, val_fraction, test_fraction, seed)
