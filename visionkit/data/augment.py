"""One augmentation builder for every task: a list of albumentations transforms becomes a Compose that
resizes, augments (training only), normalizes with the backbone's mean/std and applies the same spatial
change to whatever targets the task has (image only, boxes, masks)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2
from omegaconf import OmegaConf

from visionkit.config import config_dir
from visionkit.errors import VisionkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "letterbox", "crop")
LETTERBOX_FILL = 114


def available_presets() -> list[str]:
    """Names of the shipped augmentation presets (`conf/augment/*.yaml`)."""
    return sorted(p.stem for p in (config_dir() / "augment").glob("*.yaml"))


def load_preset(name: str) -> list[A.BasicTransform]:
    """The training transforms of a shipped preset, instantiated (usable without Hydra)."""
    from hydra.utils import instantiate

    path = config_dir() / "augment" / f"{name}.yaml"
    if not path.is_file():
        raise VisionkitError(f"unknown augmentation preset {name!r}; choose one of {available_presets()}")
    return list(instantiate(OmegaConf.load(path).train or []))


def size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of an `image_size` config value: one int for square, or [height, width]."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


def resize_ops(image_size: int | Sequence[int], mode: str, mask_fill: int = 0) -> list[A.BasicTransform]:
    """Bring any image to the network size: `stretch`, `letterbox` (keep aspect, pad) or `crop` (centre)."""
    height, width = size_hw(image_size)
    if mode == "stretch":
        return [A.Resize(height, width)]
    if mode == "letterbox":
        return [
            A.LongestMaxSize(max_size_hw=(height, width)),
            A.PadIfNeeded(
                min_height=height,
                min_width=width,
                border_mode=0,
                fill=LETTERBOX_FILL,
                fill_mask=mask_fill,
                position="center",
            ),
        ]
    if mode == "crop":
        return [A.SmallestMaxSize(max_size_hw=(height, width)), A.CenterCrop(height, width)]
    raise VisionkitError(f"data.resize={mode!r} is not a resize mode; choose one of {list(RESIZE_MODES)}")


def _fill_masks_with(transforms: Sequence[A.BasicTransform], value: int) -> None:
    """Make every spatial transform (nested ones too) pad masks with `value`, the ignored class id."""
    for transform in transforms:
        if getattr(transform, "fill_mask", None) is not None:  # None: the transform leaves masks alone (cut-out)
            transform.fill_mask = value
        _fill_masks_with(getattr(transform, "transforms", []), value)


def build_transform(
    augment: Sequence[A.BasicTransform] | None,
    *,
    image_size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize: str = "stretch",
    targets: Collection[str] = ("image",),
    bbox_format: str = "yolo",
    min_visibility: float = 0.1,
    min_area: float = 1.0,
    min_side: float = 2.0,
    mask_fill: int = 0,
    seed: int | None = None,
) -> A.Compose:
    """Compose resize + `augment` + normalize + to-tensor for the given targets.

    targets: any of "image", "boxes" (with `class_labels` kept aligned) and "mask". Pass `augment=None`
    for validation/test. The result is called as `t(image=..., bboxes=..., class_labels=..., mask=...)`.
    Boxes less than `min_visibility` visible, under `min_area` px² or thinner than `min_side` px are dropped.
    Masks follow the image with nearest-neighbour interpolation; pixels padded in are `mask_fill`.
    """
    unknown = set(targets) - {"image", "boxes", "mask"}
    if unknown:
        raise ValueError(f"unknown augmentation targets {sorted(unknown)}")
    if "mask" in targets and mask_fill != 0:
        _fill_masks_with(augment or [], mask_fill)
    bbox_params = None
    if "boxes" in targets:
        bbox_params = A.BboxParams(
            format=bbox_format,
            label_fields=["class_labels"],
            min_visibility=min_visibility,
            min_area=min_area,
            min_width=min_side,
            min_height=min_side,
            clip=True,
        )
    ops = [
        *resize_ops(image_size, resize, mask_fill),
        *(augment or []),
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]
    return A.Compose(ops, bbox_params=bbox_params, seed=seed)
