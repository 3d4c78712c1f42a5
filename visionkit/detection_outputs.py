"""Detection predictions as files: annotated images, predictions.json and YOLO txt labels (all atomic)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visionkit.utils.io import atomic_write, read_image

PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
    (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0), (170, 255, 195), (0, 0, 128),
]  # fmt: skip


def detection_record(
    path: str, height: int, width: int, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, names: Sequence[str]
) -> dict[str, Any]:
    """One image's detections (boxes in original pixels, x1 y1 x2 y2) as a JSON-ready dict."""
    detections = []
    for (x1, y1, x2, y2), score, cls in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
        detections.append(
            {
                "class_id": int(cls),
                "class": names[int(cls)],
                "confidence": round(float(score), 5),
                "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)],
                "box_xywhn": [
                    round(v, 6)
                    for v in ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
                ],
            }
        )
    return {"path": path, "height": height, "width": width, "detections": detections}


def output_names(paths: Sequence[str]) -> list[str]:
    """A unique relative name per input (path below the inputs' common folder), for files written per image."""
    parents = [str(Path(p).resolve().parent) for p in paths]
    root = Path(os.path.commonpath(parents)) if parents else Path()
    return [str(Path(p).resolve().relative_to(root)) for p in paths]


def draw_detections(image: np.ndarray, record: dict[str, Any]) -> Image.Image:
    """The image with each box outlined in its class colour and labelled `class score`."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    thickness = max(1, round(max(canvas.size) / 300))
    font = ImageFont.load_default(size=max(10, round(max(canvas.size) / 40)))
    for det in record["detections"]:
        colour = PALETTE[det["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = det["box_xyxy"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=thickness)
        text = f"{det['class']} {det['confidence']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        lift = bottom - top + 2
        y_text = y1 - lift if y1 - lift >= 0 else y1
        draw.rectangle([x1, y_text, x1 + right - left + 4, y_text + lift], fill=colour)
        draw.text((x1 + 2, y_text), text, fill=(255, 255, 255), font=font)
    return canvas


def write_detections(
    records: Sequence[dict[str, Any]], output_dir: Path, save_conf: bool = False, draw: bool = True
) -> None:
    """`predictions.json`, `labels/<name>.txt` (YOLO `class cx cy w h`, `conf` appended with `save_conf`)
    and, with `draw`, `images/<name>` (each input re-read and annotated; inputs are never modified)."""
    names = output_names([r["path"] for r in records])
    for record, name in zip(records, names):
        if record.get("skipped"):
            continue
        lines = []
        for det in record["detections"]:
            fields = [str(det["class_id"]), *(f"{v:.6f}" for v in det["box_xywhn"])]
            lines.append(" ".join(fields + ([f"{det['confidence']:.5f}"] if save_conf else [])))
        with atomic_write((output_dir / "labels" / name).with_suffix(".txt"), "w") as handle:
            handle.write("\n".join(lines) + ("\n" if lines else ""))
        if draw:
            target = output_dir / "images" / name
            suffix = target.suffix.lower() if target.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
            with atomic_write(target.with_suffix(suffix)) as handle:
                picture = draw_detections(read_image(record["path"]), record)
                picture.save(handle, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG", quality=92)
    with atomic_write(output_dir / "predictions.json", "w") as handle:
        json.dump(list(records), handle, indent=1)
