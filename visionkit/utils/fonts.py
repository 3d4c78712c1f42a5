"""The font for labels drawn on pictures (boxes, scores): Pillow's own for Latin text, else an installed font with
the class names' script. Pillow's default font is Latin only, so a class named 狗 or кошка drew as boxes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIRS = (
    "/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts",
    "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts",
)  # fmt: skip
# Chinese, Japanese and Korean first for text in those scripts; the others (Cyrillic, Greek, Arabic, Hebrew) from
# DejaVu Sans, which matplotlib ships, or Noto Sans.
CJK_FILES = (
    "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-zenhei.ttc", "wqy-microhei.ttc",
    "DroidSansFallbackFull.ttf", "msyh.ttc", "simhei.ttf", "PingFang.ttc", "AppleSDGothicNeo.ttc",
    "malgun.ttf", "Arial Unicode.ttf",
)  # fmt: skip
WIDE_FILES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "arial.ttf", "Arial Unicode.ttf")
LATIN_END = 0x180  # Pillow's default font covers Latin-1 and Latin Extended-A


def is_cjk(character: str) -> bool:
    """Whether a character is Chinese, Japanese or Korean (ideographs, kana, hangul, full-width forms)."""
    code = ord(character)
    return 0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF


@lru_cache(maxsize=1)
def installed_fonts() -> dict[str, Path]:
    """Font files by name, from the system's font folders and matplotlib's own (when it is installed)."""
    folders = [Path(d).expanduser() for d in FONT_DIRS]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    found: dict[str, Path] = {}
    for folder in (f for f in folders if f.is_dir()):
        for path in folder.rglob("*"):
            if path.suffix.lower() in (".ttf", ".ttc", ".otf"):
                found.setdefault(path.name, path)
    return found


@lru_cache(maxsize=64)
def _font(name: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(installed_fonts()[name]), size)


def label_font(size: int, texts: Iterable[str]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at `size` when `texts` are Latin, else the first installed font for their script
    (Pillow's default when none is installed: the text then shows as boxes, as before)."""
    characters = {c for text in texts for c in text if ord(c) >= LATIN_END}
    if not characters:
        return _font(None, size)
    order = (*CJK_FILES, *WIDE_FILES) if any(is_cjk(c) for c in characters) else (*WIDE_FILES, *CJK_FILES)
    fonts = installed_fonts()
    return _font(next((name for name in order if name in fonts), None), size)
