"""Lightning task modules, usable with a plain `lightning.Trainer` (no Hydra needed)."""

from visionkit.tasks.base import VisionTask
from visionkit.tasks.classification import ClassificationTask
from visionkit.tasks.detection import DetectionTask
from visionkit.tasks.embedding import EmbeddingTask
from visionkit.tasks.finetuning import BackboneFinetuning
from visionkit.tasks.multilabel import MultiLabelTask
from visionkit.tasks.segmentation import SegmentationTask
from visionkit.tasks.style_transfer import StyleTransferTask

__all__ = [
    "BackboneFinetuning",
    "ClassificationTask",
    "DetectionTask",
    "EmbeddingTask",
    "MultiLabelTask",
    "SegmentationTask",
    "StyleTransferTask",
    "VisionTask",
]
