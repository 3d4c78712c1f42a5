"""One augmentation builder for all tasks: presets keep dtype/shape; boxes and masks stay aligned."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from visionkit.data import available_presets, build_transform, load_preset
from visionkit.data.mosaic import mosaic4
from visionkit.errors import VisionkitError

PRESETS = available_presets()


def test_presets_ship() -> None:
    assert {"none", "light", "strong", "yolo"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("shape", "size"), [((50, 70, 3), 32), ((8, 8, 3), (24, 40))])
@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
def test_presets_keep_dtype_and_shape(preset: str, shape: tuple, size, resize: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    transform = build_transform(load_preset(preset), image_size=size, resize=resize, seed=1)
    for _ in range(3):
        out = transform(image=image)["image"]
        height, width = (size, size) if isinstance(size, int) else size
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert tuple(out.shape) == (3, height, width)
        assert torch.isfinite(out).all()


def test_normalization_uses_given_mean_and_std() -> None:
    image = np.full((4, 4, 3), 255, dtype=np.uint8)
    out = build_transform(None, image_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(image=image)["image"]
    assert out[:, 0, 0].tolist() == pytest.approx([2.0, 1.0, 0.5])


@pytest.mark.parametrize("preset", PRESETS)
def test_boxes_and_masks_follow_the_image(preset: str) -> None:
    """A white rectangle, its box and its mask go through the same random transform together: the box
    still frames the object's pixels (to 2 px), and the mask keeps only valid ids."""
    rng = np.random.default_rng(3)
    transform = build_transform(
        load_preset(preset), image_size=64, targets=("image", "boxes", "mask"), resize="letterbox", seed=5
    )
    checked = 0
    for _ in range(20):
        image = np.zeros((80, 120, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(10, 60)), int(rng.integers(10, 40))
        image[y0 : y0 + 30, x0 : x0 + 40] = 255
        mask = np.zeros((80, 120), dtype=np.uint8)
        mask[y0 : y0 + 30, x0 : x0 + 40] = 2
        box = [(x0 + 20) / 120, (y0 + 15) / 80, 40 / 120, 30 / 80]  # yolo cx, cy, w, h
        out = transform(image=image, mask=mask, bboxes=[box], class_labels=[1])
        out_mask = out["mask"].numpy()
        assert out_mask.shape == (64, 64) and set(np.unique(out_mask)) <= {0, 2}
        ys, xs = np.nonzero(out_mask)
        touches_border = len(xs) and (xs.min() == 0 or ys.min() == 0 or xs.max() == 63 or ys.max() == 63)
        if len(xs) < 30 or touches_border:
            continue  # the object left the view or was cut: its box is clipped, not comparable
        assert list(out["class_labels"]) == [1]
        cx, cy, w, h = (v * 64 for v in out["bboxes"][0])
        box_px = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        mask_px = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(box_px - mask_px).max() <= 2.0, (preset, box_px, mask_px)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("preset", ["none", "yolo"])
def test_mosaic_boxes_frame_their_objects(preset: str) -> None:
    """Four images of different sizes, one rectangle each (colour = class), tiled by the mosaic and pushed
    through a preset: every output box frames the pixels of its own object (to 2 px)."""
    rng = np.random.default_rng(1)
    picker = random.Random(2)
    transform = build_transform(
        load_preset(preset),
        image_size=96,
        targets=("image", "boxes"),
        resize="letterbox",
        mean=(0, 0, 0),
        std=(1, 1, 1),
        seed=2,
    )
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255))  # blends with black/grey never match

    def item(cls: int) -> tuple[np.ndarray, np.ndarray]:
        height, width = int(rng.integers(60, 140)), int(rng.integers(60, 140))
        image = np.zeros((height, width, 3), dtype=np.uint8)
        w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y0 : y0 + h, x0 : x0 + w] = colours[cls]
        return image, np.array([[cls, (x0 + w / 2) / width, (y0 + h / 2) / height, w / width, h / height]])

    seen = 0
    for _ in range(10):
        image, boxes = mosaic4([item(c) for c in range(4)], (96, 96), picker, scale=(0.5, 1.5), translate=0.1)
        assert image.shape == (96, 96, 3) and ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()
        out = transform(image=image, bboxes=boxes[:, 1:], class_labels=boxes[:, 0])
        assert out["image"].shape == (3, 96, 96) and len(out["bboxes"]) == len(out["class_labels"])
        if preset != "none":
            continue  # colour jitter changes the colours: geometry is checked with the "none" preset
        rgb = np.rint(out["image"].numpy() * 255).transpose(1, 2, 0)
        for box, cls in zip(out["bboxes"], out["class_labels"]):
            cx, cy, w, h = (v * 96 for v in box)
            ys, xs = np.nonzero((np.abs(rgb - colours[int(cls)]) < 3).all(-1))
            box_px = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            pixels = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(box_px - pixels).max() <= 2.0, (cls, box_px, pixels)
            seen += 1
    assert preset != "none" or seen >= 15


def test_seeded_transform_repeats() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = build_transform(load_preset("strong"), image_size=32, seed=7)
    b = build_transform(load_preset("strong"), image_size=32, seed=7)
    assert torch.equal(a(image=image)["image"], b(image=image)["image"])


def test_unknown_preset_and_resize_mode() -> None:
    with pytest.raises(VisionkitError, match="unknown augmentation preset 'heavy'"):
        load_preset("heavy")
    with pytest.raises(VisionkitError, match=r"data\.resize='squash'"):
        build_transform(None, image_size=8, resize="squash")


def test_hsv_gain_scales_value_and_saturation_in_hsv_space() -> None:
    import cv2

    from visionkit.data.transforms import RandomHSVGain

    image = np.random.default_rng(0).integers(30, 200, (16, 16, 3), dtype=np.uint8)
    same = RandomHSVGain(0.0, 0.0, 0.0).apply(image, gains=np.ones(3))
    assert np.abs(same.astype(int) - image).max() <= 3  # HSV round trip only
    brighter = RandomHSVGain().apply(image, gains=np.array([1.0, 1.0, 1.2]))
    value = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 2].astype(float)
    expected = (value * 1.2).clip(0, 255).mean()
    assert cv2.cvtColor(brighter, cv2.COLOR_RGB2HSV)[..., 2].mean() == pytest.approx(expected, abs=2)
    grey = RandomHSVGain().apply(image, gains=np.array([1.0, 0.0, 1.0]))
    assert np.abs(grey[..., 0].astype(int) - grey[..., 1]).max() <= 1  # saturation 0: grey
