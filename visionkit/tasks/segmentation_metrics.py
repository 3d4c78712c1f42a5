"""Segmentation scores from one confusion matrix (torchmetrics, synced across DDP ranks): per-class IoU and
Dice, their means over the classes that occur, and pixel accuracy."""

from __future__ import annotations

import torch
from torch import Tensor


def segmentation_scores(confusion: Tensor) -> dict[str, Tensor]:
    """`iou` and `dice` per class (NaN where a class is neither in the truth nor predicted), `miou` and
    `mdice` (means over the other classes, as mmsegmentation reports them) and `pixel_acc`.

    confusion: (C, C) counts, true class per row, predicted class per column.
    """
    confusion = confusion.double()
    hits = confusion.diagonal()
    truth, predicted = confusion.sum(1), confusion.sum(0)
    union = truth + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan)
    dice = torch.where(union > 0, 2 * hits / (truth + predicted).clamp(min=1), torch.nan)
    return {
        "iou": iou.float(),
        "dice": dice.float(),
        "miou": iou.nanmean().float(),
        "mdice": dice.nanmean().float(),
        "pixel_acc": (hits.sum() / confusion.sum().clamp(min=1)).float(),
    }
