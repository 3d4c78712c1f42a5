"""One reader per data format (timm's `readers/`): each turns files on disk into splits of samples and knows its
class names. `visionkit.data` exports them all as `visionkit.data.<Name>Source`."""

from visionkit.data.sources.coco import CocoSource
from visionkit.data.sources.csv import CsvSource
from visionkit.data.sources.cvat import CvatSource
from visionkit.data.sources.digits import DigitsSource
from visionkit.data.sources.huggingface import HuggingFaceSource
from visionkit.data.sources.identities import IdentitySource
from visionkit.data.sources.imagefolder import ImageFolderSource
from visionkit.data.sources.labelme import LabelMeSource
from visionkit.data.sources.masks import MaskSource
from visionkit.data.sources.photos import PhotoSource
from visionkit.data.sources.stream import StreamSource
from visionkit.data.sources.voc import VocSource
from visionkit.data.sources.yolo import YoloSource

__all__ = [
    "CocoSource",
    "CsvSource",
    "CvatSource",
    "DigitsSource",
    "HuggingFaceSource",
    "IdentitySource",
    "ImageFolderSource",
    "LabelMeSource",
    "MaskSource",
    "PhotoSource",
    "StreamSource",
    "VocSource",
    "YoloSource",
]
