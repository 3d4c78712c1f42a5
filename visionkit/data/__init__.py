"""Shared data layer: sources per format, one DataModule, one augmentation builder."""

from __future__ import annotations

import importlib
from typing import Any

# each public name and the module that holds it: imported on first use, so the light modules below (an
# exported file's metadata and runtimes, the input contract) load without PyTorch
_WHERE = {
    "IMAGENET_MEAN": "visionkit.data.augment",
    "IMAGENET_STD": "visionkit.data.augment",
    "available_presets": "visionkit.data.augment",
    "build_transform": "visionkit.data.augment",
    "load_preset": "visionkit.data.augment",
    "DataSource": "visionkit.data.datamodule",
    "VisionDataModule": "visionkit.data.datamodule",
    "ClassificationDataset": "visionkit.data.datasets",
    "CocoSource": "visionkit.data.sources",
    "CsvSource": "visionkit.data.sources",
    "CvatSource": "visionkit.data.sources",
    "DigitsSource": "visionkit.data.sources",
    "HuggingFaceSource": "visionkit.data.sources",
    "IdentitySource": "visionkit.data.sources",
    "ImageFolderSource": "visionkit.data.sources",
    "LabelMeSource": "visionkit.data.sources",
    "MaskSource": "visionkit.data.sources",
    "PhotoSource": "visionkit.data.sources",
    "StreamSource": "visionkit.data.sources",
    "VocSource": "visionkit.data.sources",
    "YoloSource": "visionkit.data.sources",
    "SampleSet": "visionkit.data.splits",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
