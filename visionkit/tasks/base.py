"""The small base every task shares: model/loss/metric hooks, optimizer and scheduler from partials."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, cast

import lightning as L
import torch
from torch import Tensor, nn

from visionkit.errors import VisionkitError
from visionkit.tasks.schedules import check_step_plan, is_per_step

# Lightning says it uses our `on_before_batch_transfer` whenever a data module is passed: that is the design
# (pairs become the task's dicts; VisionDataModule's own hook runs after the transfer), nothing to act on.
warnings.filterwarnings("ignore", message="You have overridden `on_before_batch_transfer` in `LightningModule` but")

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]  # (optimizer, total_steps=..., **plan) -> a scheduler


def stacked_images(images: Any) -> Tensor:
    """(B, C, H, W) from a batch tensor or a list of same-sized (C, H, W) tensors (a detection collate's)."""
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise VisionkitError(f"images of shape {tuple(images.shape)}: expected (B, C, H, W)")
        return images
    if isinstance(images, (tuple, list)) and images and all(isinstance(i, Tensor) for i in images):
        if len({tuple(i.shape) for i in images}) != 1:
            raise VisionkitError("the images of a batch differ in size: resize them to one size in the loader")
        return torch.stack(list(images))
    raise VisionkitError(f"images as {type(images).__name__}: expected a (B, C, H, W) tensor or a list of tensors")


def labelled_batch(images: Tensor, target: Any, what: str = "labels") -> dict[str, Any]:
    """`{"image", "label"}` from images and one integer per image (a (B,) tensor or a list of ints)."""
    labels = torch.as_tensor(target, device=images.device).long().view(-1)
    if labels.numel() != images.shape[0]:
        raise VisionkitError(f"{images.shape[0]} images but {labels.numel()} {what} in a batch")
    return {"image": images, "label": labels}


def class_names_of(module: nn.Module, classes: int) -> list[str]:
    """A task's class names as strings ("0".."N-1" for a module that holds none), for reports and plots."""
    names = getattr(module, "class_names", None)
    return [str(n) for n in names] if names else [str(i) for i in range(classes)]


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in three named groups: conv/linear weights (decayed), norm weights and biases
    (not decayed). Biases are apart so a schedule can warm them up differently (ultralytics' recipe)."""
    groups: dict[str, list[nn.Parameter]] = {"weights": [], "norms": [], "biases": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = "weights" if param.ndim > 1 else "biases" if name.endswith("bias") else "norms"
            groups[key].append(param)
    return [
        {"params": params, "name": key, **({} if key == "weights" else {"weight_decay": 0.0})}
        for key, params in groups.items()
        if params
    ]


class TrainStepStats:
    """Training loss (and accuracy, when given predictions) kept as running tensor sums.

    Logging the loss every step with `self.log(..., on_step=True)` and updating torchmetrics objects cost
    Lightning about a millisecond per step, most of a small model's step; this logs the step loss at the
    trainer's `log_every_n_steps` cadence and exact epoch means (synced across ranks) for a fraction.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum: Tensor | None = None
        self.correct: Tensor | None = None
        self.count = 0

    def update(self, module: L.LightningModule, loss: Tensor, batch_size: int, correct: Tensor | None = None) -> None:
        """Add one step; log its loss when the trainer would log this step."""
        loss = loss.detach()
        self.loss_sum = loss * batch_size if self.loss_sum is None else self.loss_sum + loss * batch_size
        if correct is not None:
            self.correct = correct if self.correct is None else self.correct + correct
        self.count += batch_size
        trainer = module.trainer
        every = max(getattr(trainer, "log_every_n_steps", 1), 1)  # set by Lightning's connectors, unseen by mypy
        if trainer.global_step % every == 0 or getattr(trainer, "fast_dev_run", False):
            module.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)

    def log_epoch(self, module: L.LightningModule) -> None:
        """Log `train_loss_epoch` (and `train_acc`) for the epoch, averaged across ranks, then reset."""
        if self.count and self.loss_sum is not None:
            module.log("train_loss_epoch", self.loss_sum / self.count, sync_dist=True)
            if self.correct is not None:
                module.log("train_acc", self.correct.float() / self.count, sync_dist=True)
        self.reset()


class VisionTask(L.LightningModule):
    """Base LightningModule (torchgeo's pattern): subclasses set their non-saved inputs (pretrained weights),
    then call this `__init__`, which saves the hyper-parameters and calls `configure_models`,
    `configure_losses` and `configure_metrics`; this class owns optimization and the default callbacks.

    monitor: the metric plateau schedulers watch (the config passes `monitor.metric`, the same one best.ckpt and
    early stopping use). optimizer / scheduler: callables that take the parameters / the optimizer (Hydra
    `_partial_: true` configs, or `functools.partial(torch.optim.AdamW, lr=1e-3)` in Python). They are not
    saved in the checkpoint's hyper-parameters, so a checkpoint loads without them. compile: the networks run
    through `torch.compile` when a Trainer runs the task (in place: checkpoints keep their keys).
    """

    hparams_ignore: ClassVar[tuple[str, ...]] = ()  # arguments left out of checkpoints (pretrained weights)
    channels_last_on_cpu: ClassVar[bool] = False  # train in channels-last layout on CPU (oneDNN convs: faster)
    networks: ClassVar[tuple[str, ...]] = ("model",)  # the attributes holding the trained network(s)
    # the validation metric (higher is better) that says an export answers like the checkpoint; None: none fits
    quality_metric: ClassVar[str | None] = None
    task_name: ClassVar[str] = ""  # what predictors, exports and messages call the task (each task sets it)
    class_names: list[str]  # in class-id order (set by the tasks that have classes)

    if TYPE_CHECKING:  # Lightning types it as a mapping; the tasks read their saved arguments as attributes

        @property
        def hparams(self) -> Any: ...

    def __init__(
        self,
        monitor: str = "val_loss",
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.save_hyperparameters(ignore=["optimizer", "scheduler", *self.hparams_ignore])
        self.train_stats = TrainStepStats()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def configure_models(self) -> None:
        """Build the network(s) from `self.hparams`."""

    def setup(self, stage: str) -> None:
        """Lightning's hook before a fit, test or predict (after the callbacks', so the EMA copies the plain
        network): with `compile`, each network is compiled in place, once. Compilation runs at the first batch,
        which the speed report leaves out."""
        if self.hparams.get("compile") and not getattr(self, "_compiled", False):
            for name in self.networks:
                getattr(self, name).compile()
            self._compiled = True

    def configure_losses(self) -> None:
        """Build the loss(es)."""

    def configure_metrics(self) -> None:
        """Build the metric objects (torchmetrics, synced across ranks)."""

    def default_callbacks(self) -> list[L.Callback]:
        """Callbacks the task brings (plots, schedules), so a plain Trainer gets them too."""
        return []

    def configure_callbacks(self) -> list[L.Callback]:
        """The task's callbacks, the training curves and the speed report every fit ends with, except those whose
        type the trainer already holds: a configured instance (e.g. `callbacks.sample_predictions.*`) is kept."""
        from visionkit.callbacks.speed_report import SpeedReport
        from visionkit.callbacks.training_curves import TrainingCurves

        held = {type(c) for c in getattr(self._trainer, "callbacks", [])}  # set by Lightning's callback connector
        return [c for c in [*self.default_callbacks(), TrainingCurves(), SpeedReport()] if type(c) not in held]

    @staticmethod
    def resolve_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
        """The given names (checked against `num_classes`), or "0".."N-1" when none are given."""
        if class_names is None:
            return [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for num_classes={num_classes}")
        return list(class_names)

    def gathered_rows(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Each tensor with every DDP rank's rows, rank after rank (the tensors as they are on one process)."""
        if self.trainer.world_size == 1:
            return tensors
        return tuple(cast(Tensor, self.all_gather(t)).flatten(0, 1) for t in tensors)

    def configure_optimizers(self) -> Any:
        """Optimizer over the trainable parameters (frozen ones are added back by the fine-tuning callback)."""
        optimizer = self.optimizer_factory(parameter_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        target = getattr(self.scheduler_factory, "func", self.scheduler_factory)
        interval = "epoch"
        if is_per_step(target):
            total = int(self.trainer.estimated_stepping_batches)  # also counts the training batches
            extra = {}
            if getattr(target, "per_step", 0):
                batches = self.trainer.num_training_batches
                extra = {
                    "accumulation": self.trainer.accumulate_grad_batches,
                    "batches_per_epoch": int(batches) if math.isfinite(batches) else None,
                }
            scheduler = self.scheduler_factory(optimizer, total_steps=total, **extra)
            interval = "step"
            check_step_plan(scheduler, self.trainer)
        else:
            scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.monitor},
        }

    def on_fit_start(self) -> None:
        """On CPU, switch to the channels-last layout when the task asks for it (`channels_last_on_cpu`)."""
        if self.channels_last_on_cpu and self.device.type == "cpu":
            self.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        """Back to the default layout, which exports and other libraries' loaders expect."""
        if self.channels_last_on_cpu:
            self.to(memory_format=torch.contiguous_format)

    def in_layout(self, images: Tensor) -> Tensor:
        """`images` in the layout the network trains in (channels-last on CPU when the task uses it)."""
        if self.channels_last_on_cpu and images.device.type == "cpu":
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, Any]:
        """Lightning's hook as a batch leaves the loader: an `(image, target)` tuple or list, what torchvision
        datasets and plain `DataLoader`s give, becomes the task's batch dict (`batch_from_pair`, each task's
        docstring says the keys); a dict passes as it is. Images that are uint8 and not from a VisionDataModule
        (which normalizes them on the device itself) become floats in 0..1; normalizing them is the loader's."""
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise VisionkitError(
                    f"{type(self).__name__} takes a batch as an (image, target) pair or a dict; got a "
                    f"{type(batch).__name__} of {len(batch)} items"
                )
            batch = self.batch_from_pair(stacked_images(batch[0]), batch[1])
        elif not isinstance(batch, Mapping) or "image" not in batch:
            raise VisionkitError(
                f"{type(self).__name__} takes a batch as an (image, target) pair or a dict with an 'image' key "
                f"(see its docstring); got {type(batch).__name__}"
            )
        trainer = self._trainer
        from_datamodule = trainer is not None and hasattr(getattr(trainer, "datamodule", None), "normalize_batch")
        if not from_datamodule and isinstance(batch["image"], Tensor) and batch["image"].dtype == torch.uint8:
            batch = {**batch, "image": batch["image"].float().div_(255)}
        return batch

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """The task's batch dict from an (images, target) pair (each task says what its target is)."""
        raise VisionkitError(f"{type(self).__name__} takes dict batches only")

    def export_module(self) -> tuple[nn.Module, list[str], bool]:
        """(network in eval mode, ONNX output names, whether height/width may vary) for `visionkit.export`."""
        raise NotImplementedError(f"{type(self).__name__} has no ONNX export")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which task class wrote the checkpoint, so `visionkit-eval` can rebuild it."""
        cls = type(self)
        checkpoint["visionkit"] = {"task": f"{cls.__module__}.{cls.__qualname__}"}
