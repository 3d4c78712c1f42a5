"""A real S3 API for the tests: moto's server on 127.0.0.1 at a free port, started and stopped by the test, and the
environment that points boto3, LitData and visionkit's commands at it (the usual AWS variables)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.serve_requests import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "visionkit-test", "AWS_SECRET_ACCESS_KEY": "visionkit-test"}


@dataclass
class ObjectStore:
    """A running moto S3 server: its endpoint and the variables a process needs to use it."""

    endpoint: str
    server: object

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self) -> Any:
        """A boto3 S3 client for this store."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def object_store() -> Iterator[ObjectStore]:
    """moto's S3 server in a thread of this process, stopped on the way out."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield ObjectStore(f"http://127.0.0.1:{port}", server)
    finally:
        with contextlib.suppress(Exception):  # stopped by the test already
            server.stop()
