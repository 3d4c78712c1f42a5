"""VOC, CVAT and LabelMe data: datumaro (a converter nobody here wrote, in its own venv) converts the built-in
detection and segmentation sets into each format, and visionkit reads every one back into the same samples;
every bad input gets its one-line message naming the file; VOC's difficult boxes are ignored in evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visionkit.callbacks.detection_report import score_detection
from visionkit.data import CocoSource, CvatSource, LabelMeSource, MaskSource, VocSource, YoloSource
from visionkit.data.shapes import generate_shapes_detection
from visionkit.data.shapes_seg import generate_shapes_segmentation
from visionkit.errors import VisionkitError
from visionkit.run import train

ROOT = Path(__file__).resolve().parents[1]
DATUMARO = Path(os.environ.get("VISIONKIT_DATUMARO_PYTHON", ROOT / ".venv-datumaro" / "bin" / "python"))
REQUIRE_DATUMARO = os.environ.get("VISIONKIT_REQUIRE_DATUMARO") == "1"  # .ci/run sets it: CI never skips
SPLITS = ("train", "val", "test")
SIZE = 64


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in sets (small) and datumaro's conversions of them: <root>/{det,seg,out}."""
    if not DATUMARO.is_file():
        reason = f"no datumaro venv at {DATUMARO}: `make datumaro` (or set VISIONKIT_DATUMARO_PYTHON)"
        if REQUIRE_DATUMARO:
            pytest.fail(f"VISIONKIT_REQUIRE_DATUMARO=1 but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("formats")
    counts = {"train": 12, "val": 4, "test": 4}
    generate_shapes_detection(root / "det", counts, image_size=SIZE)
    generate_shapes_segmentation(root / "seg", counts, image_size=SIZE)
    script = Path(__file__).with_name("datumaro_convert.py")
    done = subprocess.run(
        [str(DATUMARO), str(script), str(root / "det"), str(root / "seg"), str(root / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _by_image(samples) -> dict[str, object]:
    """Targets keyed by the built-in image's name (datumaro prefixes ids with their split to keep them unique)."""
    return {Path(path).stem.split("_")[-1]: target for path, target in zip(samples.images, samples.targets)}


def _corners(rows: np.ndarray) -> np.ndarray:
    """class x0 y0 x1 y1 in pixels, sorted by class then x0."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h = (rows[:, k] * SIZE for k in range(1, 5))
    out = np.stack([rows[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def detection_source(out: Path, fmt: str):
    root = out / "detection" / fmt
    if fmt == "coco":
        return CocoSource(str(root / "annotations" / "instances_train.json"), str(root / "images" / "train"))
    if fmt == "yolo":
        return YoloSource(str(root / "data.yaml"))
    return {"voc": VocSource, "cvat": CvatSource, "labelme": LabelMeSource}[fmt](root, "detection")


@pytest.mark.parametrize("fmt", ["voc", "cvat", "labelme", "coco", "yolo"])
def test_datumaro_detection_exports_read_as_the_same_boxes(converted: Path, fmt: str) -> None:
    """Same class names, the same images in each split, the same boxes within 1 px (VOC: its 1-based corners put
    datumaro's boxes 1 px right and down of where it meant them)."""
    truth = YoloSource(str(converted / "det" / "data.yaml"))
    source = detection_source(converted / "out", fmt)
    assert source.class_names() == truth.class_names()
    ours, theirs = source.splits(0.0, 0.0, 0), truth.splits(0.0, 0.0, 0)
    worst = 0.0
    for split in ("train",) if fmt == "coco" else SPLITS:
        read, expected = _by_image(ours[split]), _by_image(theirs[split])
        assert sorted(read) == sorted(expected), split
        for name, rows in expected.items():
            a, b = _corners(read[name]), _corners(rows)
            assert a.shape == b.shape and (a[:, 0] == b[:, 0]).all(), (split, name)
            worst = max(worst, float(np.abs(a[:, 1:] - b[:, 1:]).max(initial=0.0)))
    assert worst <= 1.0 + 1e-3, worst


@pytest.mark.parametrize(
    ("fmt", "agree"),
    [("voc", 1.0), ("cvat", 1.0), ("labelme", 1.0), ("cvat_polygons", 0.99), ("labelme_polygons", 0.99)],
)
def test_datumaro_segmentation_exports_read_as_the_same_masks(converted: Path, fmt: str, agree: float) -> None:
    """Masks (VOC's colour PNGs, CVAT's RLE, LabelMe's mask shapes) read back equal; datumaro's polygons (OpenCV
    contours, simplified, no holes) cost it a few border pixels, so those agree on at least 99 % of pixels."""
    names = (converted / "seg" / "classes.txt").read_text().split()
    truth = MaskSource(converted / "seg", class_names=names)
    kind = fmt.split("_")[0]
    source = {"voc": VocSource, "cvat": CvatSource, "labelme": LabelMeSource}[kind](
        converted / "out" / "segmentation" / fmt, "segmentation"
    )
    assert source.class_names() == names
    ours, theirs = source.splits(0.0, 0.0, 0), truth.splits(0.0, 0.0, 0)
    same = total = 0
    for split in SPLITS:
        read, expected = _by_image(ours[split]), _by_image(theirs[split])
        assert sorted(read) == sorted(expected), split
        for name, mask in expected.items():
            a, b = source.mask_reader.read(read[name]), truth.mask_reader.read(mask)
            same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= agree, (same, total)
    if agree == 1.0:
        assert same == total


def test_voc_difficult_boxes_are_ignored_in_training_and_evaluation(converted: Path, make_cfg) -> None:
    """A difficult object reads as an ignored box (class -1 - id); the report's AP neither counts it missed nor a
    detection on it a false positive; a detection run on a VOC folder with difficult boxes trains and tests."""
    voc = converted / "out" / "detection" / "voc"
    xml = next(p for p in sorted((voc / "Annotations").glob("val_*.xml")) if p.read_text().count("<object>") >= 2)
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    source = VocSource(voc, "detection")
    rows = _by_image(source.splits(0.0, 0.0, 0)["val"])[xml.stem.split("_")[-1]]
    assert (rows[:, 0] < 0).sum() == 1  # validation (in this run's one batch) meets it as a crowd region
    assert source.reports["val"].ignored == 1 and "(1 ignored: difficult)" in source.reports["val"].summary()

    truth = np.array([[0, 10, 10, 30, 30], [-1, 40, 40, 60, 60]], dtype=np.float32)  # the second: difficult class 0
    found = np.array([[10, 10, 30, 30, 0.9, 0]], dtype=np.float32)
    assert score_detection([found], [truth], 1).ap50[0] == pytest.approx(1.0)  # the difficult one is no miss
    counted = truth.copy()
    counted[1, 0] = 0
    assert score_detection([found], [counted], 1).ap50[0] < 0.6  # as a plain truth it would be

    cfg_overrides = ["task=detection", "data=voc", f"data.root={voc}", f"data.image_size={SIZE}", "data.num_workers=0"]
    before = os.environ.get("VISIONKIT_RUN_DIR")
    metrics = train(make_cfg([*cfg_overrides, "++trainer.fast_dev_run=true"]))
    assert {"test_map50", "test_map50_95"} <= set(metrics)
    # the run folder set for DDP workers is not left behind: a later torchrun from this environment made its
    # second rank load this run's config and hang
    assert os.environ.get("VISIONKIT_RUN_DIR") == before


def test_cvat_polygons_train_a_segmenter(converted: Path, make_cfg) -> None:
    root = converted / "out" / "segmentation" / "cvat_polygons"
    overrides = ["task=segmentation", "data=cvat", f"data.root={root}", f"data.image_size={SIZE}", "data.num_workers=0"]
    metrics = train(make_cfg([*overrides, "++trainer.fast_dev_run=true"]))
    assert "test_miou" in metrics


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _image(path: Path, width: int = 40, height: int = 30) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
    return path


VOC_XML = """<annotation><size><width>40</width><height>30</height></size>
<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>2</ymin><xmax>{x1}</xmax>
<ymax>20</ymax></bndbox></object></annotation>"""


@pytest.mark.parametrize(
    ("name", "x0", "x1", "message"),
    [
        ("tiger", 2, 20, r"a.xml: object 1 \(tiger\): label 'tiger' is not one of the classes \(aeroplane"),
        ("dog", 2, 60, r"a.xml: object 1 \(dog\): box \[1, 1, 60, 20\] \(x0, y0, x1, y1\) reaches outside the 40x30"),
        ("dog", 21, 20, r"a.xml: object 1 \(dog\): box \[20, 1, 20, 20\] \(x0, y0, x1, y1\) has zero width"),
    ],
)
def test_voc_bad_objects_name_the_xml(tmp_path: Path, name: str, x0: int, x1: int, message: str) -> None:
    _image(tmp_path / "JPEGImages" / "a.jpg")
    _write(tmp_path / "Annotations" / "a.xml", VOC_XML.format(name=name, x0=x0, x1=x1))
    with pytest.raises(VisionkitError, match=message):
        VocSource(tmp_path, "detection").splits(0.0, 0.0, 0)


def test_voc_layout_and_list_errors(tmp_path: Path) -> None:
    with pytest.raises(VisionkitError, match=r"is not a Pascal VOC folder: no JPEGImages/"):
        VocSource(tmp_path, "detection")
    _image(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / "a.jpg")
    _write(tmp_path / "VOCdevkit" / "VOC2012" / "Annotations" / "a.xml", VOC_XML.format(name="dog", x0=2, x1=20))
    _write(tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "train.txt", "a\nmissing\n")
    source = VocSource(tmp_path, "detection")  # finds VOCdevkit/VOC2012
    with pytest.raises(VisionkitError, match=r"image missing \(listed in .*train.txt\) is not in .*JPEGImages"):
        source.splits(0.0, 0.0, 0)
    with pytest.raises(VisionkitError, match=r"data.task=classification: a Pascal VOC folder holds detection and segm"):
        VocSource(tmp_path, "classification")
    with pytest.raises(VisionkitError, match=r"has no SegmentationClass/ folder, which task=segmentation reads"):
        VocSource(tmp_path, "segmentation")
    _write(
        tmp_path / "VOCdevkit" / "VOC2012" / "Annotations" / "a.xml",
        VOC_XML.format(name="dog", x0=2, x1=20).replace("<width>40", "<width>50"),
    )
    with pytest.raises(VisionkitError, match=r"a.xml: <size> says 50x30 but the image is 40x30"):
        VocSource(tmp_path, "detection").splits(0.0, 0.0, 0)


def _labelme(folder: Path, shapes: list[dict], labels: list[str] | None = None) -> Path:
    _image(folder / "a.png")
    if labels is not None:
        _write(folder / "labels.txt", "\n".join(["__ignore__", "_background_", *labels]))
    spec = {"shapes": shapes, "imagePath": "a.png", "imageHeight": 30, "imageWidth": 40}
    return _write(folder / "a.json", json.dumps(spec))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            {"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "polygon"},
            r"a.json: shape 1 \(cat, polygon\): 2 point\(s\); a polygon needs at least 3",
        ),
        (
            {"label": "cat", "points": [[1, 1], [50, 5]], "shape_type": "rectangle"},
            r"a.json: shape 1 \(cat, rectangle\): box .* reaches outside the 40x30 image",
        ),
        (
            {"label": "bird", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"},
            r"a.json: shape 1 \(bird, rectangle\): label 'bird' is not one of the classes \(cat, dog\)",
        ),
        ({"label": "cat", "points": "nowhere", "shape_type": "polygon"}, r"'points' must be a list of \[x, y\] pairs"),
    ],
)
def test_labelme_bad_shapes_name_the_json(tmp_path: Path, shape: dict, message: str) -> None:
    _labelme(tmp_path, [shape], labels=["cat", "dog"])
    with pytest.raises(VisionkitError, match=message):
        LabelMeSource(tmp_path, "detection").splits(0.0, 0.0, 0)


def test_labelme_missing_image_and_skip(tmp_path: Path) -> None:
    good = {"label": "cat", "points": [[1, 1], [10, 10]], "shape_type": "rectangle"}
    _labelme(tmp_path / "one", [good], labels=["cat"])
    spec = {"shapes": [good], "imagePath": "gone.png", "imageHeight": 30, "imageWidth": 40}
    _write(tmp_path / "one" / "b.json", json.dumps(spec))
    with pytest.raises(VisionkitError, match=r"b.json: its image .*gone.png: the file does not exist"):
        LabelMeSource(tmp_path / "one", "detection").splits(0.0, 0.0, 0)
    source = LabelMeSource(tmp_path / "one", "detection", skip_bad_labels=True)
    kept = source.splits(0.0, 0.0, 0)["train"]
    assert len(kept) == 1 and "gone.png" in source.reports["train"].skipped[0]


CVAT_XML = """<annotations><version>1.1</version><meta><task><labels><label><name>cat</name></label></labels></task>
</meta><image id="0" name="a.png" width="40" height="30">{shape}</image></annotations>"""


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            '<polygon label="cat" points="1,1;5,5" z_order="0"/>',
            r"image 'a.png', polygon 1 \(cat\): 2 point\(s\); a polygon needs at least 3",
        ),
        (
            '<box label="dog" xtl="1" ytl="1" xbr="5" ybr="5"/>',
            r"box 1 \(dog\): label 'dog' is not one of the classes \(cat\)",
        ),
        (
            '<box label="cat" xtl="1" ytl="1" xbr="55" ybr="5"/>',
            r"box 1 \(cat\): box .* reaches outside the 40x30 image",
        ),
        (
            '<mask label="cat" rle="3, 4" left="0" top="0" width="3" height="3"/>',
            r"rle covers 7 pixels, the mask's box 3x3",
        ),
    ],
)
def test_cvat_bad_shapes_name_the_xml(tmp_path: Path, shape: str, message: str) -> None:
    _image(tmp_path / "images" / "a.png")
    _write(tmp_path / "annotations.xml", CVAT_XML.format(shape=shape))
    task = "segmentation" if "mask" in shape else "detection"
    with pytest.raises(VisionkitError, match=message):
        CvatSource(tmp_path, task).splits(0.0, 0.0, 0)


def test_cvat_missing_image_and_bad_xml(tmp_path: Path) -> None:
    _write(tmp_path / "annotations.xml", CVAT_XML.format(shape='<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5"/>'))
    with pytest.raises(VisionkitError, match=r"annotations.xml: image 'a.png': its image .*a.png: the file does not"):
        CvatSource(tmp_path, "detection").splits(0.0, 0.0, 0)
    _write(tmp_path / "annotations.xml", "<annotations><image></annotations>")
    with pytest.raises(VisionkitError, match=r"annotations.xml:1: not valid XML"):
        CvatSource(tmp_path, "detection")


def test_shape_masks_paint_in_z_order(tmp_path: Path) -> None:
    """Later z_order paints over earlier whatever the file order; the painted pixels are the polygon's."""
    _image(tmp_path / "images" / "a.png")
    shapes = (
        '<polygon label="dog" points="10,5;30,5;30,20;10,20" z_order="2"/>'
        '<polygon label="cat" points="0,0;39,0;39,29;0,29" z_order="1"/>'
    )
    text = CVAT_XML.format(shape=shapes).replace(
        "<label><name>cat</name></label>", "<label><name>cat</name></label><label><name>dog</name></label>"
    )
    _write(tmp_path / "annotations.xml", text)
    source = CvatSource(tmp_path, "segmentation")
    assert source.class_names() == ["background", "cat", "dog"]
    mask = source.mask_reader.read(source.splits(0.0, 0.0, 0)["train"].targets[0])
    expected = np.ones((30, 40), np.uint8)
    expected[5:21, 10:31] = 2
    assert np.array_equal(mask, expected)


def test_config_names_the_task(make_cfg) -> None:
    """data.task follows the task; a task these formats cannot train is refused with the way out."""
    cfg = make_cfg(["task=segmentation", "data=voc", "data.root=/x"])
    assert cfg.data.task == "segmentation" and cfg.data.source.task == "segmentation"
    with pytest.raises(VisionkitError, match="use task=detection or task=segmentation"):
        LabelMeSource(Path(sys.prefix), "classification")
