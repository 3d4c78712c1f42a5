"""COCO json detection data: same samples as the YOLO labels it was converted from; each bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visionkit.data.shapes import generate_shapes_detection
from visionkit.data.sources.coco import CocoSource
from visionkit.data.sources.yolo import YoloSource
from visionkit.errors import VisionkitError
from visionkit.run import train


def yolo_to_coco(yaml: Path, split: str, out: Path, category_ids: tuple[int, ...] = (3, 7, 11, 20)) -> Path:
    """Write `split` of a YOLO dataset as a COCO json (category ids deliberately not 0..K-1)."""
    from PIL import Image

    source = YoloSource(str(yaml))
    samples = source.splits(0.0, 0.0, 0)[split]
    images, annotations = [], []
    for image_id, (path, boxes) in enumerate(zip(samples.images, samples.targets), start=1):
        width, height = Image.open(path).size
        images.append({"id": image_id, "file_name": Path(path).name, "width": width, "height": height})
        for cls, cx, cy, w, h in boxes.tolist():
            bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[int(cls)], "bbox": bbox}
            )
    names = source.class_names()
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, names)]
    out.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}, indent=1))
    return out


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    yaml = generate_shapes_detection(root / "shapes", {"train": 24, "val": 8, "test": 8}, image_size=64)
    return yaml, yolo_to_coco(yaml, "train", root / "train.json"), yaml.parent / "images" / "train"


def test_coco_samples_equal_the_yolo_labels(coco: tuple[Path, Path, Path]) -> None:
    yaml, train_json, images = coco
    source = CocoSource(str(train_json), str(images))
    assert source.class_names() == YoloSource(str(yaml)).class_names()
    ours = source.splits(0.0, 0.0, 0)["train"]
    theirs = YoloSource(str(yaml)).splits(0.0, 0.0, 0)["train"]
    assert list(ours.images) == list(theirs.images)
    for a, b in zip(ours.targets, theirs.targets):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    assert source.reports["train"].backgrounds == sum(len(t) == 0 for t in theirs.targets)


def test_a_category_that_only_groups_the_others_is_no_class(coco, tmp_path: Path) -> None:
    """Roboflow's COCO exports put a parent category at id 0 (the others' supercategory, never annotated); COCO's
    own categories are often their own supercategory ("person" in "person") and stay classes."""

    def group(spec: dict) -> None:
        for category in spec["categories"]:
            category["supercategory"] = "shapes"
        spec["categories"][0]["supercategory"] = spec["categories"][0]["name"]  # its own, as COCO's "person"
        spec["categories"].insert(0, {"id": 0, "name": "shapes", "supercategory": "none"})

    source = CocoSource(str(_broken(coco, tmp_path, group)), str(coco[2]))
    assert source.class_names() == YoloSource(str(coco[0])).class_names()
    targets = source.splits(0.0, 0.0, 0)["train"].targets
    plain = CocoSource(str(coco[1]), str(coco[2])).splits(0.0, 0.0, 0)["train"].targets
    assert all(np.array_equal(a, b) for a, b in zip(targets, plain))  # the same class ids as without the parent


def _broken(coco: tuple[Path, Path, Path], tmp_path: Path, edit) -> Path:
    spec = json.loads(coco[1].read_text())
    edit(spec)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def _first_box(spec: dict) -> dict:
    return spec["annotations"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: _first_box(s).update(category_id=99), r"annotations\[0\] \(id 1\): category_id 99 is not in"),
        (lambda s: _first_box(s).update(image_id=999), r"annotations\[0\] \(id 1\): image_id 999 is not in 'images'"),
        (lambda s: _first_box(s).update(bbox=[50, 50, 40, 40]), r"reaches outside the 64x64 image"),
        (lambda s: _first_box(s).update(bbox=[5, 5, 0, 4]), r"has zero width or height"),
        (lambda s: _first_box(s).update(bbox="wide"), r"'bbox' must be \[x, y, width, height\]"),
        (lambda s: s["annotations"].append({**_first_box(s), "id": 777}), r"\(id 777\): duplicate of annotations\[0\]"),
        (lambda s: s["images"][0].update(file_name="gone.png"), r"gone.png: file does not exist"),
        (lambda s: s.pop("categories"), r"missing key\(s\) categories"),
    ],
)
def test_bad_annotations_name_the_json_and_the_entry(coco, tmp_path: Path, edit, message: str) -> None:
    path = _broken(coco, tmp_path, edit)
    with pytest.raises(VisionkitError, match=message):
        CocoSource(str(path), str(coco[2])).splits(0.1, 0.1, 0)


def test_crowd_annotations_are_ignored_boxes(coco, tmp_path: Path) -> None:
    """A crowd annotation stays as an ignored box (negative class: out of the loss, a crowd region in evaluation)."""
    path = _broken(coco, tmp_path, lambda s: _first_box(s).update(iscrowd=1))
    source = CocoSource(str(path), str(coco[2]))
    rows = np.concatenate(list(source.splits(0.0, 0.0, 0)["train"].targets))
    assert (rows[:, 0] < 0).sum() == 1 and source.reports["train"].ignored == 1


def test_bad_json_names_its_line_and_skip_counts(coco, tmp_path: Path) -> None:
    text = coco[1].read_text().splitlines()
    text[5] = text[5] + ","  # a stray comma
    bad = tmp_path / "bad.json"
    bad.write_text("\n".join(text))
    with pytest.raises(VisionkitError, match=r"bad.json:\d+: not valid JSON"):
        CocoSource(str(bad), str(coco[2])).class_names()

    path = _broken(coco, tmp_path, lambda s: _first_box(s).update(bbox=[5, 5, 0, 4]))
    source = CocoSource(str(path), str(coco[2]), skip_bad_labels=True)
    kept = source.splits(0.0, 0.0, 0)["train"]
    assert len(kept) == 23 and len(source.reports["train"].skipped) == 1


def test_data_coco_config_trains(coco, make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    """Also: with only a train json, the split line says val and test were carved out of the scanned train."""
    _, train_json, images = coco
    cfg = make_cfg(
        [
            "task=detection",
            "data=coco",
            f"data.train_json={train_json}",
            f"data.train_images={images}",
            "data.image_size=64",
            "data.num_workers=0",
            "++trainer.fast_dev_run=true",
        ]
    )
    with caplog.at_level("INFO", logger="visionkit.data.datamodule"):
        metrics = train(cfg)
    assert {"test_map50", "test_map50_95"} <= set(metrics)
    assert "(val and test carved out of the scanned train images" in caplog.text, caplog.text
