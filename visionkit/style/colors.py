"""Keeping the photo's colours (Gatys et al., "Preserving Color in Neural Artistic Style Transfer", 2016).

luminance: transfer style on brightness only, the result's Y with the photo's chroma (YIQ space);
histogram: recolour the style image to the photo's colour mean and covariance before stylizing.
"""

from __future__ import annotations

import torch
from torch import Tensor

COLOR_MODES = ("luminance", "histogram")

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: Tensor, images: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(images.dtype).to(images.device), images)


def rgb_to_yiq(images: Tensor) -> Tensor:
    """B×3×H×W RGB → YIQ (Y = luminance, I/Q = chroma)."""
    return _apply(_RGB_TO_YIQ, images)


def yiq_to_rgb(images: Tensor) -> Tensor:
    """B×3×H×W YIQ → RGB."""
    return _apply(_YIQ_TO_RGB, images)


def keep_luminance(stylized: Tensor, content: Tensor) -> Tensor:
    """The stylized image's luminance with the content's chroma, clamped to [0, 1]; sizes must match."""
    yiq = rgb_to_yiq(content.float())
    yiq[:, :1] = rgb_to_yiq(stylized.float())[:, :1]
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrt_and_inverse_sqrt(cov: Tensor) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(1e-8)
    return (vectors * values.sqrt()) @ vectors.T, (vectors * values.rsqrt()) @ vectors.T


def match_colors(style: Tensor, content: Tensor) -> Tensor:
    """`style` recoloured so its pixel mean and covariance equal `content`'s (x' = Σc½ Σs⁻½ (x − μs) + μc)."""
    s = style.double().reshape(3, -1)
    c = content.double().reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s) + 1e-5 * torch.eye(3, dtype=s.dtype)
    cov_c = torch.cov(c) + 1e-5 * torch.eye(3, dtype=c.dtype)
    _, inv_sqrt_s = _sqrt_and_inverse_sqrt(cov_s)
    sqrt_c, _ = _sqrt_and_inverse_sqrt(cov_c)
    out = sqrt_c @ inv_sqrt_s @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0, 1)
