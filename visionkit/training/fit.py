"""Training orchestration: build the data module, task and trainer of a config, fit, test the best checkpoint,
write the report. `visionkit.run.train` is this module's `train`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionkit.callbacks.exact_resume import ExactResume
from visionkit.checkpoints import check_checkpoint
from visionkit.config.checks import check_config
from visionkit.config.composed import launcher_env_restored, plain, save_run_config
from visionkit.config.folders import RUN_CONFIG, RUN_DIR_ENV, absolute_data_paths, run_dir_of_checkpoint
from visionkit.data import IMAGENET_MEAN, IMAGENET_STD, VisionDataModule
from visionkit.data.pixels import format_of
from visionkit.errors import VisionkitError
from visionkit.report import write_report
from visionkit.tasks.base import VisionTask
from visionkit.tasks.embedding_losses import images_per_identity
from visionkit.training.sweep import pruning_callback
from visionkit.training.tracking import trackers
from visionkit.training.tuning import tune
from visionkit.utils.checkpoint_io import AtomicCheckpointIO
from visionkit.utils.device import check_accelerator
from visionkit.utils.logging import get_logger, is_rank_zero, one_line_per_message
from visionkit.utils.run_status import STATUS_FILE, failure_details, write_status

log = get_logger(__name__)


def build_datamodule(
    data: DictConfig,
    augment: DictConfig | None,
    *,
    mean: Any,
    std: Any,
    image_size: Any = None,
    resize: str | None = None,
    viz_bands: Any = None,
    loss: DictConfig | None = None,
) -> VisionDataModule:
    """The data module for a `data` config (source via `_target_`), the augment preset and model stats
    (`data.mean`/`data.std` override them: a list, or auto); the embedding `loss` config settles
    `data.per_identity=auto`."""
    transforms = instantiate(augment.train) if augment is not None and augment.get("train") else []
    fmt = format_of(data, plain(viz_bands))
    mean, std = (data_statistic(data.get(key), model, fmt.channels) for key, model in (("mean", mean), ("std", std)))
    return VisionDataModule(
        instantiate(data.source),
        image_size=plain(image_size if image_size is not None else data.image_size),
        num_classes=data.num_classes,
        batch_size=data.batch_size,
        eval_batch_size=data.eval_batch_size,
        num_workers=data.num_workers,
        pin_memory=data.pin_memory,
        persistent_workers=data.persistent_workers,
        augment=list(transforms),
        resize=resize or data.resize,
        mean=plain(mean),
        std=plain(std),
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        skip_bad_images=data.skip_bad_images,
        mosaic=float(data.get("mosaic", 0.0)) if augment is not None else 0.0,
        cache=data.get("cache"),
        cache_dir=data.get("cache_dir"),
        cache_max_gb=data.get("cache_max_gb"),
        per_identity=images_per_identity(data.get("per_identity"), loss.get("name") if loss else None),
        pixel_format=fmt,
    )


def data_statistic(given: Any, model: Any, channels: int) -> Any:
    """`data.mean` (or std) when set (a list, or "auto"); else the model's when it has one value per channel,
    else auto: a 1-channel scan or 5-band raster has no ImageNet statistics."""
    if given is not None:
        return given if isinstance(given, str) else plain(given)
    model = plain(model)
    return model if len(model) == channels else "auto"


def checkpoint_datamodule(cfg: DictConfig, task: VisionTask, data_state: Mapping[str, Any]) -> VisionDataModule:
    """The data a checkpoint was trained on (its run's `config.yaml`), or `cfg.data` when set, prepared with
    the checkpoint's size, resize mode and mean/std: what `visionkit-eval` tests and the export check runs."""
    run_dir = run_dir_of_checkpoint(str(cfg.ckpt_path))
    run_cfg = OmegaConf.load(run_dir / RUN_CONFIG) if run_dir is not None else None
    data_cfg = cfg.get("data") or (run_cfg.data if run_cfg is not None else None)
    if data_cfg is None:
        raise VisionkitError(
            f"{cfg.ckpt_path} is not inside a visionkit run folder, so its data is unknown: "
            "pass data=<name> (and its keys)"
        )
    if "mean" in data_state:  # the statistics the checkpoint was trained with, not data.mean=auto measured again
        data_cfg = cast(DictConfig, OmegaConf.merge(data_cfg, {"mean": None, "std": None}))
    datamodule = build_datamodule(
        data_cfg,
        None,
        mean=data_state.get("mean", run_cfg.model.mean if run_cfg is not None else IMAGENET_MEAN),
        std=data_state.get("std", run_cfg.model.std if run_cfg is not None else IMAGENET_STD),
        image_size=data_state.get("image_size"),
        resize=data_state.get("resize"),
    )
    expected = task.hparams.get("num_classes")
    if expected is not None and datamodule.num_classes != int(expected):  # photos (style) have no classes
        raise VisionkitError(
            f"the checkpoint predicts {expected} classes but the evaluation data has {datamodule.num_classes}"
        )
    return datamodule


def build_task(cfg: DictConfig, datamodule: VisionDataModule) -> VisionTask:
    """The task module, with num_classes and class names taken from the data (one source of truth)."""
    scheduler = cfg.get("scheduler")
    return instantiate(
        cfg.task,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(scheduler) if scheduler and scheduler.get("_target_") else None,
        _convert_="all",
    )


def warn_undrawable_names(names: list[str]) -> None:
    """Say once, before training, when class names hold characters no installed font draws (the plots and the
    report show them as boxes; matplotlib would warn at every figure)."""
    from visionkit.utils.viz import undrawable

    missing = undrawable(names)
    if missing and is_rank_zero():
        log.warning(
            f"class names use characters no installed font has ({missing[:12]}): plots draw them as boxes; install "
            "a font with them (Debian/Ubuntu: apt install fonts-noto-cjk for Chinese, Japanese and Korean)"
        )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Trainer with the configured callbacks and loggers. Without a logger there is nothing to record learning
    rates in, so the learning-rate monitor is left out (any `callbacks` choice runs with `logger=none`)."""
    one_line_per_message()  # Lightning may have been imported after the command set up logging
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and c.get("_target_")]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    if not loggers and any(isinstance(c, L.pytorch.callbacks.LearningRateMonitor) for c in callbacks):
        log.info("no logger: learning rates are not recorded (logger=default or csv records them)")
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    callbacks.append(ExactResume())  # random states and loader position in every checkpoint
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


def metrics_of(values: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of Lightning's metric dicts as floats."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float, torch.Tensor)) and torch.numel(torch.as_tensor(v)) == 1
    }


def set_cpu_threads(cfg: DictConfig) -> int | None:
    """Torch threads for CPU training: `cfg.cpu_threads`, or (null) the machine's cores divided among the
    training processes (DDP on CPU: 2 processes on 2 cores get 1 thread each instead of oversubscribing).
    Set here, it also holds against libraries that change it at import (ultralytics)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return None
    threads = cfg.get("cpu_threads")
    devices = cfg.trainer.get("devices", 1)
    processes = int(devices) if str(devices).isdigit() else 1
    cores = os.cpu_count() or 1
    if processes > cores and is_rank_zero():
        log.warning(
            f"trainer.devices={processes} starts {processes} training processes on {cores} CPU core(s): they take "
            f"turns on the cores, so each step takes about {processes / cores:.1f}x as long as with one process per "
            f"core and every process holds its own copy of the model and loaders; trainer.devices={cores} gets as "
            "many images through per second with less memory"
        )
    if threads is None:
        threads = max(cores // max(processes, 1), 1)
    torch.set_num_threads(int(threads))
    return int(threads)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured task on the configured data, test the best checkpoint, return all metrics.

    The run folder is `cfg.paths.output_dir`; with `cfg.ckpt_path` training resumes from that checkpoint.
    """
    check_config(cfg)
    absolute_data_paths(cfg)
    ckpt_path = check_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir).expanduser().absolute()
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    check_accelerator(cfg.trainer.get("accelerator", "auto"))
    threads = set_cpu_threads(cfg)
    if threads is not None:
        log.info(f"CPU training with {threads} torch thread(s) per process (cpu_threads to change)")
    viz = cfg.get("viz")
    datamodule = build_datamodule(
        cfg.data,
        cfg.get("augment"),
        mean=cfg.model.mean,
        std=cfg.model.std,
        viz_bands=viz.bands if viz else None,
        loss=cfg.get("loss"),
    )
    task = build_task(cfg, datamodule)
    warn_undrawable_names(datamodule.class_names)
    trainer = build_trainer(cfg)
    pruning = pruning_callback(cfg)  # in an Optuna sweep's trial: stops a bad trial early
    if pruning is not None:
        trainer.callbacks.append(pruning)  # type: ignore[attr-defined]  # set by Lightning's callback connector
    save_run_config(cfg, output_dir)
    write_status(output_dir, "running")
    try:
        metrics = _fit_and_test(cfg, trainer, task, datamodule, ckpt_path, pruning, output_dir)
    except BaseException as exc:
        stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        if type(exc).__name__ == "TrialPruned":  # an Optuna sweep's verdict, not a failure
            stopped = "pruned"
        write_status(output_dir, stopped, **failure_details(exc, trainer.current_epoch))
        if stopped == "failed" and is_rank_zero():
            log.info(f"run folder {output_dir} marked failed ({STATUS_FILE})")
        raise
    write_status(output_dir, "interrupted" if trainer.interrupted else "finished", epochs_done=trainer.current_epoch)
    return metrics


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    task: VisionTask,
    datamodule: VisionDataModule,
    ckpt_path: Path | None,
    pruning: Any,
    output_dir: Path,
) -> dict[str, float]:
    """Fit (resuming from `ckpt_path`), test the best checkpoint, write the report; the metrics."""
    for tracker in trackers(trainer.loggers):
        tracker.log_config(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    tune(cfg.get("tune"), trainer, task, datamodule)
    with launcher_env_restored():
        os.environ[RUN_DIR_ENV] = str(output_dir)  # DDP workers started by Lightning read the config here
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if pruning is not None:
            pruning.check_pruned()  # under DDP the callback only stops training; this raises TrialPruned
        metrics = metrics_of(trainer.callback_metrics)
        if trainer.interrupted:
            log.warning("training was interrupted; last.ckpt holds the latest state")
        elif cfg.get("test_after_fit", True):
            checkpoint = trainer.checkpoint_callback
            best = "best" if getattr(checkpoint, "best_model_path", None) else None  # ModelCheckpoint wrote one
            results = trainer.test(task, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update(metrics_of(results[0] if results else {}))
    if trainer.is_global_zero:
        log.info(f"report: {write_report(trainer.default_root_dir, metrics, f'{cfg.task_name} run {output_dir.name}')}")
        for tracker in trackers(trainer.loggers):
            tracker.log_run_files()
    return metrics
