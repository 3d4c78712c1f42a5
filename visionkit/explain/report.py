"""Explain one image: first-layer filters, feature maps of chosen layers, Grad-CAM overlays and the layer
table, returned as arrays and figures and, when given a folder, written there as PNG/CSV/Markdown/JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from visionkit.explain.cam import grad_cam, overlay
from visionkit.explain.features import (
    feature_map_figure,
    feature_maps,
    filter_grid_figure,
    first_conv,
    first_conv_filters,
    resolve_layers,
)
from visionkit.explain.receptive_field import LayerRow, write_layer_table
from visionkit.explain.subjects import CamTarget, Subject
from visionkit.utils.io import atomic_write, save_image
from visionkit.utils.palette import box_colour
from visionkit.utils.viz import save_figure


@dataclass
class Heatmap:
    """One Grad-CAM: what it explains, the H×W heat in [0, 1] and the overlay picture (H×W×3 uint8)."""

    title: str
    heat: np.ndarray
    picture: np.ndarray
    slug: str
    box: tuple[float, float, float, float] | None = None


@dataclass
class Explanation:
    """Everything `explain_image` found for one image (arrays), its figures, and the files it wrote."""

    input_image: np.ndarray
    filters: np.ndarray
    feature_maps: dict[str, np.ndarray]
    heatmaps: list[Heatmap]
    layers: list[LayerRow]
    cam_layers: list[str]
    figures: dict[str, Figure] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _picture(image: np.ndarray, heat: np.ndarray, target: CamTarget) -> np.ndarray:
    """The heat map over the image; a detection's box in its class colour (the predictions' palette)."""
    picture = overlay(image, heat)
    if target.box is not None:
        canvas = Image.fromarray(picture)
        colour = box_colour(getattr(target.target, "class_index", 0))
        ImageDraw.Draw(canvas).rectangle(target.box, outline=colour, width=2)
        picture = np.asarray(canvas)
    return picture


def heatmap_figure(image: np.ndarray, heatmaps: Sequence[Heatmap], title: str) -> Figure:
    """The network's input followed by each Grad-CAM overlay, titled with what it explains."""
    count = len(heatmaps) + 1
    fig = Figure(figsize=(2.6 * count, 3.0))
    axes = np.atleast_1d(fig.subplots(1, count))
    pictures, titles = [image, *[h.picture for h in heatmaps]], ["input", *[h.title for h in heatmaps]]
    for ax, picture, text in zip(axes, pictures, titles):
        ax.imshow(picture)
        ax.set_title(text, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def explain_image(
    subject: Subject,
    image: str | Path | np.ndarray,
    output_dir: str | Path | None = None,
    layers: Sequence[str] | None = None,
    top_k: int = 3,
    classes: Sequence[str] = (),
    cam_layers: Sequence[str] | None = None,
    max_channels: int = 32,
) -> Explanation:
    """Filters, feature maps (`layers`, default one early/middle/deep conv), Grad-CAMs (top-k classes, the
    named `classes`, or detected boxes) and the layer table for one image (a path or H×W×3 uint8 RGB).
    With `output_dir`, writes input.png, filters.png, features_<layer>.png, gradcam.png, gradcam_<what>.png,
    layers.csv/.md and explain.json there (atomically)."""
    array = subject.load(str(image)) if isinstance(image, (str, Path)) else np.asarray(image)
    tensor, picture = subject.prepare(array)
    layers = list(layers or subject.feature_layer_names(tensor))
    cam_layers = list(cam_layers or subject.cam_layer_names(tensor))
    cam_modules = list(resolve_layers(subject.network, cam_layers).values())
    filters = first_conv_filters(subject.network)
    maps = feature_maps(subject.network, tensor, layers)
    heatmaps = []
    for target in subject.cam_targets(tensor, top_k, classes):
        heat = grad_cam(subject.cam_network, tensor, cam_modules, target.target)
        heatmaps.append(Heatmap(target.title, heat, _picture(picture, heat, target), target.slug, target.box))
    result = Explanation(picture, filters, maps, heatmaps, subject.layer_rows(tensor), cam_layers)
    conv_name, conv = first_conv(subject.network)
    result.figures["filters"] = filter_grid_figure(
        filters, f"{conv_name}: {conv.out_channels} filters {conv.kernel_size[0]}×{conv.kernel_size[1]}"
    )
    for name, values in maps.items():
        shape = "×".join(map(str, values.shape))
        result.figures[f"features_{name}"] = feature_map_figure(
            values, f"{name} ({shape}): the {min(max_channels, len(values))} most active channels", max_channels
        )
    if heatmaps:
        result.figures["gradcam"] = heatmap_figure(picture, heatmaps, f"Grad-CAM on {', '.join(cam_layers)}")
    if output_dir is not None:
        result.files = _write(result, Path(output_dir), subject)
    return result


def _write(result: Explanation, directory: Path, subject: Subject) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = [save_image(Image.fromarray(result.input_image), directory / "input.png")]
    files += [save_figure(fig, directory / f"{name}.png") for name, fig in result.figures.items()]
    files += [save_image(Image.fromarray(h.picture), directory / f"gradcam_{h.slug}.png") for h in result.heatmaps]
    files += list(write_layer_table(result.layers, directory))
    summary = {
        "model": subject.kind,
        "input_size": list(subject.image_size),
        "feature_layers": list(result.feature_maps),
        "cam_layers": result.cam_layers,
        "gradcam": [{"title": h.title, "file": f"gradcam_{h.slug}.png", "box": h.box} for h in result.heatmaps],
        "note": subject.note,
    }
    with atomic_write(directory / "explain.json", "w") as handle:
        json.dump(summary, handle, indent=1)
    return [*files, directory / "explain.json"]
