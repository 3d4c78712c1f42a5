"""Transfer-learning schedules on Lightning's BaseFinetuning: freeze, freeze_unfreeze, unfreeze_milestones."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

STRATEGIES = ("none", "freeze", "freeze_unfreeze", "unfreeze_milestones")


def _layers_with_params(module: nn.Module) -> list[nn.Module]:
    """A backbone's blocks that own parameters, in forward order (the unit of unfreezing).

    Sequential containers are opened, so ResNet gives conv1, bn1, layer1.0 ... layer4.1, and LeNet-5
    gives conv1, conv2, fc120, fc84.
    """
    blocks: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.Sequential):
            blocks += _layers_with_params(child)
        elif any(True for _ in child.parameters()):
            blocks.append(child)
    return blocks


def follow_schedule(scheduler: object, optimizer: Optimizer, lr_factor: float) -> None:
    """Give parameter groups added after `scheduler` was built the per-group state it keeps for the first group
    (learning rates scaled by `lr_factor`), so they follow every torch and visionkit schedule: the group keys
    OneCycleLR reads (initial_lr, max_lr, min_lr, momenta), and the lists base_lrs, min_lrs (plateau), max_lrs,
    lr_lambdas (LambdaLR, WarmupLinearLR) and _last_lr. Idempotent: lists already as long as the groups stay."""
    groups = optimizer.param_groups
    reference = groups[0]
    for group in groups[1:]:
        for key, value in reference.items():
            if key not in group and key != "name":
                group[key] = value * lr_factor if "lr" in key and isinstance(value, (int, float)) else value
    for name in ("base_lrs", "min_lrs", "max_lrs", "lr_lambdas", "_last_lr"):
        values = getattr(scheduler, name, None)
        if not isinstance(values, list) or not values:
            continue
        for group in groups[len(values) :]:
            if name == "base_lrs":
                values.append(group.get("initial_lr", group["lr"]))
            elif name == "_last_lr":
                values.append(group["lr"])
            elif name == "lr_lambdas":
                values.append(values[0])
            else:
                values.append(values[0] * lr_factor)


class BackboneFinetuning(BaseFinetuning):
    """Freeze `pl_module.model.backbone` and unfreeze it on a schedule.

    - `freeze`: frozen for the whole run (only the head trains);
    - `freeze_unfreeze`: frozen until `unfreeze_epoch`, then trained at `lr_factor` × the head's lr;
    - `unfreeze_milestones`: the last `milestone_layers` blocks at `milestones[0]`, the rest at `milestones[1]`.
    Frozen blocks are truly frozen: parameters get no gradient and BatchNorm statistics stay fixed.
    """

    def __init__(
        self,
        strategy: str = "freeze",
        unfreeze_epoch: int = 5,
        milestones: Sequence[int] = (5, 10),
        milestone_layers: int = 2,
        lr_factor: float = 0.1,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES[1:]:
            raise ValueError(f"fine-tuning strategy {strategy!r} is not one of {STRATEGIES[1:]}")
        if len(milestones) != 2 or milestones[0] > milestones[1]:
            raise ValueError(f"milestones must be two increasing epochs, got {list(milestones)}")
        self.strategy = strategy
        self.unfreeze_epoch = unfreeze_epoch
        self.milestones = tuple(milestones)
        self.milestone_layers = milestone_layers
        self.lr_factor = lr_factor

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.get_submodule("model.backbone"), train_bn=False)

    def _unfreeze(self, modules: nn.Module | list[nn.Module], optimizer: Optimizer, trainer: L.Trainer) -> None:
        self.unfreeze_and_add_param_group(modules, optimizer, initial_denom_lr=1.0 / self.lr_factor, train_bn=True)
        self._follow_schedules(trainer)

    def _follow_schedules(self, trainer: L.Trainer) -> None:
        for config in trainer.lr_scheduler_configs:  # let the scheduler drive the new groups too
            follow_schedule(config.scheduler, config.scheduler.optimizer, self.lr_factor)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        backbone = pl_module.get_submodule("model.backbone")
        trainer = pl_module.trainer
        if self.strategy == "freeze_unfreeze" and epoch == self.unfreeze_epoch:
            self._unfreeze(backbone, optimizer, trainer)
        elif self.strategy == "unfreeze_milestones":
            layers = _layers_with_params(backbone)
            split = max(len(layers) - self.milestone_layers, 0)
            if epoch == self.milestones[0]:
                self._unfreeze(layers[split:], optimizer, trainer)
            elif epoch == self.milestones[1]:
                self._unfreeze(layers[:split], optimizer, trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        # On resume, parameter groups are restored but `setup` froze the whole backbone again:
        # whatever the restored optimizer trains must be trainable.
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.requires_grad_(True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._follow_schedules(trainer)  # groups restored on resume join the rebuilt schedulers too
        for module in pl_module.get_submodule("model.backbone").modules():  # frozen norm layers keep their statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
