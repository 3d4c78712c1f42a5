"""Which of several ways of doing the same work runs fastest here: each timed in interleaved rounds, the order
turning each round, so that a machine's speed swings fall on every way alike. NumPy-only callers (exported
predictors) and PyTorch ones (`visionkit.models.fastest`) share it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


def best_seconds(calls: Mapping[str, Callable[[], Any]], budget_s: float = 3.0, rounds: int = 3) -> dict[str, float]:
    """{name: its best seconds a call}: each call made once untimed (the first picks kernels and allocates), then
    timed in up to `rounds` interleaved rounds, fewer once `budget_s` seconds have passed (one at least)."""
    for call in calls.values():
        call()
    best = dict.fromkeys(calls, float("inf"))
    names = list(calls)
    start = time.perf_counter()
    for round_index in range(rounds):
        if round_index and time.perf_counter() - start > budget_s:
            break
        turn = round_index % len(names)
        for name in names[turn:] + names[:turn]:
            began = time.perf_counter()
            calls[name]()
            best[name] = min(best[name], time.perf_counter() - began)
    return best
