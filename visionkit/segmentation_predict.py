"""`visionkit-predict` for segmentation: every image at its own resolution through the tiled predictor,
written as mask PNGs, overlays and predictions.json, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from visionkit.detection_outputs import output_names
from visionkit.errors import VisionkitError
from visionkit.segmentation_outputs import segmentation_record, write_records, write_segmentation
from visionkit.tasks.segmentation import SIZE_MULTIPLE, SegmentationTask
from visionkit.tiling import segment_image
from visionkit.utils.io import read_image
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


def _rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    height, width = (max(1, round(v * scale)) for v in image.shape[:2])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def predict_segmentation(
    task: SegmentationTask,
    paths: Sequence[str],
    output_dir: Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    tile: tuple[int, int],
    overlap: float = 0.25,
    batch_size: int = 4,
    scale: float = 1.0,
    skip_bad_images: bool = False,
    draw: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Segment each image (rescaled by `scale`, tiled with `tile`/`overlap`), map the labels back to the
    original size and write the outputs; returns counts for the summary."""
    if any(int(t) % SIZE_MULTIPLE for t in tile):
        raise VisionkitError(f"tile_size={list(tile)}: tiles must be multiples of {SIZE_MULTIPLE}")
    if scale <= 0:
        raise VisionkitError(f"scale={scale} must be positive (e.g. 0.5 for images twice the training scale)")
    from rich.progress import track

    task = task.to(device).eval()
    records: list[dict[str, Any]] = []
    names = output_names(list(paths))
    with torch.inference_mode():
        for path, name in track(list(zip(paths, names)), description="segmenting", transient=True):
            try:
                image = read_image(path)
            except VisionkitError as exc:
                if not skip_bad_images:
                    raise
                log.warning(f"skipped: {exc}")
                records.append({"path": path, "skipped": True})
                continue
            labels = segment_image(
                task.class_probabilities,
                _rescaled(image, scale),
                mean,
                std,
                tile=tile,
                overlap=overlap,
                batch_size=batch_size,
                multiple=SIZE_MULTIPLE,
                device=device,
            )
            if labels.shape != image.shape[:2]:
                resized = Image.fromarray(labels.astype(np.int32)).resize(image.shape[1::-1], Image.Resampling.NEAREST)
                labels = np.asarray(resized)
            mask_file = write_segmentation(image, labels, name, output_dir, draw=draw)
            records.append(segmentation_record(path, labels, task.class_names, mask_file))
    write_records(records, output_dir)
    skipped = sum(1 for r in records if r.get("skipped"))
    log.info(f"segmented {len(records) - skipped} image(s), skipped {skipped}: {output_dir}")
    return {"images": float(len(records) - skipped), "skipped": float(skipped)}
