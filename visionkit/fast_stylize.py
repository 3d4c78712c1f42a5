"""Stylize photos with a trained fast stylizer checkpoint: one forward pass per batch of same-sized images."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from visionkit.checkpoints import build_from_checkpoint, read_checkpoint
from visionkit.errors import VisionkitError
from visionkit.style.images import fit_long_side, load_rgb, resize, to_pil, to_tensor
from visionkit.tasks.style_transfer import StyleTransferTask


def load_stylizer(path: str | os.PathLike[str]) -> StyleTransferTask:
    """The StyleTransferTask of a visionkit checkpoint (weights_only; needs neither VGG19 nor the style file)."""
    checkpoint, task_cls = read_checkpoint(os.fspath(path), key="--model")
    if not issubclass(task_cls, StyleTransferTask):
        raise VisionkitError(
            f"--model: {path} holds {task_cls.__name__}, not a fast stylizer; train one with "
            "visionkit-train task=style_transfer"
        )
    return build_from_checkpoint(checkpoint, task_cls)


def _batches(
    paths: Sequence[str], size: int | None, batch_size: int, on_error: Callable[[str, VisionkitError], None]
) -> Iterator[tuple[list[str], torch.Tensor, list[tuple[int, int]]]]:
    """Consecutive readable images of the same network size stacked into batches (video frames batch fully)."""
    group: list[tuple[str, torch.Tensor, tuple[int, int]]] = []
    for path in paths:
        try:
            image = to_tensor(load_rgb(path))
        except VisionkitError as exc:
            on_error(path, exc)
            continue
        original = tuple(image.shape[-2:])
        if size:
            image = resize(image, fit_long_side(*original, int(size)))
        if group and (len(group) == batch_size or group[0][1].shape != image.shape):
            yield [g[0] for g in group], torch.cat([g[1] for g in group]), [g[2] for g in group]
            group = []
        group.append((path, image, original))  # type: ignore[arg-type]
    if group:
        yield [g[0] for g in group], torch.cat([g[1] for g in group]), [g[2] for g in group]


@torch.inference_mode()
def stylize_files(
    task: StyleTransferTask,
    paths: Sequence[str],
    outputs: Sequence[Path],
    *,
    size: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    on_error: Callable[[str, VisionkitError], None] | None = None,
) -> int:
    """Write the stylized image of each path to its output; returns how many were written.

    size: long side the network sees (None: each image's own); results are saved at each photo's own size.
    Unreadable images go to `on_error` (default: raise) and the rest go on.
    """
    from visionkit.style.images import save_image

    def fail(path: str, exc: VisionkitError) -> None:
        raise exc

    target = dict(zip(paths, outputs))
    net = task.net.to(device).eval()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    written = 0
    for names, images, originals in _batches(paths, size, batch_size, on_error or fail):
        with autocast:
            stylized = net(images.to(device)).float().clamp(0, 1).cpu()
        for name, image, original in zip(names, stylized, originals):
            save_image(to_pil(resize(image[None], original)), target[name])
            written += 1
    return written
