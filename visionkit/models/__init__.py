"""Model factories: classification backbones with new heads (detection and segmentation come next)."""

from visionkit.models.classifier import ImageClassifier, available_backbones, build_classifier
from visionkit.models.lenet import LeNet5

__all__ = ["ImageClassifier", "LeNet5", "available_backbones", "build_classifier"]
