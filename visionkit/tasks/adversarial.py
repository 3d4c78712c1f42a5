"""L∞ attacks in pixel units on normalized batches: FGSM (optionally from a random start, as fast adversarial
training takes it) and PGD. One implementation serves every task (the attacked quantity is a closure of the
task's loss), `visionkit-robustness` and adversarial training; tests check it against ART's attacks.

Images reach a network normalized, `(pixel - mean) / std`; ε is in pixels (a /255 value), so each channel
moves by at most ε / std in the network's units and stays inside the 0..1 pixel range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ATTACKS = ("fgsm", "pgd")
TRAINING_ATTACKS = ("none", "fgsm_rs", "pgd")


@dataclass(frozen=True)
class PixelSpace:
    """Per-channel mean and std of a normalized batch: ε and the 0..1 pixel range in the network's units."""

    mean: Sequence[float]
    std: Sequence[float]

    def _view(self, values: Sequence[float], like: Tensor) -> Tensor:
        return torch.tensor(list(values), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def bounds(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The normalized values of pixel 0 and pixel 1 per channel, shaped to broadcast over `images`."""
        mean, std = self._view(self.mean, images), self._view(self.std, images)
        return (0 - mean) / std, (1 - mean) / std

    def radius(self, eps: float, images: Tensor) -> Tensor:
        """ε pixels (0..1 units) in the network's units, per channel."""
        return eps / self._view(self.std, images)

    def to_pixels(self, images: Tensor) -> Tensor:
        """Normalized images back to 0..1 pixels."""
        return images * self._view(self.std, images) + self._view(self.mean, images)

    def to_network(self, pixels: Tensor) -> Tensor:
        """0..1 pixels normalized as the network takes them."""
        return (pixels - self._view(self.mean, pixels)) / self._view(self.std, pixels)


Loss = Callable[[Tensor], Tensor]  # normalized images -> the loss the attack raises (summed or averaged)


def _gradient_sign(loss: Loss, images: Tensor) -> Tensor:
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(images), images)
    return grad.sign()


def _project(adversarial: Tensor, clean: Tensor, radius: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Back inside the ε-ball around `clean` and inside the pixel range."""
    return torch.min(torch.max(adversarial, clean - radius), clean + radius).clamp(low, high).detach()


def fgsm(
    loss: Loss,
    images: Tensor,
    eps: float,
    space: PixelSpace,
    random_start: bool = False,
    step: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One signed-gradient step of `step` (default ε) pixels; with `random_start`, from a uniform point of the
    ε-ball (Wong et al. 2020 take step 1.25 ε). ε = 0 returns `images` unchanged."""
    if eps <= 0:
        return images.detach()
    radius = space.radius(eps, images)
    low, high = space.bounds(images)
    start = images
    if random_start:
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        start = _project(images + (noise * 2 - 1) * radius, images, radius, low, high)
    moved = start + space.radius(eps if step is None else step, images) * _gradient_sign(loss, start)
    return _project(moved, images, radius, low, high)


def pgd(
    loss: Loss,
    images: Tensor,
    eps: float,
    space: PixelSpace,
    steps: int = 10,
    step: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent (Madry et al.): `steps` signed steps of `step` (default ε/4) pixels from a
    uniform random start in the ε-ball, each projected back. ε = 0 returns `images` unchanged."""
    if eps <= 0:
        return images.detach()
    radius, step_radius = space.radius(eps, images), space.radius(eps / 4 if step is None else step, images)
    low, high = space.bounds(images)
    current = images.detach()
    if random_start:
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        current = _project(images + (noise * 2 - 1) * radius, images, radius, low, high)
    for _ in range(steps):
        current = _project(current + step_radius * _gradient_sign(loss, current), images, radius, low, high)
    return current


def attack(
    name: str,
    loss: Loss,
    images: Tensor,
    eps: float,
    space: PixelSpace,
    steps: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`fgsm` or `pgd` (L∞, random start, step ε/4) by name, as `visionkit-robustness` runs them."""
    if name == "fgsm":
        return fgsm(loss, images, eps, space)
    if name == "pgd":
        return pgd(loss, images, eps, space, steps=steps, generator=generator)
    raise ValueError(f"attack {name!r} is not one of {ATTACKS}")


def training_attack(name: str, loss: Loss, images: Tensor, eps: float, space: PixelSpace, steps: int = 7) -> Tensor:
    """The adversarial batch a training step learns from: `fgsm_rs` (FGSM from a random start, step 1.25 ε;
    Wong et al. 2020) or `pgd` (Madry et al.: `steps` steps of 2.5 ε / steps from a random start)."""
    if name == "fgsm_rs":
        return fgsm(loss, images, eps, space, random_start=True, step=1.25 * eps)
    if name == "pgd":
        return pgd(loss, images, eps, space, steps=steps, step=2.5 * eps / steps)
    raise ValueError(f"adversarial training {name!r} is not one of {TRAINING_ATTACKS[1:]}")
