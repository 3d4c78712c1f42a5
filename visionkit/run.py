"""Orchestration: `train`, `evaluate`, `predict`, `export`, `serve`, `gallery` and `verify` of a config (and, from
`visionkit.explain.jobs`, `explain`, `explore` and `robustness`): instantiate, run, return metrics.

The Hydra entry points only call these; tests and Python callers pass configs from `hydra.compose`
(with `paths.output_dir` set).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from visionkit.config.checks import check_config
from visionkit.config.composed import launcher_env_restored, options_from, plain, save_run_config
from visionkit.config.folders import RUN_DIR_ENV
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger, is_rank_zero
from visionkit.utils.video import is_video_source

if TYPE_CHECKING:
    from visionkit.explain.jobs import explain, explore, robustness
    from visionkit.training.fit import build_datamodule, build_task, train
    from visionkit.training.pack import pack

log = get_logger(__name__)

# the jobs and builders other modules hold, by the names the CLI runner and users call (`visionkit.run.train`):
# imported on first use, so `visionkit-predict` of an exported file runs where PyTorch is not installed
_ELSEWHERE = {
    "train": "visionkit.training.fit",
    "build_datamodule": "visionkit.training.fit",
    "build_task": "visionkit.training.fit",
    "explain": "visionkit.explain.jobs",
    "explore": "visionkit.explain.jobs",
    "robustness": "visionkit.explain.jobs",
    "pack": "visionkit.training.pack",
}


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "benchmark",
    "build_datamodule",
    "build_task",
    "evaluate",
    "explain",
    "explore",
    "export",
    "gallery",
    "pack",
    "predict",
    "robustness",
    "serve",
    "train",
    "verify",
]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Re-test a checkpoint: its run's data (from `<run>/config.yaml`) unless `cfg.data` names other data."""
    import lightning as L

    from visionkit.checkpoints import load_checkpoint
    from visionkit.explain.jobs import attacked
    from visionkit.report import write_report
    from visionkit.training.fit import build_trainer, checkpoint_datamodule, metrics_of

    check_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = checkpoint_datamodule(cfg, task, data_state)
    trainer = build_trainer(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
    with launcher_env_restored():
        run = trainer.validate if cfg.get("split", "test") == "val" else trainer.test
        results = run(task, datamodule=datamodule)
    metrics = metrics_of(results[0] if results else {})
    if trainer.is_global_zero and cfg.get("robustness"):
        metrics.update(attacked(cfg, task, datamodule, Path(trainer.default_root_dir) / "robustness"))
    if trainer.is_global_zero:
        title = f"evaluation of {cfg.ckpt_path}"
        log.info(f"report: {write_report(trainer.default_root_dir, metrics, title)}")
    return metrics


def _predict_options(cfg: DictConfig, predictor_cls: type) -> dict[str, Any]:
    """The predict config's values for the options the checkpoint's predictor takes (same names)."""
    from visionkit.inference import predictor_options

    return {name: plain(cfg[name]) for name in predictor_options(predictor_cls) if name in cfg}


def _video_options(cfg: DictConfig) -> Any:
    """The predict config's video keys (conf/predict.yaml: stride ... overwrite) as VideoOptions."""
    from visionkit.inference.video import VideoOptions

    return options_from(cfg, VideoOptions)


def predict(cfg: DictConfig) -> dict[str, float]:
    """Run a checkpoint on the images named by `cfg.source` through its Predictor, writing each result's files
    as it comes (classification: predictions.csv/json; detection: predictions.json, YOLO txt labels and annotated
    images; segmentation: mask PNGs, overlays and predictions.json, at each image's own resolution). A video,
    webcam or stream goes to `predict_video` (annotated .mp4, per-frame JSON, tracks, backgrounds). With
    `devices` × `num_nodes` > 1, that many processes share the files (`visionkit.inference.ranks`); a run started
    again in the same folder skips what its journals hold."""
    check_config(cfg)
    with launcher_env_restored():
        return _predict(cfg)


def _predict(cfg: DictConfig) -> dict[str, float]:
    from visionkit.inference import build_predictor, open_checkpoint
    from visionkit.inference.ranks import predict_files
    from visionkit.inference.remote import is_remote_source

    state, task_cls, predictor_cls = open_checkpoint(_runtime_file(cfg))
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
    output_dir = Path(cfg.paths.output_dir)
    remote = None if video or not is_remote_source(source) else _remote_images(cfg, output_dir)
    paths = [] if video or remote else list_images(source)  # a wrong source stops before the model is built
    ranks = _prediction_ranks(cfg, output_dir, video)
    if remote is not None:  # each process fetches its own share of a bucket or a pack
        paths = remote.fetch(ranks.rank, ranks.world)
    options = _predict_options(cfg, predictor_cls)
    if ranks.device is not None:
        options["device"] = ranks.device
    viz_bands = plain(cfg.viz.bands) if cfg.get("viz") else None
    predictor = build_predictor(
        state, task_cls, image_size=plain(cfg.get("image_size")), viz_bands=viz_bands, **options
    )
    if cfg.get("detector"):  # embed each box a detector finds (faces), named by a gallery when given
        from visionkit.inference.faces import with_detector

        keys = ("conf", "iou", "max_det", "rect", "device", "batch_size", "num_workers", "skip_bad_images", "precision")
        boxes = {k: plain(cfg[k]) for k in keys if k in cfg} | {"device": options.get("device", cfg.device)}
        margin = float(cfg.crop_margin)
        predictor = with_detector(
            predictor, str(cfg.detector), cfg.get("gallery"), cfg.get("threshold"), margin, **boxes
        )
    elif cfg.get("gallery"):
        raise VisionkitError(
            "gallery= names detected boxes (with detector=); for whole images: visionkit-gallery search"
        )
    if video:
        from visionkit.inference.video import predict_video

        return predict_video(predictor, str(source), output_dir, _video_options(cfg))
    settings = {k: v for k, v in plain(cfg).items() if k not in _NOT_RESULT_SETTINGS}
    metrics = predict_files(predictor, paths, output_dir, ranks, bool(cfg.save_images), settings)
    if ranks.rank == 0:
        objects = f", {metrics['objects']:.0f} object(s)" if "objects" in metrics else ""
        log.info(f"predicted {metrics['images']:.0f} image(s){objects}, skipped {metrics['skipped']:.0f}: {output_dir}")
    return metrics


def _remote_images(cfg: DictConfig, output_dir: Path) -> Any:
    """The images of an `s3://` prefix or a packed dataset, fetched per process into `<run>/source/`."""
    from visionkit.inference.remote import RemoteImages

    options = plain(cfg.get("storage_options")) or {}
    return RemoteImages(str(cfg.source), output_dir / "source", options, str(cfg.get("source_split", "test")))


# predict keys that do not change a result: a run started again in its folder may change them
_NOT_RESULT_SETTINGS = {
    "devices", "num_nodes", "batch_size", "num_workers", "device", "skip_bad_images", "paths", "source",
    "storage_options",
}  # fmt: skip


def _prediction_ranks(cfg: DictConfig, output_dir: Path, video: bool) -> Any:
    """The prediction processes (`devices` × `num_nodes`); rank 0 saves the config its workers read first."""
    from visionkit.inference.ranks import launch_ranks

    devices, nodes = int(cfg.get("devices", 1)), int(cfg.get("num_nodes", 1))
    if video and devices * nodes > 1:
        raise VisionkitError("a video, webcam or stream is predicted by one process: drop devices= / num_nodes=")
    if devices * nodes > 1 and is_rank_zero():
        save_run_config(cfg, output_dir)
        os.environ[RUN_DIR_ENV] = str(output_dir)  # the processes Fabric starts read the config here
    return launch_ranks(devices, nodes, str(cfg.get("device", "auto")))


def export(cfg: DictConfig) -> dict[str, float]:
    """Write the checkpoint in each of `cfg.formats` to the output folder; with `cfg.check`, run every export
    with its own runtime next to PyTorch on the validation split and fail when it answers differently."""
    from visionkit.checkpoints import load_checkpoint
    from visionkit.export import ExportRequest, check_exports, file_size_mb, write_exports
    from visionkit.training.fit import checkpoint_datamodule

    check_config(cfg)
    request = ExportRequest.from_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir)
    checked = bool(cfg.get("check")) or request.int8  # an INT8 file is always checked against float32
    data = checkpoint_datamodule(cfg, task, data_state) if checked else None
    graph, written = write_exports(task, data_state, request, output_dir, data)
    for path in written.values():
        log.info(f"exported {path} ({file_size_mb(path):.1f} MB)")
    metrics: dict[str, float] = {"files": float(len(written))}
    if data is not None:
        results = check_exports(task, graph, request, written, data, output_dir, max_batches=cfg.get("check_batches"))
        metrics.update({f"{r.format}_max_diff": r.max_diff for r in results})
    return metrics


def benchmark(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-benchmark`: export `cfg.formats`, check and time each next to PyTorch, save the tables."""
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.export import ExportRequest, write_exports
    from visionkit.export.benchmark import benchmark_formats, save_tables
    from visionkit.training.fit import checkpoint_datamodule

    check_config(cfg)
    request = ExportRequest.from_config(cfg)
    task, data_state = load_checkpoint(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir)
    data = checkpoint_datamodule(cfg, task, data_state)
    graph, written = write_exports(task, data_state, request, output_dir, data)
    sizes, rounds, seconds = [int(b) for b in cfg.batch_sizes], int(cfg.rounds), float(cfg.seconds)
    timing = {"batch_sizes": sizes, "rounds": rounds, "seconds": seconds, "max_batches": cfg.get("check_batches")}
    rows = benchmark_formats(task, graph, str(cfg.ckpt_path), written, data, int8=request.int8, **timing)
    table = save_tables(rows, output_dir)
    log.info(f"{cfg.ckpt_path} ({torch.get_num_threads()} CPU threads)\n{table}\nsaved in {output_dir}")
    return {f"{row.format}_ms_b{b}": ms for row in rows for b, ms in row.ms_per_image.items()}


# Predictor options a server sets itself: the device each worker gets, batching, and uploads (checked first).
_SERVER_OWNED = ("device", "batch_size", "num_workers", "skip_bad_images")


def serve(cfg: DictConfig) -> dict[str, float]:
    """Serve a checkpoint over HTTP until stopped (`visionkit-serve`; see `visionkit.serve`). The checkpoint and
    the options are checked here, once, before any worker starts."""
    from visionkit.inference import build_predictor, open_checkpoint
    from visionkit.serve.app import ServeOptions, ServerSettings, cpu_threads, model_info, run_server, served_gallery

    check_config(cfg)  # mask_format and image_format among them
    settings = options_from(cfg, ServerSettings)
    served = _runtime_file(cfg)
    state, task_cls, predictor_cls = open_checkpoint(served)
    options = {k: v for k, v in _predict_options(cfg, predictor_cls).items() if k not in _SERVER_OWNED}
    size = plain(cfg.get("image_size"))
    predictor = build_predictor(state, task_cls, device="cpu", image_size=size, **options)
    info = model_info(predictor, dict(state.get("hyper_parameters", {})), str(cfg.ckpt_path))
    gallery = served_gallery(cfg.get("gallery"), predictor)
    del predictor, state
    serving = ServeOptions(
        ckpt_path=str(Path(served).expanduser().resolve()),
        predictor=options,
        image_size=size,
        mask_format=str(cfg.mask_format),
        image_format=str(cfg.image_format),
        api_key=str(cfg.api_key) if cfg.get("api_key") else None,
        threads=cpu_threads(settings.workers),
        gallery=gallery,
    )
    run_server(serving, settings, info)
    return {}


def _runtime_file(cfg: DictConfig) -> str:
    """The file `cfg.runtime` runs: the checkpoint, its exported copy, or the fastest of them (`runtime=auto`)."""
    from visionkit.inference import load_predictor
    from visionkit.inference.runtime_choice import runtime_file

    batch_size = int(cfg.get("max_batch_size") or cfg.get("batch_size") or 16)

    def build(path: str) -> Any:
        return load_predictor(path, device=str(cfg.get("device", "auto")), batch_size=batch_size)

    if not cfg.get("ckpt_path"):
        raise VisionkitError("ckpt_path is not set: pass ckpt_path=/path/to/best.ckpt (or an exported model.onnx)")
    return runtime_file(str(cfg.ckpt_path), str(cfg.get("runtime") or "pytorch"), build, batch_size)


def _embedder(cfg: DictConfig, checkpoint: Any = None) -> Any:
    """The EmbeddingPredictor of `checkpoint` (default `cfg.ckpt_path`) with the config's device settings; another
    task's checkpoint is refused."""
    from visionkit.inference import load_task_predictor

    keys = ("device", "batch_size", "precision", "skip_bad_images", "image_size")
    options = {k: plain(cfg[k]) for k in keys if k in cfg}
    return load_task_predictor(
        checkpoint or cfg.get("ckpt_path"), "embedding", "ckpt_path", "an embedding one", **options
    )


def gallery(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-gallery build|add|search`: build a gallery folder from one folder per identity, add images to
    one, or search it for the nearest identities of each image of `source` (printed, and written to search.json)."""
    from visionkit.inference.gallery import ACTIONS, Gallery, embedded_images, search_records
    from visionkit.utils.io import atomic_write

    check_config(cfg)
    if cfg.action not in ACTIONS:
        raise VisionkitError(f"visionkit-gallery {cfg.action}: the actions are {', '.join(ACTIONS)}")
    if not cfg.get("out"):
        raise VisionkitError("out is not set: pass out=<gallery folder>")
    out = Path(str(cfg.out)).expanduser()
    if cfg.action == "build":
        predictor = _embedder(cfg)
        vectors, sources, identities = embedded_images(predictor, str(cfg.source))
        threshold = predictor.threshold if cfg.get("threshold") is None else float(cfg.threshold)
        built = Gallery(vectors, identities, sources, threshold, str(cfg.ckpt_path), str(cfg.index))
        built.save(out)
        log.info(f"gallery {out}: {len(built)} images of {len(set(identities))} identities ({built.index_kind} index)")
        return {"images": float(len(built)), "identities": float(len(set(identities)))}
    known = Gallery.load(out, "out")
    embedder = _embedder(cfg, cfg.get("ckpt_path") or known.checkpoint)  # the gallery's own, unless given
    vectors, sources, identities = embedded_images(embedder, str(cfg.source))
    if cfg.action == "add":
        grown = known.added(vectors, identities, sources)
        grown.save(out)
        log.info(f"gallery {out}: {len(grown) - len(known)} image(s) added, {len(grown)} in all")
        return {"images": float(len(grown)), "added": float(len(grown) - len(known))}
    if cfg.get("threshold") is not None:
        known.threshold = float(cfg.threshold)
    records = search_records(known, vectors, sources, int(cfg.k))
    for record in records:
        nearest = ", ".join(f"{m['identity']} {m['distance']:.3f}" for m in record["matches"])
        print(f"{record['path']}: {record['identity']} (nearest: {nearest}; threshold {known.threshold:.3f})")
    with atomic_write(Path(str(cfg.paths.output_dir)) / "search.json", "w") as handle:
        json.dump(records, handle, indent=1)
    return {"queries": float(len(records)), "unknown": float(sum(r["identity"] == "unknown" for r in records))}


def verify(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-verify a.jpg b.jpg ckpt_path=...`: whether the two images show the same identity."""
    check_config(cfg)
    images = [str(i) for i in plain(cfg.get("images")) or []]
    if len(images) != 2:
        raise VisionkitError(
            f"give two images to compare (visionkit-verify a.jpg b.jpg ckpt_path=...); got {len(images)}"
        )
    answer = _embedder(cfg).verify(*images, threshold=cfg.get("threshold"))
    verdict, sign = ("the same identity", "≤") if answer["same"] else ("not the same identity", ">")
    distance, threshold = answer["distance"], answer["threshold"]
    print(f"{images[0]} and {images[1]}: {verdict} (distance {distance:.4f} {sign} threshold {threshold:.4f})")
    return {"same": float(answer["same"]), "distance": distance, "threshold": threshold}
