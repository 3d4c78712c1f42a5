"""`visionkit-explore`: one self-contained page that steps through a network on one image (explore.html: the
page's script and the data of explore_data / explore_decision embedded, nothing fetched), or the same page served
on localhost (`serve=true`), where every layer's step-through is computed on demand and an edited first-layer
kernel can be put into the real network."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionkit.errors import VisionkitError
from visionkit.explain.explore_data import ExploreOptions, data_patches, image_patches, png_url, stage_rows
from visionkit.explain.explore_decision import decision_and_fool
from visionkit.explain.features import first_conv
from visionkit.explain.subjects import Subject
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

DATA_MARK = "/*VISIONKIT_DATA*/null"


def explore_data(
    subject: Subject,
    image: np.ndarray,
    options: ExploreOptions,
    title: str,
    pictures: Iterable[np.ndarray] = (),
    every_step: bool = False,
) -> dict[str, Any]:
    """Everything the page shows for one image (H×W×3 uint8, or a scan or raster as stored); `pictures`:
    validation images searched for the patches that excite each channel most."""
    tensor, picture = subject.prepare(image)
    rows, ran = stage_rows(subject, tensor, options, every_step)
    image_patches(rows, ran, picture.shape[:2], options)
    searched = data_patches(subject, rows, pictures, options)
    _, conv = first_conv(subject.network)
    return {
        "title": title,
        "kind": subject.kind,
        "note": subject.note,
        "input": {"png": png_url(picture), "height": int(picture.shape[0]), "width": int(picture.shape[1])},
        "first_conv": {
            "kernel": list(conv.kernel_size),
            "in_channels": int(conv.in_channels),
            "out_channels": int(conv.out_channels),
        },
        "stages": rows,
        "data_images": searched,
        "options": asdict(options),
        **decision_and_fool(subject, tensor, picture),
    }


def page_html(data: dict[str, Any]) -> str:
    """The page with `data` embedded (a JSON literal the script reads)."""
    template = files("visionkit.explain").joinpath("explore.html").read_text(encoding="utf-8")
    literal = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return template.replace(DATA_MARK, literal)


def write_page(data: dict[str, Any], path: Path) -> Path:
    """explore.html, written atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(page_html(data))
    return path


def build_page(
    subject: Subject,
    source: str | Path,
    output_dir: Path,
    options: ExploreOptions,
    pictures: Iterable[np.ndarray] = (),
) -> dict[str, float]:
    """Write `<output_dir>/explore.html` for the image at `source`; its size (MB) and build time (s)."""
    start = time.perf_counter()
    image = subject.load(str(source))
    data = explore_data(subject, image, options, f"{subject.kind}: {Path(str(source)).name}", pictures)
    path = write_page(data, output_dir / "explore.html")
    seconds = time.perf_counter() - start
    size = path.stat().st_size / 2**20
    log.info(f"explore page: {path} ({size:.1f} MB, built in {seconds:.1f} s); open it in a browser (file://)")
    return {"page_mb": size, "build_s": seconds}


class ExploreServer:
    """The page on localhost: GET / (the page, every step-through included), POST /kernel (replace one kernel
    of the first convolution, answer with the network's new decision)."""

    def __init__(self, subject: Subject, image: np.ndarray, options: ExploreOptions, title: str) -> None:
        self.subject, self.image, self.options = subject, image, options
        self.page = page_html(explore_data(subject, image, options, title, every_step=True)).encode()
        self.lock = threading.Lock()

    def with_kernel(self, channel: int, kernel: list[list[float]]) -> dict[str, Any]:
        """The decision with filter `channel` of the first convolution replaced by `kernel` (k×k, the same for
        every input channel), the real weights put back afterwards."""
        _, conv = first_conv(self.subject.network)
        values = torch.tensor(kernel, dtype=conv.weight.dtype, device=conv.weight.device)
        if values.shape != conv.weight.shape[2:] or not 0 <= channel < conv.out_channels:
            raise VisionkitError(
                f"kernel {tuple(values.shape)} for channel {channel}: the first convolution takes "
                f"{tuple(conv.weight.shape[2:])} kernels for channels 0..{conv.out_channels - 1}"
            )
        tensor, picture = self.subject.prepare(self.image)
        with self.lock, torch.no_grad():
            saved = conv.weight[channel].clone()
            try:
                conv.weight[channel] = values.expand_as(saved) / conv.in_channels
                return decision_and_fool(self.subject, tensor, picture)["decision"]
            finally:
                conv.weight[channel] = saved

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format % args)

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path in ("/", "/explore.html"):
                    self._send(HTTPStatus.OK, server.page, "text/html; charset=utf-8")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

            def do_POST(self) -> None:
                if self.path != "/kernel":
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                    return
                try:
                    length = min(int(self.headers.get("Content-Length", 0)), 65536)
                    asked = json.loads(self.rfile.read(length))
                    answer = server.with_kernel(int(asked["channel"]), asked["kernel"])
                    self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")
                except (VisionkitError, ValueError, KeyError, TypeError) as exc:
                    body = json.dumps({"error": str(exc)}).encode()
                    self._send(HTTPStatus.BAD_REQUEST, body, "application/json")

        return Handler

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """A started server (in a daemon thread) on host:port (0: a free port); `.shutdown()` stops it."""
        httpd = ThreadingHTTPServer((host, port), self.handler())
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd
