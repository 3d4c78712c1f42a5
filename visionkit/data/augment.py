"""One augmentation builder for every task: a list of albumentations transforms becomes a Compose that
resizes, augments (training only), normalizes with the backbone's mean/std and applies the same spatial
change to whatever targets the task has (image only, boxes, masks)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import albumentations as A
import cv2
import numpy as np
from omegaconf import OmegaConf

from visionkit.config.folders import config_dir
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

if TYPE_CHECKING:  # the resize steps load without PyTorch (predictors of exported files); batches need it
    import torch

# ToTensorV2 wraps read-only arrays (PIL-decoded images, memory-mapped caches) without copying them; torch warns
# that writing to such a tensor would be undefined. Nothing writes to it: collation stacks the samples into new
# memory before the in-place normalization, so the warning has nothing to act on.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

log = get_logger(__name__)

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


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is `long_side`, aspect kept, each side at least 1 px."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _first_op(height: int, width: int, mode: str) -> A.BasicTransform:
    if mode == "stretch":
        return A.Resize(height, width)
    if mode == "letterbox":
        return A.LongestMaxSize(max_size_hw=(height, width))
    if mode == "crop":
        return A.SmallestMaxSize(max_size_hw=(height, width))
    raise VisionkitError(f"data.resize={mode!r} is not a resize mode; choose one of {list(RESIZE_MODES)}")


def resize_ops(
    image_size: int | Sequence[int], mode: str, mask_fill: int = 0, fill: float = LETTERBOX_FILL
) -> list[A.BasicTransform]:
    """Bring any image to the network size: `stretch`, `letterbox` (keep aspect, pad with `fill`, the grey of
    8-bit pixels by default) or `crop` (centre)."""
    height, width = size_hw(image_size)
    first = _first_op(height, width, mode)
    if mode == "letterbox":
        pad = A.PadIfNeeded(
            min_height=height,
            min_width=width,
            border_mode=0,
            fill=fill,
            fill_mask=mask_fill,
            position="center",
        )
        return [first, pad]
    if mode == "crop":
        return [first, A.CenterCrop(height, width)]
    return [first]


@dataclass(frozen=True)
class FirstResize:
    """The pipeline's first, deterministic step (stretch to the size, or scale to fit inside or cover it), done
    as soon as an image is read: JPEGs then decode at reduced size, caches hold only what the pipeline uses,
    and the pipeline's own first step finds nothing left to do. Augmentations come after it either way."""

    image_size: tuple[int, int]
    mode: str

    def needed(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) this step makes of a picture of (height, width): the target in one side (both
        when stretching), the other rounded up, so the pipeline's own step leaves it as it is."""
        target_h, target_w = self.image_size
        if self.mode == "stretch":
            return target_h, target_w
        pick = min if self.mode == "letterbox" else max
        scale = pick(target_h / height, target_w / width)
        return max(1, math.ceil(height * scale - 1e-6)), max(1, math.ceil(width * scale - 1e-6))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """`image` at `needed(...)` (bilinear, as the pipeline's resize)."""
        height, width = self.needed(*image.shape[:2])
        if image.shape[:2] == (height, width):
            return image
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return resized[:, :, None] if resized.ndim == 2 else resized  # OpenCV drops a single channel's axis


def first_resize(image_size: int | Sequence[int], mode: str) -> FirstResize:
    """The first step of `resize_ops(image_size, mode)` as a FirstResize."""
    _first_op(*size_hw(image_size), mode)  # an unknown mode is named here
    return FirstResize(size_hw(image_size), mode)


def _fill_masks_with(transforms: Sequence[A.BasicTransform], value: int) -> None:
    """Make every spatial transform (nested ones too) pad masks with `value`, the ignored class id."""
    for transform in transforms:
        if getattr(transform, "fill_mask", None) is not None:  # None: the transform leaves masks alone (cut-out)
            transform.fill_mask = value
        _fill_masks_with(getattr(transform, "transforms", []), value)


# transforms that swap height and width: they keep a square size only
AXIS_SWAPS = tuple(
    getattr(A, name) for name in ("RandomRotate90", "Transpose", "D4", "SquareSymmetry") if hasattr(A, name)
)


def square_only_left_out(augment: Sequence[A.BasicTransform], image_size: int | Sequence[int]) -> list:
    """`augment` without the transforms that swap height and width (quarter turns, transposes) when the size is
    not square: every sample of a batch must keep the training size. The ones left out are logged."""
    height, width = size_hw(image_size)
    if height == width:
        return list(augment)
    kept = [op for op in augment if not isinstance(op, AXIS_SWAPS)]
    if len(kept) < len(augment):
        names = ", ".join(sorted({type(op).__name__ for op in augment if isinstance(op, AXIS_SWAPS)}))
        log.info(f"augment: {names} left out: it would swap the height and width of the {height}x{width} size")
    return kept


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
    normalize: bool = True,
    unit_pixels: bool = False,
) -> A.Compose:
    """Compose resize + `augment` + normalize + to-tensor for the given targets.

    With `normalize=False` images stay uint8 (C×H×W tensors): a quarter of the bytes through worker queues
    and pinned memory; `normalize_images` turns a batch into floats later, on the training device.

    targets: any of "image", "boxes" (with `class_labels` kept aligned) and "mask". Pass `augment=None`
    for validation/test. The result is called as `t(image=..., bboxes=..., class_labels=..., mask=...)`.
    Boxes less than `min_visibility` visible, under `min_area` px² or thinner than `min_side` px are dropped.
    Masks follow the image with nearest-neighbour interpolation; pixels padded in are `mask_fill`.
    `unit_pixels`: images arrive as float32 0..1 (`PixelFormat.to_unit`: scans, N bands) and are normalized
    here whatever `normalize` says, so batches leave the loader as normalized floats.
    """
    from albumentations.pytorch import ToTensorV2

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
    peak = 1.0 if unit_pixels else 255.0
    ops = [
        *resize_ops(image_size, resize, mask_fill, LETTERBOX_FILL / 255.0 * peak),
        *square_only_left_out(augment or [], image_size),
        *([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=peak)] if normalize or unit_pixels else []),
        ToTensorV2(),
    ]
    return A.Compose(ops, bbox_params=bbox_params, seed=seed)


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A uint8 (B, C, H, W) batch as float32 `(x / 255 - mean) / std` on the batch's device, the same values
    albumentations' Normalize gives; a float batch (normalized already) is returned as it is."""
    import torch

    if images.is_floating_point():
        return images
    scale = torch.tensor([255.0 * s for s in std], device=images.device).view(1, -1, 1, 1)
    shift = torch.tensor([255.0 * m for m in mean], device=images.device).view(1, -1, 1, 1)
    return images.to(torch.float32).sub_(shift).div_(scale)


# what the check tries when it lists the transforms that do work on a pixel format
_CANDIDATES = (
    "HorizontalFlip",
    "VerticalFlip",
    "RandomRotate90",
    "Affine",
    "RandomResizedCrop",
    "GridDistortion",
    "ElasticTransform",
    "CoarseDropout",
    "GaussianBlur",
    "GaussNoise",
    "RandomBrightnessContrast",
    "RandomGamma",
    "ColorJitter",
    "HueSaturationValue",
    "CLAHE",
)


def _works_on(transform: A.BasicTransform, channels: int, unit_range: bool) -> bool:
    """Whether `transform` (forced to apply) keeps an image of `channels` float32 bands intact: it runs, keeps
    the band count, and, for raw floats outside 0..1, does not touch pixel values (those transforms assume 0..1)."""
    import copy

    probe = copy.deepcopy(transform)
    inner = [probe, *getattr(probe, "transforms", [])]
    if not unit_range and any(isinstance(t, A.ImageOnlyTransform) for t in inner):
        return False
    for t in inner:
        t.p = 1.0
    image = np.random.default_rng(0).random((32, 32, channels), dtype=np.float32)
    try:
        out = A.Compose([probe], seed=0)(image=image)["image"]
    except Exception:
        return False
    return out.ndim == 3 and out.shape[2] == channels and out.dtype == np.float32


def check_augment(augment: Sequence[A.BasicTransform], channels: int, unit_range: bool = True) -> None:
    """Stop on augmentations that cannot work on the pixel format (colour jitter on 7 bands, brightness on raw
    Hounsfield units), naming them and the transforms that do work, before any training starts."""
    refused = [type(t).__name__ for t in augment if not _works_on(t, channels, unit_range)]
    if not refused:
        return
    working = [name for name in _CANDIDATES if hasattr(A, name) and _works_on(_candidate(name), channels, unit_range)]
    kind = f"{channels}-band" if unit_range else f"{channels}-band raw float32"
    raise VisionkitError(
        f"augment: {', '.join(refused)} cannot work on {kind} images; use augment=none or a list of transforms "
        f"that do, e.g. {', '.join(working)} (augment=flips works on any band count)"
    )


def _candidate(name: str) -> A.BasicTransform:
    if name == "RandomResizedCrop":
        return A.RandomResizedCrop(size=(32, 32))
    return getattr(A, name)()
