"""What goes into a predictor and what comes out: the kinds of input it takes (`ImageInput`), an input as read
(`InputImage`) and the result every task's own result type extends (`Result`: fields, JSON record, files)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np
from PIL import Image

from visionkit.errors import VisionkitError
from visionkit.inference.outputs import save_picture
from visionkit.utils.io import read_image
from visionkit.utils.video import VideoFrame

if TYPE_CHECKING:
    from torch import Tensor

# Union, not `|`: a tensor is named as a string (PyTorch may not be installed), which `|` cannot join
ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image, "Tensor", VideoFrame]


@dataclass
class InputImage:
    """One input as read: its place in the request, its name, its RGB pixels (None when unreadable) and why not."""

    index: int
    source: str
    pixels: np.ndarray | None
    error: str | None = None
    from_file: bool = False
    prepared: np.ndarray | None = field(default=None, repr=False)  # the image at the network size, when resized
    frame: int | None = None  # a video frame's index and time (seconds) in its video
    time: float | None = None
    raw: np.ndarray | None = field(default=None, repr=False)  # HxWxC 0..1 floats when not 8-bit RGB (scans, bands)

    @property
    def rgb(self) -> np.ndarray:
        """The RGB picture as read (HxWx3 uint8)."""
        if self.pixels is None:  # unreadable inputs are answered with their error, never given to the network
            raise VisionkitError(f"{self.source}: {self.error or 'not read'}")
        return self.pixels

    @property
    def network(self) -> np.ndarray:
        """The pixels the network is given: 0..1 floats of every channel (scans, bands), else the RGB picture."""
        return self.raw if self.raw is not None else self.rgb


@dataclass
class Result:
    """What a predictor found in one image; every task's result has these fields and methods.

    source: the input's path (a video frame: its video's), or `image<N>` for arrays, PIL images and tensors.
    size: (height, width) of the image as given. names: class names in class-id order. error: why the input was
    skipped (unreadable), else None. frame, time: a video frame's index and time in seconds, else None.
    """

    task: ClassVar[str] = ""
    source: str
    size: tuple[int, int]
    names: list[str]
    error: str | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)  # the input's pixels, while held
    from_file: bool = field(default=False, repr=False)
    frame: int | None = None
    time: float | None = None

    @property
    def ok(self) -> bool:
        """False when the input could not be read (then the task's fields are empty)."""
        return self.error is None

    @property
    def original(self) -> np.ndarray:
        """The input image (HxWx3 uint8 RGB); files are read again rather than kept in memory."""
        if self.pixels is not None:
            return self.pixels
        if not self.ok:
            raise VisionkitError(f"{self.source} was skipped ({self.error}); it has no picture")
        return read_image(self.source)

    def plot(self) -> np.ndarray:
        """HxWx3 uint8 picture of the result drawn on the image (each task draws its own)."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """The task's own JSON-ready fields (see `to_dict`)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: task, path, height, width and the task's fields; skipped inputs say so and why."""
        head: dict[str, Any] = {"task": self.task, "path": self.source}
        if self.frame is not None:
            head.update(frame=self.frame, time=round(float(self.time or 0.0), 4))
        if not self.ok:
            return {**head, "skipped": True, "error": self.error, **self.fields()}
        return {**head, "height": int(self.size[0]), "width": int(self.size[1]), **self.fields()}

    def save(self, folder: str | os.PathLike[str], name: str | None = None, draw: bool = True) -> list[Path]:
        """Write the task's per-image files under `folder` (named after `name`, default the source's file name);
        returns the paths written. Skipped inputs write nothing. By default, with `draw`: `images/<name>`, the
        picture `plot()` draws (classification and multi-label results; their tables are per run)."""
        if not self.ok or not draw:
            return []
        return [save_picture(self.plot(), Path(folder) / "images" / self.file_name(name))]

    def file_name(self, name: str | None) -> str:
        """The relative name this result's files take: `name`, else the source's file name (`image<N>.png`)."""
        if name:
            return name
        base = Path(self.source).name
        return base if Path(base).suffix else f"{base}.png"
