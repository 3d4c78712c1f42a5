"""The network form chosen by timing (visionkit.models.fastest): the faster form wins, and when different forms
win at different batch sizes each batch runs through its own winner."""

from __future__ import annotations

import time

import torch
from torch import nn

from visionkit.models.fastest import FastestForm, fastest_form, time_forms


class Delayed(nn.Module):
    """The same convolution as `conv`, slowed by `delay` seconds for the batch sizes in `slow_for`: a form that
    computes the same output at another speed."""

    def __init__(self, conv: nn.Module, delay: float, slow_for: set[int]) -> None:
        super().__init__()
        self.conv, self.delay, self.slow_for = conv, delay, slow_for

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] in self.slow_for:
            time.sleep(self.delay)
        return self.conv(x)


def _probe(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16)


def test_the_faster_form_is_chosen_at_every_size() -> None:
    conv = nn.Conv2d(3, 4, 3).eval()
    forms = {"slow": Delayed(conv, 0.02, {1, 4}), "fast": Delayed(conv, 0.0, set())}
    times = time_forms(forms, _probe, [1, 4])
    assert all(per_form["slow"] > per_form["fast"] + 0.015 for per_form in times.values())
    chosen, choice = fastest_form(forms, _probe, [1, 4])
    assert chosen is forms["fast"] and choice == {1: "fast", 4: "fast"}


def test_different_winners_per_batch_size_are_both_kept_and_routed() -> None:
    conv = nn.Conv2d(3, 4, 3).eval()
    forms = {
        "small-batch": Delayed(conv, 0.02, {8}),
        "large-batch": Delayed(conv, 0.02, {1}),
        "slow": Delayed(conv, 0.05, {1, 8}),
    }
    chosen, choice = fastest_form(forms, _probe, [1, 8])
    assert choice == {1: "small-batch", 8: "large-batch"}
    assert isinstance(chosen, FastestForm) and set(chosen.forms) == {"small-batch", "large-batch"}  # the loser dropped
    assert [chosen.form_for(b) for b in (1, 2, 4, 5, 8, 32)] == ["small-batch"] * 3 + ["large-batch"] * 3
    x = _probe(3)
    with torch.inference_mode():
        assert torch.equal(chosen(x), conv(x))


def test_a_single_form_is_not_timed() -> None:
    conv = nn.Conv2d(3, 4, 3)
    chosen, choice = fastest_form({"only": conv}, _probe, [1, 16])
    assert chosen is conv and choice == {1: "only", 16: "only"}
