"""Shared data layer: sources per format, one DataModule, one augmentation builder."""

from visionkit.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    available_presets,
    build_transform,
    load_preset,
)
from visionkit.data.datamodule import DataSource, VisionDataModule
from visionkit.data.datasets import ClassificationDataset
from visionkit.data.sources import (
    CocoSource,
    CsvSource,
    CvatSource,
    DigitsSource,
    HuggingFaceSource,
    IdentitySource,
    ImageFolderSource,
    LabelMeSource,
    MaskSource,
    PhotoSource,
    StreamSource,
    VocSource,
    YoloSource,
)
from visionkit.data.splits import SampleSet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationDataset",
    "CocoSource",
    "CsvSource",
    "CvatSource",
    "DataSource",
    "DigitsSource",
    "HuggingFaceSource",
    "IdentitySource",
    "ImageFolderSource",
    "LabelMeSource",
    "MaskSource",
    "PhotoSource",
    "SampleSet",
    "StreamSource",
    "VisionDataModule",
    "VocSource",
    "YoloSource",
    "available_presets",
    "build_transform",
    "load_preset",
]
