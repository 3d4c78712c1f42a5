"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, sized for 32×32 inputs of any channel count."""

from __future__ import annotations

from torch import Tensor, nn


class LeNet5(nn.Module):
    """conv5×5(6) → pool → conv5×5(16) → pool → fc120 → fc84 → fc(num_classes).

    An adaptive pool before the classifier makes any input size above 12 px work; at 32 px it is the
    classic network (the pool is then the identity).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((5, 5)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
