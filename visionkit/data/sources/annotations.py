"""What the readers of annotation-tool formats (COCO, VOC, CVAT, LabelMe) share: a box in pixels checked and
turned into a normalized `class cx cy w h` row, the marking of boxes that evaluation ignores (VOC's `difficult`),
and the class names a file uses checked against the dataset's."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.mask_files import MaskReader, ShapeMask
from visionkit.data.sources.masks import MaskScanReport, check_mask_pair
from visionkit.data.sources.yolo import SKIP_HINT, ScanReport, SplitScan
from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import check_image, shown_size
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

TASKS = ("detection", "segmentation")  # what boxes and shapes can train
BACKGROUND_NAMES = ("background", "_background_")
IGNORE_NAME = "__ignore__"  # labelme2voc's label for pixels left out (mask value ignore_index)
EDGE_TOLERANCE = 1.0  # px a box may overhang the image edge (rounding in exporters); clipped, not an error


def box_row(corners: Sequence[float], width: float, height: float, class_id: int, where: str) -> list[float]:
    """`[class, cx, cy, w, h]` (normalized) of a box given by its pixel corners x0, y0, x1, y1; VisionkitError
    naming `where` when it is empty or reaches past the image by more than `EDGE_TOLERANCE`."""
    x0, y0, x1, y1 = (float(v) for v in corners)
    shown = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
    if x1 <= x0 or y1 <= y0:
        raise VisionkitError(f"{where}: box {shown} (x0, y0, x1, y1) has zero width or height")
    if min(x0, y0) < -EDGE_TOLERANCE or x1 > width + EDGE_TOLERANCE or y1 > height + EDGE_TOLERANCE:
        raise VisionkitError(f"{where}: box {shown} (x0, y0, x1, y1) reaches outside the {width:g}x{height:g} image")
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
    return [class_id, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def ignored_class(class_id: Any) -> Any:
    """The class value of a box that training leaves out and evaluation ignores (VOC `difficult`, COCO crowd):
    -1 - class, so the class is kept and every such value is negative. Its own inverse (the class of an ignored
    value); works on ints, arrays and tensors alike."""
    return -1 - class_id


def box_rows(rows: list[list[float]]) -> np.ndarray:
    """(N, 5) float32 `class cx cy w h` rows (ignored boxes have negative classes, see `ignored_class`)."""
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


class MaskedSource:
    """The ignore index and mask reader of a source read for `self.task` with classes `class_names()`: masks are
    decoded with the `ignore` value kept for segmentation; other tasks have no ignored label."""

    task: str
    ignore: int | None

    @property
    def ignore_index(self) -> int | None:
        return self.ignore if self.task == "segmentation" else None

    @property
    def mask_reader(self) -> MaskReader:
        return MaskReader.make(len(self.class_names()), self.ignore_index)

    def class_names(self) -> list[str]:
        raise NotImplementedError


class AnnotationToolSource(MaskedSource):
    """What the readers of annotation tools' folders (VOC, CVAT, LabelMe) share: the `task` they are read for
    (detection or segmentation, checked), the root, the options, the scan reports, and the mask reader."""

    scans_images = True  # every image is checked while its labels are read
    folder_hint = "the folder"  # what data.root should be, for the message when it is not set

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str,
        class_names: Sequence[str] | None,
        ignore_index: int | None,
        skip_bad_labels: bool,
    ) -> None:
        if root in (None, "", "???"):
            raise VisionkitError(f"data.root is not set: pass data.root=/path/to/{self.folder_hint}")
        if task not in TASKS:
            raise VisionkitError(
                f"data.task={task}: {self.folder_hint} holds detection and segmentation labels; use task=detection "
                "or task=segmentation (visionkit-eval on other data: data.task=detection or segmentation)"
            )
        self.path = Path(root).expanduser()
        self.task = task
        self.given_names = [str(n) for n in class_names] if class_names else None
        self.ignore = ignore_index
        self.skip_bad_labels = skip_bad_labels
        self.reports: dict[str, ScanReport | MaskScanReport] = {}


def task_names(names: Sequence[str], task: str) -> list[str]:
    """A format's label names as the task's classes: segmentation has background first (added when missing),
    detection has no background class."""
    names = [str(n) for n in names]
    if task == "detection":
        return [n for n in names if n not in BACKGROUND_NAMES]
    return names if set(names[:1]) & set(BACKGROUND_NAMES) else ["background", *names]


def class_id_of(name: str, names: Sequence[str], where: str) -> int:
    """The id of label `name` among the dataset's `names`; VisionkitError naming `where` when it is not one."""
    try:
        return list(names).index(name)
    except ValueError:
        shown = ", ".join(list(names)[:12]) + (" ..." if len(names) > 12 else "")
        raise VisionkitError(
            f"{where}: label {name!r} is not one of the classes ({shown}); add it to data.class_names"
        ) from None


@dataclass
class Shape:
    """One LabelMe (or CVAT) shape in pixels: a polygon's flat x y points, or a mask's (left, top, bool array)."""

    label: str
    kind: str  # "rectangle", "polygon" or "mask"
    points: Any
    where: str

    def corners(self) -> tuple[float, float, float, float]:
        """x0 y0 x1 y1 of the shape's bounding box."""
        if self.kind == "mask":
            left, top, bits = self.points
            rows, cols = np.nonzero(bits)
            if not len(rows):
                raise VisionkitError(f"{self.where}: the mask is empty")
            return left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1
        xs, ys = self.points[0::2], self.points[1::2]
        return min(xs), min(ys), max(xs), max(ys)

    def outline(self) -> Any:
        """What `ShapeMask` paints: the polygon's points (a rectangle's four corners) or the mask."""
        if self.kind != "rectangle":
            return self.points
        x0, y0, x1, y1 = self.corners()
        return (x0, y0, x1, y0, x1, y1, x0, y1)


class AnnotationScan:
    """One split of an annotation tool's folder (VOC, CVAT, LabelMe) as it is scanned: per image, detection's box
    rows or segmentation's mask (a file, or a `ShapeMask` of the shapes painted in order), checked with the
    source's `reader`; a problem stops the scan with the file named, or with `skip_bad` leaves the image out and
    counts it."""

    def __init__(
        self, split: str, task: str, names: list[str], reader: MaskReader, skip_bad: bool, layout: str
    ) -> None:
        self.split, self.task, self.names, self.skip_bad = split, task, names, skip_bad
        self.reader = reader
        self.ignore_index = reader.ignore_index
        self.boxes = SplitScan(split)
        self.pixels = MaskScanReport(split, names, layout)
        self.masks: list[str | ShapeMask] = []
        self.left_out: Counter[str] = Counter()  # shape types neither task reads, by type

    @contextmanager
    def problems(self) -> Iterator[None]:
        """Stop on a VisionkitError with the skip hint, or with `skip_bad` count it and go on."""
        try:
            yield
        except VisionkitError as exc:
            if not self.skip_bad:
                raise VisionkitError(f"{exc}; {SKIP_HINT}") from None
            self.boxes.report.skipped.append(str(exc))

    def add(self, image: Path, stated: tuple[int, int], shapes: list[Shape], source: str) -> None:
        """One image's shapes; `stated` (height, width) is the annotation's size (0 when not stated)."""
        reason = check_image(image) if image.is_file() else "the file does not exist"
        if reason:
            raise VisionkitError(f"{source}: its image {image}: {reason}")
        height, width = shown_size(image)
        if 0 not in stated and tuple(stated) != (height, width):
            raise VisionkitError(f"{source}: says the image is {stated[1]}x{stated[0]} but {image} is {width}x{height}")
        if self.task == "detection":
            rows = [
                box_row(s.corners(), width, height, class_id_of(s.label, self.names, s.where), s.where) for s in shapes
            ]
            self.boxes.keep(image, box_rows(rows))
            return
        painted = tuple((self._mask_id(s), s.outline()) for s in shapes if s.label not in BACKGROUND_NAMES)
        self.keep_mask(image, ShapeMask(source, height, width, painted))

    def keep_mask(self, image: Path, mask: str | ShapeMask) -> None:
        """An image and its mask (a file or shapes to paint), once they are checked together."""
        problem, counts = check_mask_pair(self.reader, image, mask)
        if problem:
            raise VisionkitError(problem)
        self.pixels.pixels += counts
        self.boxes.paths.append(str(image))
        self.masks.append(mask)

    def _mask_id(self, shape: Shape) -> int:
        if shape.label == IGNORE_NAME:
            if self.ignore_index is None:
                raise VisionkitError(f"{shape.where}: label {IGNORE_NAME} needs data.ignore_index (e.g. 255)")
            return self.ignore_index
        return class_id_of(shape.label, self.names, shape.where)

    def samples(self, where: str) -> tuple[SampleSet, ScanReport | MaskScanReport]:
        """The kept samples and the split's report (an error naming `where` when no image is left)."""
        if self.left_out:
            shown = ", ".join(f"{count} {kind}" for kind, count in sorted(self.left_out.items()))
            log.warning(f"{self.split}: shapes left out (neither boxes, polygons nor masks): {shown}")
        if self.task == "detection":
            return self.boxes.samples(where)
        if not self.masks:
            raise VisionkitError(f"{self.split}: no usable images found in {where}")
        report = self.pixels
        report.pairs, report.skipped = len(self.masks), self.boxes.report.skipped
        targets = np.empty(len(self.masks), dtype=object)
        targets[:] = self.masks
        return SampleSet(self.boxes.paths, targets), report
