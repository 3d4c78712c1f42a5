"""Learning-rate schedules stepped every optimizer step (Lightning `interval: step`)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupLinearLR(LambdaLR):
    """Linear warm-up from 0 to the base lr, then linear decay to `final_fraction` of it by the end of training:
    the recipe of ultralytics' trainer (3 warm-up epochs, at least `min_warmup_steps`; lrf=0.01).

    `total_steps` (optimizer steps of the whole run) is filled in by the task from the trainer.
    """

    per_step = True  # the task passes total_steps and steps it every optimizer step

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        epochs: int,
        warmup_epochs: float = 3.0,
        min_warmup_steps: int = 100,
        final_fraction: float = 0.01,
    ) -> None:
        steps_per_epoch = max(total_steps / max(epochs, 1), 1.0)
        warmup = max(round(warmup_epochs * steps_per_epoch), min_warmup_steps) if warmup_epochs > 0 else 0
        self.warmup_steps = min(warmup, total_steps // 2)
        self.total_steps = max(total_steps, 1)
        self.final_fraction = final_fraction

        def factor(step: int) -> float:
            decay = (1 - min(step / self.total_steps, 1.0)) * (1 - final_fraction) + final_fraction
            if step < self.warmup_steps:
                return decay * (step + 1) / (self.warmup_steps + 1)
            return decay

        super().__init__(optimizer, factor)

    def __repr__(self) -> str:
        return f"WarmupLinearLR(warmup_steps={self.warmup_steps}, total_steps={self.total_steps})"


def is_per_step(scheduler_class: object) -> bool:
    """True for schedules that need the run's total steps and are stepped every optimizer step."""
    return scheduler_class is torch.optim.lr_scheduler.OneCycleLR or bool(getattr(scheduler_class, "per_step", False))
