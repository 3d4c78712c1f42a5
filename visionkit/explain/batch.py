"""Explaining many images with one subject: a folder per image, unreadable images skipped and reported, the
layer table printed once; and the layer list `layers=` takes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from visionkit.errors import VisionkitError
from visionkit.explain.features import list_layers
from visionkit.explain.receptive_field import table_markdown
from visionkit.explain.report import explain_image
from visionkit.explain.subjects import Subject
from visionkit.utils.io import skip_unreadable


def print_layers(subject: Subject) -> None:
    """Print every named layer with its type and output shape (the names `layers=` and `cam_layers=` take)."""
    probe = torch.zeros(1, 3, *subject.image_size, device=subject.device)
    height, width = subject.image_size
    print(f"layers of the {subject.kind} network for a {height}×{width} input (name, type, output C×H×W):")
    for layer in list_layers(subject.network, probe):
        print(f"  {layer.name:<48} {layer.kind:<22} {layer.output}")


def output_folders(paths: Sequence[str], root: Path) -> list[Path]:
    """One output folder per image, named after it (numbered when two images share a name); an error before any
    work when one of them would hold input images."""
    seen: dict[str, int] = {}
    folders = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        folders.append(root / (stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    inputs = {Path(p).resolve() for p in paths}
    for folder in folders:
        if folder.resolve() in inputs or any(p.parent == folder.resolve() for p in inputs):
            raise VisionkitError(f"output folder {folder} holds the input images; choose another output_dir")
    return folders


def explain_images(
    subject: Subject,
    paths: Sequence[str],
    output_dir: Path,
    *,
    layers: Sequence[str] | None = None,
    top_k: int = 3,
    classes: Sequence[str] = (),
    cam_layers: Sequence[str] | None = None,
    max_channels: int = 32,
    prog: str = "visionkit-explain",
) -> dict[str, float]:
    """Explain each image into its own folder under `output_dir`; returns the counts (`failed`: unreadable
    images among several, reported on stderr; a single unreadable image, or any other problem, stops)."""
    folders = output_folders(paths, output_dir)
    failures, table, started = 0, "", time.perf_counter()
    for index, (path, folder) in enumerate(zip(paths, folders), 1):
        try:  # only unreadable images are skipped; a wrong setting stops on the first image
            image = subject.load(path)
        except VisionkitError as exc:
            skip_unreadable(prog, path, exc, len(paths))
            failures += 1
            continue
        result = explain_image(
            subject, image, folder, layers=layers, top_k=max(1, top_k), classes=classes, cam_layers=cam_layers,
            max_channels=max_channels,
        )  # fmt: skip
        table = table or table_markdown(result.layers)
        cams = ", ".join(h.title for h in result.heatmaps) or "none (no detection above the threshold)"
        print(f"[{index}/{len(paths)}] {path} → {folder}/  Grad-CAM: {cams}", flush=True)
    if table:
        height, width = subject.image_size
        print(f"\nconv/pool layers ({height}×{width} input; receptive field in input pixels):\n{table}")
    done = len(paths) - failures
    print(f"{done} image(s) explained in {time.perf_counter() - started:.1f} s: {output_dir}")
    return {"images": float(done), "failed": float(failures)}
