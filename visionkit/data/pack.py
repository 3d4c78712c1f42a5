"""`visionkit-pack`: every split of any data source written as LitData shards (see `visionkit.data.shards`), each
sample `{"image": encoded bytes, "target": label | flags | (N, 5) boxes | mask PNG}`, images at the first size any
resize mode needs (they cover `image_size`, aspect kept; never enlarged), in parallel processes, resumable."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from visionkit.data.augment import FirstResize
from visionkit.data.pixels import RGB8, PixelFormat
from visionkit.data.shards import (
    META_NAME,
    PACK_FORMAT,
    Location,
    MissingPack,
    allow_http_endpoints,
    chunk_spans,
)
from visionkit.data.splits import SPLITS, SampleSet
from visionkit.errors import VisionkitError
from visionkit.utils.io import read_image_at_least, shown_size
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

ENCODINGS = ("auto", "jpeg", "png")


def encode_pixels(pixels: np.ndarray, fmt: PixelFormat, encoding: str, quality: int) -> bytes:
    """8-bit RGB as JPEG (`quality`) or PNG; any other format (16-bit, bands, floats) as lossless .npy bytes."""
    if not fmt.rgb8:
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(pixels))
        return out.getvalue()
    bgr = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR)
    if encoding == "png":
        ok, data = cv2.imencode(".png", bgr)
    else:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise VisionkitError(f"could not encode a {pixels.shape} image as {encoding}")
    return data.tobytes()


def decode_pixels(data: bytes, fmt: PixelFormat) -> np.ndarray:
    """What `encode_pixels` wrote (or a JPEG's original bytes), as the reader's pixels; ValueError if damaged."""
    if not fmt.rgb8:
        return np.load(io.BytesIO(data), allow_pickle=False)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the image bytes do not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_mask(mask: np.ndarray) -> bytes:
    """Class ids as a lossless PNG (16-bit past 255 classes)."""
    ok, data = cv2.imencode(".png", mask.astype(np.uint16 if mask.max(initial=0) > 255 else np.uint8))
    if not ok:
        raise VisionkitError(f"could not encode a {mask.shape} mask")
    return data.tobytes()


def decode_mask(data: bytes) -> np.ndarray:
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError("the mask bytes do not decode")
    return mask.astype(np.int64)


class SampleEncoder:
    """One sample of a split as a shard record (called in LitData's worker processes, so it holds plain data)."""

    def __init__(
        self,
        samples: SampleSet,
        task: str,
        cover: FirstResize,
        fmt: PixelFormat = RGB8,
        mask_reader: Any = None,
        encoding: str = "auto",
        quality: int = 95,
    ) -> None:
        if encoding not in ENCODINGS:
            raise VisionkitError(f"encoding={encoding!r}: choose one of {list(ENCODINGS)}")
        self.samples, self.task, self.cover, self.fmt = samples, task, cover, fmt
        self.mask_reader, self.encoding, self.quality = mask_reader, encoding, int(quality)

    def _smaller(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` scaled down to cover the size; never enlarged."""
        height = self.cover.needed(*pixels.shape[:2])[0]
        return self.cover(pixels) if height < pixels.shape[0] else pixels

    def image(self, index: int) -> tuple[bytes, tuple[int, int]]:
        """Sample `index`'s stored image bytes and the (height, width) they decode to."""
        images = self.samples.images
        if isinstance(images, np.ndarray):
            pixels = self._smaller(images[index])
            return encode_pixels(pixels, self.fmt, "png", self.quality), pixels.shape[:2]
        path = images[index]
        if not self.fmt.rgb8:
            pixels = self._smaller(self.fmt.read(path))
            return encode_pixels(pixels, self.fmt, self.encoding, self.quality), pixels.shape[:2]
        if self.encoding == "auto" and Path(path).suffix.lower() in (".jpg", ".jpeg"):
            height, width = shown_size(path)
            if self.cover.needed(height, width)[0] >= height:
                return Path(path).read_bytes(), (height, width)  # no larger than needed: the original bytes
        pixels = self._smaller(read_image_at_least(path, self.cover.needed)[0])
        return encode_pixels(pixels, self.fmt, self.encoding, self.quality), pixels.shape[:2]

    def __call__(self, index: int) -> dict[str, Any]:
        image, (height, width) = self.image(index)
        target = self.samples.targets[index]
        if self.task == "segmentation":
            mask = self.mask_reader.read(target)
            if mask.shape != (height, width):
                mask = cv2.resize(mask.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
            return {"image": image, "target": encode_mask(np.asarray(mask))}
        if np.ndim(target):
            dtype = np.uint8 if np.asarray(target).ndim == 1 and self.task != "detection" else np.float32
            return {"image": image, "target": np.asarray(target, dtype=dtype)}
        return {"image": image, "target": int(target)}


def stored_order(count: int, seed: int) -> np.ndarray:
    """The order a split's samples are stored in: shuffled with the split seed, so the blocks of neighbours that
    training reads together (`chunk_order`) mix classes and sources whatever order the source lists them in."""
    return np.random.default_rng([seed % 2**32, count]).permutation(count)


def folder_bytes(location: Location) -> int:
    """Bytes stored under a location (its objects under the prefix on S3)."""
    if not location.remote:
        return sum(p.stat().st_size for p in Path(location.join()).rglob("*") if p.is_file())
    bucket, prefix = location.bucket_and_prefix
    total, token = 0, None
    client = location.client()
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        total += sum(int(item["Size"]) for item in page.get("Contents", []))
        token = page.get("NextContinuationToken")
        if not token:
            return total


def source_bytes(samples: SampleSet) -> int:
    if isinstance(samples.images, np.ndarray):
        return int(samples.images.nbytes)
    return sum(os.path.getsize(p) for p in samples.images)


def target_list(samples: SampleSet, task: str) -> list | None:
    """The targets as JSON values (None for masks: they travel in the shards only)."""
    if task == "segmentation":
        return None
    return [np.asarray(t).tolist() for t in samples.targets]


def _finished(location: Location, split: str, count: int) -> bool:
    """Whether `split` was packed whole by an earlier run cut off later (its index.json written), with `count`
    samples; a finished split of another size is refused (the source or its settings changed)."""
    try:
        done = sum(n for _, n in chunk_spans(location, split))
    except MissingPack:
        return False
    if done != count:
        raise VisionkitError(
            f"{location.join(split)} holds {done} packed images from an earlier run, the source now gives {count}: "
            "the source or the split settings changed since; choose another out= or delete it first"
        )
    return True


def _optimize_in_own_group(**options: Any) -> str | None:
    """`litdata.optimize(**options)` in a child process that leads a process group of its own, the group ended
    after it; the text of its error, or None. LitData terminates a failing worker without the file-remover process
    that worker forked, which then waits forever, holding the terminal's (or CI's) pipes open: ending the whole
    group leaves nothing behind, whether packing finished, failed or was interrupted."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_optimize_child, args=(sender, options), name="visionkit-pack")
    child.start()
    sender.close()
    pid = cast(int, child.pid)  # started
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also done by the child: whichever runs first
    try:
        try:
            failure = receiver.recv()
        except EOFError:
            failure = "the packing process ended without a word"
        child.join()
        if failure and child.exitcode:
            failure += f" (exit code {child.exitcode})"
    finally:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    return failure


def _optimize_child(sender: Any, options: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    import litdata

    try:
        litdata.optimize(**options)
    except BaseException as exc:  # all of it goes back to the parent as text: nothing crosses the pipe pickled
        sender.send(f"{type(exc).__name__}: {exc}")
    else:
        sender.send(None)


def _first_cause(text: str) -> str:
    """The first exception line in a traceback's text (what the worker raised, before LitData wrapped it); our own
    errors without their module path."""
    for line in text.splitlines():
        match = re.match(r"([A-Za-z_][\w.]*): (.+)", line)
        if match and "Traceback (most recent call last)" not in line:
            name, message = match.groups()
            return message if name.startswith("visionkit.") else f"{name}: {message}"
    return text.strip()


def pack_splits(
    splits: dict[str, SampleSet],
    location: Location,
    *,
    task: str,
    task_name: str,
    class_names: Sequence[str],
    description: str,
    image_size: tuple[int, int],
    fmt: PixelFormat,
    resize: str = "stretch",
    mask_reader: Any = None,
    ignore_index: int | None = None,
    encoding: str = "auto",
    quality: int = 95,
    chunk_mb: float = 64,
    workers: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Write `splits` as shards under `location` and `visionkit.json` last (its presence marks a finished pack).
    A pack cut off is resumed where it stopped when started again with the same settings. Each split is stored
    in `stored_order(len, seed)`."""
    allow_http_endpoints()
    try:
        location.read_bytes(META_NAME)
    except MissingPack:
        pass
    else:
        raise VisionkitError(
            f"{location.url} already holds a packed dataset ({META_NAME}); choose another out= or delete it first"
        )
    cover = FirstResize(image_size, "crop")
    workers = max(1, workers or os.cpu_count() or 1)
    started = time.perf_counter()
    total = kept = 0
    splits = {name: s.subset(stored_order(len(s), seed)) for name, s in splits.items() if len(s)}
    for name in SPLITS:
        samples = splits.get(name)
        if samples is None:
            continue
        if _finished(location, name, len(samples)):
            log.info(f"{name} is packed already ({len(samples)} images in {location.join(name)}): kept")
            kept += len(samples)
            continue
        log.info(f"packing {name}: {len(samples)} images into {location.join(name)}")
        failure = _optimize_in_own_group(
            fn=SampleEncoder(samples, task, cover, fmt, mask_reader, encoding, quality),
            inputs=list(range(len(samples))),
            output_dir=location.join(name),
            chunk_bytes=f"{max(1, int(chunk_mb * 1024))}KB",
            num_workers=min(workers, len(samples)),
            keep_data_ordered=True,
            use_checkpoint=True,
            storage_options=dict(location.options),
            start_method="fork",
        )
        if failure is not None:
            raise VisionkitError(
                f"packing {name} stopped: {_first_cause(failure)}; the chunks written so far are kept: fix it and "
                "run the same command again to go on from where it stopped"
            )
        total += len(samples)
    seconds = time.perf_counter() - started
    meta = {
        "format": PACK_FORMAT,
        "task": task,
        "task_name": task_name,
        "class_names": list(class_names),
        "description": description,
        "image_size": list(image_size),
        "resize": resize,  # the source's resize mode, which data=stream trains with
        "pixel_format": fmt.state(),
        "ignore_index": ignore_index,
        "splits": {name: {"count": len(s), "targets": target_list(s, task)} for name, s in splits.items() if len(s)},
        "source_bytes": (source_total := sum(source_bytes(s) for s in splits.values())),
        "order_seed": seed,
    }
    location.write_bytes(META_NAME, json.dumps(meta).encode())
    packed = folder_bytes(location)
    return {
        "images": float(total),
        "kept": float(kept),
        "seconds": seconds,
        "images_per_s": total / max(seconds, 1e-9),
        "packed_mb": packed / 2**20,
        "source_mb": source_total / 2**20,
    }
