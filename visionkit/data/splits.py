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
    # Detection/segmentation targets are per-image arrays: one group, shuffled (no class to stratify by).
    strata = np.zeros(len(labels), dtype=np.int64) if labels.dtype == object else labels
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
