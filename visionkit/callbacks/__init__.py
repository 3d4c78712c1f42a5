"""Callbacks shared by tasks: plots that work with any logger (files first, logger images when supported)."""

from visionkit.callbacks.confusion_matrix import ConfusionMatrixPlot

__all__ = ["ConfusionMatrixPlot"]
