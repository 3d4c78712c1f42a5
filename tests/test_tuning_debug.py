"""tune=lr / tune=batch_size apply Lightning's finders before training; debug=overfit / profiler / anomaly work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from tests.conftest import compose_config
from visionkit.errors import VisionkitError
from visionkit.run import train

QUICK = ["model=lenet5", "trainer.max_epochs=1", "data.batch_size=64", "test_after_fit=false"]


def _train_rows(run: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader(next(run.rglob("metrics.csv")).open()) if row.get("train_loss_epoch")]


def test_tune_lr_applies_the_finders_suggestion_and_saves_its_curve(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path / "run", [*QUICK, "tune=lr", "tune.num_training=40", "trainer.log_every_n_steps=1"])
    train(cfg)
    found = json.loads((tmp_path / "run" / "tune.json").read_text())
    assert found["lr_before"] == pytest.approx(cfg.optimizer.lr)
    assert 1e-6 <= found["lr"] <= 1.0 and found["lr"] != pytest.approx(cfg.optimizer.lr)
    assert (tmp_path / "run" / "plots" / "lr_find.png").stat().st_size > 10_000
    rows = csv.DictReader(next((tmp_path / "run").rglob("metrics.csv")).open())
    lr_logged = [float(r["lr-AdamW/weights"]) for r in rows if r.get("lr-AdamW/weights")]
    assert lr_logged and lr_logged[0] == pytest.approx(found["lr"], rel=1e-6)  # training started at the suggestion


def test_tune_batch_size_trains_with_the_size_it_found(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path / "run", [*QUICK, "data.batch_size=16", "tune=batch_size", "tune.max_trials=3"])
    train(cfg)
    found = json.loads((tmp_path / "run" / "tune.json").read_text())
    assert found == {"batch_size": 64}  # 3 trials: 16, 32, 64;: a CPU does not run out of memory at this size
    speed = json.loads((tmp_path / "run" / "speed.json").read_text())
    assert speed["batch_size"] == pytest.approx(64, rel=0.05)


def test_tuning_refuses_ddp_with_a_way_out(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path / "run", [*QUICK, "tune=lr", "trainer.devices=2", "trainer.strategy=ddp"])
    with pytest.raises(VisionkitError, match=r"trainer\.devices=1"):
        train(cfg)


def test_debug_overfit_drives_the_training_loss_near_zero(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path / "run", ["model=lenet5", "debug=overfit", "task.label_smoothing=0"])
    assert cfg.trainer.overfit_batches == 2 and cfg.callbacks.get("early_stopping") is None
    train(cfg)
    losses = [float(r["train_loss_epoch"]) for r in _train_rows(tmp_path / "run")]
    assert losses[0] > 1.5 and losses[-1] < 0.05, (losses[0], losses[-1])


def test_debug_profiler_writes_a_chrome_trace(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path / "run",
        [
            "model=lenet5",
            "debug=profiler",
            "trainer.limit_train_batches=3",
            "trainer.max_epochs=1",
            "test_after_fit=false",
        ],
    )
    train(cfg)
    traces = list((tmp_path / "run" / "profiler").rglob("*.pt.trace.json"))
    assert traces, sorted(p.name for p in (tmp_path / "run").rglob("*"))
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any("conv2d" in str(e.get("name", "")) for e in events)


def test_debug_anomaly_turns_on_anomaly_detection(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path / "run",
        [
            "model=lenet5",
            "debug=anomaly",
            "trainer.limit_train_batches=2",
            "trainer.max_epochs=1",
            "test_after_fit=false",
        ],
    )
    assert cfg.trainer.detect_anomaly is True and cfg.trainer.limit_val_batches == 2
    with open_dict(cfg):
        cfg.trainer.limit_val_batches = 1
    train(cfg)
    assert len(_train_rows(tmp_path / "run")) >= 1
