"""Images read at the size the pipeline first needs (reduced JPEG decode + its first resize), optionally held in
a cache (`data.cache=ram|disk`) for datasets read many epochs. Entries are keyed by the file's modification time
and size, so a changed file is read again."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from visionkit.data.augment import FirstResize
from visionkit.data.pixels import RGB8, PixelFormat
from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write, read_image, read_image_at_least, shown_size
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

CACHE_KINDS = (None, "ram", "disk")
Decoded = tuple[np.ndarray, tuple[int, int]]  # pixels at the first size, the file's full (height, width)


def check_cache_kind(cache: str | None) -> None:
    """Stop on a `data.cache` value that is not null, ram or disk."""
    if cache not in CACHE_KINDS:
        raise VisionkitError(f"data.cache={cache!r} is not a cache kind; choose null, ram or disk")


def decode(path: str, first: FirstResize | None, fmt: PixelFormat = RGB8) -> Decoded:
    """The image at `first`'s size (a JPEG decoded at reduced size when that covers it), and its full size; a
    format other than 8-bit RGB is read as stored (`fmt.read`) and resized in its own type."""
    if not fmt.rgb8:
        pixels = fmt.read(path)
        return (pixels if first is None else first(pixels)), pixels.shape[:2]
    if first is None:
        pixels = read_image(path)
        return pixels, pixels.shape[:2]
    pixels, full = read_image_at_least(path, first.needed)
    return first(pixels), full


def _stamp(path: str) -> tuple[int, int] | None:
    """(modification time in ns, size): what tells a changed file from the one cached."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _shown_size(path: str) -> tuple[int, int] | None:
    """The displayed (height, width) from the header; None when unreadable (the reader reports it, uncached)."""
    try:
        return shown_size(path)
    except Exception:  # PIL raises many types for damaged files
        return None


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux; free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class RamCache:
    """Every image of a split decoded once, up front (in threads), into one shared-memory buffer: DataLoader
    workers read it without copies (forked or spawned), each DDP rank holds its own. Images beyond `max_bytes`
    are left out (read from disk each time, and said so)."""

    def __init__(
        self,
        paths: Sequence[str],
        first: FirstResize,
        max_bytes: int,
        threads: int | None = None,
        fmt: PixelFormat = RGB8,
    ) -> None:
        self.first, self.fmt = first, fmt
        self.itemsize = np.dtype(fmt.dtype).itemsize
        shapes: list[tuple[int, int, int] | None] = []
        total = 0
        for path in paths:
            shown = _shown_size(path)
            shape = None if shown is None else (*first.needed(*shown), fmt.channels)
            if shape is not None and total + int(np.prod(shape)) <= max_bytes // self.itemsize:
                total += int(np.prod(shape))
                shapes.append(shape)
            else:
                shapes.append(None)
        self.buffer = torch.empty(total * self.itemsize, dtype=torch.uint8).share_memory_()
        self.offsets = np.zeros(len(paths), dtype=np.int64)
        self.shapes = np.zeros((len(paths), 3), dtype=np.int64)
        self.full_sizes = np.zeros((len(paths), 2), dtype=np.int64)
        self.stamps = np.zeros((len(paths), 2), dtype=np.int64)
        self.filled = np.zeros(len(paths), dtype=bool)
        offset = 0
        for index, shape in enumerate(shapes):
            if shape is not None:
                self.offsets[index], self.shapes[index] = offset, shape
                offset += int(np.prod(shape))
        with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
            list(pool.map(self._fill, range(len(paths)), paths, shapes))
        self.nbytes = int(sum(int(np.prod(s)) for s, ok in zip(self.shapes, self.filled) if ok)) * self.itemsize
        self.left_out = int((~self.filled).sum())

    def _slot(self, index: int) -> np.ndarray:
        start, shape = int(self.offsets[index]) * self.itemsize, tuple(int(v) for v in self.shapes[index])
        size = int(np.prod(shape)) * self.itemsize
        return self.buffer[start : start + size].numpy().view(self.fmt.dtype).reshape(shape)

    def _fill(self, index: int, path: str, shape: tuple[int, int, int] | None) -> None:
        stamp = _stamp(path)
        if shape is None or stamp is None:
            return
        try:
            pixels, full = decode(path, self.first, self.fmt)
        except VisionkitError:
            return  # the reader reports it when the sample is drawn
        if pixels.shape != shape:
            return
        self._slot(index)[...] = pixels
        self.full_sizes[index], self.stamps[index], self.filled[index] = full, stamp, True

    def get(self, index: int, path: str) -> Decoded | None:
        """The cached image of sample `index`, or None (not cached, or the file changed since)."""
        if not self.filled[index] or _stamp(path) != tuple(self.stamps[index]):
            return None
        return self._slot(index), (int(self.full_sizes[index, 0]), int(self.full_sizes[index, 1]))


class DiskCache:
    """Decoded images as .npy files under `folder`, written atomically the first time each is read, so every
    later epoch and run (and every DDP rank and worker) loads them instead of decoding. The file name hashes the
    image's path, modification time, size and the first size: a changed file or setting gets a new entry."""

    def __init__(self, folder: str | os.PathLike[str], first: FirstResize, fmt: PixelFormat = RGB8) -> None:
        self.folder = Path(folder).expanduser()
        self.first, self.fmt = first, fmt
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VisionkitError(
                f"data.cache_dir={self.folder} cannot be created ({exc.strerror}); choose a writable folder"
            ) from None

    def entry(self, path: str) -> Path | None:
        stamp = _stamp(path)
        if stamp is None:
            return None
        key = f"{os.path.abspath(path)}|{stamp[0]}|{stamp[1]}|{self.first.image_size}|{self.first.mode}"
        if not self.fmt.rgb8:
            key += f"|{self.fmt.state()}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, index: int, path: str) -> Decoded | None:
        entry = self.entry(path)
        if entry is None or not entry.is_file():
            return None
        try:
            with open(entry, "rb") as handle:
                pixels, full = np.load(handle), np.load(handle)
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is decoded and written again
        return pixels, (int(full[0]), int(full[1]))

    def put(self, path: str, decoded: Decoded) -> None:
        entry = self.entry(path)
        if entry is None:
            return
        with atomic_write(entry) as out:
            np.save(out, decoded[0])
            np.save(out, np.asarray(decoded[1], dtype=np.int64))


class ImageReader:
    """Reads the images of one split at the pipeline's first size, through the cache when there is one."""

    def __init__(
        self,
        paths: Sequence[str],
        first: FirstResize | None,
        cache: RamCache | DiskCache | None,
        fmt: PixelFormat = RGB8,
    ) -> None:
        self.paths, self.first, self.cache, self.fmt = paths, first, cache, fmt

    def __call__(self, index: int) -> Decoded:
        path = self.paths[index]
        if self.cache is not None:
            hit = self.cache.get(index, path)
            if hit is not None:
                return hit
        decoded = decode(path, self.first, self.fmt)
        if isinstance(self.cache, DiskCache):
            self.cache.put(path, decoded)
        return decoded


def build_reader(
    paths: Sequence[str],
    first: FirstResize | None,
    cache: str | None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    split: str = "train",
    fmt: PixelFormat = RGB8,
) -> ImageReader:
    """The reader of one split for `data.cache` (null, ram or disk) and pixel format; the cache's size is logged."""
    check_cache_kind(cache)
    if cache is None or first is None:
        return ImageReader(paths, first, None, fmt)
    if cache == "disk":
        from visionkit.data.cache import default_cache_dir

        store = DiskCache(cache_dir or default_cache_dir() / "decoded", first, fmt)
        log.info(f"data.cache=disk: {split} images decoded once into {store.folder}")
        return ImageReader(paths, first, store, fmt)
    limit = max_bytes if max_bytes is not None else available_memory() // 2
    ram = RamCache(paths, first, limit, fmt=fmt)
    note = f"; {ram.left_out} not held (unreadable, or over data.cache_max_gb)" if ram.left_out else ""
    log.info(f"data.cache=ram: {split} {len(paths) - ram.left_out} images, {ram.nbytes / 2**20:.1f} MB{note}")
    return ImageReader(paths, first, ram, fmt)
