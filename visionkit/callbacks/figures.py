"""What the plotting callbacks share: the loader's images back as pictures, and a figure both logged and saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from visionkit.utils.viz import denormalize, log_figure, save_figure


def shown_images(trainer: L.Trainer, images: Any) -> np.ndarray:
    """A batch of normalized C×H×W images as H×W×3 uint8, undoing the data module's mean/std."""
    datamodule = getattr(trainer, "datamodule", None)
    fmt = getattr(datamodule, "pixel_format", None)
    return denormalize(
        images,
        getattr(datamodule, "mean", IMAGENET_MEAN),
        getattr(datamodule, "std", IMAGENET_STD),
        fmt.viz_bands if fmt is not None else None,
    )


def publish(trainer: L.Trainer, tag: str, fig: Figure, path: Path) -> Path:
    """Send `fig` to every logger that takes figures (as `tag`) and save it atomically to `path`."""
    log_figure(trainer.loggers, tag, fig, trainer.global_step)
    return save_figure(fig, path)
