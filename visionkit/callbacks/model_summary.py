"""The model summary a fit starts with, with the FLOPs of one image at the training size."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary

from visionkit.data.augment import size_hw
from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


class NetworkSummary(RichModelSummary):
    """Lightning's rich summary (layers, parameters, mode) with each layer's forward FLOPs for one image of the
    data module's size and channels. Lightning counts FLOPs only for a module with an `example_input_array`,
    which a visionkit task cannot fix before it knows its data, and printed 0 for every run."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth=max_depth, **summarize_kwargs)
        self.flops: int | None = None  # the latest fit's, per image

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
        summary = super()._summary(trainer, pl_module)
        image = one_image(trainer, pl_module)
        if image is None or not isinstance(summary, ModelSummary):
            return summary
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        try:
            with torch.no_grad(), summary._flop_counter:  # Lightning's counter, which its table reads
                pl_module(image)
        except RuntimeError as exc:  # the first forward of a fit: a size or channel count the network cannot take
            channels, height, width = image.shape[1:]
            raise VisionkitError(
                f"the network cannot take a {channels}-channel {width}x{height} image ({str(exc).splitlines()[0]}): "
                "check data.image_size (LeNet-5 needs 13 px or more) and data.channels"
            ) from None
        finally:
            for module, training in modes.items():
                module.train(training)
        self.flops = summary.total_flops
        height, width = image.shape[-2:]
        log.info(f"{self.flops / 1e9:.3g} GFLOPs per {width}x{height} image (forward; the summary's FLOPs column)")
        return summary


def one_image(trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor | None:
    """A zero image shaped like the data module's (1, channels, height, width), on the module's device; None
    where the data does not say its size (a plain LightningDataModule) or the networks are compiled (counting
    would compile them for a batch of one)."""
    datamodule = getattr(trainer, "datamodule", None)
    size, pixel_format = getattr(datamodule, "image_size", None), getattr(datamodule, "pixel_format", None)
    if size is None or pixel_format is None or getattr(pl_module, "hparams", {}).get("compile"):
        return None
    height, width = size_hw(size)
    return torch.zeros(1, pixel_format.channels, height, width, device=pl_module.device)
