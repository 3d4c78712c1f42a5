"""Shared fixtures: composed configs shrunk for speed, small image datasets written to tmp folders."""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from visionkit.config.folders import config_dir, register_resolvers

os.environ.setdefault("VISIONKIT_OFFLINE", "1")  # never try a download from the tests
os.environ.setdefault("PYTHONWARNINGS", "ignore")

# `make test-fast` (pytest -m "not slow") leaves out every test that trains a model, runs a console script or a
# server in processes of its own, or executes a notebook: those using a trained fixture, and those whose own code
# calls one of these (marked here at collection, so a new such test is slow without anyone remembering to say so).
SLOW_FIXTURES = {"digits_checkpoint", "trained_detector", "trained_segmenter", "trained_embedder", "builtin_data"}
SLOW_CALLS = re.compile(
    r"\b(\w*fit\w*|_train|train|run|run_console|evaluate|predict|export|robustness|explore|explain|serve|_sweep|"
    r"running_server|object_store|subprocess\.\w+|Popen|NotebookClient|check_report_page|open_in_chromium)\("
)


def _slow_source(function: Any) -> bool:
    try:
        return bool(SLOW_CALLS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        fixtures = [d.func for name in names for d in definitions.get(name, ()) if d.baseid]  # ours, not pytest's
        function = getattr(item, "function", None)
        if SLOW_FIXTURES & names or any(_slow_source(f) for f in [function, *fixtures] if f is not None):
            item.add_marker(pytest.mark.slow)


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_BROWSER = os.environ.get("VISIONKIT_REQUIRE_BROWSER") == "1"  # .ci/run sets it: CI never skips


def chromium_or_skip() -> str:
    """The system Chromium for the browser tests; without one they skip with the reason (fail under CI)."""
    if BROWSER is None:
        if REQUIRE_BROWSER:
            pytest.fail("VISIONKIT_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no Chromium on PATH: apt-get install chromium to run the browser test")
    return BROWSER


@dataclass
class OpenedPage:
    """What a page showed in Chromium: console and page errors, its widths, and a Playwright page's answers to
    the JavaScript expressions asked (`answers`, in order)."""

    errors: list[str]
    scroll_width: int
    window_width: int
    answers: list[Any]


def open_in_chromium(page_file: Path, screenshot: Path, *queries: str, width: int = 1280) -> OpenedPage:
    """Open a local page in headless Chromium at `width` px, collect errors, evaluate `queries` (JavaScript
    expressions) and save a full-page screenshot."""
    browser = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": width, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())
        answers = [page.evaluate(query) for query in queries]
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        window_width = page.evaluate("window.innerWidth")
        page.screenshot(path=str(screenshot), full_page=True)
        chromium.close()
    return OpenedPage(errors, scroll_width, window_width, answers)


def significant_digits(text: str) -> int:
    """The significant digits of a written fractional number ("0.0001234" -> 4, "6.698729810778065e-05" -> 16);
    0 for integers and words."""
    mantissa = text.strip().lstrip("-").split("e")[0].split("E")[0]
    if "." not in mantissa or not mantissa.replace(".", "").isdigit():
        return 0
    return len(mantissa.replace(".", "").lstrip("0"))


def check_report_page(run: Path, screenshot: Path, *queries: str) -> OpenedPage:
    """A run's report.html in Chromium at 1280 px: no error, no sideways scroll of the page, table numbers to at
    most 4 significant digits, and no table caption repeated. `answers` holds those of `queries`."""
    cells = "[...document.querySelectorAll('td')].map(c => c.textContent)"
    captions = "[...document.querySelectorAll('caption, summary')].map(c => c.textContent)"
    opened = open_in_chromium(run / "report.html", screenshot, cells, captions, *queries)
    assert not opened.errors, opened.errors
    assert opened.scroll_width <= opened.window_width, (opened.scroll_width, opened.window_width)
    long_numbers = [c for c in opened.answers[0] if significant_digits(c) > 4]
    assert not long_numbers, long_numbers[:5]
    assert len(opened.answers[1]) == len(set(opened.answers[1])), opened.answers[1]
    opened.answers = opened.answers[2:]
    return opened


FAST = [
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
]


def compose_config(output_dir: Path, overrides: list[str] | None = None, name: str = "train") -> DictConfig:
    """The shipped config with `overrides`, quiet trainer settings and the run folder in `output_dir`."""
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=[*(FAST if name == "train" else []), *(overrides or [])])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config bound to a fresh run folder under tmp_path."""

    def make(overrides: list[str] | None = None, name: str = "train", run: str = "run") -> DictConfig:
        return compose_config(tmp_path / run, overrides, name)

    return make


def write_shapes_folder(root: Path, per_class: int = 12, size: int = 24, seed: int = 0) -> Path:
    """A tiny 3-class image folder: a bright square, a horizontal bar or a vertical bar on noise."""
    rng = np.random.default_rng(seed)
    for name in ("square", "hbar", "vbar"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            a, b = rng.integers(2, size // 3, 2)
            if name == "square":
                img[a : a + size // 2, b : b + size // 2] = 230
            elif name == "hbar":
                img[a : a + 4, 2 : size - 2] = 230
            else:
                img[2 : size - 2, b : b + 4] = 230
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    return write_shapes_folder(tmp_path / "shapes")


def fit_quietly(
    task: Any, datamodule: Any, root: Path, epochs: int, **trainer_options: Any
) -> tuple[Any, Path, list[dict[str, str]]]:
    """Fit on CPU without progress output, logging to `root`; (trainer, checkpoint path, metrics.csv rows).
    trainer_options: more `L.Trainer` arguments (`limit_train_batches=...`)."""
    import csv

    import lightning as L

    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        default_root_dir=root,  # plots go here, not into the working directory
        logger=L.pytorch.loggers.CSVLogger(root),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_options,
    )
    trainer.fit(task, datamodule=datamodule)
    ckpt = root / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(ckpt)
    return trainer, ckpt, list(csv.DictReader(next(root.rglob("metrics.csv")).open()))


@dataclass
class TrainedDetector:
    """A YOLOv8-n trained briefly on the synthetic shapes (shared by the detection tests)."""

    task: Any
    ckpt: Path
    data_yaml: Path
    metrics: list[dict[str, str]]
    accumulate_grad_batches: int


@pytest.fixture(scope="session")
def builtin_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `paths.data_dir` shared by the tests that use the built-in sets: each set is generated once per test
    worker (read-only afterwards), not once per test."""
    return tmp_path_factory.mktemp("builtin_data")


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory: pytest.TempPathFactory) -> TrainedDetector:
    """12 epochs on 200 shapes images at 128 px (about 45 s on 2 cores), saved as a visionkit checkpoint; val mAP50
    rises from 0 to about 0.2 (8 epochs left it near 0.05, too close to the thresholds the tests check)."""
    from functools import partial

    import torch

    from visionkit.data import VisionDataModule, YoloSource
    from visionkit.data.shapes import generate_shapes_detection
    from visionkit.tasks import DetectionTask

    root = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    yaml = generate_shapes_detection(root / "shapes", {"train": 200, "val": 40, "test": 16}, image_size=128)
    dm = VisionDataModule(
        YoloSource(str(yaml)),
        image_size=128,
        batch_size=16,
        augment="none",
        resize="letterbox",
        mean=(0,) * 3,
        std=(1,) * 3,
    )
    task = DetectionTask(
        "yolov8n.yaml",
        num_classes=dm.num_classes,
        class_names=dm.class_names,
        optimizer=partial(torch.optim.AdamW, lr=2e-3, weight_decay=5e-4),
    )
    trainer, ckpt, rows = fit_quietly(task, dm, root, epochs=12)
    return TrainedDetector(task.eval(), ckpt, yaml, rows, trainer.accumulate_grad_batches)


@dataclass
class TrainedSegmenter:
    """A U-Net/ResNet-18 trained briefly on small synthetic shapes (shared by the segmentation tests)."""

    task: Any
    ckpt: Path
    root: Path
    metrics: list[dict[str, str]]
    baseline_miou: float  # mIoU of predicting background everywhere on the validation split


@pytest.fixture(scope="session")
def trained_segmenter(tmp_path_factory: pytest.TempPathFactory) -> TrainedSegmenter:
    """10 epochs on 160 shapes images at 64 px (about 90 s on 2 cores), saved as a visionkit checkpoint."""
    from functools import partial

    import torch

    from visionkit.data import MaskSource, VisionDataModule
    from visionkit.data.shapes_seg import SEG_CLASSES, generate_shapes_segmentation
    from visionkit.tasks import SegmentationTask
    from visionkit.tasks.segmentation_metrics import segmentation_scores

    root = tmp_path_factory.mktemp("segmenter")
    torch.manual_seed(0)
    data = generate_shapes_segmentation(root / "shapes", {"train": 160, "val": 32, "test": 16}, image_size=64)
    dm = VisionDataModule(MaskSource(data, class_names=list(SEG_CLASSES)), image_size=64, batch_size=16, augment="none")
    task = SegmentationTask(
        "unet",
        "resnet18",
        num_classes=dm.num_classes,
        class_names=dm.class_names,
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
    )
    _, ckpt, rows = fit_quietly(task, dm, root, epochs=10)
    confusion = torch.zeros(len(SEG_CLASSES), len(SEG_CLASSES), dtype=torch.long)
    for batch in dm.val_dataloader():
        confusion[:, 0] += torch.bincount(batch["mask"].flatten(), minlength=len(SEG_CLASSES))
    baseline = float(segmentation_scores(confusion)["miou"])
    return TrainedSegmenter(task.eval(), ckpt, data, rows, baseline)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """LeNet-5 trained for 3 epochs on the built-in digits (test accuracy about 0.9), and one digit image as a
    64×64 file (the checkpoint's training size is 32)."""
    from functools import partial

    import torch

    from visionkit.data import DigitsSource, VisionDataModule
    from visionkit.tasks import ClassificationTask

    root = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=64, augment="none", mean=(0.5,) * 3, std=(0.5,) * 3)
    task = ClassificationTask("lenet5", num_classes=10, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    _, ckpt, _ = fit_quietly(task, dm, root, epochs=3)
    dm.setup("test")
    sample = dm.datasets["test"][0]["image"].permute(1, 2, 0).numpy() * 0.5 + 0.5
    image = root / "digit.png"
    Image.fromarray((sample.clip(0, 1) * 255).astype(np.uint8)).resize((64, 64)).save(image)
    return ckpt, image


def save_task_checkpoint(task: Any, path: Path, data_state: dict[str, Any]) -> Path:
    """A checkpoint with the keys Lightning writes and visionkit reads (weights, hyper-parameters, the task class,
    the data contract), for tasks the tests do not need to train."""
    import torch

    checkpoint = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "VisionDataModule": data_state,
    }
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@dataclass
class TrainedEmbedder:
    """The default embedding job (built-in glyph identities, LeNet-5, ArcFace) trained through `visionkit.run`,
    and a folder of identities it never saw (one folder each, 32×32 PNGs) with one query image per identity."""

    run: Path
    ckpt: Path
    metrics: dict[str, float]
    people: Path
    queries: Path


@pytest.fixture(scope="session")
def trained_embedder(tmp_path_factory: pytest.TempPathFactory) -> TrainedEmbedder:
    """`visionkit-train task=embedding trainer.max_epochs=12` (about 12 s on 2 cores)."""
    from visionkit import run
    from visionkit.data.glyphs import glyph_identities

    root = tmp_path_factory.mktemp("embedder")
    cfg = compose_config(root / "run", ["task=embedding", "trainer.max_epochs=12"])
    metrics = run.train(cfg)
    images, ids = glyph_identities(identities=6, per_identity=5, seed=99)  # glyphs no split holds
    for i, (image, identity) in enumerate(zip(images, ids)):
        folder = root / ("queries" if i % 5 == 0 else f"people/person{identity}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"person{identity}_{i % 5:04d}.png")
    return TrainedEmbedder(
        root / "run", root / "run" / "checkpoints" / "best.ckpt", metrics, root / "people", root / "queries"
    )
