"""Callbacks shared by tasks: plots that work with any logger (files first, logger images when supported)."""

from visionkit.callbacks.classification_report import ClassificationReport
from visionkit.callbacks.confusion_matrix import ConfusionMatrixPlot
from visionkit.callbacks.detection_report import DetectionReport
from visionkit.callbacks.sample_predictions import SamplePredictionPlot
from visionkit.callbacks.segmentation_report import SegmentationReport
from visionkit.callbacks.speed_report import SpeedReport
from visionkit.callbacks.training_curves import TrainingCurves

__all__ = [
    "ClassificationReport",
    "ConfusionMatrixPlot",
    "DetectionReport",
    "SamplePredictionPlot",
    "SegmentationReport",
    "SpeedReport",
    "TrainingCurves",
]
