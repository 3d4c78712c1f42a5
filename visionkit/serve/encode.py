"""Results on the wire: each `Result.to_dict()` as the predict command writes it, with what a file would have
held sent inline: a segmentation mask as a PNG of class ids and/or run-length encoding, a stylized image as
base64 PNG or JPEG. One row per result type in `INLINE_FIELDS`."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from visionkit.data.mask_files import mask_image
from visionkit.inference import Result, SegmentationResult, StylizedResult


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A class-id mask as runs in row-major order: `{"size": [h, w], "values": [...], "counts": [...]}`, run i
    being `counts[i]` pixels of class `values[i]`; `rle_to_mask` reverses it."""
    flat = np.ascontiguousarray(mask).ravel()
    if flat.size == 0:
        return {"size": list(mask.shape[:2]), "values": [], "counts": []}
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    counts = np.diff(np.append(starts, flat.size))
    return {"size": [int(s) for s in mask.shape[:2]], "values": flat[starts].tolist(), "counts": counts.tolist()}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """The HxW class-id mask of `mask_to_rle`'s encoding."""
    height, width = rle["size"]
    return np.repeat(np.asarray(rle["values"], dtype=np.int64), rle["counts"]).reshape(height, width)


def mask_png(mask: np.ndarray) -> str:
    """Base64 of the mask as a palette PNG whose pixel values are the class ids (shown in the class colours, the
    background transparent so a browser can lay it over the photo)."""
    image = mask_image(mask)
    buffer = io.BytesIO()
    if image.mode == "P":
        image.save(buffer, format="PNG", transparency=0)
    else:
        image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def picture_base64(picture: np.ndarray, image_format: str = "png", quality: int = 92) -> str:
    """Base64 of an HxWx3 uint8 picture as PNG or JPEG."""
    buffer = io.BytesIO()
    kind = "JPEG" if image_format == "jpeg" else "PNG"
    Image.fromarray(picture).save(buffer, format=kind, **({"quality": quality} if kind == "JPEG" else {}))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _segmentation(result: SegmentationResult, record: dict[str, Any], mask_format: str, image_format: str) -> None:
    del record["mask"]  # the mask file's name, which a server does not write
    if mask_format in ("png", "both"):
        record["mask_png"] = mask_png(result.mask)
    if mask_format in ("rle", "both"):
        record["mask_rle"] = mask_to_rle(result.mask)


def _stylized(result: StylizedResult, record: dict[str, Any], mask_format: str, image_format: str) -> None:
    del record["output"]  # the output file's name, which a server does not write
    record.update(image=picture_base64(result.image, image_format), image_format=image_format)


# The fields a result's files would have held, put into its record (in place).
INLINE_FIELDS: dict[type[Result], Callable[[Any, dict[str, Any], str, str], None]] = {
    SegmentationResult: _segmentation,
    StylizedResult: _stylized,
}


def encode_result(result: Result, name: str, mask_format: str = "png", image_format: str = "png") -> dict[str, Any]:
    """`result.to_dict()` named after the upload, with the task's pictures inline (`INLINE_FIELDS`)."""
    record = {**result.to_dict(), "path": name}
    inline = INLINE_FIELDS.get(type(result))
    if inline is not None and result.ok:
        inline(result, record, mask_format, image_format)
    return record
