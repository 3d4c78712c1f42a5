"""Ranges of visionkit's numeric config keys (sizes, counts, fractions, ports, seeds), checked after their types
by `visionkit.config.check_config`, so `data.image_size=0` is named here and not inside a library."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionkit.errors import VisionkitError

# Ranges of numeric keys (each number of a list value too), checked after the types: (test, what is expected).
_POSITIVE = (lambda v: v > 0, "a positive number")
_AT_LEAST_1 = (lambda v: v >= 1, "an integer of 1 or more")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
_FRACTION = (lambda v: 0 <= v <= 1, "a fraction from 0 to 1")
_BELOW_1 = (lambda v: 0 <= v < 1, "a fraction from 0 to below 1")
RANGES: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(
        (
            "data.image_size", "data.batch_size", "data.eval_batch_size", "stride", "max_frames", "batch_size",
            "image_size", "top_k", "max_det", "tile_size", "size", "workers", "max_batch_size", "max_image_pixels",
            "max_images", "opset", "nms_max_det", "check_batches", "batch_sizes", "rounds", "max_channels",
            "trainer.accumulate_grad_batches", "trainer.num_nodes", "steps", "n", "channels", "map_size", "patches",
            "data.per_identity", "k", "task.embedding_dim", "task.pairs", "data.channels", "calibration_images",
        ),
        _AT_LEAST_1,
    ),
    **dict.fromkeys(
        ("data.num_workers", "num_workers", "data.split_seed", "start", "feather", "triptychs", "data_images",
         "crop_margin", "data.bands", "viz.bands"),
        _NOT_NEGATIVE,
    ),
    **dict.fromkeys(("data.val_fraction", "data.test_fraction", "data.mosaic", "conf", "iou"), _FRACTION),
    **dict.fromkeys(("nms_conf", "nms_iou"), _FRACTION),
    **dict.fromkeys(("tile_overlap", "int8_tolerance"), _BELOW_1),
    **dict.fromkeys(
        ("data.cache_max_gb", "timeout", "max_upload_mb", "seconds", "scale", "end", "optimizer.lr"), _POSITIVE
    ),
    "batch_timeout": _NOT_NEGATIVE,
    "step_mb": _NOT_NEGATIVE,
    "shutdown_timeout": _NOT_NEGATIVE,
    "optimizer.weight_decay": _NOT_NEGATIVE,
    "seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295"),
    "cpu_threads": _AT_LEAST_1,
    "threshold": (lambda v: 0 <= v <= 2, "a cosine distance from 0 to 2"),
    "task.far": (lambda v: 0 < v < 1, "a false accept rate between 0 and 1 (1e-3 is usual)"),
    "port": (lambda v: 1024 <= v <= 65535, "a port from 1024 to 65535"),
    "trainer.max_epochs": (lambda v: v >= 1 or v == -1, "an integer of 1 or more (-1: no limit)"),
}  # fmt: skip


SIZE_KEYS = ("data.image_size", "image_size", "tile_size")  # one int, or [height, width]


def check_ranges(cfg: DictConfig) -> None:
    """Sizes, counts and fractions in their ranges (RANGES), named by key: `data.image_size=0` stops here,
    not inside albumentations. The split fractions must leave images to train on."""
    for key, (test, expected) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        numbers = value if isinstance(value, list) else [value]
        for number in numbers:
            if isinstance(number, (int, float)) and not isinstance(number, bool) and not test(number):
                raise VisionkitError(f"{key}={value!r}: expected {expected}")
    for key in SIZE_KEYS:
        size = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(size, ListConfig) and len(size) != 2:
            raise VisionkitError(f"{key}={list(size)}: expected one integer (a square) or [height, width]")
    fractions = [OmegaConf.select(cfg, f"data.{k}_fraction", default=0) for k in ("val", "test")]
    if all(isinstance(f, (int, float)) for f in fractions) and sum(fractions) >= 1:
        raise VisionkitError(
            f"data.val_fraction={fractions[0]} and data.test_fraction={fractions[1]} leave no images to train on: "
            "their sum must be below 1"
        )
