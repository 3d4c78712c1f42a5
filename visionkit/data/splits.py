"""Train/val/test splits: explicit ones from the source, or a seeded, stratified split of one pool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visionkit.errors import VisionkitError

SPLITS = ("train", "val", "test")


@dataclass
class SampleSet:
    """Images (file paths, or an in-memory N×H×W×3 uint8 array) and one target per image."""

    images: Sequence[str] | np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, indices: Sequence[int] | np.ndarray) -> SampleSet:
        """The samples at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        images = self.images[indices] if isinstance(self.images, np.ndarray) else [self.images[i] for i in indices]
        return SampleSet(images, self.targets[indices])


def multi_hot(class_ids: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) uint8 flags, 1 at each of `class_ids`: one image's labels in a multi-label set."""
    flags = np.zeros(num_classes, dtype=np.uint8)
    flags[np.asarray(class_ids, dtype=np.int64)] = 1
    return flags


def as_tags(splits: dict[str, SampleSet], num_classes: int) -> dict[str, SampleSet]:
    """Detection splits ((N, 5) box rows per image) as multi-label ones: each image tagged with the classes of its
    boxes (ignored boxes, negative classes, tag nothing)."""
    tagged = {}
    for name, samples in splits.items():
        rows = [np.asarray(t).reshape(-1, 5)[:, 0] for t in samples.targets]
        flags = np.stack([multi_hot(c[c >= 0].astype(np.int64), num_classes) for c in rows]) if rows else None
        tagged[name] = SampleSet(samples.images, flags if flags is not None else np.zeros((0, num_classes), np.uint8))
    return tagged


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices per split, shuffled with `seed` and drawn class by class so every split keeps the class mix.

    The same seed gives the same split on every machine and every DDP rank.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise VisionkitError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each be in [0, 1) "
            "and sum to less than 1"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    # Detection/segmentation targets are per-image arrays, multi-label ones rows of flags: one group, shuffled.
    strata = np.zeros(len(labels), dtype=np.int64) if labels.dtype == object or labels.ndim > 1 else labels
    for cls in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == cls))
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def split_pool(pool: SampleSet, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
    """Seeded stratified split of one pool of samples into train/val/test."""
    indices = stratified_split(np.asarray(pool.targets), val_fraction, test_fraction, seed)
    return {name: pool.subset(idx) for name, idx in indices.items()}


def complete_splits(
    given: dict[str, SampleSet], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, SampleSet]:
    """Keep the splits a source defines; carve the missing val/test out of train with the fractions."""
    need_val, need_test = "val" not in given, "test" not in given
    if not (need_val or need_test):
        return given
    parts = split_pool(given["train"], val_fraction if need_val else 0.0, test_fraction if need_test else 0.0, seed)
    return {"train": parts["train"], "val": given.get("val", parts["val"]), "test": given.get("test", parts["test"])}
