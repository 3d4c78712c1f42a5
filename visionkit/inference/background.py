"""Background replacement from a segmentation mask (the virtual background of a video call): the foreground
classes' pixels are kept, the rest comes from a picture, a blur of the frame or one colour, edges feathered."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageColor

from visionkit.errors import VisionkitError
from visionkit.utils.io import read_image

HEX_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6})$")


def foreground_ids(names: Sequence[str], foreground: Sequence[str | int] | None = None) -> list[int]:
    """Class ids of `foreground` (names or ids); by default every class but the background (the class named
    `background`, else class 0)."""
    if foreground is None or len(foreground) == 0:
        background = [i for i, n in enumerate(names) if str(n).lower() in ("background", "bg", "_background_")]
        skip = set(background or [0])
        return [i for i in range(len(names)) if i not in skip]
    ids = []
    for item in foreground:
        if isinstance(item, (int, np.integer)) or str(item).isdigit():
            index = int(item)
            if not 0 <= index < len(names):
                raise VisionkitError(f"foreground class {index}: the model has classes 0..{len(names) - 1}")
            ids.append(index)
        elif str(item) in names:
            ids.append(list(names).index(str(item)))
        else:
            raise VisionkitError(f"foreground class {item!r} is not one of the model's: {', '.join(map(str, names))}")
    return ids


def cover(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """`picture` scaled to cover height x width and cropped in the middle (no stretching)."""
    scale = max(height / picture.shape[0], width / picture.shape[1])
    size = (max(width, round(picture.shape[1] * scale)), max(height, round(picture.shape[0] * scale)))
    scaled = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


class Background:
    """What replaces the background: `blur` (the frame blurred), a colour (`green`, `00ff00`, `#00ff00`) or an
    image file (scaled to cover each frame). The picture is made once per frame size (a video's frames share it)."""

    def __init__(self, spec: str) -> None:
        self.spec = str(spec)
        self.colour: tuple[int, int, int] | None = None
        self.picture: np.ndarray | None = None
        self._sized: dict[tuple[int, int], np.ndarray] = {}
        if self.spec.lower() == "blur":
            return
        if Path(self.spec).expanduser().is_file():
            self.picture = read_image(Path(self.spec).expanduser())
            return
        match = HEX_COLOUR.match(self.spec)
        try:  # rrggbb, #rrggbb, or a CSS colour name (green, navy, ...)
            self.colour = ImageColor.getrgb(f"#{match.group(1)}" if match else self.spec)[:3]
        except ValueError:
            raise VisionkitError(
                f"background={self.spec}: not an image file, blur or a colour (a name such as green, or rrggbb)"
            ) from None

    def for_frame(self, frame: np.ndarray) -> np.ndarray:
        """The background at the frame's size (for blur: of this frame)."""
        height, width = frame.shape[:2]
        if self.colour is None and self.picture is None:
            return cv2.GaussianBlur(frame, (0, 0), sigmaX=max(height, width) / 40)
        if (height, width) not in self._sized:
            if self.colour is not None or self.picture is None:
                self._sized[(height, width)] = np.full((height, width, 3), self.colour, np.uint8)
            else:
                self._sized[(height, width)] = cover(self.picture, height, width)
        return self._sized[(height, width)]


def foreground_alpha(mask: np.ndarray, ids: Sequence[int], feather: float = 3.0) -> np.ndarray:
    """H x W float32 in 0..1: 1 on the foreground classes, 0 elsewhere, the edge blurred over `feather` px."""
    alpha = np.isin(mask, np.asarray(ids)).astype(np.float32)
    if feather > 0:
        return np.asarray(cv2.GaussianBlur(alpha, (0, 0), sigmaX=float(feather)), np.float32)
    return alpha


def replace_background(
    frame: np.ndarray,
    mask: np.ndarray,
    background: str | Background = "blur",
    foreground: Sequence[str | int] | None = None,
    names: Sequence[str] | None = None,
    feather: float = 3.0,
) -> np.ndarray:
    """`frame` (H x W x 3 uint8 RGB) with its background replaced: pixels whose class in `mask` (H x W ids, e.g.
    a segmentation result's `mask`) is in `foreground` stay, the others come from `background`; works on still
    images and video frames alike. names: the model's class names (to name foreground classes)."""
    if mask.shape[:2] != frame.shape[:2]:
        raise VisionkitError(
            f"mask of {mask.shape[1]}x{mask.shape[0]} for a frame of {frame.shape[1]}x{frame.shape[0]}"
        )
    chosen = background if isinstance(background, Background) else Background(background)
    class_names = list(names) if names is not None else [str(i) for i in range(int(mask.max(initial=0)) + 1)]
    alpha = foreground_alpha(mask, foreground_ids(class_names, foreground), feather)[..., None]
    behind = chosen.for_frame(frame).astype(np.float32)
    blended = behind + alpha * (frame.astype(np.float32) - behind)
    return (blended + 0.5).astype(np.uint8)
