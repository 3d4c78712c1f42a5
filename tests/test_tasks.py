"""ClassificationTask with a plain Lightning Trainer: fine-tuning schedules, checkpoints that load offline."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision

from visionkit.data import DigitsSource, VisionDataModule
from visionkit.tasks import ClassificationTask


def _digits(batch_size: int = 32) -> VisionDataModule:
    return VisionDataModule(DigitsSource(), image_size=32, batch_size=batch_size, augment="light")


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**(options | kwargs))


def _backbone_state(task: ClassificationTask) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in task.model.backbone.state_dict().items()}


def test_plain_lightning_trainer_without_hydra(tmp_path: Path) -> None:
    """The README's Python example: no Hydra, a plain Trainer, metrics from the test split."""
    dm = _digits(batch_size=64)
    task = ClassificationTask("lenet5", num_classes=dm.num_classes, class_names=dm.class_names)
    trainer = _trainer(tmp_path, max_epochs=3, enable_checkpointing=False)
    trainer.fit(task, datamodule=dm)
    result = trainer.test(task, datamodule=dm)[0]
    assert result["test_acc"] > 0.8 and result["test_loss"] < 1.0
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_freeze_backbone_keeps_parameters_and_statistics(tmp_path: Path) -> None:
    task = ClassificationTask("resnet18", num_classes=10, freeze_backbone=True)
    before = _backbone_state(task)
    head_before = task.model.head[1].weight.clone()
    _trainer(tmp_path, max_steps=3, limit_val_batches=0, enable_checkpointing=False).fit(task, datamodule=_digits())
    after = _backbone_state(task)
    assert all(torch.equal(before[k], after[k]) for k in before if "num_batches_tracked" not in k)
    assert not torch.equal(head_before, task.model.head[1].weight)  # the head did train


def test_freeze_unfreeze_trains_the_backbone_from_the_given_epoch(tmp_path: Path) -> None:
    task = ClassificationTask("lenet5", num_classes=10, finetuning="freeze_unfreeze", unfreeze_epoch=1)
    dm = _digits()
    first_conv = task.model.backbone.features[0].weight.clone()
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=4, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(task, datamodule=dm)
    assert torch.equal(first_conv, task.model.backbone.features[0].weight)  # epoch 0: frozen
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=4, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(task, datamodule=dm)
    assert not torch.equal(first_conv, task.model.backbone.features[0].weight)  # epoch 1: trains
    lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
    assert min(lrs) == pytest.approx(0.1 * max(lrs))  # backbone group at backbone_lr_factor × head lr


def test_unfreeze_milestones_unfreezes_last_blocks_first(tmp_path: Path) -> None:
    task = ClassificationTask(
        "lenet5", num_classes=10, finetuning="unfreeze_milestones", milestones=(1, 2), milestone_layers=1
    )
    convs = task.model.backbone.features
    first, last = convs[0].weight.clone(), convs[3].weight.clone()
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(task, datamodule=_digits())
    # LeNet's backbone blocks with parameters: conv1, conv2, fc120, fc84; after milestone 1 only fc84 trains.
    assert torch.equal(first, convs[0].weight) and torch.equal(last, convs[3].weight)
    assert task.model.backbone.classifier[3].weight.requires_grad
    assert not task.model.backbone.classifier[1].weight.requires_grad


def test_checkpoint_loads_offline_without_the_pretrained_weights(tmp_path: Path, monkeypatch) -> None:
    weights = tmp_path / "imagenet_resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    task = ClassificationTask(
        "resnet18", num_classes=10, weights=str(weights), optimizer=partial(torch.optim.SGD, lr=0.01)
    )
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(task, datamodule=_digits())
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    weights.unlink()  # the pretrained file is gone, and there is no network
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")

    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "task.ckpt", map_location="cpu", weights_only=True)
    assert "weights" not in loaded.hparams and "optimizer" not in loaded.hparams
    assert loaded.class_names == [str(i) for i in range(10)]
    for key, value in task.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
