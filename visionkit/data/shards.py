"""Packed datasets: every split of a source as LitData chunk files under `<url>/<split>/` (LitData's `index.json`
beside them), and `visionkit.json` at `<url>` with what the data module needs before it reads an image: task,
class names, counts, the pixel format and each image's label or boxes. `visionkit-pack` writes them; `data=stream`
reads them one sample at a time through LitData's `StreamingDataset` and its local chunk cache.

A location is a local folder or `s3://bucket/prefix` (AWS S3, or MinIO, Ceph, R2 through an endpoint URL:
`AWS_ENDPOINT_URL` or `storage_options.endpoint_url`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from visionkit.data.cache import default_cache_dir
from visionkit.errors import VisionkitError, exception_chain
from visionkit.utils.io import atomic_write

META_NAME = "visionkit.json"
PACK_FORMAT = 1


def allow_http_endpoints() -> None:
    """Let LitData's obstore downloads reach plain-http endpoints (a MinIO or moto server on a private network):
    LitData builds its obstore S3Store from the boto3 client's endpoint but without obstore's `allow_http`, so
    every chunk request to an http:// endpoint fails with "builder error" (litdata 0.2.76)."""
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options.setdefault("allow_http", "true")


@dataclass(frozen=True)
class Location:
    """Where a packed dataset lives: a local folder or `s3://bucket/prefix`, with the storage options LitData and
    boto3 take (endpoint_url, aws_access_key_id, aws_secret_access_key, region_name; the AWS_* variables apply
    when they are not given)."""

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {k: v for k, v in dict(self.options).items() if v is not None})
        scheme = self.url.split("://", 1)[0] if "://" in self.url else ""
        if scheme not in ("", "s3", "file"):
            raise VisionkitError(
                f"{self.url}: packed datasets live in a local folder or s3://bucket/prefix (S3, MinIO, Ceph, R2 "
                "through an endpoint URL); copy it to one of those"
            )

    @property
    def remote(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.url[len("s3://") :].partition("/")
        return bucket, prefix.strip("/")

    def key(self, name: str) -> str:
        """The object key of file `name` under this `s3://` location's prefix."""
        return "/".join(p for p in (self.bucket_and_prefix[1], name) if p)

    def join(self, *parts: str) -> str:
        """The url of `parts` under this location (a local path stays a path)."""
        if self.remote:
            return "/".join([self.url.rstrip("/"), *parts])
        return str(Path(self.url.removeprefix("file://")).expanduser().joinpath(*parts))

    def client(self, quick: bool = False) -> Any:
        """A boto3 S3 client with this location's options; `quick`: one try with short timeouts (a probe)."""
        import boto3
        from botocore.config import Config

        allowed = ("endpoint_url", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name")
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}) if quick else None
        return boto3.client("s3", config=config, **{k: v for k, v in self.options.items() if k in allowed})

    def answers(self, name: str) -> bool:
        """Whether the store answers a request for file `name` now (one quick try; a local folder always does)."""
        if not self.remote:
            return True
        try:
            self.client(quick=True).head_object(Bucket=self.bucket_and_prefix[0], Key=self.key(name))
        except Exception as exc:
            return not unreachable(exc)
        return True

    def read_bytes(self, name: str) -> bytes:
        """The bytes of file `name` under this location; a missing store, bucket, file or refused credentials
        stop with what to check."""
        if not self.remote:
            try:
                return Path(self.join(name)).read_bytes()
            except FileNotFoundError:
                raise missing_pack(self) from None
        try:
            return self.client().get_object(Bucket=self.bucket_and_prefix[0], Key=self.key(name))["Body"].read()
        except Exception as exc:  # botocore raises one ClientError for all service answers
            raise store_error(self, exc) from None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write file `name` under this location (atomically on a local disk; S3 objects appear whole)."""
        if not self.remote:
            with atomic_write(self.join(name)) as out:
                out.write(data)
            return
        try:
            self.client().put_object(Bucket=self.bucket_and_prefix[0], Key=self.key(name), Body=data)
        except Exception as exc:
            raise store_error(self, exc) from None

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.read_bytes(name))


class MissingPack(VisionkitError):
    """A location without `visionkit.json`: nothing was packed there (yet)."""


def missing_pack(location: Location) -> MissingPack:
    return MissingPack(
        f"{location.join(META_NAME)} does not exist: {location.url} was not packed, or the path is wrong; pack it "
        f"with visionkit-pack data=<source> out={location.url}"
    )


def store_error(location: Location, exc: BaseException) -> VisionkitError:
    """One line for what an object store answered: no such bucket or file, refused credentials, unreachable."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    endpoint = location.options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    bucket = location.bucket_and_prefix[0]
    if code in ("NoSuchBucket", "InvalidBucketName"):
        return VisionkitError(f"bucket {bucket!r} does not exist at {endpoint}; check the bucket in {location.url}")
    if code in ("NoSuchKey", "404"):
        return missing_pack(location)
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
        return VisionkitError(
            f"{endpoint} refused the credentials for {location.url} ({code}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or storage_options.aws_access_key_id/aws_secret_access_key"
        )
    if type(exc).__name__ == "NoCredentialsError":
        return VisionkitError(
            f"no credentials for {location.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if unreachable(exc):
        return StoreUnreachable(
            f"cannot reach {endpoint} for {location.url} ({type(exc).__name__}); check that the store runs and its "
            "endpoint URL (AWS_ENDPOINT_URL or storage_options.endpoint_url)"
        )
    return VisionkitError(f"{location.url}: the store answered {code or type(exc).__name__}: {exc}")


class StoreUnreachable(VisionkitError):
    """The object store did not answer (stopped, network down) after the retries: training stops with a
    checkpoint to resume from instead of skipping the samples."""


_UNREACHABLE_WORDS = (
    "error sending request",
    "connection refused",
    "could not connect",
    "prefetch thread crashed",
    "timed out",
    "connection reset",
    "endpointconnectionerror",
    "connection aborted",
)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is a store that did not answer, as opposed to data that is damaged."""
    for link in islice(exception_chain(exc), 8):
        if isinstance(link, (ConnectionError, TimeoutError)) or type(link).__name__ in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
        ):
            return True
        if any(word in str(link).lower() for word in _UNREACHABLE_WORDS):
            return True
    return False


def stream_cache_dir(url: str) -> str:
    """Where the chunks of a packed dataset at `url` are cached by default (one folder per url)."""
    return str(default_cache_dir() / "stream" / hashlib.sha1(url.encode()).hexdigest()[:16])


def chunk_spans(location: Location, split: str) -> list[tuple[str, int]]:
    """(chunk file name, sample count) of each chunk of `split`, in sample order, from LitData's index.json."""
    index = location.read_json(f"{split}/index.json")
    return [(str(chunk["filename"]), int(chunk["chunk_size"])) for chunk in index["chunks"]]
