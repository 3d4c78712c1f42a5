"""Orchestration: `train`, `evaluate`, `predict`, `export` and `serve` of a config: instantiate, run, return metrics.

The Hydra entry points only call these; tests and Python callers pass configs from `hydra.compose`
(with `paths.output_dir` set).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionkit.checkpoints import check_checkpoint, load_checkpoint
from visionkit.config import RUN_CONFIG, RUN_DIR_ENV, check_config, run_dir_of_checkpoint
from visionkit.data import IMAGENET_MEAN, IMAGENET_STD, VisionDataModule
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.report import write_report
from visionkit.tasks.base import VisionTask
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger, is_rank_zero
from visionkit.utils.video import is_video_source

log = get_logger(__name__)

_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def build_datamodule(
    data: DictConfig,
    augment: DictConfig | None,
    *,
    mean: Any,
    std: Any,
    image_size: Any = None,
    resize: str | None = None,
) -> VisionDataModule:
    """The data module for a `data` config (source via `_target_`), the augment preset and model stats."""
    transforms = instantiate(augment.train) if augment is not None and augment.get("train") else []
    return VisionDataModule(
        instantiate(data.source),
        image_size=_plain(image_size if image_size is not None else data.image_size),
        num_classes=data.num_classes,
        batch_size=data.batch_size,
        eval_batch_size=data.eval_batch_size,
        num_workers=data.num_workers,
        pin_memory=data.pin_memory,
        persistent_workers=data.persistent_workers,
        augment=list(transforms),
        resize=resize or data.resize,
        mean=_plain(mean),
        std=_plain(std),
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        skip_bad_images=data.skip_bad_images,
        mosaic=float(data.get("mosaic", 0.0)) if augment is not None else 0.0,
        cache=data.get("cache"),
        cache_dir=data.get("cache_dir"),
        cache_max_gb=data.get("cache_max_gb"),
    )


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


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Trainer with the configured callbacks and loggers. Without a logger there is nothing to record learning
    rates in, so the learning-rate monitor is left out (any `callbacks` choice runs with `logger=none`)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and c.get("_target_")]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and c.get("_target_")]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    if not loggers and any(isinstance(c, L.pytorch.callbacks.LearningRateMonitor) for c in callbacks):
        log.info("no logger: learning rates are not recorded (logger=default or csv records them)")
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def _save_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config to `<run>/config.yaml` (rank 0 only); DDP children re-read it."""
    if not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(output_dir / RUN_CONFIG, "w") as handle:
        handle.write(OmegaConf.to_yaml(cfg, resolve=True))


@contextmanager
def _launcher_env_restored() -> Iterator[None]:
    """Undo the environment Lightning's DDP launcher sets in this process, so the next job of a sweep
    launches its own workers instead of believing it was launched externally."""
    saved = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch.distributed.is_available() and torch.distributed.is_initialized() and saved["LOCAL_RANK"] is None:
            torch.distributed.destroy_process_group()


def _metrics(values: Mapping[str, Any]) -> dict[str, float]:
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
    if threads is None:
        devices = cfg.trainer.get("devices", 1)
        processes = int(devices) if str(devices).isdigit() else 1
        threads = max((os.cpu_count() or 1) // max(processes, 1), 1)
    torch.set_num_threads(int(threads))
    return int(threads)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured task on the configured data, test the best checkpoint, return all metrics.

    The run folder is `cfg.paths.output_dir`; with `cfg.ckpt_path` training resumes from that checkpoint.
    """
    check_config(cfg)
    ckpt_path = check_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir).expanduser().absolute()
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    threads = set_cpu_threads(cfg)
    if threads is not None:
        log.info(f"CPU training with {threads} torch thread(s) per process (cpu_threads to change)")
    datamodule = build_datamodule(cfg.data, cfg.get("augment"), mean=cfg.model.mean, std=cfg.model.std)
    task = build_task(cfg, datamodule)
    trainer = build_trainer(cfg)
    _save_run_config(cfg, output_dir)
    os.environ[RUN_DIR_ENV] = str(output_dir)  # DDP workers started by Lightning read the config here
    with _launcher_env_restored():
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = _metrics(trainer.callback_metrics)
        if trainer.interrupted:
            log.warning("training was interrupted; last.ckpt holds the latest state")
        elif cfg.get("test_after_fit", True):
            checkpoint = trainer.checkpoint_callback
            best = "best" if checkpoint is not None and getattr(checkpoint, "best_model_path", "") else None
            results = trainer.test(task, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update(_metrics(results[0] if results else {}))
    if trainer.is_global_zero:
        log.info(f"report: {write_report(trainer.default_root_dir, metrics, f'{cfg.task_name} run {output_dir.name}')}")
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Re-test a checkpoint: its run's data (from `<run>/config.yaml`) unless `cfg.data` names other data."""
    check_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = checkpoint_datamodule(cfg, task, data_state)
    trainer = build_trainer(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
    with _launcher_env_restored():
        run = trainer.validate if cfg.get("split", "test") == "val" else trainer.test
        results = run(task, datamodule=datamodule)
    metrics = _metrics(results[0] if results else {})
    if trainer.is_global_zero:
        title = f"evaluation of {cfg.ckpt_path}"
        log.info(f"report: {write_report(trainer.default_root_dir, metrics, title)}")
    return metrics


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


def _predict_options(cfg: DictConfig, predictor_cls: type) -> dict[str, Any]:
    """The predict config's values for the options the checkpoint's predictor takes (same names)."""
    from visionkit.inference import predictor_options

    return {name: _plain(cfg[name]) for name in predictor_options(predictor_cls) if name in cfg}


def _video_options(cfg: DictConfig) -> Any:
    """The predict config's video keys (conf/predict.yaml: stride ... overwrite) as VideoOptions."""
    from dataclasses import fields

    from visionkit.inference.video import VideoOptions

    return VideoOptions(**{f.name: _plain(cfg[f.name]) for f in fields(VideoOptions) if f.name in cfg})


def predict(cfg: DictConfig) -> dict[str, float]:
    """Run a checkpoint on the images named by `cfg.source` through its Predictor, writing each result's files
    as it comes (classification: predictions.csv/json; detection: predictions.json, YOLO txt labels and annotated
    images; segmentation: mask PNGs, overlays and predictions.json, at each image's own resolution). A video,
    webcam or stream goes to `predict_video` (annotated .mp4, per-frame JSON, tracks, backgrounds)."""
    from rich.progress import track

    from visionkit.inference import build_predictor, open_checkpoint, output_names

    check_config(cfg)
    state, task_cls, predictor_cls = open_checkpoint(cfg.get("ckpt_path"))
    if predictor_cls.task_name == "style_transfer":
        raise VisionkitError(
            f"{cfg.ckpt_path} is a fast stylizer: run visionkit-stylize photo.jpg --model {cfg.ckpt_path} -o out.jpg"
        )
    wanted = cfg.get("expected_task")
    if wanted and str(wanted).lower() != predictor_cls.task_name:
        raise VisionkitError(
            f"task={wanted} but {cfg.ckpt_path} holds a {predictor_cls.task_name} model; drop task= or fix ckpt_path"
        )
    source = cfg.get("source")
    video = is_video_source(source)
    paths = [] if video else list_images(source)  # a wrong source stops before the model is built
    options = _predict_options(cfg, predictor_cls)
    predictor = build_predictor(state, task_cls, image_size=_plain(cfg.get("image_size")), **options)
    output_dir = Path(cfg.paths.output_dir)
    if video:
        from visionkit.inference.video import predict_video

        return predict_video(predictor, str(source), output_dir, _video_options(cfg))
    records = []
    results = predictor.stream(paths)
    try:
        for result, name in track(zip(results, output_names(paths)), total=len(paths), description="predicting"):
            result.save(output_dir, name, draw=bool(cfg.save_images))
            records.append(result.to_dict())
    finally:  # a run stopped by a bad image or Ctrl-C keeps the table of what was done
        if records:
            predictor.write_summary(records, output_dir)
    counts = predictor.counts
    found = sum(len(r.get("detections", [])) for r in records)
    objects = f", {found} object(s)" if predictor_cls.task_name == "detection" else ""
    log.info(f"predicted {counts['images']} image(s){objects}, skipped {counts['skipped']}: {output_dir}")
    metrics = {"images": float(counts["images"]), "skipped": float(counts["skipped"])}
    return {**metrics, "objects": float(found)} if objects else metrics


def export(cfg: DictConfig) -> dict[str, float]:
    """Write the checkpoint in each of `cfg.formats` to the output folder; with `cfg.check`, run every export
    with its own runtime next to PyTorch on the validation split and fail when it answers differently."""
    from visionkit.export import ExportRequest, check_exports, file_size_mb, write_exports

    check_config(cfg)
    request = ExportRequest.from_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir)
    graph, written = write_exports(task, data_state, request, output_dir)
    for path in written.values():
        log.info(f"exported {path} ({file_size_mb(path):.1f} MB)")
    metrics: dict[str, float] = {"files": float(len(written))}
    if cfg.get("check"):
        data = checkpoint_datamodule(cfg, task, data_state)
        results = check_exports(task, graph, request, written, data, output_dir, max_batches=cfg.get("check_batches"))
        metrics.update({f"{r.format}_max_diff": r.max_diff for r in results})
    return metrics


def benchmark(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-benchmark`: export `cfg.formats`, check and time each next to PyTorch, save the tables."""
    from visionkit.export import ExportRequest, write_exports
    from visionkit.export.benchmark import benchmark_formats, save_tables

    check_config(cfg)
    request = ExportRequest.from_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir)
    graph, written = write_exports(task, data_state, request, output_dir)
    data = checkpoint_datamodule(cfg, task, data_state)
    sizes, rounds, seconds = [int(b) for b in cfg.batch_sizes], int(cfg.rounds), float(cfg.seconds)
    timing = {"batch_sizes": sizes, "rounds": rounds, "seconds": seconds, "max_batches": cfg.get("check_batches")}
    rows = benchmark_formats(task, graph, str(cfg.ckpt_path), written, data, **timing)
    table = save_tables(rows, output_dir)
    log.info(f"{cfg.ckpt_path} ({torch.get_num_threads()} CPU threads)\n{table}\nsaved in {output_dir}")
    return {f"{row.format}_ms_b{b}": ms for row in rows for b, ms in row.ms_per_image.items()}


# Predictor options a server sets itself: the device each worker gets, batching, and uploads (checked first).
_SERVER_OWNED = ("device", "batch_size", "num_workers", "skip_bad_images")


def serve(cfg: DictConfig) -> dict[str, float]:
    """Serve a checkpoint over HTTP until stopped (`visionkit-serve`; see `visionkit.serve`). The checkpoint and
    the options are checked here, once, before any worker starts."""
    from dataclasses import fields

    from visionkit.inference import build_predictor, open_checkpoint
    from visionkit.serve.app import ServeOptions, ServerSettings, cpu_threads, model_info, run_server

    check_config(cfg)  # mask_format and image_format among them
    settings = ServerSettings(**{f.name: _plain(cfg[f.name]) for f in fields(ServerSettings) if f.name in cfg})
    state, task_cls, predictor_cls = open_checkpoint(cfg.get("ckpt_path"))
    options = {k: v for k, v in _predict_options(cfg, predictor_cls).items() if k not in _SERVER_OWNED}
    size = _plain(cfg.get("image_size"))
    predictor = build_predictor(state, task_cls, device="cpu", image_size=size, **options)
    info = model_info(predictor, dict(state.get("hyper_parameters", {})), str(cfg.ckpt_path))
    del predictor, state
    options = ServeOptions(
        ckpt_path=str(Path(str(cfg.ckpt_path)).expanduser().resolve()),
        predictor=options,
        image_size=size,
        mask_format=str(cfg.mask_format),
        image_format=str(cfg.image_format),
        api_key=str(cfg.api_key) if cfg.get("api_key") else None,
        threads=cpu_threads(settings.workers),
    )
    run_server(options, settings, info)
    return {}


def explain(cfg: DictConfig) -> dict[str, float]:
    """Filters, feature maps, Grad-CAMs and the layer table of a checkpoint's network (or of the style VGG19,
    `network=vgg19`) for every image of `cfg.source`, one folder each under `cfg.output_dir`; with
    `cfg.list_layers`, print the layer names and stop. `failed` counts unreadable images among several."""
    from visionkit.explain.batch import explain_images, print_layers
    from visionkit.explain.subjects import subject_from_checkpoint, vgg19_subject

    check_config(cfg)
    if cfg.get("network") and cfg.get("ckpt_path"):
        raise VisionkitError("give either ckpt_path=... or model=vgg19, not both")
    size = _plain(cfg.get("image_size"))
    if cfg.get("network") == "vgg19":
        subject = vgg19_subject(str(cfg.weights), size or 224, device=str(cfg.device))
    elif cfg.get("ckpt_path"):
        subject = subject_from_checkpoint(str(cfg.ckpt_path), size, float(cfg.conf), device=str(cfg.device))
    else:
        raise VisionkitError("nothing to explain: pass ckpt_path=/path/to/best.ckpt, or model=vgg19")
    if subject.note:
        print(f"visionkit-explain: note: {subject.note}", file=sys.stderr)
    if cfg.list_layers:
        print_layers(subject)
        return {}
    return explain_images(
        subject,
        list_images(cfg.get("source")),
        Path(str(cfg.output_dir)).expanduser(),
        layers=_plain(cfg.layers),
        top_k=int(cfg.top_k),
        classes=[str(c) for c in _plain(cfg.target_class) or []],
        cam_layers=_plain(cfg.cam_layers),
        max_channels=int(cfg.max_channels),
    )
