"""The one class palette (PASCAL VOC's colour map) for every picture visionkit draws: masks, overlays, boxes in
training plots, predictions and explain pictures. Masks use colour = class id (0, background, is black);
detectors have no background class, so their class k takes colour k + 1 (`box_colour`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

IGNORED_COLOUR = (255, 255, 255)


@lru_cache(maxsize=4)
def class_palette(num_colours: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, (num_colours, 3) uint8: class 0 black, then well-separated colours."""
    palette = np.zeros((num_colours, 3), dtype=np.uint8)
    for index in range(num_colours):
        code, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette[index] = (r, g, b)
    palette.setflags(write=False)
    return palette


def box_colour(class_id: int) -> tuple[int, int, int]:
    """The colour of a detector's class `class_id` (the palette's entry class_id + 1: never background black)."""
    r, g, b = (int(v) for v in class_palette()[(int(class_id) + 1) % 256])
    return r, g, b


def colorize(mask: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """HxW class ids as an HxWx3 uint8 picture in the class colours (ignored pixels white)."""
    ids = np.asarray(mask).astype(np.int64)
    palette = class_palette(max(256, int(ids.max(initial=0)) + 1))
    rgb = palette[np.clip(ids, 0, len(palette) - 1)]
    if ignore_index is not None:
        rgb[ids == ignore_index] = IGNORED_COLOUR
    return rgb


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The photo with every non-background pixel tinted in its class colour (background left as it is)."""
    tinted = image.astype(np.float32)
    coloured = colorize(mask).astype(np.float32)
    foreground = (np.asarray(mask) != 0)[..., None]
    blended = np.where(foreground, (1 - alpha) * tinted + alpha * coloured, tinted)
    return (blended + 0.5).astype(np.uint8)
