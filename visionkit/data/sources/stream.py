"""`data=stream`: a dataset packed by `visionkit-pack` (a local folder or s3://bucket/prefix), read a sample at a
time through LitData's `StreamingDataset` (chunks fetched once into a local cache with a size limit), and fed
through the same datasets, augmentation, sampler and exact resume as files on disk."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from visionkit.data.augment import FirstResize
from visionkit.data.decoded import Decoded
from visionkit.data.pack import decode_mask, decode_pixels
from visionkit.data.pixels import RGB8, PixelFormat
from visionkit.data.shards import (
    META_NAME,
    PACK_FORMAT,
    Location,
    StoreUnreachable,
    allow_http_endpoints,
    chunk_spans,
    stream_cache_dir,
    unreachable,
)
from visionkit.data.splits import SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import UnreadableImage, exclusive_lock
from visionkit.utils.logging import get_logger

log = get_logger(__name__, rank_zero_only=False)


@contextlib.contextmanager
def cache_lock(folder: str | None) -> Iterator[None]:
    """An exclusive lock on a chunk cache folder while a split is opened: every process of every run on a machine
    shares the cache, and LitData downloads a split's index.json into it unguarded, so two processes opening the
    same split at once could see it half there (one run read "doesn't contain any index.json")."""
    if folder is None:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with exclusive_lock(os.path.join(folder, ".visionkit-open.lock")):
        yield


class StreamKeys(Sequence[str]):
    """The names of a packed split's samples, `<url>/<split>#<index>`: what messages and reports call them."""

    def __init__(self, url: str, split: str, count: int) -> None:
        self.url, self.split, self.length = url.rstrip("/"), split, count

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> str:  # type: ignore[override]  # one key per index, no slices
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return f"{self.url}/{self.split}#{index % self.length}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self.length))


class ShardReader:
    """Reads sample `index` of one packed split: the record from LitData (its chunk fetched into the cache once),
    the image decoded and brought to the pipeline's first size. A store that does not answer is retried with
    doubling waits, then stops with `StoreUnreachable`; a damaged chunk is named (its samples skipped, and counted
    once, with `data.skip_bad_images=true`)."""

    def __init__(
        self,
        location: Location,
        split: str,
        first: FirstResize | None,
        fmt: PixelFormat = RGB8,
        cache_dir: str | None = None,
        max_cache_gb: float | None = None,
        retries: int = 3,
        retry_wait: float = 2.0,
    ) -> None:
        self.location, self.split, self.first, self.fmt = location, split, first, fmt
        self.cache_dir, self.max_cache_gb = cache_dir, max_cache_gb
        self.retries, self.retry_wait = int(retries), float(retry_wait)
        self.spans = chunk_spans(location, split)
        self.starts = np.cumsum([0] + [count for _, count in self.spans])
        self.paths = StreamKeys(location.url, split, int(self.starts[-1]))
        self._dataset: Any = None
        self._pid = -1
        self._last: tuple[int, dict[str, Any]] | None = None
        self._damaged: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None, "_last": None}  # each process opens its own

    def _open(self) -> Any:
        if self._dataset is None or self._pid != os.getpid():
            from litdata import StreamingDataset

            allow_http_endpoints()
            remote = self.location.remote
            with cache_lock(self.cache_dir if remote else None):
                dataset = StreamingDataset(
                    self.location.join(self.split),
                    cache_dir=self.cache_dir if remote else None,
                    max_cache_size=f"{self.max_cache_gb}GB" if remote and self.max_cache_gb else None,
                    storage_options=dict(self.location.options),
                )
            self._dataset = dataset
            # whole chunks into the cache (LitData's iteration does the same); its default for random access
            # fetches each sample with its own range request
            self._dataset._on_demand_bytes = False
            self._pid = os.getpid()
        return self._dataset

    def chunk_of(self, index: int) -> str:
        return self.spans[int(np.searchsorted(self.starts, index, side="right")) - 1][0]

    def _damaged_chunk(self, index: int, reason: str) -> UnreadableImage:
        chunk = self.chunk_of(index)
        key = self.paths[index]
        what = f"chunk {chunk} is damaged ({reason})"
        error = UnreadableImage(f"bad image {key}: {what}", key, what)
        error.reported = True  # the chunk is named once, here, for all its samples
        if chunk not in self._damaged:
            self._damaged.add(chunk)
            count = dict(self.spans)[chunk]
            log.warning(
                f"{self.location.join(self.split, chunk)} is damaged ({reason}): its {count} samples cannot be read"
                " (skipped with data.skip_bad_images=true; pack the split again to restore them)"
            )
        return error

    def record(self, index: int) -> dict[str, Any]:
        """Sample `index`'s stored record (the last one is kept: a mask read follows its image's)."""
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if self.chunk_of(index) in self._damaged:
            raise self._damaged_chunk(index, "named above")
        try:
            dataset = self._open()
        except Exception as exc:  # opening reads the split's index.json into the cache: not a chunk's damage
            if not unreachable(exc):
                where = f" (cache {self.cache_dir})" if self.location.remote else ""
                raise VisionkitError(
                    f"cannot open {self.location.join(self.split)}{where}: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}"
                ) from None
            dataset = None
        if dataset is None:
            item = self._after_silence(index)
        else:
            try:
                item = dataset[index]
            except Exception as exc:  # LitData raises many types; the store's silence is told from damage
                if not unreachable(exc):
                    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    raise self._damaged_chunk(index, reason) from None
                item = self._after_silence(index)
        if not isinstance(item, Mapping) or "image" not in item:
            raise self._damaged_chunk(index, "a record without an image")
        self._last = (index, dict(item))
        return self._last[1]

    def _after_silence(self, index: int) -> dict[str, Any]:
        """Sample `index` once the store answers again: probed after waits of 2, 4, 8 ... s (`retries` times),
        the split opened again (LitData's download thread stopped); else `StoreUnreachable`."""
        wait, waited = self.retry_wait, 0.0
        for attempt in range(1, self.retries + 1):
            log.warning(f"{self.location.url} did not answer; retry {attempt}/{self.retries} in {wait:.1f} s")
            time.sleep(wait)
            waited, wait = waited + wait, wait * 2
            if self.location.answers(f"{self.split}/index.json"):
                self._dataset = None
                try:
                    return self._open()[index]
                except Exception as exc:
                    if not unreachable(exc):
                        raise
        raise StoreUnreachable(
            f"{self.location.url} did not answer after {self.retries} retries ({waited:.1f} s); training stops here: "
            "resume with ckpt_path=<run>/checkpoints/last.ckpt once the store is back"
        )

    def __call__(self, index: int) -> Decoded:
        try:
            pixels = decode_pixels(bytes(self.record(index)["image"]), self.fmt)
        except ValueError as exc:
            raise UnreadableImage(f"bad image {self.paths[index]}: {exc}", self.paths[index], str(exc)) from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        full = (int(pixels.shape[0]), int(pixels.shape[1]))
        return (pixels if self.first is None else self.first(pixels)), full


class ShardMaskReader:
    """The masks of a packed segmentation set, read from the sample records (the key names split and index)."""

    def __init__(self, source: StreamSource) -> None:
        self.source = source

    def read(self, key: str) -> np.ndarray:
        split, index = key.rsplit("/", 1)[-1].split("#")
        reader = self.source.readers.get(split)
        if reader is None:
            raise VisionkitError(f"{key}: the {split} split is not open")
        return decode_mask(bytes(reader.record(int(index))["target"]))


class StreamSource:
    """A packed dataset: its splits, classes and targets from `visionkit.json`, its images from the shards.

    url: a local folder or s3://bucket/prefix. task: the task being trained (checked against the pack's).
    storage_options: endpoint_url, aws_access_key_id, ... (the AWS_* variables apply otherwise). cache_dir /
    max_cache_gb: where fetched chunks are kept, and at most how much. retries: how often a silent store is tried
    again (waits of 2, 4, 8 ... s) before training stops with a checkpoint to resume from.
    """

    scans_images = True  # checked when packed

    def __init__(
        self,
        url: str,
        task: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_gb: float | None = 50.0,
        retries: int = 3,
        retry_wait: float = 2.0,
    ) -> None:
        self.location = Location(str(url), dict(storage_options or {}))
        self.meta = self.location.read_json(META_NAME)
        if int(self.meta.get("format", 0)) != PACK_FORMAT:
            raise VisionkitError(
                f"{self.location.join(META_NAME)} is pack format {self.meta.get('format')}; this visionkit reads "
                f"format {PACK_FORMAT}: pack it again with this version"
            )
        packed_for = self.meta.get("task_name", self.meta["task"])
        if task is not None and task != packed_for:
            raise VisionkitError(
                f"{url} was packed for task={packed_for}; train it with task={packed_for}, or pack the source again "
                f"with task={task}"
            )
        self.task = str(self.meta["task"])
        self.ignore_index = self.meta.get("ignore_index")
        self.description = f"packed {self.meta.get('description', 'dataset')} at {self.location.url}"
        self.cache_dir = str(cache_dir or stream_cache_dir(self.location.url))
        self.max_cache_gb, self.retries, self.retry_wait = max_cache_gb, int(retries), float(retry_wait)
        self.readers: dict[str, ShardReader] = {}
        self.mask_reader = ShardMaskReader(self)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.meta["image_size"])

    @property
    def resize(self) -> str:
        """The resize mode of the source it was packed from (stretch for packs made before it was stored)."""
        return str(self.meta.get("resize", "stretch"))

    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """The splits as packed (the fractions and seed were applied when packing)."""
        out = {}
        for name, split in self.meta["splits"].items():
            keys = StreamKeys(self.location.url, name, int(split["count"]))
            targets = split.get("targets")
            if targets is None:
                values = np.array(list(keys), dtype=object)
            elif self.task == "detection":
                values = np.empty(len(targets), dtype=object)
                values[:] = [np.asarray(t, dtype=np.float32).reshape(-1, 5) for t in targets]
            else:
                values = np.asarray(targets, dtype=np.uint8 if self.task == "multilabel" else np.int64)
            out[name] = SampleSet(keys, values)
        for name in ("train", "val", "test"):
            out.setdefault(name, SampleSet(StreamKeys(self.location.url, name, 0), np.zeros(0, np.int64)))
        return out

    def reader(self, split: str, first: FirstResize | None, fmt: PixelFormat) -> ShardReader:
        """The reader of one split, at the pipeline's first size; the pack's pixel format must be the run's."""
        packed = PixelFormat.of(self.meta.get("pixel_format"))
        if (packed.channels, packed.dtype, packed.bands) != (fmt.channels, fmt.dtype, fmt.bands):
            raise VisionkitError(
                f"{self.location.url} holds {packed.channels}-channel {packed.dtype} images (bands {packed.bands}); "
                f"set data.channels={packed.channels} data.dtype={packed.dtype} to train on it"
            )
        wanted = None if first is None else first.image_size
        if wanted is not None and max(wanted) > max(self.image_size):
            log.warning(
                f"{self.location.url} was packed for {self.image_size[1]}x{self.image_size[0]} px; training at "
                f"{wanted[1]}x{wanted[0]} enlarges its images (pack again with data.image_size={list(wanted)})"
            )
        shard_split = {"stats": "train"}.get(split, split)
        reader = ShardReader(
            self.location, shard_split, first, fmt, self.cache_dir, self.max_cache_gb, self.retries, self.retry_wait
        )
        if split != "stats":
            self.readers[split] = reader  # the masks of a split come from its images' records
        return reader
