"""A built-in test video: the synthetic shapes moving across a still background, encoded with PyAV (H.264,
optionally with a tone as AAC audio), with each frame's true boxes. For tests, benchmarks and trying the video
commands without footage of one's own."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionkit.data.shapes import SHAPE_CLASSES, background, polygon
from visionkit.utils.io import atomic_path


def _draw(image: Image.Image, kind: str, cx: float, cy: float, r: float, colour: tuple[int, ...]) -> None:
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(polygon(kind, cx, cy, r, math.pi / 7), fill=colour)


def render_shapes_frames(
    frames: int, height: int, width: int, objects: int = 2, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`frames` RGB pictures of `objects` shapes crossing the picture from left to right at different heights,
    and per frame the true boxes (K, 5: class x1 y1 x2 y2, pixels) of the shapes inside the picture."""
    rng = np.random.default_rng(seed)
    still = background(rng, max(height, width)).crop((0, 0, width, height))
    paths = []
    for k in range(objects):
        r = min(height, width) * rng.uniform(0.12, 0.18)
        cy = height * (k + 1) / (objects + 1)
        start, speed = -r + rng.uniform(0, width * 0.3), (width + 2 * r) / frames * rng.uniform(0.7, 1.0)
        colour = tuple(int(v) for v in rng.integers(0, 90, 3) + (160 if k % 2 else 0))
        paths.append((SHAPE_CLASSES[k % len(SHAPE_CLASSES)], cy, r, start, speed, colour))
    pictures, truths = [], []
    for t in range(frames):
        image = still.copy()
        boxes = []
        for kind, cy, r, start, speed, colour in paths:
            cx = start + speed * t
            _draw(image, kind, cx, cy, r, colour)
            x1, x2 = max(cx - r, 0), min(cx + r, width)
            if x2 - x1 > r * 0.6:  # most of the shape is in the picture
                boxes.append([SHAPE_CLASSES.index(kind), x1, cy - r, x2, cy + r])
        pictures.append(np.asarray(image))
        truths.append(np.array(boxes, dtype=np.float32).reshape(-1, 5))
    return pictures, truths


def write_shapes_video(
    path: str | os.PathLike[str],
    frames: int = 60,
    height: int = 360,
    width: int = 640,
    fps: int = 30,
    objects: int = 2,
    audio: bool = False,
    seed: int = 0,
) -> list[np.ndarray]:
    """Encode `render_shapes_frames` as an H.264 video at `path` (with a 440 Hz tone when `audio`); returns the
    true boxes per frame."""
    import av

    pictures, truths = render_shapes_frames(frames, height, width, objects, seed)
    with atomic_path(path, suffix=Path(path).suffix) as partial:
        container = av.open(str(partial), "w")
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=22050)
            sound.layout = "mono"
        for picture in pictures:
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(round(22050 * frames / fps)) / 22050)).astype(
                np.float32
            )
            for offset in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, offset : offset + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 22050, offset
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
        container.close()
    return truths
