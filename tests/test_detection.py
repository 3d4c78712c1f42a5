"""DetectionTask (ultralytics network and loss) on the shared data layer: it learns, and runs from the CLI config."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import TrainedDetector, check_report_page
from visionkit.errors import VisionkitError
from visionkit.models.yolo import available_yolo_models, build_yolo
from visionkit.run import train
from visionkit.tasks.schedules import WarmupLinearLR


def test_ultralytics_model_yamls_are_offered() -> None:
    names = available_yolo_models()
    for scale in "nsmlx":
        assert f"yolov8{scale}.yaml" in names and f"yolo11{scale}.yaml" in names
    with pytest.raises(VisionkitError, match=r"unknown YOLO model 'yolov8q'; did you mean"):
        build_yolo("yolov8q", 3)


def test_short_training_lowers_the_loss_and_raises_map(trained_detector: TrainedDetector) -> None:
    rows = trained_detector.metrics
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    maps = [float(r["val_map50"]) for r in rows if r.get("val_map50")]
    assert losses[-1] < 0.6 * losses[0], losses
    assert maps[0] < 0.01 and maps[-1] > 0.05, maps  # from nothing to clearly above zero in 12 epochs
    assert trained_detector.accumulate_grad_batches == 4  # batch 16 accumulated to the nominal 64
    checkpoint = torch.load(trained_detector.ckpt, map_location="cpu", weights_only=True)
    assert "averaging_state" in checkpoint  # the EMA weights are what the checkpoint holds


def test_warmup_then_linear_decay() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = WarmupLinearLR(optimizer, total_steps=1000, epochs=10, warmup_epochs=3, min_warmup_batches=100)
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert schedule.warmup_steps == 300
    assert lrs[0] < 1e-4 and all(a < b for a, b in itertools.pairwise(lrs[:300]))  # rises through warm-up
    assert lrs[300] == pytest.approx(0.01 * (1 - 0.3 * 0.99), rel=1e-3)  # then on the linear decay line
    assert lrs[-1] == pytest.approx(0.01 * (0.01 + 0.99 / 1000), rel=1e-2)  # ends near lrf = 1 %


def test_detection_task_runs_from_the_shipped_config(make_cfg, tmp_path: Path, builtin_data: Path) -> None:
    """Also: the configured sample plot (`callbacks.sample_predictions.*`) is the one used, not the task's own."""
    cfg = make_cfg(
        [
            "task=detection",
            "++trainer.fast_dev_run=true",
            "data.num_workers=0",
            f"paths.data_dir={builtin_data}",
            "callbacks.sample_predictions.num_samples=2",
        ]
    )
    assert cfg.task._target_ == "visionkit.tasks.DetectionTask" and cfg.model.arch == "yolov8n.yaml"
    metrics = train(cfg)
    assert {"test_map50", "test_map50_95"} <= set(metrics)
    assert (builtin_data / "shapes_det_v2" / "data.yaml").is_file()
    width, _ = Image.open(tmp_path / "run" / "plots" / "val_samples.png").size
    assert width < 700  # two samples side by side; the task's default (16, four a row) draws 1248 px wide
    check_report_page(tmp_path / "run", tmp_path / "report.png")  # 1280 px wide, no error, short numbers
