"""Image-folder and CSV sources, splits, and each bad input with its message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data import (
    ClassificationDataset,
    CsvSource,
    DigitsSource,
    ImageFolderSource,
    SampleSet,
    VisionDataModule,
    build_transform,
)
from visionkit.errors import VisionkitError


def _dm(source, **kwargs) -> VisionDataModule:
    return VisionDataModule(source, image_size=16, batch_size=4, augment="none", **kwargs)


def test_digits_are_the_real_scikit_learn_set() -> None:
    splits = DigitsSource().splits(0.1, 0.2, seed=0)
    assert sum(len(s) for s in splits.values()) == 1797
    assert splits["train"].images.shape[1:] == (8, 8, 3) and splits["train"].images.dtype == np.uint8
    again = DigitsSource().splits(0.1, 0.2, seed=0)
    assert np.array_equal(splits["test"].targets, again["test"].targets)  # same seed, same split


def test_image_folder_seeded_split_and_batches(shapes_folder: Path) -> None:
    dm = _dm(ImageFolderSource(str(shapes_folder)), val_fraction=0.25, test_fraction=0.25)
    assert dm.class_names == ["hbar", "square", "vbar"] and dm.num_classes == 3
    dm.setup("fit")
    dm.setup("test")
    sizes = {name: len(ds) for name, ds in dm.datasets.items()}
    assert sizes == {"train": 18, "val": 9, "test": 9}  # 3 classes × (6 + 3 + 3)
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 3, 16, 16) and batch["label"].dtype.is_floating_point is False


def test_image_folder_explicit_splits(tmp_path: Path, shapes_folder: Path) -> None:
    root = tmp_path / "explicit"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for cls in ("hbar", "vbar"):
            (shapes_folder / cls).rename(root / split / cls) if split == "train" else (root / split / cls).mkdir()
    for cls in ("hbar", "vbar"):  # two test images per class, taken from train
        for path in sorted((root / "train" / cls).iterdir())[:2]:
            path.rename(root / "test" / cls / path.name)
    splits = ImageFolderSource(str(root)).splits(0.2, 0.3, seed=0)
    assert len(splits["test"]) == 4  # explicit test kept as is
    assert len(splits["train"]) + len(splits["val"]) == 20  # val carved from train


def test_a_lone_last_training_image_is_left_out_of_the_epoch(shapes_folder: Path) -> None:
    """27 training images in batches of 26 ended each epoch in a batch of one, on which BatchNorm cannot train
    ('Expected more than 1 value per channel'): that image is left out; evaluation keeps every image."""
    for batch_size, sizes in ((26, [26]), (9, [9, 9, 9]), (4, [4] * 6 + [3])):
        data = VisionDataModule(
            ImageFolderSource(str(shapes_folder)), image_size=16, batch_size=batch_size, augment="none",
            val_fraction=0.25, test_fraction=0.0, eval_batch_size=26,
        )  # fmt: skip
        data.setup("fit")
        assert [len(batch["image"]) for batch in data.train_dataloader()] == sizes
    assert [len(b["image"]) for b in data._loader("train", train=False)] == [26, 1]


def test_csv_source_with_split_column_and_relative_paths(shapes_folder: Path) -> None:
    rows = ["path,label,split"]
    for i, path in enumerate(sorted(shapes_folder.rglob("*.png"))):
        rows.append(f"{path.relative_to(shapes_folder)},{path.parent.name},{'test' if i % 4 == 0 else 'train'}")
    (shapes_folder / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = CsvSource(str(shapes_folder / "labels.csv")).splits(0.2, 0.2, seed=0)
    assert len(splits["test"]) == 9 and len(splits["train"]) + len(splits["val"]) == 27


# ----------------------------------------------------------------------------- bad input


def _raises(match: str):
    return pytest.raises(VisionkitError, match=re.escape(match))


def test_missing_and_empty_data_folders(tmp_path: Path) -> None:
    with _raises(f"data.root: folder {tmp_path / 'nope'} does not exist"):
        _dm(ImageFolderSource(str(tmp_path / "nope"))).num_classes  # noqa: B018
    (tmp_path / "empty").mkdir()
    with _raises("has no class folders: expected"):
        _dm(ImageFolderSource(str(tmp_path / "empty"))).num_classes  # noqa: B018
    (tmp_path / "empty" / "cats").mkdir()
    with _raises("no images found under"):
        _dm(ImageFolderSource(str(tmp_path / "empty"))).setup("fit")
    with _raises("data.root is not set"):
        ImageFolderSource("???")


def test_class_folder_without_images(shapes_folder: Path) -> None:
    (shapes_folder / "zebra").mkdir()
    with _raises("class folder(s) ['zebra']"):
        _dm(ImageFolderSource(str(shapes_folder))).setup("fit")


def test_num_classes_must_agree_with_the_data(shapes_folder: Path) -> None:
    with _raises("data.num_classes=5 but image folders under"):
        _dm(ImageFolderSource(str(shapes_folder)), num_classes=5).setup("fit")
    assert _dm(ImageFolderSource(str(shapes_folder)), num_classes=3).num_classes == 3


@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "empty file (0 bytes)"), (b"\x89PNG\r\n\x1a\nrubbish", "not a readable image")]
)
def test_bad_image_stops_with_its_path_or_is_skipped_and_counted(
    shapes_folder: Path, content: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = shapes_folder / "square" / "zz_bad.png"
    bad.write_bytes(content)
    with _raises(f"bad image {bad}: {reason}"):
        _dm(ImageFolderSource(str(shapes_folder)), test_fraction=0.0).setup("fit")
    (shapes_folder / "hbar" / "zz_bad.jpg").write_bytes(b"")
    dm = _dm(ImageFolderSource(str(shapes_folder)), skip_bad_images=True, val_fraction=0.2, test_fraction=0.0)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 36  # 38 files, 2 bad ones dropped
    assert sum(int(n) for n in re.findall(r"skipped (\d+) bad image", caplog.text)) == 2


def test_image_that_fails_only_when_decoded_is_named(shapes_folder: Path) -> None:
    """Damage the scan cannot see is reported (or skipped) when the loader decodes the file."""
    good, bad = sorted((shapes_folder / "square").iterdir())[:2]
    bad.write_bytes(bad.read_bytes()[:60])  # a cut PNG, read without the data module's scan
    samples = SampleSet([str(bad), str(good)], np.array([0, 0]))
    dataset = ClassificationDataset(samples, build_transform(None, image_size=16))
    with pytest.raises(
        VisionkitError, match=rf"bad image {re.escape(str(bad))}: corrupt or truncated .*skip_bad_images=true"
    ):
        dataset[0]
    dataset.skip_bad_images = True
    assert torch.equal(dataset[0]["image"], dataset[1]["image"])  # the next readable sample instead


def _csv(tmp_path: Path, text: str) -> Path:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_csv_row_with_missing_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, "path,label\na.png,cat\nmissing.png,dog\n")
    with _raises(f"{path}:3: image file {tmp_path / 'missing.png'} does not exist"):
        CsvSource(str(path)).splits(0.0, 0.0, 0)


def test_csv_headers_of_any_name_and_windows_paths_are_read(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cats" / "b.png")
    for header in ("image_id,label", "img,target", "path,label", ""):  # Kaggle's names, ours, none
        text = (header + "\r\n" if header else "") + "a.png,cat\r\ncats\\b.png,cat\r\n"
        path = _csv(tmp_path, text)
        path.write_text(text, encoding="utf-8-sig")  # with the byte-order mark spreadsheets write
        samples = CsvSource(str(path)).splits(0.0, 0.0, 0)["train"]
        assert samples.images == [str(tmp_path / "a.png"), str(tmp_path / "cats" / "b.png")], header


def test_csv_row_with_unknown_label(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a.png,cat\na.png,dgo\n")
    with _raises(f"{path}:2: unknown label 'dgo' (known labels: cat, dog)"):
        CsvSource(str(path), class_names=["cat", "dog"]).splits(0.0, 0.0, 0)


def test_csv_malformed_rows(tmp_path: Path) -> None:
    with _raises(":2: expected 'path,label' or 'path,label,split'"):
        CsvSource(str(_csv(tmp_path, "a.png,cat\na.png\n"))).splits(0.0, 0.0, 0)
    with _raises(":1: split 'training' is not one of train, val, test"):
        CsvSource(str(_csv(tmp_path, "a.png,cat,training\n"))).splits(0.0, 0.0, 0)
    with _raises("data.csv: file"):
        CsvSource(str(tmp_path / "nope.csv")).class_names()


def test_prediction_sources_file_folder_glob_and_errors(shapes_folder: Path, tmp_path: Path) -> None:
    from visionkit.data.files import list_images

    one = sorted((shapes_folder / "hbar").iterdir())[0]
    assert list_images(str(one)) == [str(one)]
    assert len(list_images(str(shapes_folder))) == 36  # recursive
    assert len(list_images(str(shapes_folder / "*" / "00*.png"))) == 30
    with _raises("source is not set"):
        list_images("")
    with _raises("is neither a file, a folder nor a glob pattern that exists"):
        list_images(str(tmp_path / "nothing_here"))
    (tmp_path / "empty").mkdir()
    with _raises("source: no images"):
        list_images(str(tmp_path / "empty"))


def test_image_folder_with_only_train_and_val(tmp_path: Path, shapes_folder: Path) -> None:
    """train/ and val/ given, no test/: the test split is carved out of train, val is kept as it is."""
    root = tmp_path / "two"
    (root / "train").mkdir(parents=True)
    for cls in ("square", "hbar"):
        (shapes_folder / cls).rename(root / "train" / cls)
        (root / "val" / cls).mkdir(parents=True)
        for path in sorted((root / "train" / cls).iterdir())[:3]:
            path.rename(root / "val" / cls / path.name)
    splits = ImageFolderSource(str(root)).splits(0.5, 0.25, seed=0)
    assert len(splits["val"]) == 6 and all("/val/" in p for p in splits["val"].images)
    assert len(splits["test"]) == 4 and len(splits["train"]) == 14  # 2 of each class's 9 go to test
    assert set(splits["test"].targets.tolist()) == {0, 1}
