"""Segmentation masks on disk: PNGs of class ids (grey or palette), binary masks, or colour-coded RGB masks
read through a colour table; every problem is reported with the file and how to fix it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionkit.errors import VisionkitError
from visionkit.utils.palette import class_palette


def mask_image(mask: np.ndarray) -> Image.Image:
    """A PIL image of class ids that reads back as the same ids: a palette PNG (viewable in colour) for up to
    256 classes, 16-bit grey beyond."""
    if int(mask.max(initial=0)) < 256:
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        image.putpalette(class_palette().ravel().tolist())
        return image
    return Image.fromarray(mask.astype(np.uint16))


@dataclass(frozen=True)
class ShapeMask:
    """A mask drawn from an annotation file's shapes (CVAT, LabelMe), standing where other sources name a mask
    file: `shapes` are painted in order (later over earlier) on `background`. A polygon covers the pixels
    whose centres it contains and those its outline passes through (PIL's polygon fill with outline, as LabelMe's
    own `shape_to_mask`); a mask shape is a binary array placed at its top-left corner."""

    source: str  # the annotation file (and the image inside it), as messages name it
    height: int
    width: int
    shapes: tuple[tuple[int, Any], ...]  # (class id, flat x y points) or (class id, (left, top, bool array))
    background: int = 0

    def __str__(self) -> str:
        return self.source

    def render(self) -> np.ndarray:
        """(height, width) class ids, uint8 (int32 beyond 255 classes)."""
        from PIL import ImageDraw

        top = max([self.background, *(class_id for class_id, _ in self.shapes)])
        ids = Image.new("I" if top > 255 else "L", (self.width, self.height), self.background)
        draw = ImageDraw.Draw(ids)
        for class_id, shape in self.shapes:
            if isinstance(shape[-1], np.ndarray):
                left, top_row, bits = shape
                stamp = Image.fromarray(bits.astype(np.uint8) * 255)
                ids.paste(
                    class_id, (int(left), int(top_row), int(left) + bits.shape[1], int(top_row) + bits.shape[0]), stamp
                )
            else:
                draw.polygon([float(v) for v in shape], fill=class_id, outline=class_id)
        return np.array(ids, dtype=np.int32 if top > 255 else np.uint8)


@dataclass(frozen=True)
class MaskReader:
    """Reads one mask file as an HxW array of class ids and checks every id.

    num_classes: valid ids are 0..num_classes-1. ignore_index: one more allowed value, left out of loss
    and metrics. binary: every non-zero pixel (other than ignore_index) is foreground 1, so 0/1 and 0/255
    masks both work. colors: one [r, g, b] per class for colour-coded RGB masks; pixels of other colours
    become ignore_index when one is set, else they are an error.
    """

    num_classes: int
    ignore_index: int | None = None
    binary: bool = False
    colors: tuple[tuple[int, ...], ...] | None = None  # each of 3 values (checked by `make`)

    @staticmethod
    def make(
        num_classes: int,
        ignore_index: int | None = None,
        binary: bool = False,
        colors: Sequence[Sequence[int]] | None = None,
    ) -> MaskReader:
        """A reader from config values, checking the colour table against the classes."""
        table = None
        if colors:
            table = tuple(tuple(int(c) for c in colour) for colour in colors)
            if len(table) != num_classes or any(len(c) != 3 for c in table):
                raise VisionkitError(
                    f"data.colors has {len(table)} entries; give one [r, g, b] per class ({num_classes} classes)"
                )
            if len(set(table)) != len(table):
                raise VisionkitError("data.colors lists the same colour for two classes")
        return MaskReader(num_classes, None if ignore_index is None else int(ignore_index), binary, table)

    def read(self, path: str | os.PathLike[str] | ShapeMask) -> np.ndarray:
        """The mask's class ids (uint8, or int32 beyond 255); VisionkitError naming the file when it cannot be.
        A `ShapeMask` (shapes from an annotation file) is drawn instead of read."""
        if isinstance(path, ShapeMask):
            ids = path.render()
            self.check(ids, path.source)  # the annotation file, not the drawn shapes
            return ids
        path = Path(path)
        if not path.is_file():
            raise VisionkitError(f"mask {path} does not exist")
        try:
            with Image.open(path) as opened:
                opened.load()
                img = ImageOps.exif_transpose(opened) or opened
                ids = self._ids(img, path)
        except (UnidentifiedImageError, ImportError):
            raise VisionkitError(f"mask {path} is not a readable image (corrupt, or not an image)") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise VisionkitError(f"mask {path} is corrupt or truncated ({exc})") from None
        if self.binary:
            foreground = ids != 0
            if self.ignore_index is not None:
                foreground &= ids != self.ignore_index
                ids = np.where(ids == self.ignore_index, self.ignore_index, foreground).astype(ids.dtype)
            else:
                ids = foreground.astype(np.uint8)
        self.check(ids, path)
        return ids

    def _ids(self, img: Image.Image, path: Path) -> np.ndarray:
        mode = img.mode
        if mode in ("P", "L", "1"):  # palette PNGs: the palette index is the class id (VOC convention)
            return np.array(img, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(img).astype(np.int32)
        if mode == "LA":
            return np.asarray(img.getchannel("L"), dtype=np.uint8)
        if mode in ("RGB", "RGBA"):
            rgb = np.asarray(img.convert("RGB"))
            if self.colors is not None:
                return self._from_colours(rgb, path)
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                return np.ascontiguousarray(rgb[..., 0])  # grey ids saved as RGB
            colours = np.unique(rgb.reshape(-1, 3), axis=0)
            shown = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:4])
            raise VisionkitError(
                f"mask {path} is a colour (RGB) image, but masks must hold class ids; it has {len(colours)} "
                f"colours ({shown}{' ...' if len(colours) > 4 else ''}). Set data.colors=[[r,g,b], ...] (one "
                "colour per class, in class order) to read colour-coded masks, or save them as single-channel "
                "PNGs of class ids (PIL: Image.fromarray(ids.astype('uint8')).save(path))"
            )
        raise VisionkitError(f"mask {path} has image mode {mode}; save it as a PNG of class ids (mode L or P)")

    def _from_colours(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        table = np.asarray([(r << 16) | (g << 8) | b for r, g, b in self.colors or ()], dtype=np.int32)
        order = np.argsort(table)
        position = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
        found = table[order][position] == codes
        ids = order[position].astype(np.int32)
        if not found.all():
            if self.ignore_index is None:
                row, col = (int(v[0]) for v in np.nonzero(~found))
                colour = tuple(int(v) for v in rgb[row, col])
                raise VisionkitError(
                    f"mask {path}: colour {colour} at row {row}, column {col} is not in data.colors; add it "
                    "(one colour per class) or set data.ignore_index to leave unknown colours out"
                )
            ids[~found] = self.ignore_index
        return ids.astype(np.uint8) if ids.max(initial=0) < 256 else ids

    def check(self, ids: np.ndarray, path: str | os.PathLike[str]) -> None:
        """Raise VisionkitError naming the file and the first pixel whose id is neither a class nor ignored."""
        bad = ids >= self.num_classes
        if self.ignore_index is not None:
            bad &= ids != self.ignore_index
        if bad.any():
            row, col = (int(v[0]) for v in np.nonzero(bad))
            values = sorted(int(v) for v in np.unique(ids[bad]))[:5]
            ignore = f", ignore_index {self.ignore_index}" if self.ignore_index is not None else ""
            two_valued = not self.binary and set(np.unique(ids).tolist()) <= {0, 255}
            hint = "a 0/255 mask of one foreground class: set data.binary=true; else " if two_valued else ""
            if str(path).lower().endswith((".jpg", ".jpeg")):
                hint = "JPEG compression changes a mask's values at edges: save masks as PNG; " + hint
            raise VisionkitError(
                f"mask {path}: class id {int(ids[row, col])} at row {row}, column {col} (ids out of range: "
                f"{values}) but there are {self.num_classes} classes (0..{self.num_classes - 1}{ignore}); {hint}fix "
                "the mask, add the class to data.class_names, or set data.ignore_index to that value"
            )
