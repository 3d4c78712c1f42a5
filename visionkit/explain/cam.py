"""Grad-CAM through the maintained `pytorch-grad-cam` package (jacobgil/pytorch-grad-cam, `visionkit[explain]`):
where the network looked for one output. Targets are callables on one image's raw output, so a class score,
a segmentation class over its predicted pixels or one detected box's class score all go through one path."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from visionkit.errors import VisionkitError

Target = Callable[[Tensor], Tensor]


def _grad_cam_class() -> type:
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        raise VisionkitError(
            "Grad-CAM needs the pytorch-grad-cam package: pip install 'visionkit[explain]' (or grad-cam)"
        ) from None
    return GradCAM


def grad_cam(model: nn.Module, image: Tensor, target_layers: Sequence[nn.Module], target: Target) -> np.ndarray:
    """Grad-CAM heat map (H×W of the input, in [0, 1]) of `target` for a 1×C×H×W `image`; several target
    layers are averaged (each resized to the input first). `model` must return a tensor with a batch axis."""
    cam = _grad_cam_class()(model=model, target_layers=list(target_layers))
    try:
        with torch.enable_grad():
            heat = cam(input_tensor=image.detach().clone().requires_grad_(True), targets=[target])
    finally:
        cam.activations_and_grads.release()
    if heat is None or not np.isfinite(heat).all():
        raise VisionkitError("Grad-CAM failed: the target layers produced no gradient for this output")
    return heat[0].astype(np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The heat map (H×W in [0, 1]) drawn over an H×W×3 uint8 image in the jet colour map, as uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} and image {image.shape[:2]} differ in size")
    return show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=image_weight)


class ClassScore:
    """Target: the raw score (logit) of one class of a classifier's output."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: Tensor) -> Tensor:
        return output[..., self.index]


class MaskedClassScore:
    """Target: a segmentation class's logits summed over `mask` (its predicted pixels, or all pixels)."""

    def __init__(self, channel: int, mask: Tensor) -> None:
        self.channel, self.mask = channel, mask

    def __call__(self, output: Tensor) -> Tensor:
        return (output[self.channel] * self.mask.to(output.device, output.dtype)).sum()


class BoxScore:
    """Target: the class score of the one anchor that produced a detected box (YOLO raw output 4+C × anchors)."""

    def __init__(self, class_index: int, anchor: int) -> None:
        self.class_index, self.anchor = class_index, anchor

    def __call__(self, output: Tensor) -> Tensor:
        return output[4 + self.class_index, self.anchor]


class Similarity:
    """Target: the cosine similarity of an embedding network's output with a fixed unit `embedding` (where the
    network looked for what makes two images one identity)."""

    def __init__(self, embedding: Tensor) -> None:
        self.embedding = embedding.detach()

    def __call__(self, output: Tensor) -> Tensor:
        return (torch.nn.functional.normalize(output, dim=-1) * self.embedding.to(output)).sum()
