"""The default job (LeNet-5 on the built-in digits) trains to a stated accuracy and writes its run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from visionkit.data import DigitsSource
from visionkit.run import train


def _epoch_losses(run: Path) -> list[float]:
    rows = list(csv.DictReader((run / "csv" / "version_0" / "metrics.csv").open()))
    return [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]


def test_default_job_reaches_95_percent_and_writes_run_folder(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(["trainer.max_epochs=6"])
    assert cfg.model.backbone == "lenet5" and cfg.data.source._target_.endswith("DigitsSource")
    metrics = train(cfg)

    assert metrics["test_acc"] >= 0.95, metrics
    assert 0.0 < metrics["test_loss"] < 1.0  # label smoothing 0.1 puts the floor near 0.5
    run = tmp_path / "run"
    files = ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/confusion_matrix.png")
    report = ("plots/roc.png", "plots/pr.png", "plots/reliability.png", "plots/confident_mistakes.png")
    tables = ("tables/per_class.csv", "tables/roc_curve.csv", "tables/pr_curve.csv", "tables/reliability.csv")
    for name in (*files, "plots/val_samples.png", "plots/results.png", "speed.json", *report, *tables):
        assert (run / name).is_file(), name
    losses = _epoch_losses(run)
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses

    counts = [list(map(int, row[1:])) for row in csv.reader((run / "plots/confusion_matrix.csv").open())][1:]
    test_size = len(DigitsSource().splits(0.1, 0.2, seed=0)["test"])
    assert sum(map(sum, counts)) == test_size and abs(test_size - 0.2 * 1797) < 6  # stratified 20% split
    per_class = list(csv.DictReader((run / "tables/per_class.csv").open()))
    assert [r["class"] for r in per_class] == [str(d) for d in range(10)]
    assert sum(int(r["support"]) for r in per_class) == test_size and all(float(r["roc_auc"]) > 0.9 for r in per_class)
    recall = sum(float(r["recall"]) * int(r["support"]) for r in per_class) / test_size
    assert recall == pytest.approx(metrics["test_acc"], abs=1e-4)  # support-weighted recall is the accuracy

    ckpt = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["visionkit"]["task"] == "visionkit.tasks.classification.ClassificationTask"
    assert ckpt["VisionDataModule"]["image_size"] == 32
    assert "weights" not in ckpt["hyper_parameters"]
