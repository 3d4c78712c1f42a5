"""Pascal VOC folders, for detection and for segmentation (the task decides which half is read):

    VOC2012/                      (or a VOCdevkit/ holding one VOC* folder)
      JPEGImages/<id>.jpg
      Annotations/<id>.xml        detection: <object><name>, <difficult>, <bndbox> xmin ymin xmax ymax (1-based)
      SegmentationClass/<id>.png  segmentation: palette PNGs of class ids, 255 on object borders (ignored)
      ImageSets/Main/{train,val,test}.txt          the detection splits (one image id per line)
      ImageSets/Segmentation/{train,val,test}.txt  the segmentation splits
      labelmap.txt                optional (CVAT and datumaro write it): `name:r,g,b:parts:actions` per class

Classes come from `data.class_names`, else `labelmap.txt`, else VOC's 20 (with background first for
segmentation). Masks are palette PNGs (the palette index is the class) or colour-coded RGB PNGs (the labelmap's
colours, else VOC's colour map); colours of no class (VOC's cream borders) are `ignore_index`. Splits come from
the ImageSets lists (`trainval` stands in for a missing train list); a split without a list is carved out of
train, and with no lists at all every annotated image is one pool. Boxes marked `difficult` are kept as ignored
boxes: left out of the loss, and a detection on one is neither a hit nor a false positive (VOC's and COCO's
protocol). Box corners follow the VOC devkit (1-based, inclusive pixels): x0 = xmin - 1, x1 = xmax.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from visionkit.data.mask_files import MaskReader, ShapeMask
from visionkit.data.sources.annotations import (
    AnnotationScan,
    AnnotationToolSource,
    box_row,
    box_rows,
    class_id_of,
    ignored_class,
    task_names,
)
from visionkit.data.sources.masks import files_by_stem
from visionkit.data.splits import SPLITS, SampleSet, complete_splits, split_pool
from visionkit.errors import VisionkitError
from visionkit.utils.io import check_image, shown_size
from visionkit.utils.logging import get_logger
from visionkit.utils.palette import class_palette

log = get_logger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
TASK_FOLDERS = {"detection": ("Annotations", "Main"), "segmentation": ("SegmentationClass", "Segmentation")}


def voc_folder(root: Path) -> Path:
    """The folder holding JPEGImages/: `root` itself, or the one VOC* folder inside `root` or `root/VOCdevkit`."""
    if (root / "JPEGImages").is_dir():
        return root
    if not root.is_dir():
        raise VisionkitError(f"data.root: folder {root} does not exist (a Pascal VOC folder holding JPEGImages/)")
    inside = [p.parent for p in sorted(root.glob("*/JPEGImages")) + sorted(root.glob("*/*/JPEGImages"))]
    if len(inside) == 1:
        return inside[0]
    if len(inside) > 1:
        shown = ", ".join(str(p.relative_to(root)) for p in inside)
        raise VisionkitError(f"data.root: {root} holds several VOC folders ({shown}); point data.root at one")
    raise VisionkitError(
        f"data.root: {root} is not a Pascal VOC folder: no JPEGImages/ in it (expected JPEGImages/, Annotations/ "
        "or SegmentationClass/, ImageSets/; see datasets/README.md)"
    )


def read_labelmap(path: Path) -> tuple[list[str], list[tuple[int, ...]]]:
    """Names and colours of a VOC `labelmap.txt` (`name:r,g,b:parts:actions`, `#` comments); a line without a
    colour gives ()."""
    names, colours = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        colour = rest.split(":", 1)[0].strip()
        try:
            rgb = tuple(int(v) for v in colour.split(",")) if colour else ()
        except ValueError:
            raise VisionkitError(f"{path}:{line_no}: colour {colour!r} is not r,g,b numbers") from None
        if colour and len(rgb) != 3:
            raise VisionkitError(f"{path}:{line_no}: colour {colour!r} is not r,g,b")
        names.append(name.strip())
        colours.append(rgb)
    return names, colours


def split_lists(folder: Path) -> dict[str, Path]:
    """The split list files in an ImageSets/<kind>/ folder: train, val, test (trainval when train is missing)."""
    lists = {split: folder / f"{split}.txt" for split in SPLITS if (folder / f"{split}.txt").is_file()}
    if "train" not in lists and (folder / "trainval.txt").is_file():
        lists["train"] = folder / "trainval.txt"
        lists.pop("val", None)  # trainval already holds val
    return lists


def read_ids(path: Path) -> list[str]:
    """The image ids of a split list (the first field of each line: class lists hold `id 1` or `id -1`)."""
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _number(element: ET.Element, tag: str, where: str) -> float:
    try:
        return float(element.findtext(tag) or "")
    except ValueError:
        raise VisionkitError(f"{where}: <{tag}> is missing or not a number") from None


def read_voc_xml(path: Path, names: Sequence[str], image_size: tuple[int, int]) -> np.ndarray:
    """(N, 5) `class cx cy w h` rows of one Annotations/*.xml (difficult objects as ignored boxes, see
    `ignored_class`); `image_size` (height, width) is the image's own, checked against the xml's <size>."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise VisionkitError(f"{path}:{exc.position[0]}: not valid XML ({exc})") from None
    height, width = image_size
    size = tree.find("size")
    if size is not None and size.find("width") is not None:
        stated = (int(_number(size, "height", f"{path} <size>")), int(_number(size, "width", f"{path} <size>")))
        if stated != (height, width) and 0 not in stated:
            raise VisionkitError(
                f"{path}: <size> says {stated[1]}x{stated[0]} but the image is {width}x{height}; fix the xml"
            )
    rows = []
    for number, obj in enumerate(tree.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"{path}: object {number} ({name or 'no <name>'})"
        class_id = class_id_of(name, names, where)
        box = obj.find("bndbox")
        if box is None:
            raise VisionkitError(f"{where}: no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        # VOC pixel indices are 1-based and inclusive: the box covers xmin-1 .. xmax in pixel-edge coordinates
        row = box_row((xmin - 1, ymin - 1, xmax, ymax), width, height, class_id, where)
        if (obj.findtext("difficult") or "0").strip() in ("1", "true"):
            row[0] = ignored_class(class_id)
        rows.append(row)
    return box_rows(rows)


class VocSource(AnnotationToolSource):
    """A Pascal VOC folder (see the module docstring), read for `task` detection or segmentation.

    Args:
        root: the VOC folder (holding JPEGImages/), or a folder with one VOC* folder (e.g. VOCdevkit/).
        task: "detection" (Annotations/) or "segmentation" (SegmentationClass/); the config passes `task_name`.
        class_names: names in class-id order (segmentation: id 0 first, usually background); default the
            labelmap.txt's, else VOC's 20.
        ignore_index: the mask value left out of loss and metrics (VOC: 255, the object borders).
        skip_bad_labels: leave images with bad annotations out and count them instead of stopping.
    """

    folder_hint = "a Pascal VOC folder"

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str = "detection",
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = 255,
        skip_bad_labels: bool = False,
    ) -> None:
        super().__init__(root, task, class_names, ignore_index, skip_bad_labels)
        self.root = voc_folder(self.path)
        labels, self.kind = TASK_FOLDERS[task]
        self.labels = self.root / labels
        if not self.labels.is_dir():
            raise VisionkitError(f"data.root: {self.root} has no {labels}/ folder, which task={task} reads")
        table: list[tuple[int, ...]] = []  # () for a labelmap line without a colour
        if class_names:
            names = [str(n) for n in class_names]
        elif (self.root / "labelmap.txt").is_file():
            names, table = read_labelmap(self.root / "labelmap.txt")
        else:
            names = ["background", *VOC_CLASSES]
        self.names = task_names(names, task)
        if task == "segmentation" and not (table and all(table)):  # colour-coded masks use VOC's colour map
            table = [(int(c[0]), int(c[1]), int(c[2])) for c in class_palette()[: len(self.names)]]
        self.colours = table if task == "segmentation" else None
        self.description = f"Pascal VOC {self.root} ({task})"

    @property
    def mask_reader(self) -> MaskReader:
        """Palette PNGs by index; colour PNGs by the labelmap's colours (else VOC's colour map)."""
        return MaskReader.make(len(self.names), self.ignore_index, colors=self.colours)

    def class_names(self) -> list[str]:
        return list(self.names)

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Scanned samples per split, from the ImageSets lists (see the module docstring)."""
        images = files_by_stem(self.root / "JPEGImages")
        lists = split_lists(self.root / "ImageSets" / self.kind)
        if not lists:
            suffix = ".xml" if self.task == "detection" else ".png"
            ids = sorted(p.stem for p in self.labels.glob(f"*{suffix}"))
            return split_pool(self._scan("all", ids, images, None), val_fraction, test_fraction, seed)
        given = {split: self._scan(split, read_ids(path), images, path) for split, path in lists.items()}
        if "train" not in given:
            raise VisionkitError(
                f"{self.root / 'ImageSets' / self.kind}: no train.txt or trainval.txt (found {', '.join(lists)})"
            )
        return complete_splits(given, val_fraction, test_fraction, seed)

    def _scan(self, split: str, ids: list[str], images: dict[str, Path], listed: Path | None) -> SampleSet:
        origin = f" (listed in {listed})" if listed else ""
        scan = AnnotationScan(split, self.task, self.names, self.mask_reader, self.skip_bad_labels, "VOC")
        unannotated = 0
        for image_id in ids:
            with scan.problems():
                image = images.get(image_id)
                if image is None:
                    raise VisionkitError(f"image {image_id}{origin} is not in {self.root / 'JPEGImages'}")
                if self.task == "detection":
                    reason = check_image(image)
                    if reason:
                        raise VisionkitError(f"bad image {image}: {reason}")
                    xml = self.labels / f"{image_id}.xml"
                    unannotated += not xml.is_file()  # datumaro and CVAT write none for an image without objects
                    rows = read_voc_xml(xml, self.names, shown_size(image)) if xml.is_file() else box_rows([])
                    scan.boxes.keep(image, rows)
                    continue
                mask_file = self.labels / f"{image_id}.png"
                mask: str | ShapeMask = str(mask_file)
                if not mask_file.is_file():  # datumaro writes no mask for an image of background only
                    height, width = shown_size(image)
                    mask = ShapeMask(f"{image} (no {self.labels.name}/{image_id}.png)", height, width, ())
                    unannotated += 1
                scan.keep_mask(image, mask)
        if unannotated:
            suffix, meaning = (".xml", "without objects") if self.task == "detection" else (".png", "all background")
            log.warning(
                f"{split}: {unannotated} listed image(s) have no {self.labels.name}/<id>{suffix}: read as {meaning}"
            )
        samples, self.reports[split] = scan.samples(f"{listed or self.labels}")
        return samples
