"""The explain, explore and robustness jobs of a config (what `visionkit-explain`, `visionkit-explore` and
`visionkit-robustness` run; `visionkit.run` exports them beside the other jobs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from visionkit.checkpoints import load_checkpoint
from visionkit.config.checks import check_config
from visionkit.config.composed import options_from, plain
from visionkit.config.folders import RUN_CONFIG, run_dir_of_checkpoint
from visionkit.data import VisionDataModule
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.report import write_report
from visionkit.tasks.base import VisionTask
from visionkit.training.fit import checkpoint_datamodule
from visionkit.utils.io import read_image
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


def explain(cfg: DictConfig) -> dict[str, float]:
    """Filters, feature maps, Grad-CAMs and the layer table of a checkpoint's network (or of the style VGG19,
    `network=vgg19`) for every image of `cfg.source`, one folder each under `cfg.output_dir`; with
    `cfg.list_layers`, print the layer names and stop. `failed` counts unreadable images among several."""
    from visionkit.explain.batch import explain_images, print_layers

    check_config(cfg)
    subject = _subject(cfg)
    if subject.note:
        print(f"visionkit-explain: note: {subject.note}", file=sys.stderr)
    if cfg.list_layers:
        print_layers(subject)
        return {}
    return explain_images(
        subject,
        list_images(cfg.get("source")),
        Path(str(cfg.output_dir)).expanduser(),
        layers=plain(cfg.layers),
        top_k=int(cfg.top_k),
        classes=[str(c) for c in plain(cfg.target_class) or []],
        cam_layers=plain(cfg.cam_layers),
        max_channels=int(cfg.max_channels),
    )


def _subject(cfg: DictConfig) -> Any:
    """The network explain and explore look into: a checkpoint's (`ckpt_path`) or the style VGG19 (`model=vgg19`)."""
    from visionkit.explain.subjects import subject_from_checkpoint, vgg19_subject

    if cfg.get("network") and cfg.get("ckpt_path"):
        raise VisionkitError("give either ckpt_path=... or model=vgg19, not both")
    size = plain(cfg.get("image_size"))
    if cfg.get("network") == "vgg19":
        return vgg19_subject(str(cfg.weights), size or 224, device=str(cfg.device))
    if cfg.get("ckpt_path"):
        subject = subject_from_checkpoint(str(cfg.ckpt_path), size, float(cfg.conf), device=str(cfg.device))
        if cfg.get("reference"):
            if not hasattr(subject, "set_reference"):
                raise VisionkitError(f"reference= compares embeddings; {cfg.ckpt_path} holds a {subject.kind} model")
            subject.set_reference(Path(str(cfg.reference)).name, read_image(str(cfg.reference)))
        return subject
    raise VisionkitError("nothing to explain: pass ckpt_path=/path/to/best.ckpt, or model=vgg19")


def explore(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-explore`: explore.html for one image (`cfg.source`) through a checkpoint's network or the style
    VGG19, with patches from the checkpoint's validation images when its data is found; `serve=true` serves the
    page on localhost (every layer's step-through, kernels put into the network) until Ctrl-C."""
    from visionkit.explain.explore_data import ExploreOptions
    from visionkit.explain.explore_page import ExploreServer, build_page

    check_config(cfg)
    paths = list_images(cfg.get("source"))
    if len(paths) != 1:
        raise VisionkitError(f"source={cfg.source}: {len(paths)} images; the page explores one (name a file)")
    subject = _subject(cfg)
    options = options_from(cfg, ExploreOptions)
    if cfg.get("serve"):
        title = f"{subject.kind}: {Path(paths[0]).name}"
        httpd = ExploreServer(subject, subject.load(paths[0]), options, title).serve(str(cfg.host), int(cfg.port))
        host, port = httpd.server_address[:2]
        print(f"visionkit-explore: http://{host!s}:{port}/ (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            httpd.shutdown()
        return {}
    pictures = _validation_pictures(cfg, subject.load) if cfg.get("ckpt_path") and options.data_images > 0 else iter(())
    return build_page(subject, paths[0], Path(str(cfg.output_dir)).expanduser(), options, pictures)


def _validation_pictures(cfg: DictConfig, load: Callable[[str], np.ndarray]) -> Any:
    """The checkpoint's validation images (H×W×3 uint8, as its data module reads them; scans and bands as
    stored, through `load`), lazily; none when its data cannot be found (a checkpoint outside its run folder,
    no data=)."""
    task, data_state = load_checkpoint(str(cfg.ckpt_path))
    try:
        datamodule = checkpoint_datamodule(cfg, task, data_state)
        datamodule.setup("validate")
    except VisionkitError as exc:
        log.info(f"patches from this image only: {exc}")
        return
    dataset = datamodule.datasets["val"]
    if not datamodule.pixel_format.rgb8:  # the loaded samples are normalized floats: read the files as stored
        yield from (load(str(path)) for path in dataset.samples.images)
        return
    for index in range(len(dataset)):
        image = dataset[index]["image"]
        yield image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else image


def robustness(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-robustness`: the checkpoint's test metric under each attack at each ε (conf/attack), with the
    sanity checks (`robust_checks_failed` counts those that did not pass). The run's report.html gains the section."""
    from visionkit.report.compare import final_metrics

    check_config(cfg)
    output_dir = Path(str(cfg.output_dir)).expanduser()
    if cfg.get("source"):
        metrics = _attacked_source(cfg, output_dir)
    else:
        task, data_state = load_checkpoint(cfg.get("ckpt_path"))
        datamodule = checkpoint_datamodule(cfg, task, data_state)
        metrics = attacked(cfg, task, datamodule, output_dir)
    run_dir = run_dir_of_checkpoint(str(cfg.ckpt_path))
    if run_dir is not None and (run_dir / RUN_CONFIG).is_file():
        log.info(f"report: {write_report(run_dir, final_metrics(run_dir))}")
    return metrics


def attacked(cfg: DictConfig, task: VisionTask, datamodule: VisionDataModule, output_dir: Path) -> dict[str, float]:
    """Attack `task` on the config's split of `datamodule`; write the files into `output_dir`; the metrics."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from visionkit.explain.robustness import RobustnessOptions, measure_robustness, report_robustness
    from visionkit.tasks.adversarial import PixelSpace
    from visionkit.utils.device import pick_device

    device = pick_device(str(cfg.get("device", "auto")))
    task.to(device)
    split = str(cfg.get("split", "test"))
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    batches = (datamodule.normalize_batch(move_data_to_device(b, device)) for b in loader)
    space = PixelSpace(datamodule.mean, datamodule.std)
    result = measure_robustness(task, batches, space, RobustnessOptions.from_config(cfg))
    return report_robustness(result, output_dir, f"{type(task).__name__} {Path(str(cfg.ckpt_path)).name} ({split})")


def _attacked_source(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Attack the checkpoint on the images of `cfg.source` (no labels): each image's clean answer (class, mask,
    boxes scoring ≥ conf) is the truth, so the metric says how much of its own answer survives."""
    from visionkit.explain.attack_targets import attack_target
    from visionkit.explain.explore_decision import pixel_space
    from visionkit.explain.robustness import RobustnessOptions, measure_robustness, report_robustness
    from visionkit.explain.subjects import subject_from_checkpoint

    options = RobustnessOptions.from_config(cfg)
    paths = list_images(cfg.source)[: options.n]
    subject = subject_from_checkpoint(str(cfg.ckpt_path), device=str(cfg.get("device", "auto")))
    task = subject.predictor.model
    target = attack_target(task)

    def batches() -> Any:
        for start in range(0, len(paths), 16):
            images = torch.cat([subject.prepare(subject.load(p))[0] for p in paths[start : start + 16]])
            yield target.own_answers(images)

    result = measure_robustness(task, batches(), pixel_space(subject), options)
    title = f"{type(task).__name__} {Path(str(cfg.ckpt_path)).name} on {len(paths)} images of {cfg.source}"
    return report_robustness(result, output_dir, f"{title} (against its own clean answers)")
