"""DetectionTask (ultralytics network and loss) on the shared data layer: it learns, and runs from the CLI config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TrainedDetector
from visionkit.errors import VisionkitError
from visionkit.models.yolo import available_yolo_models, build_yolo
from visionkit.run import train


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
    assert maps[0] < 0.01 and maps[-1] > 0.05, maps  # from nothing to clearly above zero in 8 epochs


def test_detection_task_runs_from_the_shipped_config(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        ["task=detection", "++trainer.fast_dev_run=true", "data.num_workers=0", f"paths.data_dir={tmp_path / 'cache'}"]
    )
    assert cfg.task._target_ == "visionkit.tasks.DetectionTask" and cfg.model.arch == "yolov8n.yaml"
    metrics = train(cfg)
    assert {"test_map50", "test_map50_95"} <= set(metrics)
    assert (tmp_path / "cache" / "shapes_det_v2" / "data.yaml").is_file()
