"""Map-style datasets that read one sample (image + target), augment it, and name any bad file."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from visionkit.data.augment import FirstResize
from visionkit.data.batch_augment import BatchAugment
from visionkit.data.decoded import Decoded, ImageReader
from visionkit.data.mask_files import MaskReader
from visionkit.data.mosaic import mosaic4
from visionkit.data.resumable import SampleKey, global_seed, sample_seed, split_keys
from visionkit.data.shards import StoreUnreachable
from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import UnreadableImage, check_image
from visionkit.utils.logging import get_logger

log = get_logger(__name__, rank_zero_only=False)


def bad_image_error(path: str, reason: str, more: int = 0) -> VisionkitError:
    """The one message for an unreadable training image, whether the up-front scan or the decoder found it."""
    also = f" (and {more} more)" if more else ""
    return VisionkitError(
        f"bad image {path}: {reason}{also}; delete or replace it, or set data.skip_bad_images=true to skip bad images"
    )


def find_bad_images(paths: Sequence[str], threads: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for every file that fails a quick integrity check, checked in parallel threads."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(check_image, paths, chunksize=64))
    return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def drop_bad_images(split: str, samples: SampleSet, skip_bad_images: bool) -> SampleSet:
    """Scan a split's files once before training: stop on the first bad one, or drop and count them."""
    if not isinstance(samples.images, list):
        return samples  # in-memory arrays need no scan
    bad = find_bad_images(samples.images)
    if not bad:
        return samples
    first_path, first_reason = bad[0]
    if not skip_bad_images:
        raise bad_image_error(first_path, first_reason, len(bad) - 1)
    bad_paths = {path for path, _ in bad}
    keep = [i for i, path in enumerate(samples.images) if path not in bad_paths]
    log.warning(f"{split}: skipped {len(bad)} bad image(s), e.g. {first_path}: {first_reason}", rank=0)
    return samples.subset(keep)


class ImageSampleDataset(Dataset):
    """Reads one image and its target, augments them together; subclasses shape the sample dict.

    A file that cannot be decoded stops with its path, or, with `skip_bad_images`, is replaced by the
    next readable sample and reported once (the data module removes the ones its scan finds up front).
    """

    targets: tuple[str, ...] = ("image",)  # what the augmentation pipeline must carry along
    batched: BatchAugment | None = None  # in-memory images augmented a batch at a time (`__getitems__`)

    def __init__(
        self,
        samples: SampleSet,
        transform: A.Compose,
        skip_bad_images: bool = False,
        *,
        first: FirstResize | None = None,
        reader: ImageReader | None = None,
    ) -> None:
        """first: the pipeline's first resize, done when an image is read (JPEGs decode at reduced size;
        in-memory images are resized once, here). reader: reads image files (with a cache); by default one
        without cache."""
        self.samples = samples
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self._seeded_for: tuple[int, int] | None = None
        images = samples.images
        if isinstance(images, np.ndarray):
            self._array_size = (int(images.shape[1]), int(images.shape[2]))
            if first is not None and len(images):
                self.samples = SampleSet(np.stack([first(image) for image in images]), samples.targets)
            self.reader = None
        else:
            self.reader = reader or ImageReader(list(images), first, None)

    def __len__(self) -> int:
        return len(self.samples)

    def _reseed(self, epoch: int | None = None, index: int = 0) -> None:
        """Seed the augmentation of sample `index` in `epoch` from the run's seed alone (training, through
        `ResumableSampler`: a resumed run draws what the uninterrupted one drew), or, without an epoch, give
        each DataLoader worker its own stream: torch.initial_seed() is the loader's base seed + worker id.
        """
        if epoch is not None:
            seed = sample_seed(global_seed(), epoch, index)
            self.transform.set_random_seed(seed)
            if self.batched is not None:
                self.batched.seed(seed)
            self._seeded_for = None
            return
        key = (os.getpid(), torch.initial_seed())
        if key != self._seeded_for:
            self.transform.set_random_seed(int(torch.initial_seed() % 2**31))
            if self.batched is not None:
                self.batched.seed(int(torch.initial_seed() % 2**31))
            self._seeded_for = key

    def load(self, index: int) -> Decoded:
        """Sample `index`'s image at the pipeline's first size, and the image's full size: HxWx3 uint8 RGB, or,
        for another pixel format, HxWxC float32 0..1 (`PixelFormat.to_unit`)."""
        if self.reader is None:  # the images are in memory, an N×H×W×C array
            return cast(np.ndarray, self.samples.images)[index], self._array_size
        try:
            pixels, full = self.reader(index)
        except UnreadableImage as exc:
            error = bad_image_error(str(exc.path), exc.reason)
            error.reported = exc.reported
            raise error from None
        return (pixels, full) if self.reader.fmt.rgb8 else (self.reader.fmt.to_unit(pixels), full)

    def read(self, index: int) -> np.ndarray:
        """Sample `index`'s image at the pipeline's first size."""
        return self.load(index)[0]

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Augment `image` (at the first size) with its `target` (for the image's `full_size`), as a sample dict."""
        raise NotImplementedError

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor]:
        (index,), epoch = split_keys([key])
        self._reseed(epoch, index)
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                image, full = self.load(current)
            except StoreUnreachable:
                raise  # not the sample's fault: stop (with a checkpoint) instead of skipping the rest
            except VisionkitError as exc:
                if not self.skip_bad_images:
                    raise
                if not exc.reported:
                    log.warning(f"skipped {str(exc).split(';')[0]}")
                continue
            return self.make_sample(image, self.samples.targets[current], current, full)
        raise VisionkitError("every image in this split is unreadable")


class ClassificationDataset(ImageSampleDataset):
    """Samples `{"image": CxHxW uint8 tensor, "label": int64 tensor}` from images and class ids. In-memory
    images whose pipeline `BatchAugment` can run are augmented a whole batch at a time (DataLoader's
    `__getitems__`): the built-in digits' loader then delivers several times what LeNet-5 consumes."""

    def __init__(self, samples: SampleSet, transform: A.Compose, skip_bad_images: bool = False, **reading: Any) -> None:
        super().__init__(samples, transform, skip_bad_images, **reading)
        images = self.samples.images
        if isinstance(images, np.ndarray) and images.ndim == 4:
            self.batched = BatchAugment.from_pipeline(transform, images.shape[1:3])

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {"image": self.transform(image=image)["image"], "label": torch.as_tensor(target)}

    def __getitems__(self, keys: list[int | SampleKey]) -> list[dict[str, torch.Tensor]]:
        if self.batched is None:
            return [self[key] for key in keys]
        indices, epoch = split_keys(keys)
        self._reseed(epoch, indices[0])  # one draw per batch: seeded by the batch's epoch and first sample
        images = self.batched(cast(np.ndarray, self.samples.images)[indices])  # batched: only in-memory sets
        labels = torch.as_tensor(self.samples.targets[indices])
        return [{"image": image, "label": label} for image, label in zip(images, labels)]


class IdentityDataset(ClassificationDataset):
    """Samples `{"image", "label": identity id, "index"}`: the embedding task gathers a split's embeddings by
    index (verification pairs name images, and DDP ranks see interleaved shares)."""

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {**super().make_sample(image, target, index, full_size), "index": torch.tensor(index)}

    def __getitems__(self, keys: list[int | SampleKey]) -> list[dict[str, torch.Tensor]]:
        samples = super().__getitems__(keys)
        if self.batched is not None:
            indices, _ = split_keys(keys)
            samples = [{**sample, "index": torch.tensor(i)} for sample, i in zip(samples, indices)]
        return samples


class PhotoDataset(ImageSampleDataset):
    """Samples `{"image", "index"}` from unlabelled photos (the fast stylizer's training data)."""

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        return {"image": self.transform(image=image)["image"], "index": torch.tensor(index)}


class DetectionDataset(ImageSampleDataset):
    """Samples `{"image", "boxes" (M, 4) normalized cx cy w h, "classes" (M,), "index"}` from images and
    (N, 5) `class cx cy w h` arrays; boxes go through the same spatial augmentation as the image.

    With `mosaic > 0` and a `mosaic_size`, that share of samples is first tiled 2x2 with three random
    others (ultralytics' main detection augmentation) and zoomed/shifted on the tiled canvas by
    `mosaic_scale`/`mosaic_translate`, then augmented by `mosaic_transform` (the pipeline without its
    affine step, which the mosaic took over). The share lives in
    shared memory, so `set_mosaic(0)` reaches DataLoader workers that already run.
    """

    targets = ("image", "boxes")

    def __init__(
        self,
        samples: SampleSet,
        transform: A.Compose,
        skip_bad_images: bool = False,
        mosaic: float = 0.0,
        mosaic_size: tuple[int, int] | None = None,
        mosaic_transform: A.Compose | None = None,
        mosaic_scale: tuple[float, float] = (1.0, 1.0),
        mosaic_translate: float = 0.0,
        **reading: Any,
    ) -> None:
        super().__init__(samples, transform, skip_bad_images, **reading)
        self.mosaic_size = mosaic_size
        self.mosaic_transform = mosaic_transform or transform
        self.mosaic_scale = mosaic_scale
        self.mosaic_translate = mosaic_translate
        self._mosaic = torch.tensor([mosaic if mosaic_size is not None else 0.0]).share_memory_()
        self._rng = random.Random(0)
        self._rng_seeded_for: tuple[int, int] | None = None
        self._recent: dict[int, np.ndarray] = {}  # last decoded images of this worker, oldest first

    buffer_size = 64

    @property
    def mosaic_probability(self) -> float:
        return float(self._mosaic[0])

    def set_mosaic(self, probability: float) -> None:
        """Change the mosaic share (0 turns it off), also in DataLoader workers that already run."""
        self._mosaic.fill_(probability)

    def _reseed(self, epoch: int | None = None, index: int = 0) -> None:
        super()._reseed(epoch, index)
        if epoch is not None:
            self._rng.seed(sample_seed(global_seed(), epoch, index) + 1)
            self._rng_seeded_for = None
        elif self._rng_seeded_for != self._seeded_for:
            self._rng.seed(int(torch.initial_seed() % 2**31) + 1)
            self._rng_seeded_for = self._seeded_for

    def _mosaic_of(
        self, image: np.ndarray, target: Any, index: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tile with three partners drawn from the images this worker decoded last (ultralytics' buffer):
        one decode per sample instead of four; random indices until the buffer fills."""
        items = [(image, target)]
        pool = [i for i in self._recent if i != index]
        partners = (
            self._rng.sample(pool, k=3) if len(pool) >= 3 else self._rng.sample(range(len(self)), k=min(3, len(self)))
        )
        for other in partners:
            try:
                items.append(
                    (
                        self._recent[other] if other in self._recent else self.read(other),
                        self.samples.targets[other],
                    )
                )
            except VisionkitError:
                continue  # a bad partner leaves its quarter empty
        while len(items) < 4:
            items.append((np.full_like(image, 114), np.zeros((0, 5), np.float32)))
        return mosaic4(items, size, self._rng, self.mosaic_scale, self.mosaic_translate)

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        transform = self.transform
        if self.mosaic_size is not None and self._rng.random() < self.mosaic_probability:
            self._recent[index] = image
            while len(self._recent) > self.buffer_size:
                self._recent.pop(next(iter(self._recent)))
            image, target = self._mosaic_of(image, target, index, self.mosaic_size)
            transform = self.mosaic_transform
        boxes = np.asarray(target, dtype=np.float32).reshape(-1, 5)
        out = transform(image=image, bboxes=np.clip(boxes[:, 1:], 0.0, 1.0), class_labels=boxes[:, 0])
        kept = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return {
            "image": out["image"],
            "boxes": torch.from_numpy(kept),
            "classes": torch.as_tensor(np.asarray(out["class_labels"], dtype=np.int64)),
            "index": torch.tensor(index),
        }


class SegmentationDataset(ImageSampleDataset):
    """Samples `{"image", "mask" (H, W) int64 class ids, "index"}` from images and mask files; the mask goes
    through the same spatial augmentation as the image (nearest-neighbour, padding with `mask_fill`)."""

    targets = ("image", "mask")

    def __init__(
        self,
        samples: SampleSet,
        transform: A.Compose,
        skip_bad_images: bool = False,
        *,
        mask_reader: MaskReader,
        **reading: Any,
    ) -> None:
        super().__init__(samples, transform, skip_bad_images, **reading)
        self.mask_reader = mask_reader

    def make_sample(
        self, image: np.ndarray, target: Any, index: int, full_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        mask = self.mask_reader.read(target)
        if mask.shape != tuple(full_size):
            raise VisionkitError(
                f"mask {target} is {mask.shape[1]}x{mask.shape[0]} px but its image {self.samples.images[index]} "
                f"is {full_size[1]}x{full_size[0]}; a mask must have its image's size"
            )
        if mask.shape != image.shape[:2]:  # the image was read at the pipeline's first size: the mask follows
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": torch.as_tensor(out["mask"]).long(), "index": torch.tensor(index)}


def detection_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack images; concatenate boxes with the image each belongs to (the batch layout ultralytics'
    detection loss reads: `batch_idx` (N,), `cls` (N, 1), `bboxes` (N, 4) normalized cx cy w h)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "index": torch.stack([s["index"] for s in samples]),
        "batch_idx": torch.cat(
            [torch.full((len(s["classes"]),), i, dtype=torch.float32) for i, s in enumerate(samples)]
        ),
        "cls": torch.cat([s["classes"].float() for s in samples]).reshape(-1, 1),
        "bboxes": torch.cat([s["boxes"] for s in samples]).reshape(-1, 4),
    }
