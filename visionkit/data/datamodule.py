"""One LightningDataModule for every task: splits from a source, one augmentation builder, DDP-safe loaders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from visionkit.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transform,
    first_resize,
    load_preset,
    normalize_images,
    size_hw,
)
from visionkit.data.datasets import (
    ClassificationDataset,
    DetectionDataset,
    IdentityDataset,
    ImageSampleDataset,
    PhotoDataset,
    SegmentationDataset,
    detection_collate,
    drop_bad_images,
)
from visionkit.data.decoded import build_reader, check_cache_kind
from visionkit.data.pixels import RGB8, PixelFormat, check_in_memory, check_pixel_format
from visionkit.data.resumable import ChunkedSampler, GroupedSampler, ResumableSampler, global_seed, lone_last_image
from visionkit.data.splits import SPLITS, SampleSet
from visionkit.data.stats import ChannelStats, split_stats
from visionkit.data.timed_loader import TimedLoader
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


class DataSource(Protocol):
    """Where samples come from: a format reader that knows its classes and its splits.

    Optional attributes: `task` ("classification" by default; "detection": per-image (N, 5) box arrays as
    targets; "segmentation": mask file paths as targets, read by the source's `mask_reader`, padding filled
    with its `ignore_index`; "style_transfer": unlabelled photos) and `scans_images` (True when the source
    already checked every file), `image_size` ((height, width) a packed dataset was made for) and `resize` (its
    source's resize mode).
    """

    description: str

    def class_names(self) -> list[str]: ...

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]: ...


class VisionDataModule(L.LightningDataModule):
    """Loaders for train/val/test built from a `DataSource`, the shared augmentation and the model's stats.

    `augment` is a preset name ("none", "light", "strong") or a list of albumentations transforms, applied
    to training images only; every split is resized to `image_size` (None: a packed dataset's own size) and
    normalized with `mean`/`std`.
    `num_classes`, when given, must agree with the data (it is checked, never trusted blindly).
    Lightning adds the DistributedSampler under DDP; the seeded split is identical on every rank.
    `mosaic` (detection): share of training samples built as a 2x2 mosaic of four images.

    Images are read at the size the pipeline first needs (JPEGs decoded at 1/2, 1/4 or 1/8 scale when that
    covers it) and travel as uint8 until Lightning has moved the batch to the device, where
    `on_after_batch_transfer` normalizes them (call `normalize_batch` when iterating a loader by hand).
    `cache`: "ram" decodes every image once into shared memory (at most `cache_max_gb`, default half the
    memory available), "disk" keeps decoded images as files under `cache_dir` for later epochs and runs.
    `per_identity` (embeddings): training batches hold that many images of each identity (`GroupedSampler`).
    `pixel_format`: channels, type and bands of the images (8-bit RGB by default); any other format is read as
    stored, scaled to 0..1 floats and normalized in the workers, and `mean`/`std` may be "auto" (measured per
    channel on the training split).
    """

    def __init__(
        self,
        source: DataSource,
        *,
        image_size: int | Sequence[int] | None = 224,
        num_classes: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        augment: str | Sequence[A.BasicTransform] | None = "light",
        resize: str | None = "stretch",
        mean: Sequence[float] | str = IMAGENET_MEAN,
        std: Sequence[float] | str = IMAGENET_STD,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        skip_bad_images: bool = False,
        eval_batch_size: int | None = None,
        mosaic: float = 0.0,
        cache: str | None = None,
        cache_dir: str | None = None,
        cache_max_gb: float | None = None,
        per_identity: int | None = None,
        pixel_format: PixelFormat = RGB8,
    ) -> None:
        super().__init__()
        self.pixel_format = pixel_format
        if per_identity and batch_size % int(per_identity):
            raise VisionkitError(
                f"data.batch_size={batch_size} is not a multiple of data.per_identity={per_identity}: a batch holds "
                f"{per_identity} images of each of batch_size / per_identity identities"
            )
        self.per_identity = int(per_identity) if per_identity else None
        check_cache_kind(cache)
        self.cache, self.cache_dir, self.cache_max_gb = cache, cache_dir, cache_max_gb
        self.source = source
        self.image_size = image_size if image_size is not None else packed_size(source)
        self.expected_num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.augment = load_preset(augment) if isinstance(augment, str) else list(augment or [])
        self.resize = resize or getattr(source, "resize", None) or "stretch"  # None: a pack's own
        self._stats = ChannelStats(mean, std, self.measured_stats)
        check_pixel_format(pixel_format, getattr(source, "task", "classification"), self.augment, self._stats.given)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.skip_bad_images = skip_bad_images
        self.mosaic = mosaic
        self.datasets: dict[str, ImageSampleDataset] = {}
        self.train_sampler: ResumableSampler | None = None  # the latest training loader's, for resume_at
        self._resume_point: tuple[int, int] | None = None
        task = getattr(source, "task", "classification")
        self.dataset_class: type[ImageSampleDataset] = {
            "detection": DetectionDataset,
            "segmentation": SegmentationDataset,
            "style_transfer": PhotoDataset,
            "embedding": IdentityDataset,
        }.get(task, ClassificationDataset)
        self.collate_fn = detection_collate if task == "detection" else None
        ignore_index = getattr(source, "ignore_index", None)
        self.mask_fill = 0 if ignore_index is None else int(ignore_index)  # padded mask pixels
        self._splits: dict[str, SampleSet] | None = None

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean the images are normalized with (measured on the training split when auto)."""
        return self._stats.get("mean")

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation the images are normalized with (measured when auto)."""
        return self._stats.get("std")

    def measured_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the training split's images as the pipeline reads them (`data.mean=auto`)."""
        train = self._load_splits()["train"]
        reading = self._reading("stats", train)
        if "reader" not in reading:
            raise VisionkitError(f"data.mean=auto needs image files; {self.source.description} is held in memory")
        key = f"{self.pixel_format.state()}|{self.image_size}|{self.resize}"
        return split_stats(
            cast(Sequence[str], train.images), ImageSampleDataset(train, None, **reading).read, key, self.cache_dir
        )

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order, as the data defines them."""
        return list(self.source.class_names())

    @property
    def num_classes(self) -> int:
        """Number of classes found in the data, checked against the configured `num_classes`."""
        found = len(self.class_names)
        if self.expected_num_classes is not None and int(self.expected_num_classes) != found:
            names = ", ".join(self.class_names[:12]) + (" ..." if found > 12 else "")
            raise VisionkitError(
                f"data.num_classes={self.expected_num_classes} but {self.source.description} has {found} "
                f"classes ({names}); set data.num_classes={found} or leave it unset (null)"
            )
        return found

    def state_dict(self) -> dict[str, object]:
        """The model's input contract, saved in every checkpoint (size, resize mode, stats, class names)."""
        size = self.image_size if isinstance(self.image_size, int) else [int(v) for v in self.image_size]
        return {
            "image_size": size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": self.class_names,
            **({} if self.pixel_format.rgb8 else {"pixels": self.pixel_format.state()}),
        }

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        """Nothing to restore: the data config of the resumed run defines the data."""

    def transform(self, train: bool, augment: Sequence[A.BasicTransform] | None = None) -> A.Compose:
        """The augmentation pipeline for training (`train=True`, `augment` or the data module's) or evaluation."""
        return build_transform(
            (self.augment if augment is None else augment) if train else None,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            resize=self.resize,
            targets=self.dataset_class.targets,
            mask_fill=self.mask_fill,
            normalize=False,
            unit_pixels=not self.pixel_format.rgb8,
        )

    def normalize_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its uint8 images as normalized floats (on the images' device)."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
            batch["image"] = normalize_images(batch["image"], self.mean, self.std)
        return batch

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Lightning's hook after the batch reached the device: normalization happens there (on the GPU when
        training on one), so loaders and workers move a quarter of the bytes."""
        return self.normalize_batch(batch)

    def _reading(self, name: str, samples: SampleSet, mosaic: bool = True) -> dict[str, Any]:
        """How the split's images are read: at the first resize's size, through the configured cache."""
        # a mosaic fits each tile inside the size; the samples left whole are resized as configured: covering
        # the size serves both when that is a stretch
        mosaic_stretch = mosaic and self.mosaic_split(name) and self.resize == "stretch"
        first = first_resize(self.image_size, "crop" if mosaic_stretch else self.resize)
        packed = getattr(self.source, "reader", None)  # a packed dataset reads its own shards (data=stream)
        if packed is not None:
            return {"first": first, "reader": packed(name, first, self.pixel_format)}
        if not isinstance(samples.images, list):
            check_in_memory(self.pixel_format, self.source.description)
            return {"first": first}
        max_bytes = None if self.cache_max_gb is None else int(self.cache_max_gb * 2**30)
        cache = None if name == "stats" else self.cache
        reader = build_reader(samples.images, first, cache, self.cache_dir, max_bytes, name, self.pixel_format)
        return {"first": first, "reader": reader}

    def mosaic_split(self, name: str) -> bool:
        """Whether split `name` builds mosaics (each tile is fitted inside the size, whatever `resize` says)."""
        return name == "train" and self.mosaic > 0 and self.dataset_class is DetectionDataset

    def _make_dataset(self, name: str, samples: SampleSet, train: bool | None = None) -> ImageSampleDataset:
        """Split `name`'s dataset; `train` (default: whether it is the train split) augments it."""
        train = name == "train" if train is None else train
        reading = self._reading(name, samples, mosaic=train)
        if train and self.mosaic_split(name):
            # the preset's Affine zooms and shifts the whole mosaic canvas instead of the cropped view
            affine = next((t for t in self.augment if isinstance(t, A.Affine)), None)
            scale, translate = (1.0, 1.0), 0.0
            if affine is not None:
                scale = (float(affine.scale["x"][0]), float(affine.scale["x"][1]))
                translate = (
                    float(max(abs(v) for v in affine.translate_percent["x"])) if affine.translate_percent else 0.0
                )
            rest = [t for t in self.augment if t is not affine]
            return DetectionDataset(
                samples,
                self.transform(train=True),
                self.skip_bad_images,
                mosaic=self.mosaic,
                mosaic_size=size_hw(self.image_size),
                mosaic_transform=self.transform(train=True, augment=rest),
                mosaic_scale=scale,
                mosaic_translate=translate,
                **reading,
            )
        if self.dataset_class is SegmentationDataset:
            reading["mask_reader"] = getattr(self.source, "mask_reader", None)  # a segmentation source's
        return self.dataset_class(samples, self.transform(train=train), self.skip_bad_images, **reading)

    def train_targets(self) -> np.ndarray:
        """The training split's targets (class ids, multi-label flags, box arrays): for class weights."""
        return np.asarray(self._load_splits()["train"].targets)

    def _load_splits(self) -> dict[str, SampleSet]:
        if self._splits is None:
            self.num_classes  # noqa: B018 - validates num_classes before any work
            splits = self.source.splits(self.val_fraction, self.test_fraction, self.split_seed)
            scanned = getattr(self.source, "scans_images", False)  # some sources scan while reading labels
            self._splits = {
                name: samples if scanned else drop_bad_images(name, samples, self.skip_bad_images)
                for name, samples in splits.items()
            }
            sizes = ", ".join(f"{name} {len(self._splits[name])}" for name in SPLITS)
            reports = getattr(self.source, "reports", {})  # e.g. the YOLO label scan, one per split read from files
            carved = [name for name in SPLITS if reports and name not in reports and len(self._splits[name])]
            origin = (
                f" ({' and '.join(carved)} carved out of the scanned train images: data.val_fraction, "
                "data.test_fraction)"
                if carved
                else ""
            )
            log.info(f"{self.source.description}: {self.num_classes} classes; {sizes} images{origin}")
            for report in reports.values():
                log.info(f"scan {report.summary()}")
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the splits this stage needs."""
        splits = self._load_splits()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for name in wanted.get(stage or "", SPLITS):
            if name not in self.datasets:
                if len(splits[name]) == 0:
                    hint = "add images" if name == "train" else f"add images or raise data.{name}_fraction"
                    raise VisionkitError(f"the {name} split of {self.source.description} is empty; {hint}")
                self.datasets[name] = self._make_dataset(name, splits[name])

    def _loader(self, name: str, train: bool) -> DataLoader:
        if name not in self.datasets:
            self.setup({"train": "fit", "val": "fit"}.get(name, "test"))
        sampler = None
        if train:
            dataset = self.datasets[name]
            spans = getattr(getattr(dataset, "reader", None), "spans", None)  # a packed dataset's chunks
            sampler = self.train_sampler = (
                GroupedSampler(
                    dataset, dataset.samples.targets, self.per_identity, self.batch_size // self.per_identity
                )
                if self.per_identity
                else ChunkedSampler(dataset, [n for _, n in spans])
                if spans is not None
                else ResumableSampler(dataset)
            )
            if self._resume_point is not None:
                sampler.resume(*self._resume_point, self.batch_size)
                self._resume_point = None
        return TimedLoader(
            self.datasets[name],
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=sampler is not None and lone_last_image(sampler, self.batch_size),
            generator=torch.Generator().manual_seed(global_seed()),  # worker seeds: the global RNG stays untouched
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.collate_fn,
        )

    def calibration_set(self, count: int) -> Dataset:
        """Up to `count` training images spread evenly over the split, read and transformed as for evaluation (no
        augmentation, no mosaic): what an INT8 export measures its activation ranges on."""
        samples = self._load_splits()["train"]
        if len(samples) == 0:
            raise VisionkitError(f"the train split of {self.source.description} is empty: nothing to calibrate on")
        picked = np.unique(np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(np.int64))
        return Subset(self._make_dataset("train", samples, train=False), picked.tolist())

    def pairs(self, split: str) -> np.ndarray | None:
        """(P, 3) rows of (index a, index b, same) into `split` when the source names verification pairs (an LFW
        `pairs.txt`); pairs with an image the scan dropped are left out. None when the source names none."""
        named = getattr(self.source, "pairs", lambda _: None)(split)
        if named is None:
            return None
        position = {path: i for i, path in enumerate(self._load_splits()[split].images)}
        rows = [(position[a], position[b], int(same)) for a, b, same in named if a in position and b in position]
        if len(rows) < len(named):
            log.warning(f"{len(named) - len(rows)} of {len(named)} verification pairs name a skipped image")
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the training loader continue at `epoch` after `batches_done` batches (a resumed checkpoint):
        at once if it exists, else when it is built."""
        if self.train_sampler is not None:
            self.train_sampler.resume(epoch, batches_done, self.batch_size)
        else:
            self._resume_point = (epoch, batches_done)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


def packed_size(source: DataSource) -> list[int]:
    """[height, width] a packed dataset was packed for: the size `data.image_size=null` trains at (`data=stream`)."""
    size = getattr(source, "image_size", None)
    if size is None:
        raise VisionkitError(
            f"data.image_size=null takes the size a packed dataset (data=stream) was packed at; {source.description} "
            "was not packed: set data.image_size to the network's input size, e.g. data.image_size=224"
        )
    return [int(v) for v in size]
