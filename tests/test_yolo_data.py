"""YOLO-format detection data and the built-in synthetic shapes (data layer of the detection task)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from visionkit.callbacks.detection_recipe import CloseMosaic
from visionkit.data import VisionDataModule
from visionkit.data.datasets import DetectionDataset
from visionkit.data.shapes import SHAPE_CLASSES, generate_shapes_detection, shapes_detection_yaml
from visionkit.data.sources.yolo import YoloSource, label_path_for, read_data_yaml
from visionkit.errors import VisionkitError

SMALL = {"train": 40, "val": 8, "test": 8}


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_shapes_are_deterministic_and_varied(tmp_path: Path) -> None:
    a = generate_shapes_detection(tmp_path / "a", SMALL)
    b = generate_shapes_detection(tmp_path / "b", SMALL)
    assert _digest(a.parent) == _digest(b.parent)

    source = YoloSource(str(a))
    splits = source.splits(0.1, 0.2, seed=0)
    assert source.class_names() == list(SHAPE_CLASSES)
    assert {k: len(v) for k, v in splits.items()} == SMALL
    boxes = np.concatenate(list(splits["train"].targets))
    counts = [len(t) for t in splits["train"].targets]
    assert set(boxes[:, 0].astype(int)) == set(range(len(SHAPE_CLASSES)))  # every class appears
    assert max(counts) >= 4 and min(counts) == 0  # crowded images and empty ones
    assert boxes[:, 3].min() < 0.1 and boxes[:, 3].max() > 0.3  # small and large objects
    assert ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()
    assert source.reports["train"].backgrounds == counts.count(0)


def test_cache_generates_once(tmp_path: Path) -> None:
    first = shapes_detection_yaml(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert shapes_detection_yaml(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_label_path_convention() -> None:
    assert label_path_for(Path("/d/images/train/a.jpg")) == Path("/d/labels/train/a.txt")
    assert label_path_for(Path("/images/d/images/x/b.png")) == Path("/images/d/labels/x/b.txt")


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def tiny_yolo(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(tmp_path / "images" / split / f"{i}.jpg")
            (tmp_path / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return tmp_path


def _label(root: Path, text: str) -> Path:
    path = root / "labels" / "train" / "1.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.2\n", ":1: expected 5 fields 'class cx cy w h'"),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 x 0.2 0.2\n", ":2: expected numbers 'class cx cy w h'"),
        ("2 0.5 0.5 0.2 0.2\n", ":1: class id 2 is not one of 0..1"),
        ("0 0.95 0.5 0.2 0.2\n", ":1: box '0 0.95 0.5 0.2 0.2' reaches outside the image"),
        ("0 0.5 0.5 0 0.2\n", ":1: box '0 0.5 0.5 0 0.2' has zero width or height"),
        ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n0 0.5 0.5 0.2 0.2\n", ":3: duplicate of line 1"),
    ],
)
def test_bad_label_lines_name_file_and_line(tiny_yolo: Path, text: str, message: str) -> None:
    path = _label(tiny_yolo, text)
    with pytest.raises(VisionkitError, match=re.escape(f"{path}{message}")):
        YoloSource(str(tiny_yolo / "data.yaml")).splits(0.0, 0.0, 0)
    source = YoloSource(str(tiny_yolo / "data.yaml"), skip_bad_labels=True)
    splits = source.splits(0.0, 0.0, 0)
    assert len(splits["train"]) == 2 and len(source.reports["train"].skipped) == 1


def test_polygons_become_boxes_and_missing_labels_are_background(tiny_yolo: Path) -> None:
    _label(tiny_yolo, "1 0.2 0.2 0.6 0.2 0.4 0.8\n")
    (tiny_yolo / "labels" / "train" / "2.txt").unlink()
    splits = YoloSource(str(tiny_yolo / "data.yaml")).splits(0.0, 0.0, 0)
    by_name = {Path(p).stem: t for p, t in zip(splits["train"].images, splits["train"].targets)}
    assert np.allclose(by_name["1"], [[1, 0.4, 0.5, 0.4, 0.6]])
    assert by_name["2"].shape == (0, 5)


def test_label_without_image_and_corrupt_image(tiny_yolo: Path) -> None:
    orphan = tiny_yolo / "labels" / "train" / "9.txt"
    orphan.write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(VisionkitError, match=re.escape(f"label file {orphan} has no image")):
        YoloSource(str(tiny_yolo / "data.yaml")).splits(0.0, 0.0, 0)
    orphan.unlink()
    bad = tiny_yolo / "images" / "train" / "0.jpg"
    bad.write_bytes(b"")
    with pytest.raises(VisionkitError, match=re.escape(f"bad image {bad}: empty file (0 bytes)")):
        YoloSource(str(tiny_yolo / "data.yaml")).splits(0.0, 0.0, 0)


def test_a_data_yaml_without_path_given_relative_and_roboflows_layout(
    tiny_yolo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.yaml in a subfolder named by a relative path, without `path:` (the splits were looked for under
    <folder>/<folder>); and Roboflow's export, `train: ../train/images` beside train/ (found as ultralytics does)."""
    monkeypatch.chdir(tiny_yolo.parent)
    (tiny_yolo / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    splits, _ = read_data_yaml(f"{tiny_yolo.name}/data.yaml")
    assert splits["train"] == [tiny_yolo / "images" / "train"]
    for split in ("train", "valid"):
        (tiny_yolo / split).mkdir()
        (tiny_yolo / "images" / ("train" if split == "train" else "val")).rename(tiny_yolo / split / "images")
        (tiny_yolo / "labels" / ("train" if split == "train" else "val")).rename(tiny_yolo / split / "labels")
    (tiny_yolo / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['a', 'b']\n")
    source = YoloSource(f"{tiny_yolo.name}/data.yaml")
    assert [len(source.splits(0.0, 0.0, 0)[s]) for s in ("train", "val")] == [3, 3]
    (tiny_yolo / "data.yaml").write_text("train: ../train/images\nval: ../nowhere/images\nnames: [a, b]\n")
    with pytest.raises(VisionkitError, match=re.escape(f"val points at {tiny_yolo / '../nowhere/images'}")):
        read_data_yaml(tiny_yolo / "data.yaml")


def test_data_yaml_problems(tiny_yolo: Path) -> None:
    yaml = tiny_yolo / "data.yaml"
    yaml.write_text("path: .\ntrain: images/train\nnames: [a, b]\n")
    with pytest.raises(VisionkitError, match="missing key 'val'"):
        read_data_yaml(yaml)
    yaml.write_text("path: .\ntrain: images/train\nval: images/nope\nnames: [a, b]\n")
    with pytest.raises(VisionkitError, match=re.escape(f"val points at {tiny_yolo / 'images' / 'nope'}")):
        read_data_yaml(yaml)
    yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(VisionkitError, match="nc is 3 but 2 names are listed"):
        read_data_yaml(yaml)
    with pytest.raises(VisionkitError, match=r"data\.yaml: file"):
        read_data_yaml(tiny_yolo / "missing.yaml")


def test_detection_batches_in_the_ultralytics_layout(tmp_path: Path) -> None:
    from visionkit.data import VisionDataModule

    yaml = generate_shapes_detection(tmp_path / "s", SMALL)
    plain = VisionDataModule(YoloSource(str(yaml)), image_size=128, batch_size=4, augment="none")
    plain.setup("fit")
    sample = plain.datasets["train"][1]
    expected = plain.datasets["train"].samples.targets[1]
    assert np.allclose(sample["boxes"].numpy(), expected[:, 1:], atol=1e-5)  # no augmentation: unchanged
    assert sample["classes"].tolist() == expected[:, 0].astype(int).tolist()

    for preset in ("light", "strong"):
        dm = VisionDataModule(YoloSource(str(yaml)), image_size=96, batch_size=8, augment=preset, resize="letterbox")
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape == (8, 3, 96, 96)
        n = len(batch["batch_idx"])
        assert batch["cls"].shape == (n, 1) and batch["bboxes"].shape == (n, 4)
        assert set(batch["batch_idx"].long().tolist()) <= set(range(8))
        assert ((batch["bboxes"] >= 0) & (batch["bboxes"] <= 1)).all() and (batch["bboxes"][:, 2:] > 0).all()
        assert set(batch["cls"].long().flatten().tolist()) <= set(range(len(SHAPE_CLASSES)))


def test_scan_summary_is_logged_before_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from visionkit.data import VisionDataModule

    yaml = generate_shapes_detection(tmp_path / "s", SMALL)
    with caplog.at_level("INFO"):
        VisionDataModule(YoloSource(str(yaml)), image_size=64, augment="none").setup("fit")
    assert re.search(r"scan train: 40 images, \d+ boxes, \d+ without objects", caplog.text)


class _ReportsMosaic(DetectionDataset):
    """Returns the mosaic probability a DataLoader worker sees, instead of a sample."""

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(self.mosaic_probability)


def test_mosaic_is_served_and_closing_it_reaches_running_workers(tmp_path: Path) -> None:
    torch.manual_seed(1)  # the dataset seeds its mosaic draws from torch's seed: same partners every run
    yaml = generate_shapes_detection(tmp_path / "shapes", SMALL, image_size=64)
    dm = VisionDataModule(
        YoloSource(str(yaml)), image_size=64, batch_size=4, augment="none", resize="letterbox", mosaic=1.0
    )
    dm.setup("fit")
    train = dm.datasets["train"]
    assert train.mosaic_probability == 1.0 and dm.datasets["val"].mosaic_probability == 0.0
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64) and len(sample["boxes"]) == len(sample["classes"])
    # a mosaic mixes boxes of several images: over a few samples, more boxes than any single image has
    most = max(len(t) for t in train.samples.targets)
    assert max(len(train[i]["boxes"]) for i in range(8)) > most

    probe = _ReportsMosaic(train.samples, train.transform, mosaic=1.0, mosaic_size=(64, 64))
    loader = DataLoader(probe, batch_size=4, num_workers=2, persistent_workers=True)
    assert torch.cat(list(loader)).unique().tolist() == [1.0]

    class _Trainer:  # what CloseMosaic reads from the trainer
        max_epochs, current_epoch, datamodule = 20, 9, SimpleNamespace(datasets={"train": probe})

    CloseMosaic(10).on_train_epoch_start(_Trainer(), None)  # epoch 9 of 20: still on
    assert probe.mosaic_probability == 1.0
    _Trainer.current_epoch = 10
    CloseMosaic(10).on_train_epoch_start(_Trainer(), None)
    assert torch.cat(list(loader)).unique().tolist() == [0.0]  # the same (persistent) workers see it
