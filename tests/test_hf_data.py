"""Hugging Face datasets on disk (data=hf): written by `datasets` itself (save_to_disk and parquet) from the built-in
sets, read back into the same samples for classification, detection and segmentation; bad rows named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.data import HuggingFaceSource, MaskSource, YoloSource
from visionkit.data.shapes import generate_shapes_detection
from visionkit.data.shapes_seg import generate_shapes_segmentation
from visionkit.errors import VisionkitError
from visionkit.run import train

datasets = pytest.importorskip("datasets")
SPLITS = {"train": "train", "val": "validation", "test": "test"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    counts = {"train": 12, "val": 4, "test": 4}
    generate_shapes_detection(root / "det", counts, image_size=64)
    generate_shapes_segmentation(root / "seg", counts, image_size=64)
    return root


def detection_dict(yaml: Path) -> tuple[object, dict]:
    source = YoloSource(str(yaml))
    splits = source.splits(0.0, 0.0, 0)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "objects": {
                "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
                "category": datasets.Sequence(datasets.ClassLabel(names=source.class_names())),
            },
        }
    )
    parts = {}
    for split, hub_name in SPLITS.items():
        rows: dict[str, list] = {"image": [], "objects": []}
        for path, boxes in zip(splits[split].images, splits[split].targets):
            width, height = Image.open(path).size
            coco = [[(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height] for _, cx, cy, w, h in boxes]
            rows["image"].append(path)
            rows["objects"].append({"bbox": coco, "category": [int(c) for c in boxes[:, 0]]})
        parts[hub_name] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(parts), splits


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_detection_rows_read_as_the_same_boxes(built: Path, tmp_path: Path, layout: str) -> None:
    hub, truth = detection_dict(built / "det" / "data.yaml")
    if layout == "save_to_disk":
        hub.save_to_disk(str(tmp_path / "ds"))
    else:
        for name, part in hub.items():
            part.to_parquet(str(tmp_path / "ds" / "data" / f"{name}-00000-of-00001.parquet"))
    source = HuggingFaceSource(tmp_path / "ds", "detection", cache_dir=tmp_path / "cache")
    assert source.class_names() == ["circle", "square", "triangle", "cross"]  # the ClassLabel's names
    ours = source.splits(0.0, 0.0, 0)
    for split in SPLITS:
        assert len(ours[split]) == len(truth[split])
        for a, b in zip(ours[split].targets, truth[split].targets):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
        same = zip(ours[split].images, truth[split].images)
        assert all(Path(a).read_bytes() == Path(b).read_bytes() for a, b in same)  # the original bytes


def test_classification_and_segmentation_train(built: Path, tmp_path: Path, make_cfg) -> None:
    """An image + ClassLabel dataset trains (its names become the classes); masks in an Image column read as the
    same class ids as the PNGs they came from."""
    names = (built / "seg" / "classes.txt").read_text().split()
    truth = MaskSource(built / "seg", class_names=names)
    masks = truth.splits(0.0, 0.0, 0)
    parts = {}
    for split, hub_name in SPLITS.items():
        sample = masks[split]
        labels = [int(np.asarray(Image.open(m)).max()) for m in sample.targets]  # a class shown in each image
        parts[hub_name] = datasets.Dataset.from_dict(
            {"image": list(sample.images), "shape": labels, "annotation": list(sample.targets)},
            features=datasets.Features(
                {"image": datasets.Image(), "shape": datasets.ClassLabel(names=names), "annotation": datasets.Image()}
            ),
        )
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "ds"))

    seg = HuggingFaceSource(tmp_path / "ds", "segmentation", class_names=names, cache_dir=tmp_path / "cache")
    read = seg.splits(0.0, 0.0, 0)
    for split in SPLITS:
        for ours, theirs in zip(read[split].targets, masks[split].targets):
            assert np.array_equal(seg.mask_reader.read(ours), truth.mask_reader.read(theirs))

    overrides = ["data=hf", f"data.root={tmp_path / 'ds'}", "data.image_size=32", "data.num_workers=0"]
    cfg = make_cfg([*overrides, f"paths.data_dir={tmp_path / 'cache'}", "++trainer.fast_dev_run=true"])
    metrics = train(cfg)
    assert "test_acc" in metrics
    classes = HuggingFaceSource(tmp_path / "ds", "classification", cache_dir=tmp_path / "cache").class_names()
    assert classes == names


def test_bad_rows_and_columns_are_named(built: Path, tmp_path: Path) -> None:
    hub, _ = detection_dict(built / "det" / "data.yaml")
    train_part = hub["train"]
    broken = train_part.map(
        lambda row, i: (
            {"objects": {**row["objects"], "bbox": [[50, 50, 40, 40]] * len(row["objects"]["bbox"])}}
            if i == 2 and row["objects"]["bbox"]
            else row
        ),
        with_indices=True,
    )
    datasets.DatasetDict({"train": broken}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(
        VisionkitError, match=r"bad: split train, row 2, object 0: box \[50, 50, 90, 90\] .* reaches outside"
    ):
        HuggingFaceSource(tmp_path / "bad", "detection", cache_dir=tmp_path / "cache").class_names()
    skipping = HuggingFaceSource(tmp_path / "bad", "detection", cache_dir=tmp_path / "cache2", skip_bad_labels=True)
    assert len(skipping.splits(0.0, 0.0, 0)["train"]) == len(broken) - 1

    with pytest.raises(
        VisionkitError, match=r"no label column for task=classification; the columns are image \(Image\)"
    ):
        HuggingFaceSource(tmp_path / "bad", "classification", cache_dir=tmp_path / "cache3").class_names()
    with pytest.raises(VisionkitError, match=r"holds neither a save_to_disk dataset .* nor parquet files"):
        HuggingFaceSource(tmp_path, "classification", cache_dir=tmp_path / "cache4").class_names()
    with pytest.raises(VisionkitError, match=r"data.bbox_format='voc': one of coco, xyxy, cxcywhn"):
        HuggingFaceSource(tmp_path / "bad", "detection", bbox_format="voc")
