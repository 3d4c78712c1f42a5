"""The fit's model summary counts the FLOPs of one image at the data's size (Lightning printed 0)."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from visionkit.callbacks.model_summary import NetworkSummary
from visionkit.data import DigitsSource, VisionDataModule
from visionkit.errors import VisionkitError
from visionkit.tasks import ClassificationTask


def lenet5_flops(channels: int, classes: int) -> int:
    """LeNet-5 at 32 px counted by hand: 2 FLOPs per multiply-add of each convolution and linear layer."""
    conv1 = 2 * 6 * 28 * 28 * channels * 5 * 5
    conv2 = 2 * 16 * 10 * 10 * 6 * 5 * 5
    linear = 2 * (16 * 5 * 5 * 120 + 120 * 84 + 84 * classes)
    return conv1 + conv2 + linear


def fit_one_batch(task: L.LightningModule, datamodule: L.LightningDataModule, summary: NetworkSummary) -> None:
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[summary],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(task, datamodule=datamodule)


def test_summary_counts_the_flops_of_one_image_and_leaves_the_modes() -> None:
    torch.manual_seed(0)
    datamodule = VisionDataModule(DigitsSource(), image_size=32, batch_size=16, augment="none")
    task = ClassificationTask("lenet5", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.01))
    summary = NetworkSummary()
    fit_one_batch(task, datamodule, summary)
    assert summary.flops == lenet5_flops(channels=3, classes=10)
    assert task.training and task.model.training  # counting ran in eval mode and put the modes back


def test_a_datamodule_without_a_size_gets_the_summary_without_flops() -> None:
    pairs = torch.utils.data.TensorDataset(torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    datamodule = L.LightningDataModule.from_datasets(train_dataset=pairs, batch_size=8)
    task = ClassificationTask("lenet5", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.01))
    summary = NetworkSummary()
    fit_one_batch(task, datamodule, summary)
    assert summary.flops is None


def test_an_image_the_network_cannot_take_is_named_at_the_first_forward() -> None:
    """LeNet-5 at 8 px stopped in its second convolution with 'Kernel size can't be greater than actual input
    size'; the summary's forward of one image names the size and the keys to change."""
    datamodule = VisionDataModule(DigitsSource(), image_size=8, batch_size=16, augment="none")
    task = ClassificationTask("lenet5", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.01))
    with pytest.raises(VisionkitError, match=r"cannot take a 3-channel 8x8 image \(.*\): check data.image_size"):
        fit_one_batch(task, datamodule, NetworkSummary())
