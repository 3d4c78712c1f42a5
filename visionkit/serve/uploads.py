"""What a `POST /predict` carries, read and checked before it reaches a worker: every image of a multipart
upload or of a JSON body (`{"image": <base64>}` or `{"images": [...]}`), decoded once to RGB pixels.

Each problem is a `BadUpload` with an HTTP status and a message that names the upload and the fix, so one bad
request is answered alone with a 4xx and never reaches (or stops) the batch its neighbours are in. Images are
decoded with PIL from bytes only (never unpickled), and their header's size is checked before any pixel is
decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from visionkit.utils.io import pil_to_rgb

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class BadUpload(Exception):
    """A request the server refuses: `status` (4xx) and a message saying what is wrong and how to fix it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """One image of a request: its name (the uploaded file's name, else `image<N>`) and its bytes."""

    name: str
    data: bytes


def uploads_from_json(body: bytes) -> list[Upload]:
    """The images of a JSON body: `{"image": "<base64>"}` or `{"images": ["<base64>", ...]}` (a data URL's
    `data:image/...;base64,` prefix is allowed)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadUpload(400, f'the body is not valid JSON ({exc}); send {{"image": "<base64>"}}') from None
    if not isinstance(payload, dict) or not ({"image", "images"} & set(payload)):
        raise BadUpload(422, 'the JSON body needs "image" (a base64 string) or "images" (a list of base64 strings)')
    items: Any = payload["images"] if "images" in payload else [payload["image"]]
    if not isinstance(items, list) or not items:
        raise BadUpload(422, '"images" must be a non-empty list of base64 strings')
    uploads = []
    for index, item in enumerate(items):
        field = f'"images"[{index}]' if "images" in payload else '"image"'
        if not isinstance(item, str):
            raise BadUpload(422, f"{field} must be a base64 string, not {type(item).__name__}")
        text = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadUpload(400, f"{field} is not valid base64 ({exc})") from None
        uploads.append(Upload(f"image{index}", data))
    return uploads


def uploads_from_form(form: Any) -> list[Upload]:
    """The files of a multipart form, in the order sent (any field name; `image` or `images` by convention)."""
    files = [value for _, value in form.multi_items() if hasattr(value, "filename") and hasattr(value, "file")]
    if not files:
        raise BadUpload(422, "the form has no file: send the image as a file field, e.g. curl -F image=@photo.jpg")
    uploads = []
    for index, upload in enumerate(files):
        upload.file.seek(0)
        uploads.append(Upload(upload.filename or f"image{index}", upload.file.read()))
    return uploads


def content_kind(content_type: str) -> str:
    """`json` or `form` for the request's Content-Type; a 415 for anything else."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in JSON_TYPES:
        return "json"
    if kind in FORM_TYPES:
        return "form"
    shown = kind or "none"
    raise BadUpload(
        415,
        f"Content-Type {shown} is not accepted: send multipart/form-data (curl -F image=@photo.jpg) "
        'or application/json ({"image": "<base64>"})',
    )


def decode_upload(upload: Upload, max_pixels: int, rasters: bool = False) -> np.ndarray:
    """The upload as HxWx3 uint8 RGB (EXIF rotation applied, alpha on white); a BadUpload when it is empty, not
    an image, larger than `max_pixels` (checked from the header, before decoding) or truncated. With `rasters`
    (a model of scans or bands) as stored instead: (H, W, bands), 16-bit TIFF/PNG and DICOM included."""
    if not upload.data:
        raise BadUpload(400, f"{upload.name} is empty (0 bytes)")
    limit = f"this server takes at most {max_pixels / 1e6:g} megapixels (max_image_pixels=): send a smaller image"
    if rasters:
        return _decode_raster(upload, max_pixels, limit)
    try:
        with Image.open(io.BytesIO(upload.data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise BadUpload(
                    413, f"{upload.name} is {width}x{height} ({width * height / 1e6:g} megapixels); {limit}"
                )
            img.load()
            return pil_to_rgb(img)
    except BadUpload:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own check, at twice its MAX_IMAGE_PIXELS, came first
        raise BadUpload(413, f"{upload.name}: {exc}; {limit}") from None
    except (UnidentifiedImageError, ImportError):  # ultralytics' patched Image.open raises ImportError here
        raise BadUpload(400, f"{upload.name} is not an image (no format PIL reads: JPEG, PNG, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadUpload(400, f"{upload.name} is corrupt or truncated ({exc})") from None


def _decode_raster(upload: Upload, max_pixels: int, limit: str) -> np.ndarray:
    """A TIFF, DICOM or PNG upload as stored (the readers take files: it is written to a private temporary file
    with its name's suffix, read and deleted; nothing of it is unpickled)."""
    import os
    import tempfile

    from visionkit.utils.io import UnreadableImage
    from visionkit.utils.rasters import raster_size, read_raster

    suffix = os.path.splitext(upload.name)[1].lower() or ".png"
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(upload.data)
        handle.flush()
        try:
            height, width = raster_size(handle.name)[:2]
            if height * width > max_pixels:
                raise BadUpload(
                    413, f"{upload.name} is {width}x{height} ({width * height / 1e6:g} megapixels); {limit}"
                )
            return read_raster(handle.name)
        except UnreadableImage as exc:
            raise BadUpload(400, f"{upload.name}: {exc.reason}") from None
