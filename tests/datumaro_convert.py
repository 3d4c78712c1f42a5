"""Run with datumaro's Python (its own venv, `make datumaro`): convert visionkit's built-in detection set (YOLO
layout) and segmentation set (images/ + masks/ palette PNGs) with datumaro into the formats annotation tools write,
so the tests can check that visionkit reads each back into the same samples. datumaro reads nothing of visionkit:
the inputs are plain files, built here into datumaro items.

    python datumaro_convert.py <detection root> <segmentation root> <out folder>

Writes <out>/detection/{voc,cvat,coco,yolo,labelme}/ and <out>/segmentation/{voc,cvat,labelme}/ (masks: VOC's
PNGs, CVAT's RLE <mask>, LabelMe's mask shapes) and {cvat,labelme}_polygons/ (datumaro's `masks_to_polygons`:
OpenCV contours, simplified, without holes, so a little of each mask is lost on the way). datumaro has no writer
for LabelMe's JSON (its `label_me` is MIT LabelMe's XML), so the LabelMe files hold datumaro's annotations in
LabelMe's JSON schema, written here.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from datumaro.components.annotation import Bbox, Mask, Polygon
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
from datumaro.components.media import Image as DmImage
from PIL import Image

SPLITS = ("train", "val", "test")


def detection_items(root: Path) -> tuple[list[DatasetItem], list[str]]:
    spec = yaml.safe_load((root / "data.yaml").read_text())
    names = [spec["names"][k] for k in sorted(spec["names"])]
    items = []
    for split in SPLITS:
        for image in sorted((root / "images" / split).glob("*.png")):
            width, height = Image.open(image).size
            boxes = []
            for line in (root / "labels" / split / f"{image.stem}.txt").read_text().split("\n"):
                if line.strip():
                    c, cx, cy, w, h = (float(v) for v in line.split())
                    x, y = (cx - w / 2) * width, (cy - h / 2) * height
                    boxes.append(Bbox(x, y, w * width, h * height, label=int(c)))
            items.append(
                DatasetItem(
                    id=f"{split}_{image.stem}", subset=split, media=DmImage.from_file(str(image)), annotations=boxes
                )
            )
    return items, names


def segmentation_items(root: Path) -> tuple[list[DatasetItem], list[str]]:
    names = (root / "classes.txt").read_text().split()
    items = []
    for split in SPLITS:
        for image in sorted((root / "images" / split).glob("*.png")):
            ids = np.asarray(Image.open(root / "masks" / split / image.name))
            masks = [Mask(image=ids == c, label=int(c)) for c in np.unique(ids) if c != 0]
            items.append(
                DatasetItem(
                    id=f"{split}_{image.stem}", subset=split, media=DmImage.from_file(str(image)), annotations=masks
                )
            )
    return items, names


def write_labelme(dataset: Dataset, names: list[str], out: Path) -> None:
    """LabelMe JSON files (one per image, in <out>/<split>/ beside a copy of the image) of polygons and boxes, and
    the `labels.txt` labelme2voc reads (`__ignore__`, then the classes in id order)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("\n".join(["__ignore__", *names]) + "\n")
    for item in dataset:
        folder = out / item.subset
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.open(item.media.path)
        image.save(folder / f"{item.id}.png")
        shapes = []
        for ann in item.annotations:
            if isinstance(ann, Mask):  # LabelMe 5's mask shape: its box's corners (inclusive) and a base64 PNG
                x, y, w, h = (int(v) for v in ann.get_bbox())
                bits = ann.image[y : y + h, x : x + w].astype(np.uint8) * 255
                png = io.BytesIO()
                Image.fromarray(bits).save(png, format="PNG")
                points = [[x, y], [x + w - 1, y + h - 1]]
                encoded = base64.b64encode(png.getvalue()).decode()
                shapes.append({"label": names[ann.label], "points": points, "shape_type": "mask", "mask": encoded})
            elif isinstance(ann, Polygon):
                points = np.asarray(ann.points).reshape(-1, 2).tolist()
                shapes.append({"label": names[ann.label], "points": points, "shape_type": "polygon"})
            elif isinstance(ann, Bbox):
                x, y, w, h = ann.get_bbox()
                points = [[x, y], [x + w, y + h]]
                shapes.append({"label": names[ann.label], "points": points, "shape_type": "rectangle"})
        spec = {
            "version": "5.5.0",
            "flags": {},
            "shapes": [{**s, "group_id": None, "description": "", "flags": {}} for s in shapes],
            "imagePath": f"{item.id}.png",
            "imageData": None,
            "imageHeight": image.height,
            "imageWidth": image.width,
        }
        (folder / f"{item.id}.json").write_text(json.dumps(spec, indent=1))


def main() -> None:
    detection, segmentation, out = (Path(a) for a in sys.argv[1:4])
    items, names = detection_items(detection)
    boxes = Dataset.from_iterable(items, categories=names)
    for name, fmt in (
        ("voc", "voc_detection"),
        ("cvat", "cvat"),
        ("coco", "coco_instances"),
        ("yolo", "yolo_ultralytics"),
    ):
        boxes.export(str(out / "detection" / name), fmt, save_media=True)
    write_labelme(boxes, names, out / "detection" / "labelme")
    items, names = segmentation_items(segmentation)
    masks = Dataset.from_iterable(items, categories=names)
    masks.export(str(out / "segmentation" / "voc"), "voc_segmentation", save_media=True)
    masks.export(str(out / "segmentation" / "cvat"), "cvat", save_media=True)  # <mask> elements, CVAT's RLE
    write_labelme(masks, names, out / "segmentation" / "labelme")
    polygons = Dataset.from_iterable(items, categories=names).transform("masks_to_polygons")
    polygons.export(str(out / "segmentation" / "cvat_polygons"), "cvat", save_media=True)
    write_labelme(polygons, names, out / "segmentation" / "labelme_polygons")


if __name__ == "__main__":
    main()
