"""Shared data layer: sources per format, one DataModule, one augmentation builder."""

from visionkit.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    available_presets,
    build_transform,
    load_preset,
)
from visionkit.data.csv_source import CsvSource
from visionkit.data.datamodule import DataSource, VisionDataModule
from visionkit.data.datasets import ClassificationDataset
from visionkit.data.digits import DigitsSource
from visionkit.data.imagefolder import ImageFolderSource
from visionkit.data.masks import MaskSource
from visionkit.data.photos import PhotoSource
from visionkit.data.splits import SampleSet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationDataset",
    "CsvSource",
    "DataSource",
    "DigitsSource",
    "ImageFolderSource",
    "MaskSource",
    "PhotoSource",
    "SampleSet",
    "VisionDataModule",
    "available_presets",
    "build_transform",
    "load_preset",
]
