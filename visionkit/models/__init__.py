"""Model factories: classification backbones with new heads, ultralytics YOLO networks, smp segmentation networks."""

from visionkit.models.classifier import ImageClassifier, available_backbones, build_classifier
from visionkit.models.lenet import LeNet5
from visionkit.models.segmentation import available_architectures, available_encoders, build_segmentation_model

__all__ = [
    "ImageClassifier",
    "LeNet5",
    "available_architectures",
    "available_backbones",
    "available_encoders",
    "build_classifier",
    "build_segmentation_model",
]
