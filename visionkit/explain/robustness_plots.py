"""The robustness pictures: the metric against ε (one line per attack) and the triptychs of the most confident
flips (clean with its answer | the perturbation, amplified | adversarial with its answer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from visionkit.utils.viz import fitted

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from visionkit.explain.attack_targets import Answer
    from visionkit.explain.robustness import Flip, RobustnessResult


def robustness_figure(result: RobustnessResult, title: str) -> Figure:
    """The metric at each ε (/255) per attack, the clean value dashed; AutoAttack as one marked point."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    ax.axhline(result.clean, color="grey", ls="--", lw=1, label=f"clean {result.clean:.3f}")
    for name in dict.fromkeys(r.attack for r in result.rows):
        rows = sorted((r for r in result.rows if r.attack == name), key=lambda r: r.eps)
        ax.plot([r.eps for r in rows], [r.value for r in rows], marker="o", label=name)
    ax.set_xlabel("ε (pixel units, /255)")
    ax.set_ylabel(result.metric)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(fitted(title, 6.0, 10), fontsize=10)
    fig.tight_layout()
    return fig


def _draw(ax: Axes, picture: np.ndarray, answer: Answer | None) -> None:
    from matplotlib.patches import Rectangle

    from visionkit.utils.palette import box_colour, overlay

    if answer is not None and answer.mask is not None:
        picture = overlay(picture, answer.mask)
    ax.imshow(picture, interpolation="nearest")
    if answer is not None and answer.boxes is not None:
        for x1, y1, x2, y2, _score, cls in answer.boxes.reshape(-1, 6):
            colour = tuple(v / 255 for v in box_colour(int(cls)))
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.2))


def flips_figure(flips: Sequence[Flip]) -> Figure:
    """One row per flip: clean | perturbation (amplified so ±ε spans black to white) | adversarial."""
    rows = len(flips)
    fig = Figure(figsize=(6.6, rows * 2.2 + 0.5))
    axes = np.atleast_2d(fig.subplots(rows, 3))
    for ax in axes.ravel():
        ax.axis("off")
    for row, flip in zip(axes, flips):
        delta = flip.adversarial.astype(np.float32) - flip.clean.astype(np.float32)
        amplify = 127.5 / max(flip.eps, 1e-6)
        perturbation = np.clip(127.5 + delta * amplify, 0, 255).astype(np.uint8)
        _draw(row[0], flip.clean, flip.before)
        _draw(row[1], perturbation, None)
        _draw(row[2], flip.adversarial, flip.after)
        row[0].set_title(fitted(f"clean: {flip.before.text}", 2.2, 8), fontsize=8, color="green")
        row[1].set_title(f"perturbation ×{amplify:.0f}", fontsize=8)
        row[2].set_title(fitted(f"ε={flip.eps:g}/255: {flip.after.text}", 2.2, 8), fontsize=8, color="red")
    fig.suptitle("most confident flips (strongest attack, largest ε)", fontsize=10)
    fig.tight_layout()
    return fig
