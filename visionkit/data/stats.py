"""`data.mean=auto` / `data.std=auto`: per-channel statistics of the training split, measured once on a seeded
sample of its images (as the pipeline sees them: first resize, 0..1 scaling) and kept in the dataset cache, so
every later run, rank and worker reuses them; the data module stores them in each checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from visionkit.data.cache import default_cache_dir
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

SAMPLE = 256  # images measured: the statistics of 256 images agree with the full split's to a few 1e-3


def channel_stats(
    paths: Sequence[str],
    read: Callable[[int], np.ndarray],
    key: str,
    cache_dir: str | Path | None = None,
    sample: int = SAMPLE,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of up to `sample` images (`read(i)`: image i as HxWxC 0..1 floats), cached under
    a key of the file list and `key` (the pixel format and size)."""
    digest = hashlib.sha1(("\n".join(paths) + "|" + key).encode()).hexdigest()
    entry = Path(cache_dir or default_cache_dir()) / "stats" / f"{digest}.json"
    if entry.is_file():
        try:
            saved = json.loads(entry.read_text())
            return tuple(saved["mean"]), tuple(saved["std"])
        except (OSError, ValueError, KeyError):
            pass  # measured and written again
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False).tolist())
    sums = []
    for index in picked:
        image = read(index)
        flat = image.reshape(-1, image.shape[2]).astype(np.float64)
        sums.append((flat.sum(0), (flat**2).sum(0), len(flat)))
    total = np.sum([s[0] for s in sums], axis=0)
    total_sq = np.sum([s[1] for s in sums], axis=0)
    count = sum(s[2] for s in sums)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant band: left unscaled rather than divided by zero
    result = tuple(float(f"{v:.7g}") for v in mean), tuple(float(f"{v:.7g}") for v in std)
    with atomic_write(entry, "w") as out:
        json.dump({"mean": result[0], "std": result[1], "images": len(picked)}, out)
    log.info(f"data.mean=auto, data.std=auto from {len(picked)} training images: mean {result[0]}, std {result[1]}")
    return result


def split_stats(
    paths: Sequence[str], read: Callable[[int], np.ndarray], key: str, cache_dir: str | Path | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`channel_stats` of a split whose `read(i)` gives image i as the dataset reads it: 8-bit RGB scaled to 0..1,
    other formats 0..1 floats already."""

    def unit(index: int) -> np.ndarray:
        image = read(index)
        return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image

    return channel_stats(paths, unit, key, cache_dir)


class ChannelStats:
    """A data module's normalization: the mean and std given (lists), or "auto", measured by `measure()` the first
    time either is asked for (after the splits exist) and kept."""

    def __init__(self, mean: Sequence[float] | str, std: Sequence[float] | str, measure: Callable[[], tuple]) -> None:
        self.given = {"mean": mean, "std": std}
        self._values: dict[str, tuple[float, ...]] = {}
        self._measure = measure

    def get(self, key: str) -> tuple[float, ...]:
        """The `key` ("mean" or "std") statistic, one value per channel."""
        if key not in self._values:
            given = self.given[key]
            if given == "auto":
                self._values.update(zip(("mean", "std"), self._measure()))
            else:
                self._values[key] = tuple(float(v) for v in given)
        return self._values[key]
