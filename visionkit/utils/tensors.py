"""The tensors inside a network's output or a call's arguments, however nested (lists, tuples, dicts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor


def nested_tensors(value: Any) -> Iterator[Tensor]:
    """Every tensor in `value` (a tensor, or lists, tuples and dict values of them, nested), in order."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from nested_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from nested_tensors(item)
