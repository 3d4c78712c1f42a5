"""The perceptual loss both style methods minimise: content (feature MSE), style (Gram MSE) and total variation.

Gram = F Fᵀ / (C·H·W), always in fp32 (bf16 features are cast up first); layer losses are averaged with
equal weights. Style targets of several styles are blended by weight, as the classic implementations do.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.errors import VisionkitError
from visionkit.style.vgg import VGG19Features

# Gatys et al.: the settings the classic optimization implementations agree on
GATYS_CONTENT = ("relu4_2",)
GATYS_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Johnson et al.: the fast feed-forward stylizer's loss network layers
JOHNSON_CONTENT = ("relu2_2",)
JOHNSON_STYLE = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
PRECISIONS = ("fp32", "bf16")


def gram_matrix(features: Tensor) -> Tensor:
    """B×C×C Gram matrices F Fᵀ / (C·H·W) of B×C×H×W features, computed in fp32."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def total_variation(images: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels: penalises noise and high-frequency artefacts."""
    return (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean() + (images[..., :, 1:] - images[..., :, :-1]).pow(
        2
    ).mean()


def blend_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """Blend weights for `count` styles, normalised to sum to 1 (equal when None)."""
    values = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(values) != count:
        raise VisionkitError(f"{len(values)} style weights given for {count} style image(s); give one per style")
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise VisionkitError(f"style weights {values} must be non-negative with a positive sum")
    total = sum(values)
    return [w / total for w in values]


class PerceptualLoss(nn.Module):
    """Content + style + TV loss of images against precomputed targets, through one VGG19 pass.

    `precision="bf16"` runs VGG19 under bfloat16 autocast (Gram and losses stay fp32).
    """

    def __init__(
        self,
        network: VGG19Features,
        content_layers: Sequence[str] = GATYS_CONTENT,
        style_layers: Sequence[str] = GATYS_STYLE,
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        tv_weight: float = 0.0,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        missing = [name for name in (*content_layers, *style_layers) if name not in network.layers]
        if missing:
            raise VisionkitError(f"the VGG19 network was built without layer(s) {missing}")
        if precision not in PRECISIONS:
            raise VisionkitError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
        self.network = network
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.precision = precision

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """VGG19 activations of `images` (RGB in [0, 1]) at every layer the loss uses."""
        bf16 = self.precision == "bf16"
        context = torch.autocast(images.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with context:
            return self.network(images)

    @torch.no_grad()
    def content_targets(self, content: Tensor) -> dict[str, Tensor]:
        """Content-layer activations of the content image(s), fp32."""
        feats = self.features(content)
        return {name: feats[name].float() for name in self.content_layers}

    @torch.no_grad()
    def style_targets(self, styles: Sequence[Tensor], weights: Sequence[float] | None = None) -> dict[str, Tensor]:
        """1×C×C Gram targets per style layer: the weighted blend of each style image's Grams."""
        blend = blend_weights(len(styles), weights)
        targets: dict[str, Tensor] = {}
        for style, weight in zip(styles, blend):
            if weight == 0:
                continue
            feats = self.features(style)
            for name in self.style_layers:
                gram = gram_matrix(feats[name]).mean(0, keepdim=True) * weight
                targets[name] = gram if name not in targets else targets[name] + gram
        return targets

    def forward(
        self, images: Tensor, content_targets: dict[str, Tensor], style_targets: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """{"loss", "content", "style", "tv"}: the total and its weighted parts."""
        feats = self.features(images)
        content = sum(F.mse_loss(feats[n].float(), content_targets[n]) for n in self.content_layers) / len(
            self.content_layers
        )
        style = sum(
            F.mse_loss(gram_matrix(feats[n]), style_targets[n].expand(images.shape[0], -1, -1))
            for n in self.style_layers
        ) / len(self.style_layers)
        tv = total_variation(images) if self.tv_weight > 0 else images.new_zeros(())
        parts: dict[str, Any] = {
            "content": self.content_weight * content,
            "style": self.style_weight * style,
            "tv": self.tv_weight * tv,
        }
        return {"loss": parts["content"] + parts["style"] + parts["tv"], **parts}
