"""Each task imported into another project: a plain Lightning script without Hydra or visionkit's data layer,
with its own Dataset and DataLoader yielding the `(image, target)` tuples torchvision datasets give. Each trains
(its loss falls) and the batch contract's mistakes are named."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset

from visionkit.errors import VisionkitError
from visionkit.tasks import ClassificationTask, DetectionTask, SegmentationTask, StyleTransferTask


class Digits(Dataset):
    """scikit-learn's digits as (3x32x32 float normalized to -1..1, label) pairs."""

    def __init__(self, part: slice) -> None:
        digits = load_digits()
        images = torch.from_numpy(digits.images[part] / 16.0).float()
        images = torch.nn.functional.interpolate(images[:, None], size=32, mode="bilinear").repeat(1, 3, 1, 1)
        self.images, self.labels = (images - 0.5) / 0.5, digits.target[part].tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


class Squares(Dataset):
    """A bright square on noise: (uint8 3xSxS image, target) with the target the square's mask (1xSxS uint8)
    or its torchvision detection dict (boxes in pixels, labels)."""

    def __init__(self, count: int, size: int, kind: str) -> None:
        self.count, self.size, self.kind = count, size, kind

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, object]:
        rng = np.random.default_rng(index)
        image = rng.integers(0, 60, (3, self.size, self.size), dtype=np.uint8)
        side = int(rng.integers(self.size // 4, self.size // 2))
        x, y = (int(v) for v in rng.integers(0, self.size - side, 2))
        image[:, y : y + side, x : x + side] = 220
        if self.kind == "mask":
            mask = np.zeros((1, self.size, self.size), np.uint8)
            mask[:, y : y + side, x : x + side] = 1
            return torch.from_numpy(image), torch.from_numpy(mask)
        target = {"boxes": torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32), "labels": torch.tensor([0])}
        return torch.from_numpy(image), target


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _fit(
    task: L.LightningModule, train: DataLoader, tmp_path: Path, epochs: int, val: DataLoader | None = None
) -> tuple[L.Trainer, list[float]]:
    """Fit with a plain Trainer (CPU, CSV log, nothing else); the trainer and the epoch training losses."""
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(task, train, val)
    return trainer, _epoch_losses(tmp_path)


def _epoch_losses(tmp_path: Path) -> list[float]:
    import csv

    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    return [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]


def test_classification_from_a_plain_script(tmp_path: Path) -> None:
    task = ClassificationTask("lenet5", num_classes=10, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    train = DataLoader(Digits(slice(0, 1200)), batch_size=64, shuffle=True)
    val = DataLoader(Digits(slice(1200, 1500)), batch_size=100)
    trainer, losses = _fit(task, train, tmp_path, epochs=3, val=val)
    assert losses[-1] < losses[0] * 0.5, losses
    assert float(trainer.callback_metrics["val_acc"]) > 0.85


def test_segmentation_from_a_plain_script_with_uint8_images_and_channel_masks(tmp_path: Path) -> None:
    task = SegmentationTask("unet", "resnet18", num_classes=2, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    train = DataLoader(Squares(48, 32, "mask"), batch_size=8, shuffle=True)
    val = DataLoader(Squares(16, 32, "mask"), batch_size=8)
    trainer, losses = _fit(task, train, tmp_path, epochs=4, val=val)
    assert losses[-1] < losses[0] * 0.7, losses
    assert float(trainer.callback_metrics["val_miou"]) > 0.5


def test_detection_from_a_plain_script_with_torchvision_targets(tmp_path: Path) -> None:
    task = DetectionTask(
        "yolov8n.yaml", num_classes=1, ema_decay=None, nominal_batch_size=None, close_mosaic=0,
        optimizer=partial(torch.optim.AdamW, lr=2e-3),
    )  # fmt: skip
    loader = DataLoader(Squares(32, 64, "boxes"), batch_size=8, shuffle=True, collate_fn=lambda b: tuple(zip(*b)))
    _, losses = _fit(task, loader, tmp_path, epochs=4)
    assert losses[-1] < losses[0], losses
    batch = task.on_before_batch_transfer(next(iter(loader)), 0)
    assert batch["image"].dtype == torch.float32 and float(batch["image"].max()) <= 1.0
    assert batch["bboxes"].shape == (8, 4) and float(batch["bboxes"].max()) <= 1.0 and batch["cls"].shape == (8, 1)


def test_style_transfer_from_a_plain_script(tmp_path: Path) -> None:
    task = StyleTransferTask(vgg_weights="random", style_size=64, width=8, residual_blocks=1, style_weight=1e3)
    loader = DataLoader(Squares(16, 48, "mask"), batch_size=4)  # the masks ride along and are ignored
    _, losses = _fit(task, loader, tmp_path, epochs=3)
    assert losses[-1] < losses[0], losses


def test_a_wrong_batch_is_named() -> None:
    task = SegmentationTask("unet", "resnet18", num_classes=2)
    images = torch.zeros(2, 3, 32, 32)
    with pytest.raises(VisionkitError, match=r"masks of shape \(2, 16, 16\) for images of shape \(2, 3, 32, 32\)"):
        task.on_before_batch_transfer((images, torch.zeros(2, 16, 16, dtype=torch.long)), 0)
    with pytest.raises(VisionkitError, match="masks hold floats"):
        task.on_before_batch_transfer((images, torch.zeros(2, 32, 32)), 0)
    with pytest.raises(VisionkitError, match=r"an \(image, target\) pair or a dict; got a tuple of 3 items"):
        task.on_before_batch_transfer((images, images, images), 0)
    classifier = ClassificationTask("lenet5", num_classes=10)
    with pytest.raises(VisionkitError, match="2 images but 3 labels"):
        classifier.on_before_batch_transfer((images, [1, 2, 3]), 0)
