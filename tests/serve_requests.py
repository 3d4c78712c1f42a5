"""Equipment for talking to a real visionkit-serve (tests and bench/bench_serve.py): the server started as a
subprocess on a free localhost port and stopped with all its workers, and the catalogue of bad requests."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running visionkit-serve: its URL, process and log file."""

    url: str
    process: subprocess.Popen
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(
    ckpt: Path,
    folder: Path,
    *overrides: str,
    api_key: str | None = None,
    start_timeout: float = 180,
    bin_dir: Path = BIN,
) -> Iterator[Server]:
    """visionkit-serve (of the venv whose scripts are in `bin_dir`) for `ckpt` on a free port, ready (GET /health
    answers 200) when the block starts; stopped (SIGINT, then SIGKILL for the whole process group after 20 s) when
    it ends."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    args = [f"ckpt_path={ckpt}", f"port={port}", f"hydra.run.dir={folder / f'serve-{port}'}", *overrides]
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    if api_key:
        env["VISIONKIT_API_KEY"] = api_key
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(bin_dir / "visionkit-serve"), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, {"X-API-Key": api_key} if api_key else {})
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"visionkit-serve exited with {process.returncode}:\n{server.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"visionkit-serve not ready after {start_timeout} s:\n{server.log_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/health", headers=server.headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with suppress(ProcessLookupError):  # workers LitServe started, should any outlive the server
            os.killpg(process.pid, signal.SIGKILL)


def encoded(image: np.ndarray, kind: str = "PNG") -> bytes:
    """An RGB array as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=kind)
    return buffer.getvalue()


@lru_cache(maxsize=2)
def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid black 1-bit PNG of width x height pixels (400 megapixels by default) in a few kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class BadRequest:
    """One kind of bad `POST /predict`: httpx keyword arguments and the status it must get."""

    name: str
    request: dict[str, Any]
    status: int


def bad_requests(good_jpeg: bytes, headers: dict[str, str]) -> list[BadRequest]:
    """The bad requests every server must answer alone with a 4xx JSON error (issue 19's list)."""
    json_headers = {**headers, "Content-Type": "application/json"}

    def upload(name: str, data: bytes, kind: str | None = None) -> dict[str, Any]:
        return {"files": {"image": (name, data, kind) if kind else (name, data)}, "headers": headers}

    return [
        BadRequest("not an image", upload("notes.txt", b"not an image at all", "text/plain"), 400),
        BadRequest("truncated JPEG", upload("cut.jpg", good_jpeg[: len(good_jpeg) // 2]), 400),
        BadRequest("zero bytes", upload("empty.png", b""), 400),
        BadRequest("20,000 x 20,000 PNG", upload("huge.png", bomb_png()), 413),
        BadRequest(
            "wrong content type", {"content": good_jpeg, "headers": {**headers, "Content-Type": "image/jpeg"}}, 415
        ),
        BadRequest("malformed base64", {"content": b'{"image": "bm90 IGJhc2U2NA=!"}', "headers": json_headers}, 400),
        BadRequest("malformed JSON", {"content": b'{"image": ', "headers": json_headers}, 400),
        BadRequest("missing field", {"content": b'{"picture": "aGk="}', "headers": json_headers}, 422),
        BadRequest(
            "wrong API key", {"files": {"image": ("ok.jpg", good_jpeg)}, "headers": {"X-API-Key": "wrong"}}, 401
        ),
    ]
