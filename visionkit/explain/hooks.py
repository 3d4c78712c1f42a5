"""One forward pass with forward hooks on chosen modules, removed afterwards whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

Hook = Callable[[nn.Module, Any], None]


def run_hooked(
    model: nn.Module,
    image: Tensor,
    hooks: Iterable[tuple[nn.Module, Hook]],
    context: AbstractContextManager | None = None,
) -> None:
    """Run `model(image)` without gradients (inside `context` too, when given), calling `hook(module, output)`
    after each hooked module. Hooks never replace outputs, whatever they return."""

    def call(hook: Hook, module: nn.Module, output: Any) -> None:
        hook(module, output)

    handles = [module.register_forward_hook(lambda m, _i, out, h=hook: call(h, m, out)) for module, hook in hooks]
    try:
        with torch.no_grad(), context or nullcontext():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
