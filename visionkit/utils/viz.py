"""Drawing helpers: matplotlib Figures built without pyplot (so the user's backend is left alone),
saved atomically and sent to loggers that take images."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from visionkit.utils.io import atomic_write

# Fonts with scripts DejaVu Sans (matplotlib's default) lacks, appended after the user's font families when
# installed: matplotlib draws a glyph the first family has not with the next one that has it (class names in
# Chinese, Japanese, Korean, Hebrew, Devanagari or Thai drew as boxes).
FALLBACK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Droid Sans Fallback", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans", "Apple SD Gothic Neo",
    "Malgun Gothic", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai",
    "Arial Unicode MS",
)  # fmt: skip


def add_fallback_fonts() -> None:
    """Append the installed FALLBACK_FONTS to matplotlib's font families, after the user's own (idempotent)."""
    from matplotlib import font_manager, rcParams

    installed = {font.name for font in font_manager.fontManager.ttflist}
    chosen = list(rcParams["font.family"])
    added = [f for f in FALLBACK_FONTS if f in installed and f not in chosen]
    if added:
        rcParams["font.family"] = chosen + added
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # notes on the fonts' weights


def undrawable(texts: Sequence[object]) -> str:
    """The characters of `texts` no font of matplotlib's families has: plots draw them as boxes."""
    from matplotlib import font_manager, rcParams

    fonts = []
    for family in rcParams["font.family"]:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:  # not installed
            continue
        fonts.append(font_manager.get_font(path))
    characters = sorted({c for text in texts for c in str(text) if c.isprintable() and not c.isspace()})
    return "".join(c for c in characters if not any(font.get_char_index(ord(c)) for font in fonts))


add_fallback_fonts()


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalized confusion matrix (true class per row) with the raw counts written in each cell."""
    counts = np.asarray(matrix, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 24.0)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    labels = [str(c)[:14] for c in class_names]
    ax.set_xticklabels(labels, rotation=90 if n > 8 else 0)
    ax.set_yticklabels(labels)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=color)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG atomically."""
    path = Path(path)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return path


def log_figure(loggers: Sequence[Any], tag: str, fig: Figure, step: int) -> None:
    """Send a figure to every logger whose experiment takes figures (TensorBoard, W&B via add_figure)."""
    for logger in loggers:
        add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
        if add_figure is not None:
            add_figure(tag, fig, global_step=step, close=False)


def denormalize(
    images: Any, mean: Sequence[float], std: Sequence[float], bands: Sequence[int] | None = None
) -> np.ndarray:
    """A batch of normalized CxHxW tensors back to HxWx3 uint8 images for display: RGB as it was; one channel as
    grey and N bands as the chosen `bands` (`viz.bands`, default the first three), each stretched to its range."""
    array = images.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    if array.shape[3] == 3 and not bands:
        return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    from visionkit.utils.rasters import display_rgb

    return np.stack([display_rgb(image, bands) for image in array])


def fitted(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped onto lines that fit `width_in` inches at `fontsize` points (an average glyph is about half
    the font size wide), so a title is never clipped by its figure's edges."""
    chars = max(8, int(width_in * 72 / (fontsize * 0.55)))
    return textwrap.fill(text, chars)


def labelled_grid_figure(images: np.ndarray, titles: Sequence[str], correct: Sequence[bool], title: str) -> Figure:
    """Images in a grid, each titled (green when right, red when wrong); rows are as tall as their longest
    wrapped title needs, so titles never run into the images above."""
    count = len(images)
    cols = min(8, count)
    rows = (count + cols - 1) // cols
    width = max(cols * 1.5, 4.5)  # room for the title over a few images
    wrapped = [fitted(text, width / cols, 8) for text in titles]
    lines = max((text.count("\n") + 1 for text in wrapped), default=1)
    fig = Figure(figsize=(width, rows * (1.56 + 0.14 * lines) + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, text, ok in zip(axes, images, wrapped, correct):
        ax.imshow(image)
        ax.set_title(text, fontsize=8, color="green" if ok else "red")
    fig.suptitle(fitted(title, width, 10), fontsize=10)
    fig.tight_layout()
    return fig


def detection_grid_figure(
    images: np.ndarray,
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """Images in a grid with true boxes (dashed white) and predicted boxes (solid, in the class palette of
    `visionkit.utils.palette`, `name score`).

    predictions: per image (K, 6) `x1 y1 x2 y2 score class`; truths: per image (M, 5) `class x1 y1 x2 y2`.
    """
    from matplotlib.patches import Rectangle

    from visionkit.utils.palette import box_colour

    count = len(images)
    cols = min(4, count)
    rows = (count + cols - 1) // cols
    fig = Figure(figsize=(cols * 2.6, rows * 2.6 + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, pred, truth in zip(axes, images, predictions, truths):
        ax.imshow(image)
        for _cls, x1, y1, x2, y2 in np.asarray(truth).reshape(-1, 5):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=1.0, ls="--"))
        for x1, y1, x2, y2, score, cls in np.asarray(pred).reshape(-1, 6):
            colour = tuple(v / 255 for v in box_colour(int(cls)))  # the palette predictions are drawn in
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.2))
            ax.text(x1, y1, f"{class_names[int(cls)]} {score:.2f}", color="white", fontsize=5, va="bottom",
                    bbox={"facecolor": colour, "pad": 0.5, "lw": 0})  # fmt: skip
    fig.suptitle(fitted(f"{title} (dashed: truth)", cols * 2.6, 10), fontsize=10)
    fig.tight_layout()
    return fig


def segmentation_grid_figure(
    images: np.ndarray,
    truths: Sequence[np.ndarray] | np.ndarray,
    predictions: Sequence[np.ndarray] | np.ndarray,
    class_names: Sequence[str],
    title: str,
    ignore_index: int | None = None,
) -> Figure:
    """Rows of `image | truth | prediction` (two samples a row), masks in the class colours, with a legend."""
    from matplotlib.patches import Patch

    from visionkit.utils.palette import class_palette, colorize

    count = len(images)
    pairs = min(2, count)
    rows = (count + pairs - 1) // pairs
    fig = Figure(figsize=(pairs * 3 * 1.9, rows * 1.9 + 0.9))
    axes = np.atleast_2d(fig.subplots(rows, pairs * 3)).reshape(rows, pairs * 3)
    for ax in axes.ravel():
        ax.axis("off")
    for index, (image, truth, pred) in enumerate(zip(images, truths, predictions)):
        row, col = divmod(index, pairs)
        for offset, (picture, name) in enumerate(
            ((image, "image"), (colorize(truth, ignore_index), "truth"), (colorize(pred), "prediction"))
        ):
            ax = axes[row, col * 3 + offset]
            ax.imshow(picture, interpolation="nearest")
            if row == 0:
                ax.set_title(name, fontsize=8)
    palette = class_palette()
    handles = [Patch(color=palette[i] / 255.0, label=str(n)[:16]) for i, n in enumerate(class_names[:20])]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def image_pairs_figure(
    first: np.ndarray, second: np.ndarray, names: tuple[str, str], title: str, pairs_per_row: int = 2
) -> Figure:
    """Rows of `first | second` image pairs (e.g. photo | stylized), HxWx3 uint8 each."""
    count = len(first)
    per_row = min(pairs_per_row, count)
    rows = (count + per_row - 1) // per_row
    fig = Figure(figsize=(per_row * 2 * 2.2, rows * 2.2 + 0.5))
    axes = np.atleast_2d(fig.subplots(rows, per_row * 2)).reshape(rows, per_row * 2)
    for ax in axes.ravel():
        ax.axis("off")
    for index, (left, right) in enumerate(zip(first, second)):
        row, col = divmod(index, per_row)
        for offset, (picture, name) in enumerate(((left, names[0]), (right, names[1]))):
            ax = axes[row, col * 2 + offset]
            ax.imshow(picture)
            if row == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
