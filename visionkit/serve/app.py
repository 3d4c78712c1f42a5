"""`visionkit-serve`: a LitServe server for one checkpoint. LitServe runs the inference workers (one process per
device and worker, dynamic batching), `/health`, `/info`, the upload size limit, the API-key check and the
OpenAPI docs; this module adds what it leaves to us: `POST /predict` reads and checks every upload in the HTTP
process before it joins a batch (a bad one is answered alone with a 4xx), and `GET /` serves the page."""

from __future__ import annotations

import errno
import os
import signal
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any

import litserve as ls
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

import visionkit
from visionkit.data.pixels import PixelFormat
from visionkit.errors import VisionkitError
from visionkit.inference import Predictor
from visionkit.serve.api import PredictorAPI, ServeOptions, cpu_threads
from visionkit.serve.uploads import (
    BadUpload,
    Upload,
    content_kind,
    decode_upload,
    uploads_from_form,
    uploads_from_json,
)
from visionkit.utils.palette import box_colour, class_palette

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to
ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "mps": "mps"}

_PREDICT_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "description": "base64 of an image file"},
                        "images": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        },
        "required": True,
    }
}


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and batches (conf/serve.yaml)."""

    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    workers: int = 1
    max_batch_size: int = 16
    batch_timeout: float = 0.01
    timeout: float = 30.0
    max_upload_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    max_images: int = 64
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        """Refuse settings LitServe would stop on, naming the key and what it takes (once, when made)."""
        if self.host not in HOSTS:
            raise VisionkitError(f"host={self.host}: give 127.0.0.1 (this machine), 0.0.0.0 or :: (every interface)")
        if not 1024 <= self.port <= 65535:
            raise VisionkitError(f"port={self.port}: give a port from 1024 to 65535")
        if self.device.split(":")[0] not in ACCELERATORS:
            raise VisionkitError(f"device={self.device}: give auto, cpu or cuda")
        if self.workers < 1 or self.max_batch_size < 1 or self.max_images < 1:
            raise VisionkitError("workers, max_batch_size and max_images must be at least 1")
        if self.batch_timeout < 0 or self.batch_timeout >= self.timeout:
            raise VisionkitError(
                f"batch_timeout={self.batch_timeout}: give 0 or more seconds, less than timeout={self.timeout}"
            )
        if self.max_upload_mb <= 0 or self.max_image_pixels <= 0:
            raise VisionkitError("max_upload_mb and max_image_pixels must be positive")
        if self.shutdown_timeout < 0:
            raise VisionkitError(f"shutdown_timeout={self.shutdown_timeout}: give 0 or more seconds")


def model_info(predictor: Predictor, hyper_parameters: dict[str, Any], ckpt_path: str) -> dict[str, Any]:
    """What `GET /info` says of the model: task, classes (with the colours the page draws them in), input size,
    model name, the runtime that runs it (PyTorch, ONNX Runtime, OpenVINO, TorchScript) and versions."""
    hp = hyper_parameters
    if "arch" in hp:
        name = f"{hp['arch']}-{hp.get('encoder', '')}".rstrip("-")
    else:
        name = str(hp.get("backbone") or hp.get("model") or type(predictor.model).__name__)
    detection = predictor.task_name == "detection"  # detectors have no background: class k takes colour k + 1
    ids = range(len(predictor.names))
    colours = [box_colour(i) if detection else tuple(int(v) for v in class_palette()[i % 256]) for i in ids]
    return {
        "task": predictor.task_name,
        "classes": predictor.names,
        "colours": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours],
        "input_size": list(predictor.contract.image_size),
        "pixels": predictor.contract.pixels.state(),
        "model": name,
        "checkpoint": os.path.basename(os.path.normpath(ckpt_path)),
        "runtime": getattr(predictor.model, "exported", None) or "PyTorch",
        "visionkit_version": visionkit.__version__,
    }


def served_gallery(folder: str | None, predictor: Predictor) -> str | None:
    """The gallery folder `/search` answers from, checked before any worker starts (None when not given)."""
    if not folder:
        return None
    from visionkit.inference.gallery import Gallery

    if predictor.task_name != "embedding":
        raise VisionkitError(
            f"gallery={folder}: a gallery is searched with an embedding checkpoint, not a {predictor.task_name} one"
        )
    Gallery.load(folder, "gallery")
    return os.path.realpath(os.path.expanduser(str(folder)))


def page_html() -> str:
    """The try-it page (plain HTML and JavaScript, nothing fetched from elsewhere)."""
    return resources.files("visionkit.serve").joinpath("page.html").read_text(encoding="utf-8")


def _payload_limit_message(settings: ServerSettings) -> str:
    return f"the request is larger than this server's {settings.max_upload_mb:g} MB limit (max_upload_mb=)"


async def _read_uploads(request: Request, settings: ServerSettings) -> list[Upload]:
    """The request's images as sent (multipart files or JSON base64); a BadUpload for what cannot be read."""
    kind = content_kind(request.headers.get("content-type", ""))
    try:
        if kind == "json":
            uploads = uploads_from_json(await request.body())
        else:
            try:
                form = await request.form(max_files=settings.max_images)
            except HTTPException:
                raise
            except Exception as exc:  # a multipart body the parser gave up on
                raise BadUpload(400, f"the multipart form could not be read ({exc})") from None
            uploads = uploads_from_form(form)
    except HTTPException as exc:  # LitServe's size limit while the body is read; Starlette's multipart errors
        if exc.status_code == 413:
            raise BadUpload(413, _payload_limit_message(settings)) from None
        raise BadUpload(exc.status_code, f"the multipart form could not be read ({exc.detail})") from None
    if len(uploads) > settings.max_images:
        raise BadUpload(413, f"{len(uploads)} images in one request; this server takes {settings.max_images}")
    return uploads


def _predict_route(
    server: ls.LitServer, api: PredictorAPI, settings: ServerSettings, search: bool = False, rasters: bool = False
) -> Any:
    """The endpoint of `POST /predict` (or, with `search`, `POST /search?k=5`): uploads read, checked and decoded
    here (in a thread, off the event loop), then handed to LitServe's queue to be batched with the other
    requests. `rasters`: the model takes scans or bands, so uploads are read as stored (TIFF, DICOM, 16-bit PNG)."""
    from litserve.server import RegularRequestHandler

    handler = RegularRequestHandler(api, server)

    async def predict(request: Request) -> Response:
        extra: dict[str, Any] = {}
        if search:
            k = request.query_params.get("k", "5")
            if not k.isdigit() or int(k) < 1:
                return JSONResponse({"detail": f"k={k}: give a whole number of identities, 1 or more"}, 422)
            extra["k"] = int(k)
        try:
            uploads = await _read_uploads(request, settings)
            images = await run_in_threadpool(
                lambda: [decode_upload(u, settings.max_image_pixels, rasters) for u in uploads]
            )
        except BadUpload as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return await handler.handle_request({"names": [u.name for u in uploads], "images": images, **extra}, dict)

    return predict


def build_server(options: ServeOptions, settings: ServerSettings, info: dict[str, Any]) -> ls.LitServer:
    """The LitServer of a checkpoint, its `/predict` and `/` routes ours (see the module's docstring)."""
    api = PredictorAPI(options, max_batch_size=settings.max_batch_size, batch_timeout=settings.batch_timeout)
    accelerator = ACCELERATORS[settings.device.split(":")[0]]
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        workers_per_device=settings.workers,
        timeout=settings.timeout,
        model_metadata=info,
        max_payload_size=int(settings.max_upload_mb * 1_000_000),
    )
    ours = ("/", "/predict")
    server.app.router.routes = [r for r in server.app.router.routes if not (isinstance(r, APIRoute) and r.path in ours)]
    routes = {
        "/predict": (
            "Predict on one or more images",
            "multipart/form-data file fields, or JSON {image: base64} / {images: [base64, ...]}; the answer is a list "
            "of Result.to_dict() records, one per image in the order sent.",
        )
    }
    if options.gallery:
        routes["/search"] = (
            "The gallery's nearest identities of each image",
            "Uploads as for /predict; query k (default 5). Each record: identity (or 'unknown' past the threshold), "
            "distance, threshold and the k nearest identities with their distances and images.",
        )
    rgb8 = PixelFormat.of(info.get("pixels")).rgb8
    for path, (summary, description) in routes.items():
        server.app.add_api_route(
            path,
            _predict_route(server, api, settings, search=path == "/search", rasters=not rgb8),
            methods=["POST"],
            dependencies=[Depends(api.authorize)],
            summary=summary,
            description=description,
            openapi_extra=_PREDICT_DOC,
        )
    page = page_html()
    server.app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    return server


def check_port_free(host: str, port: int) -> None:
    """Stop with one line naming the port when another server holds it (before anything is announced)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise VisionkitError(
                    f"port {port} on {host} is in use (by another server?); choose another port="
                ) from None
            raise VisionkitError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another host= or port="
            ) from None


def _stop_on(signals: tuple[signal.Signals, ...]) -> None:
    """SIGTERM and SIGHUP stop the server as Ctrl-C does: LitServe's shutdown then stops taking requests, lets
    the ones in flight finish (`shutdown_timeout`) and ends every worker, instead of the main process dying
    alone and leaving its workers listening. Processes forked from here get the default handlers back."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in signals:
        signal.signal(sig, interrupt)
    os.register_at_fork(after_in_child=lambda: [signal.signal(sig, signal.SIG_DFL) for sig in signals])


def run_server(options: ServeOptions, settings: ServerSettings, info: dict[str, Any]) -> None:
    """Serve until Ctrl-C, SIGTERM or SIGHUP; then requests in flight get their answers (up to
    `shutdown_timeout` seconds), every worker stops, and the command exits 0."""
    check_port_free(settings.host, settings.port)
    server = build_server(options, settings, info)
    server.uvicorn_graceful_timeout = settings.shutdown_timeout
    where = "localhost" if settings.host == "127.0.0.1" else settings.host
    print(f"visionkit-serve: {info['task']} model {info['model']} at http://{where}:{settings.port}/", flush=True)
    _stop_on((signal.SIGTERM, signal.SIGHUP))
    server.run(host=settings.host, port=settings.port, generate_client_file=False, num_api_servers=1)
    print("visionkit-serve: stopped", flush=True)


__all__ = [
    "ServeOptions",
    "ServerSettings",
    "build_server",
    "cpu_threads",
    "model_info",
    "run_server",
    "served_gallery",
]
