"""Segmentation data: the built-in shapes set, image/mask pairs in every mask encoding, each bad input with
its message (or skipped and counted), and masks that stay aligned through every augmentation preset."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from visionkit.data import MaskSource, VisionDataModule, available_presets, build_transform, load_preset
from visionkit.data.mask_files import MaskReader, mask_image
from visionkit.data.shapes_seg import SEG_CLASSES, generate_shapes_segmentation, shapes_segmentation_root
from visionkit.errors import VisionkitError

NAMES = ["background", "a", "b"]


def write_pair(
    root: Path, name: str, mask: np.ndarray | Image.Image, image_size: tuple[int, int] | None = None
) -> None:
    """images/<name>.jpg (noise) and masks/<name>.png."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    mask_img = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    height, width = image_size or (mask_img.height, mask_img.width)
    noise = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / f"{name}.jpg")
    mask_img.save(root / "masks" / f"{name}.png")


def blocks(value: int = 2, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[4:12, 4:12] = value
    return mask


def pool(tmp_path: Path, count: int = 6) -> Path:
    root = tmp_path / "pairs"
    for i in range(count):
        write_pair(root, f"p{i}", blocks(1 + i % 2))
    return root


def test_a_larger_training_split_keeps_the_same_validation_and_test_images(tmp_path: Path) -> None:
    small = generate_shapes_segmentation(tmp_path / "small", {"train": 2, "val": 2, "test": 1})
    large = generate_shapes_segmentation(tmp_path / "large", {"train": 5, "val": 2, "test": 1})
    for name in ("images/val/00001.png", "masks/val/00001.png", "images/test/00000.png"):
        assert (small / name).read_bytes() == (large / name).read_bytes()
    assert len(list((large / "images" / "train").iterdir())) == 5


def test_builtin_set_is_deterministic_and_generated_once(tmp_path: Path) -> None:
    counts = {"train": 3}
    first, second = (
        generate_shapes_segmentation(tmp_path / "a", counts),
        generate_shapes_segmentation(tmp_path / "b", counts),
    )
    for name in ("images/train/00002.png", "masks/train/00002.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    root = shapes_segmentation_root(tmp_path / "cache")
    stamp = (root / "classes.txt").stat().st_mtime_ns
    assert shapes_segmentation_root(tmp_path / "cache") == root and (root / "classes.txt").stat().st_mtime_ns == stamp
    source = MaskSource(root, class_names=list(SEG_CLASSES))
    splits = source.splits(0.1, 0.2, 0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [600, 100, 100]
    pixels = source.reports["train"].pixels
    assert (pixels > 0).all() and 0.5 < pixels[0] / pixels.sum() < 0.9  # every class present, background most


def test_pairs_split_from_one_pool_with_the_fractions(tmp_path: Path) -> None:
    splits = MaskSource(pool(tmp_path, 10), class_names=NAMES).splits(0.2, 0.2, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    for images, masks in ((s.images, s.targets) for s in splits.values()):
        assert [Path(i).stem for i in images] == [Path(m).stem for m in masks]


def test_palette_grey_rgb_16bit_and_colour_coded_masks_read_as_ids(tmp_path: Path) -> None:
    ids = blocks(2)
    reader = MaskReader.make(3)
    mask_image(ids).save(tmp_path / "palette.png")
    Image.fromarray(np.repeat(ids[..., None], 3, 2)).save(tmp_path / "grey_rgb.png")
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "sixteen.png")
    for name in ("palette.png", "grey_rgb.png", "sixteen.png"):
        assert np.array_equal(reader.read(tmp_path / name), ids), name
    colours = [[0, 0, 0], [128, 64, 128], [250, 170, 30]]
    rgb = np.asarray(colours, dtype=np.uint8)[ids]
    Image.fromarray(rgb).save(tmp_path / "coded.png")
    assert np.array_equal(MaskReader.make(3, colors=colours).read(tmp_path / "coded.png"), ids)
    rgb[0, 0] = (1, 2, 3)  # a colour outside the table
    Image.fromarray(rgb).save(tmp_path / "coded.png")
    with pytest.raises(VisionkitError, match=r"colour \(1, 2, 3\) at row 0, column 0 is not in data.colors"):
        MaskReader.make(3, colors=colours).read(tmp_path / "coded.png")
    assert MaskReader.make(3, ignore_index=255, colors=colours).read(tmp_path / "coded.png")[0, 0] == 255


def test_binary_masks_accept_0_1_and_0_255(tmp_path: Path) -> None:
    for value in (1, 255):
        write_pair(tmp_path / str(value), "x", blocks(value))
        source = MaskSource(tmp_path / str(value), binary=True)
        assert source.class_names() == ["background", "foreground"]
        mask = source.mask_reader.read(tmp_path / str(value) / "masks" / "x.png")
        assert set(np.unique(mask)) == {0, 1}
    with pytest.raises(VisionkitError, match=r"class id 255 .*a 0/255 mask of one foreground class: set data.binary"):
        MaskSource(tmp_path / "255", class_names=["background", "tumor"]).splits(0.0, 0.0, 0)
    with pytest.raises(VisionkitError, match=r"class id 7 .*classes \(0\.\.1\); fix the mask"):  # no binary hint
        MaskReader.make(2).check(blocks(7), "seven.png")
    with pytest.raises(VisionkitError, match=r"class id 7 .*JPEG compression changes a mask's values"):  # lossy
        MaskReader.make(2).check(blocks(7), "seven.jpg")


BAD = {
    "class id too large": (lambda root: write_pair(root, "bad", blocks(7)), r"class id 7 at row 4, column 4"),
    "rgb mask": (
        lambda root: write_pair(root, "bad", Image.new("RGB", (16, 16), (200, 10, 10))),
        r"colour \(RGB\) image.*data.colors",
    ),
    "size mismatch": (
        lambda root: write_pair(root, "bad", blocks(1), image_size=(20, 16)),
        r"is 16x16 px but its image",
    ),
    "mask missing": (lambda root: (root / "masks" / "p0.png").unlink(), r"image .*p0.jpg has no mask"),
    "image missing": (lambda root: (root / "images" / "p1.jpg").unlink(), r"mask .*p1.png has no image"),
    "corrupt mask": (
        lambda root: (root / "masks" / "p2.png").write_bytes(b"not a png"),
        r"mask .*p2.png is not a readable",
    ),
    "corrupt image": (lambda root: (root / "images" / "p3.jpg").write_bytes(b"\xff\xd8junk"), r"image .*p3.jpg"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pairs_stop_with_the_file_named_or_are_skipped_and_counted(tmp_path: Path, case: str) -> None:
    root = pool(tmp_path)
    damage, message = BAD[case]
    damage(root)
    with pytest.raises(VisionkitError, match=message) as caught:
        MaskSource(root, class_names=NAMES).splits(0.0, 0.0, 0)
    assert "skip_bad_masks" in str(caught.value)
    source = MaskSource(root, class_names=NAMES, skip_bad_masks=True)
    kept = source.splits(0.0, 0.0, 0)["train"]
    report = source.reports["all"]
    added = case in ("class id too large", "rgb mask", "size mismatch")  # a 7th, bad pair; else one of 6 damaged
    assert len(report.skipped) == 1 and report.pairs == len(kept) == (6 if added else 5)
    assert "1 skipped" in report.summary()


def test_missing_class_names_and_folders_are_explained(tmp_path: Path) -> None:
    root = pool(tmp_path)
    with pytest.raises(VisionkitError, match=r"data\.class_names is not set"):
        MaskSource(root)
    with pytest.raises(VisionkitError, match="is not a folder; expected"):
        MaskSource(tmp_path / "nowhere", class_names=NAMES)


def test_datamodule_batches_masks_and_pads_with_the_ignore_index(tmp_path: Path) -> None:
    root = pool(tmp_path, 8)
    write_pair(root, "wide", np.pad(blocks(1), ((0, 0), (0, 16))))  # 16x32: letterboxed into 32x32
    source = MaskSource(root, class_names=NAMES, ignore_index=255)
    dm = VisionDataModule(source, image_size=32, batch_size=9, augment="none", resize="letterbox")
    batches = [next(iter(loader())) for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader)]
    assert sum(len(b["image"]) for b in batches) == 9
    for batch in batches:
        assert batch["image"].shape[1:] == (3, 32, 32) and batch["mask"].shape[1:] == (32, 32)
    found = set().union(*(b["mask"].unique().tolist() for b in batches))
    assert found == {0, 1, 2, 255}  # 255: the letterbox padding of the wide pair


@pytest.mark.parametrize("preset", available_presets())
def test_masks_stay_aligned_with_the_image_through_every_preset(preset: str) -> None:
    """A bright square and its mask go through the preset's spatial transforms (colour changes and cut-outs
    would blur the test): the mask covers the square's pixels (IoU ≥ 0.85, the edges being interpolated
    differently, and centres within 1 px, when the square stays in view) and holds only valid ids or the
    ignore value."""
    rng = np.random.default_rng(4)
    spatial = [t for t in load_preset(preset) if isinstance(t, A.DualTransform) and not isinstance(t, A.CoarseDropout)]
    transform = build_transform(
        spatial, image_size=64, targets=("image", "mask"), mean=(0, 0, 0), std=(1, 1, 1),
        mask_fill=255, seed=7,
    )  # fmt: skip
    checked = 0
    for _ in range(20):
        image = np.full((96, 96, 3), 30, dtype=np.uint8)
        mask = np.zeros((96, 96), dtype=np.uint8)
        y0, x0 = (int(v) for v in rng.integers(20, 50, 2))
        image[y0 : y0 + 28, x0 : x0 + 28] = 230
        mask[y0 : y0 + 28, x0 : x0 + 28] = 2
        out = transform(image=image, mask=mask)
        out_mask = out["mask"].numpy()
        assert set(np.unique(out_mask)) <= {0, 2, 255}
        bright = out["image"].numpy().mean(0) > 0.5
        square = out_mask == 2
        if square.sum() < 200:
            continue
        assert (bright & square).sum() / (bright | square).sum() >= 0.85, preset
        centres = [np.argwhere(region).mean(0) for region in (bright, square)]
        assert np.abs(centres[0] - centres[1]).max() <= 1.0, preset
        checked += 1
    assert checked >= 10


def test_the_kaggle_layout_is_found_and_named_in_the_scan_summary(tmp_path: Path) -> None:
    """root/{train,val}/{images,masks}/ (no test/: carved out of train) reads like images/ + masks/."""
    root = tmp_path / "kaggle"
    for split, count in (("train", 8), ("val", 3)):
        for i in range(count):
            write_pair(root / split, f"{split}{i}", blocks(1 + i % 2))
    source = MaskSource(root, class_names=NAMES)
    splits = source.splits(0.1, 0.25, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 3, 2]
    assert all("/val/images/" in p for p in splits["val"].images)
    assert "(layout root/{train,val,test}/images/ + masks/)" in source.reports["train"].summary()
    flat = MaskSource(pool(tmp_path), class_names=NAMES)
    flat.splits(0.2, 0.2, seed=0)
    assert "(layout root/images/ + root/masks/)" in flat.reports["all"].summary()
    (root / "train" / "images" / "train0.jpg").unlink()  # a mask without its image is named, layout or not
    with pytest.raises(VisionkitError, match=r"mask .*train0.png has no image in .*train/images"):
        MaskSource(root, class_names=NAMES).splits(0.1, 0.2, 0)
    with pytest.raises(VisionkitError, match="holds neither images/ and masks/ nor train/images/"):
        MaskSource(tmp_path / "kaggle" / "train" / "images", class_names=NAMES)


def test_num_classes_without_class_names_names_the_classes_by_id(tmp_path: Path) -> None:
    from tests.conftest import compose_config
    from visionkit.run import build_datamodule

    root = pool(tmp_path)
    assert MaskSource(root, num_classes=3).class_names() == ["0", "1", "2"]
    cfg = compose_config(
        tmp_path / "run", ["task=segmentation", "data=masks", f"data.root={root}", "data.num_classes=3"]
    )
    dm = build_datamodule(cfg.data, None, mean=cfg.model.mean, std=cfg.model.std)
    assert dm.class_names == ["0", "1", "2"] and dm.num_classes == 3
    cfg = compose_config(
        tmp_path / "run", ["task=segmentation", "data=masks", f"data.root={root}", "data.num_classes=4"]
    )
    dm = build_datamodule(cfg.data, None, mean=cfg.model.mean, std=cfg.model.std)
    dm.setup("fit")  # four named classes and masks with ids 0..2: fine (a class may be absent)
    assert dm.class_names == ["0", "1", "2", "3"]
