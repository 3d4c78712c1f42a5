"""The form of a network that runs fastest on the machine it runs on, chosen by timing at load.

A speed trick measured on one CPU can lose badly on another: oneDNN's packed convolutions made the YOLOv8-n
forward 0.83x as long on an Intel Xeon with AMX and 12x as long on an AMD EPYC. So the predictor builds the forms
that compute the same outputs (packed or not, channels-last or not), times each on a probe at batch 1 and at
its batch size, interleaved, and keeps the winner; when different forms win at the two sizes both are kept and
each batch runs through the form that won at the nearer size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.utils.logging import get_logger
from visionkit.utils.timing import best_seconds

log = get_logger(__name__)


class FastestForm(nn.Module):
    """Several forms of one network (same outputs) and, per measured batch size, the form that ran fastest;
    a batch runs through the form measured at the nearest batch size."""

    def __init__(self, forms: Mapping[str, nn.Module], choice: Mapping[int, str]) -> None:
        super().__init__()
        self.forms = nn.ModuleDict(dict(forms))
        self.choice = dict(sorted(choice.items()))

    def form_for(self, batch: int) -> str:
        """The name of the form a batch of `batch` images runs through."""
        nearest = min(self.choice, key=lambda size: (abs(size - batch), size))
        return self.choice[nearest]

    def forward(self, x: Tensor) -> object:
        return self.forms[self.form_for(x.shape[0])](x)


def time_forms(
    forms: Mapping[str, Callable[[Tensor], Any]],
    make_probe: Callable[[int], Tensor],
    batch_sizes: list[int],
    budget_s: float = 3.0,
) -> dict[int, dict[str, float]]:
    """{batch size: {form: best seconds per forward}}: each form warmed up once, then timed in interleaved rounds
    (`best_seconds`) until three rounds or `budget_s` seconds per batch size have passed."""
    times: dict[int, dict[str, float]] = {}
    with torch.inference_mode():
        for size in batch_sizes:
            probe = make_probe(size)
            times[size] = best_seconds({name: partial(form, probe) for name, form in forms.items()}, budget_s)
    return times


def fastest_form(
    forms: Mapping[str, nn.Module], make_probe: Callable[[int], Tensor], batch_sizes: list[int], what: str = "network"
) -> tuple[nn.Module, dict[int, str]]:
    """(the fastest of `forms`, {batch size: the name of the form that won there}): equal outputs assumed (check
    them first), timed at each of `batch_sizes`; a FastestForm holding the winners when different forms win at
    different sizes. The choice is logged."""
    if len(forms) == 1:
        name, form = next(iter(forms.items()))
        return form, dict.fromkeys(batch_sizes, name)
    sizes = sorted(set(batch_sizes))
    times = time_forms(forms, make_probe, sizes)
    choice = {size: min(per_form, key=per_form.__getitem__) for size, per_form in times.items()}
    table = "; ".join(
        f"batch {size}: " + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in per_form.items())
        for size, per_form in times.items()
    )
    winners = sorted(set(choice.values()), key=list(forms).index)
    log.info(f"{what}: {' / '.join(winners)} chosen by timing on this machine ({table})")
    if len(winners) == 1:
        return forms[winners[0]], choice
    return FastestForm({name: forms[name] for name in winners}, choice), choice
