"""visionkit: classification, detection, segmentation and style transfer, run the same way."""

__version__ = "0.1.0"
