"""Neural style transfer: `stylize` (Gatys et al. optimization with VGG19) and its building blocks."""

from visionkit.style.optimize import StyleOutcome, StyleTransfer, stylize

__all__ = ["StyleOutcome", "StyleTransfer", "stylize"]
