"""Learning-rate schedules stepped every optimizer step (Lightning `interval: step`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from visionkit.errors import VisionkitError


def step_ends(batches_per_epoch: int, epochs: int, accumulation: int, warmup_batches: int, ramp: bool) -> list[int]:
    """The run's index of the batch that ends each optimizer step. With `ramp`, the batches a step gathers grow
    linearly from 1 to `accumulation` over the warm-up (ultralytics' trainer: many small steps while the lr is
    low); otherwise every step gathers `accumulation`. Every epoch's last batch ends a step (Lightning's rule)."""
    ends: list[int] = []
    last = -1
    for batch in range(batches_per_epoch * epochs):
        size = accumulation
        if ramp and warmup_batches > 0 and batch <= warmup_batches:
            size = max(1, round(1 + (accumulation - 1) * batch / warmup_batches))
        position = batch % batches_per_epoch
        window_full = batch - last >= size if ramp else (position + 1) % accumulation == 0
        if window_full or position == batches_per_epoch - 1:
            ends.append(batch)
            last = batch
    return ends


class WarmupLinearLR(LambdaLR):
    """ultralytics' trainer schedule: linear warm-up over `warmup_epochs` (at most all epochs but the last, at
    least `min_warmup_batches` batches), during which the `biases` parameter group comes down from
    `warmup_bias_lr` and the other groups rise from 0; then linear decay to `final_fraction` of the base lr.

    The schedule is a function of the batch each optimizer step ends on (`step_plan`), so it holds whatever the
    accumulation: with `ramp_accumulation` the warm-up's steps gather 1, 2, ... up to `accumulation` batches,
    as ultralytics' do (the detection task's `AccumulationRamp` callback makes Lightning step on that plan).
    `total_steps`, `accumulation` and `batches_per_epoch` come from the trainer.
    """

    per_step = True  # the task passes total_steps, accumulation and batches_per_epoch; stepped every optimizer step

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        epochs: int,
        accumulation: int = 1,
        batches_per_epoch: int | None = None,
        warmup_epochs: float = 3.0,
        min_warmup_batches: int = 0,
        warmup_bias_lr: float = 0.0,
        final_fraction: float = 0.01,
        ramp_accumulation: bool = False,
    ) -> None:
        epochs = max(epochs, 1)
        per_epoch = batches_per_epoch or max(round(total_steps * max(accumulation, 1) / epochs), 1)
        self.total_batches = per_epoch * epochs
        warmup = 0
        if warmup_epochs > 0:
            warmup = max(round(min(warmup_epochs, max(epochs - 1, 0)) * per_epoch), min_warmup_batches)
        self.warmup_batches = min(warmup, self.total_batches // 2)
        self.step_plan = step_ends(per_epoch, epochs, max(accumulation, 1), self.warmup_batches, ramp_accumulation)
        self.ramp_accumulation = ramp_accumulation
        self.warmup_steps = sum(1 for batch in self.step_plan if batch < self.warmup_batches)
        self.final_fraction = final_fraction

        def batch_of(step: int) -> int:
            return self.step_plan[min(step, len(self.step_plan) - 1)]

        def decay(batch: int) -> float:
            return (1 - min(batch / self.total_batches, 1.0)) * (1 - final_fraction) + final_fraction

        def warming(batch: int) -> float:
            return min(batch / self.warmup_batches, 1.0) if self.warmup_batches else 1.0

        def rising(step: int) -> float:
            batch = batch_of(step)
            return decay(batch) * warming(batch)

        def falling_from(start: float) -> Callable[[int], float]:
            def factor(step: int) -> float:
                batch = batch_of(step)
                return start + (decay(batch) - start) * warming(batch)

            return factor

        lambdas = []
        for group in optimizer.param_groups:
            is_bias = group.get("name") == "biases" and warmup_bias_lr > 0
            lambdas.append(falling_from(warmup_bias_lr / group["lr"]) if is_bias else rising)
        super().__init__(optimizer, lambdas)

    def __repr__(self) -> str:
        return f"WarmupLinearLR(warmup_batches={self.warmup_batches}, steps={len(self.step_plan)})"


def check_step_plan(scheduler: object, trainer: Any) -> None:
    """A schedule planned with ramped accumulation needs a callback that makes Lightning step on its plan
    (the detection task brings `AccumulationRamp`); refuse rather than follow a plan nobody carries out."""
    if not getattr(scheduler, "ramp_accumulation", False):
        return
    if not any(getattr(callback, "carries_out_step_plan", False) for callback in trainer.callbacks):
        raise VisionkitError(
            "scheduler.ramp_accumulation=true needs a task that steps on the schedule's plan (task=detection); "
            "set scheduler.ramp_accumulation=false for this task"
        )


def is_per_step(scheduler_class: object) -> bool:
    """True for schedules that need the run's total steps and are stepped every optimizer step."""
    return scheduler_class is torch.optim.lr_scheduler.OneCycleLR or bool(getattr(scheduler_class, "per_step", False))
