"""DetectionTask (ultralytics network and loss) on the shared data layer: it learns, and runs from the CLI config."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from visionkit.data import VisionDataModule
from visionkit.data.shapes import generate_shapes_detection
from visionkit.data.yolo import YoloSource
from visionkit.errors import VisionkitError
from visionkit.models.yolo import available_yolo_models, build_yolo
from visionkit.run import train
from visionkit.tasks import DetectionTask


def test_ultralytics_model_yamls_are_offered() -> None:
    names = available_yolo_models()
    for scale in "nsmlx":
        assert f"yolov8{scale}.yaml" in names and f"yolo11{scale}.yaml" in names
    with pytest.raises(VisionkitError, match=r"unknown YOLO model 'yolov8q'; did you mean"):
        build_yolo("yolov8q", 3)


def test_short_training_lowers_the_loss_and_raises_map(tmp_path: Path) -> None:
    torch.manual_seed(0)
    yaml = generate_shapes_detection(tmp_path / "shapes", {"train": 200, "val": 40, "test": 8}, image_size=128)
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
    trainer = L.Trainer(
        max_epochs=8,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=dm)
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
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
    assert (tmp_path / "cache" / "shapes_det_v1" / "data.yaml").is_file()
