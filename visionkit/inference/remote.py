"""Prediction sources beyond local files: the images under `s3://bucket/prefix` (S3 or an S3-compatible store) and
the images of a packed dataset (`visionkit-pack`; a folder or a bucket, one split). Each prediction process fetches
only its own share into `<run>/source/` (kept: a run started again fetches nothing twice) and predicts those files;
the share is the one `predict_files` gives the rank, so no image is fetched by two processes."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from visionkit.data.shards import META_NAME, Location, MissingPack, store_error, stream_cache_dir
from visionkit.errors import VisionkitError
from visionkit.inference.journal import share
from visionkit.utils.io import IMAGE_EXTENSIONS, atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


def is_remote_source(source: Any) -> bool:
    """Whether `source` names an object-store prefix or a packed dataset (not local image files)."""
    text = str(source or "")
    return text.startswith("s3://") or Path(text, META_NAME).is_file()


class RemoteImages:
    """The images a remote source holds, as the local paths they are fetched to (in a stable order)."""

    def __init__(
        self, source: str, folder: Path, options: Mapping[str, Any] | None = None, split: str = "test"
    ) -> None:
        self.location, self.folder, self.split = Location(source, dict(options or {})), folder, split
        try:
            self.meta: dict[str, Any] | None = self.location.read_json(META_NAME)
        except MissingPack:
            if not self.location.remote:
                raise
            self.meta = None  # a prefix of plain image files
        self.keys = self._packed_keys(self.meta) if self.meta is not None else self._listed_keys()
        if not self.keys:
            raise VisionkitError(f"source: no images ({', '.join(IMAGE_EXTENSIONS)}) under {source}")
        self.paths = [str(folder / key) for key in self.keys]

    def _packed_keys(self, meta: dict[str, Any]) -> list[str]:
        splits = meta["splits"]
        if self.split not in splits:
            raise VisionkitError(
                f"source: {self.location.url} holds the splits {sorted(splits)}; choose one with source_split="
            )
        if not (meta.get("pixel_format") or {}).get("dtype", "uint8") == "uint8":
            raise VisionkitError(f"source: {self.location.url} holds scans or bands; predict their files instead")
        return [f"{self.split}/{index:08d}.jpg" for index in range(int(splits[self.split]["count"]))]

    def _listed_keys(self) -> list[str]:
        bucket, prefix = self.location.bucket_and_prefix
        client, keys, token = self.location.client(), [], None
        start = f"{prefix}/" if prefix else ""
        try:
            while True:
                more: dict[str, Any] = {"ContinuationToken": token} if token else {}
                page = client.list_objects_v2(Bucket=bucket, Prefix=start, **more)
                keys += [item["Key"][len(start) :] for item in page.get("Contents", [])]
                token = page.get("NextContinuationToken")
                if not token:
                    break
        except Exception as exc:
            raise store_error(self.location, exc) from None
        images = [k for k in keys if Path(k).suffix.lower() in IMAGE_EXTENSIONS]
        return sorted(k for k in images if not Path(k).name.startswith("."))

    def fetch(self, rank: int, world: int, threads: int = 8) -> list[str]:
        """Fetch rank `rank`'s share (the files not fetched yet); every path, in order."""
        wanted = set(share(self.paths, rank, world))
        missing = [key for key, path in zip(self.keys, self.paths) if path in wanted and not Path(path).is_file()]
        if not missing:
            return self.paths
        log.info(f"fetching {len(missing)} image(s) of {self.location.url} into {self.folder}")
        if self.meta is not None:  # a pack: each image's stored bytes, from its chunk
            from visionkit.data.sources.stream import ShardReader

            reader = ShardReader(self.location, self.split, None, cache_dir=stream_cache_dir(self.location.url))
            for key in missing:
                self._write(key, bytes(reader.record(int(Path(key).stem))["image"]))
            return self.paths
        client, bucket = self.location.client(), self.location.bucket_and_prefix[0]  # one client, thread-safe

        def fetch_one(key: str) -> None:
            try:
                data = client.get_object(Bucket=bucket, Key=self.location.key(key))["Body"].read()
            except Exception as exc:
                raise store_error(self.location, exc) from None
            self._write(key, data)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fetch_one, missing))
        return self.paths

    def _write(self, key: str, data: bytes) -> None:
        with atomic_write(self.folder / key) as out:
            out.write(data)
