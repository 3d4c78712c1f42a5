"""Learning-rate schedules with the shipped configs: unfrozen backbone blocks follow every scheduler, and the
plateau scheduler watches the metric the config names."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from visionkit.run import train

SHORT = [
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "test_after_fit=false",
]


def _last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle", "plateau", "warmup_linear", "none"])
def test_an_unfrozen_backbone_follows_every_shipped_scheduler(make_cfg, tmp_path: Path, scheduler: str) -> None:
    """freeze_unfreeze adds the backbone as a new parameter group at epoch 1; until the end of training it keeps
    `backbone_lr_factor` × the head's learning rate, whatever the schedule does to the head."""
    cfg = make_cfg(
        [*SHORT, f"scheduler={scheduler}", "task.finetuning=freeze_unfreeze", "task.unfreeze_epoch=1"]
        + (["scheduler.min_warmup_batches=2", "scheduler.warmup_epochs=1"] if scheduler == "warmup_linear" else [])
    )
    train(cfg)
    groups = _last_checkpoint(tmp_path / "run")["optimizer_states"][0]["param_groups"]
    head, backbone = groups[0], groups[-1]
    assert len(groups) == 3 and "name" not in backbone  # weights, biases of the head; the backbone added
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"], rel=1e-6), (head["lr"], backbone["lr"])
    if scheduler in ("cosine", "onecycle", "warmup_linear"):
        assert head["lr"] < cfg.optimizer.lr * 0.9  # the schedule moved the head, and the backbone with it


def test_unfreeze_milestones_groups_follow_onecycle(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg([*SHORT, "scheduler=onecycle", "task.finetuning=unfreeze_milestones", "task.milestones=[1,2]"])
    train(cfg)
    groups = _last_checkpoint(tmp_path / "run")["optimizer_states"][0]["param_groups"]
    assert len(groups) == 4  # two blocks of the backbone at epoch 1, the rest at epoch 2
    for group in groups[2:]:
        assert group["lr"] == pytest.approx(0.1 * groups[0]["lr"], rel=1e-6)
        assert group["max_lr"] == pytest.approx(0.1 * groups[0]["max_lr"], rel=1e-6)


def test_the_plateau_scheduler_watches_the_configured_metric(make_cfg, tmp_path: Path) -> None:
    """`monitor.metric=val_acc monitor.mode=max scheduler=plateau`: the scheduler, best.ckpt and early stopping all
    watch val_acc, maximised (one source of truth)."""
    train(make_cfg([*SHORT, "monitor.metric=val_acc", "monitor.mode=max", "scheduler=plateau"]))
    checkpoint = _last_checkpoint(tmp_path / "run")
    plateau = checkpoint["lr_schedulers"][0]
    rows = list(csv.DictReader(next((tmp_path / "run").rglob("metrics.csv")).open()))
    val_acc = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
    # last.ckpt is written before the scheduler takes the last epoch's value: its best is that of the epochs before
    assert plateau["mode"] == "max" and plateau["best"] == pytest.approx(max(val_acc[:-1]))
    saved = {key: state for key, state in checkpoint["callbacks"].items() if "ModelCheckpoint" in key}
    assert [state["monitor"] for state in saved.values()] == ["val_acc"]
