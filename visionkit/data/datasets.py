"""Map-style datasets that read one sample (image + target), augment it, and name any bad file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import check_image, read_image
from visionkit.utils.logging import get_logger

log = get_logger(__name__, rank_zero_only=False)


def find_bad_images(paths: Sequence[str], threads: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for every file that fails a quick integrity check, checked in parallel threads."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(check_image, paths, chunksize=64))
    return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


class ClassificationDataset(Dataset):
    """Samples `{"image": CxHxW float tensor, "label": int64 tensor}` from images and class ids.

    A file that cannot be decoded stops with its path, or, with `skip_bad_images`, is replaced by the
    next readable sample and reported once (the data module removes the ones its scan finds up front).
    """

    def __init__(self, samples: SampleSet, transform: A.Compose, skip_bad_images: bool = False) -> None:
        self.samples = samples
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self._seeded_for: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _reseed(self) -> None:
        """Give each DataLoader worker its own augmentation stream, derived from the global seed.

        In a worker, torch.initial_seed() is the loader's base seed + worker id, so streams differ per
        worker yet repeat run to run when `seed` is set.
        """
        key = (os.getpid(), torch.initial_seed())
        if key != self._seeded_for:
            self.transform.set_random_seed(int(torch.initial_seed() % 2**31))
            self._seeded_for = key

    def read(self, index: int) -> np.ndarray:
        """The raw HxWx3 uint8 RGB image of sample `index`."""
        images = self.samples.images
        if isinstance(images, np.ndarray):
            return images[index]
        return read_image(images[index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self._reseed()
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                image = self.read(current)
            except VisionkitError as exc:
                if not self.skip_bad_images:
                    raise
                log.warning(f"skipped bad image: {exc}")
                continue
            out = self.transform(image=image)
            return {"image": out["image"], "label": torch.as_tensor(self.samples.targets[current])}
        raise VisionkitError("every image in this split is unreadable")
