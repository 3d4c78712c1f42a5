"""The feed-forward image transformation network of Johnson et al. (2016) for fast style transfer.

Convolutions down (9x9, then two stride-2 3x3), residual blocks, nearest-neighbour upsampling + conv back up
(no checkerboard artefacts of transposed convs), instance norm, reflection padding. RGB [0, 1] in and out.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvLayer(nn.Sequential):
    """Reflection-padded convolution, optionally preceded by nearest upsampling and followed by norm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = []
        if upsample > 1:
            layers.append(nn.Upsample(scale_factor=upsample, mode="nearest"))
        layers += [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if act:
            layers += [nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Image → stylized image of the same size. `width` scales the channels (32 as in the paper),
    `residual_blocks` sets the depth (5 as in the paper). Any input size works (it is padded to a multiple of 4
    internally and cropped back)."""

    def __init__(self, width: int = 32, residual_blocks: int = 5) -> None:
        super().__init__()
        w = int(width)
        self.encoder = nn.Sequential(
            ConvLayer(3, w, 9), ConvLayer(w, 2 * w, 3, stride=2), ConvLayer(2 * w, 4 * w, 3, 2)
        )
        self.residuals = nn.Sequential(*(ResidualBlock(4 * w) for _ in range(int(residual_blocks))))
        self.decoder = nn.Sequential(
            ConvLayer(4 * w, 2 * w, 3, upsample=2), ConvLayer(2 * w, w, 3, upsample=2), ConvLayer(w, 3, 9, act=False)
        )

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % 4, (-width) % 4
        x = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")  # no branch: ONNX graphs keep the padding
        x = self.decoder(self.residuals(self.encoder(x)))
        return x[..., :height, :width]
