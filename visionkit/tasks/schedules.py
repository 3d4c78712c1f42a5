"""Learning-rate schedules stepped every optimizer step (Lightning `interval: step`)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class WarmupLinearLR(LambdaLR):
    """Linear warm-up, then linear decay to `final_fraction` of the base lr by the end of training: the
    schedule of ultralytics' trainer (lrf=0.01). Warm-up lasts `warmup_epochs` but at least
    `min_warmup_batches` batches; during it the `biases` parameter group starts at `warmup_bias_lr` and
    comes down to the schedule (ultralytics: 0.1), the other groups rise from 0.

    `total_steps` (optimizer steps of the run) and `accumulation` (batches per step) come from the trainer.
    """

    per_step = True  # the task passes total_steps and accumulation, and steps it every optimizer step

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        epochs: int,
        accumulation: int = 1,
        warmup_epochs: float = 3.0,
        min_warmup_batches: int = 100,
        warmup_bias_lr: float = 0.0,
        final_fraction: float = 0.01,
    ) -> None:
        self.total_steps = max(total_steps, 1)
        steps_per_epoch = max(self.total_steps / max(epochs, 1), 1.0)
        warmup = 0
        if warmup_epochs > 0:
            warmup = max(round(warmup_epochs * steps_per_epoch), math.ceil(min_warmup_batches / max(accumulation, 1)))
        self.warmup_steps = min(warmup, self.total_steps // 2)
        self.final_fraction = final_fraction

        def decay(step: int) -> float:
            return (1 - min(step / self.total_steps, 1.0)) * (1 - final_fraction) + final_fraction

        def rising(step: int) -> float:
            return decay(step) * min((step + 1) / (self.warmup_steps + 1), 1.0)

        def falling_from(start: float):
            def factor(step: int) -> float:
                if step >= self.warmup_steps:
                    return decay(step)
                progress = (step + 1) / (self.warmup_steps + 1)
                return start + (decay(step) - start) * progress

            return factor

        lambdas = []
        for group in optimizer.param_groups:
            is_bias = group.get("name") == "biases" and warmup_bias_lr > 0
            lambdas.append(falling_from(warmup_bias_lr / group["lr"]) if is_bias else rising)
        super().__init__(optimizer, lambdas)

    def __repr__(self) -> str:
        return f"WarmupLinearLR(warmup_steps={self.warmup_steps}, total_steps={self.total_steps})"


def is_per_step(scheduler_class: object) -> bool:
    """True for schedules that need the run's total steps and are stepped every optimizer step."""
    return scheduler_class is torch.optim.lr_scheduler.OneCycleLR or bool(getattr(scheduler_class, "per_step", False))
