"""Deployable copies of a trained task: ONNX for every task and, for detection, an ultralytics `.pt`."""

from visionkit.export.formats import EXPORT_FORMATS, export_onnx, export_ultralytics

__all__ = ["EXPORT_FORMATS", "export_onnx", "export_ultralytics"]
