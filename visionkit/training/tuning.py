"""`tune=lr` and `tune=batch_size`: Lightning's learning-rate and batch-size finders run before training, their
result applied to the task or data module and recorded in `<run>/tune.json` and the loggers."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from visionkit.data import VisionDataModule
from visionkit.errors import VisionkitError
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger
from visionkit.utils.viz import save_figure

log = get_logger(__name__)


def tune(cfg: DictConfig | None, trainer: L.Trainer, task: VisionTask, datamodule: VisionDataModule) -> dict:
    """Run the finder `cfg.mode` names (nothing for an empty config) and apply what it found; returns it."""
    mode = cfg.get("mode") if cfg else None
    if cfg is None or not mode:
        return {}
    if mode not in ("lr", "batch_size"):
        raise VisionkitError(f"tune.mode={mode!r}: choose tune=lr or tune=batch_size")
    if trainer.world_size > 1:
        raise VisionkitError(
            f"tune={mode} runs on one device (Lightning's finders do not support DDP): run it with "
            "trainer.devices=1, then train on many devices with the value it prints"
        )
    from lightning.pytorch.tuner import Tuner

    tuner = Tuner(trainer)
    run_dir = Path(trainer.default_root_dir)
    if mode == "lr":
        found = _find_lr(tuner, cfg, trainer, task, datamodule)
    else:
        size = tuner.scale_batch_size(
            task,
            datamodule=datamodule,
            mode=str(cfg.scale),
            max_trials=int(cfg.max_trials),
            steps_per_trial=int(cfg.steps_per_trial),
            init_val=int(datamodule.batch_size),
        )
        found = {"batch_size": int(size if size is not None else datamodule.batch_size)}
        datamodule.batch_size = found["batch_size"]
        log.info(f"tune=batch_size: training with data.batch_size={found['batch_size']}")
    if trainer.is_global_zero:
        with atomic_write(run_dir / "tune.json", "w") as handle:
            json.dump(found, handle, indent=2)
        for logger in trainer.loggers:
            logger.log_hyperparams({f"tuned.{key}": value for key, value in found.items() if key != "plot"})
    return found


def _find_lr(tuner: Any, cfg: DictConfig, trainer: L.Trainer, task: VisionTask, datamodule: VisionDataModule) -> dict:
    """The finder's suggestion, set as the optimizer's lr; its curve saved as plots/lr_find.png."""
    finder = tuner.lr_find(
        task,
        datamodule=datamodule,
        min_lr=float(cfg.min_lr),
        max_lr=float(cfg.max_lr),
        num_training=int(cfg.num_training),
        update_attr=False,
    )
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise VisionkitError(
            "tune=lr: the learning-rate finder found no clear slope (the loss did not fall over the range): widen "
            "tune.min_lr/tune.max_lr or raise tune.num_training, or set optimizer.lr yourself"
        )
    factory = task.optimizer_factory
    base = factory.func if isinstance(factory, partial) else factory
    keywords = dict(factory.keywords) if isinstance(factory, partial) else {}
    before = keywords.get("lr")
    task.optimizer_factory = partial(base, *getattr(factory, "args", ()), **{**keywords, "lr": float(suggestion)})
    plot = Path(trainer.default_root_dir) / "plots" / "lr_find.png"
    if trainer.is_global_zero:
        import matplotlib.pyplot as plt

        plot.parent.mkdir(parents=True, exist_ok=True)
        figure = finder.plot(suggest=True)
        figure.suptitle(f"learning-rate finder: suggestion {suggestion:.3g} (was {before})")
        save_figure(figure, plot)
        plt.close(figure)
    log.info(f"tune=lr: training with lr={suggestion:.4g} (optimizer.lr was {before}); the curve: {plot}")
    return {"lr": float(suggestion), "lr_before": before, "plot": str(plot)}
