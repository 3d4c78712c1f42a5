"""The segmentation loss: a weighted sum of cross-entropy (BCE when binary), Dice and focal terms from smp,
with class weights and ignored pixels honoured by every term."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import reduce

import torch
from torch import Tensor, nn

TERMS = ("ce", "dice", "focal")


class SegmentationLoss(nn.Module):
    """`weights["ce"]·CE + weights["dice"]·Dice + weights["focal"]·Focal` on logits (N, C, H, W) and class-id
    targets (N, H, W); binary models have C = 1 and use BCE. Terms with weight 0 are not computed.

    class_weights: one weight per class (CE, Dice and focal in multiclass; the foreground/background ratio
    becomes BCE's `pos_weight` when binary). ignore_index: target value left out of every term.
    """

    def __init__(
        self,
        num_classes: int,
        weights: dict[str, float],
        binary: bool = False,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch import losses

        unknown = set(weights) - set(TERMS)
        if unknown or not any(float(w) > 0 for w in weights.values()):
            raise ValueError(f"loss weights {dict(weights)}: give a positive weight to at least one of {TERMS}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights given for {num_classes} classes")
        self.binary = binary
        self.weights = {term: float(weight) for term, weight in weights.items() if float(weight) > 0}
        mode = losses.BINARY_MODE if binary else losses.MULTICLASS_MODE
        per_class = None if class_weights is None or binary else [float(w) for w in class_weights]
        terms: dict[str, nn.Module] = {}
        if "ce" in self.weights:
            if binary:
                pos = None if class_weights is None else torch.tensor([class_weights[1] / class_weights[0]])
                terms["ce"] = losses.SoftBCEWithLogitsLoss(
                    ignore_index=-100 if ignore_index is None else ignore_index, pos_weight=pos
                )
            else:
                terms["ce"] = nn.CrossEntropyLoss(
                    weight=None if per_class is None else torch.tensor(per_class),
                    ignore_index=-100 if ignore_index is None else ignore_index,
                )
        if "dice" in self.weights:
            terms["dice"] = losses.DiceLoss(mode, ignore_index=ignore_index, class_weights=per_class)
        if "focal" in self.weights:
            terms["focal"] = losses.FocalLoss(mode, ignore_index=ignore_index, class_weights=per_class)
        self.terms = nn.ModuleDict(terms)

    def forward(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted total and each term's value."""
        parts: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            if name == "ce" and self.binary:
                parts[name] = term(logits, target.unsqueeze(1).to(logits.dtype))
            else:
                parts[name] = term(logits, target)
        total = reduce(operator.add, (self.weights[name] * value for name, value in parts.items()))
        return total, parts
