"""Checkpoint in, results out: `load_predictor(ckpt)` gives the Predictor of the checkpoint's task, and
`predictor(images)` / `predictor.stream(images)` give one Result per image (the predict command, explain and
the later video and serving paths all go through here). No Lightning Trainer on this path."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import TYPE_CHECKING, Any

from visionkit.data.contract import InputContract, data_state
from visionkit.errors import VisionkitError
from visionkit.inference.base import Predictor
from visionkit.inference.classification import ClassificationPredictor, ClassificationResult
from visionkit.inference.detection import DetectionPredictor, DetectionResult
from visionkit.inference.embedding import EmbeddingPredictor, EmbeddingResult
from visionkit.inference.exported import EXPORTED, exported_format, exported_model, read_exported
from visionkit.inference.multilabel import MultiLabelPredictor, MultiLabelResult
from visionkit.inference.outputs import output_names, write_records
from visionkit.inference.result import ImageInput, Result
from visionkit.inference.runtime_choice import runtime_file
from visionkit.inference.segmentation import SegmentationPredictor, SegmentationResult
from visionkit.inference.stylizer import StylizedResult, StylizerPredictor

if TYPE_CHECKING:
    from visionkit.tasks.base import VisionTask

# One row per task, by the task class's qualified name (an exported file names its task so, and is read without
# importing the task, which needs PyTorch): the predictor that serves its checkpoints and exports.
PREDICTORS: dict[str, type[Predictor]] = {
    "visionkit.tasks.classification.ClassificationTask": ClassificationPredictor,
    "visionkit.tasks.detection.DetectionTask": DetectionPredictor,
    "visionkit.tasks.segmentation.SegmentationTask": SegmentationPredictor,
    "visionkit.tasks.style_transfer.StyleTransferTask": StylizerPredictor,
    "visionkit.tasks.embedding.EmbeddingTask": EmbeddingPredictor,
    "visionkit.tasks.multilabel.MultiLabelTask": MultiLabelPredictor,
}


def task_name_of(cls: type) -> str:
    """A class's qualified name, as PREDICTORS and exported files write it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def predictor_class(task: type[VisionTask] | str) -> type[Predictor]:
    """The Predictor class for a task class or its qualified name (its own row, or its nearest base class's; a
    task of one's own, subclassing a visionkit task, is imported to find its base)."""
    if isinstance(task, str):
        if task in PREDICTORS:
            return PREDICTORS[task]
        module, _, name = task.rpartition(".")
        task_cls: type[VisionTask] = getattr(importlib.import_module(module), name)
    else:
        task_cls = task
    for cls in task_cls.__mro__:
        if task_name_of(cls) in PREDICTORS:
            return PREDICTORS[task_name_of(cls)]
    known = ", ".join(name.rpartition(".")[2] for name in PREDICTORS)
    raise VisionkitError(f"{task_cls.__name__} has no predictor (known tasks: {known})")


def predictor_options(predictor_cls: type[Predictor]) -> list[str]:
    """The keyword options a predictor class takes, its own and the shared ones."""
    names: list[str] = []
    for cls in (predictor_cls, Predictor):
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.kind is param.KEYWORD_ONLY and name not in names:
                names.append(name)
    return names


def open_checkpoint(
    checkpoint: str | os.PathLike[str], key: str = "ckpt_path"
) -> tuple[dict[str, Any], type[VisionTask] | str, type[Predictor]]:
    """(the checkpoint's contents, the task class that wrote it, its Predictor class), read once. An exported
    file gives its task's qualified name instead of the class: it is read without PyTorch."""
    if exported_format(checkpoint):
        state, task = read_exported(checkpoint, key)
        return state, task, predictor_class(task)
    from visionkit.checkpoints import read_checkpoint

    state, task_cls = read_checkpoint(os.fspath(checkpoint), key)
    return state, task_cls, predictor_class(task_cls)


def build_predictor(
    state: dict[str, Any],
    task_cls: type[VisionTask] | str,
    *,
    device: str = "auto",
    image_size: int | list[int] | None = None,
    viz_bands: list[int] | None = None,
    **options: Any,
) -> Predictor:
    """The Predictor of a checkpoint already read (`open_checkpoint`); see `load_predictor` for the options.
    `viz_bands`: the bands pictures of a multi-band model's inputs show (default: those it was trained with)."""
    predictor_cls = predictor_class(task_cls)
    known = predictor_options(predictor_cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise VisionkitError(
            f"{', '.join(unknown)}: not an option of the {predictor_cls.task_name} predictor (options: "
            f"{', '.join(known)})"
        )
    task: Any  # an exported file's ExportedModel, or the checkpoint's task
    if EXPORTED in state:  # an exported file: its runtime runs the network (OpenVINO in bf16 too) on its device
        precision = str(options.get("precision", "fp32"))
        options["precision"] = "fp32"  # the predictor's own tensors
        task = exported_model(state, image_size, device, precision)
        device = "cpu"  # the predictor's tensors; the runtime holds the GPU when there is one
    else:
        from visionkit.checkpoints import build_from_checkpoint

        assert not isinstance(task_cls, str)  # only exported files are named by a string (open_checkpoint)
        task = build_from_checkpoint(state, task_cls)
    names = getattr(task, "class_names", [])
    contract = InputContract.of(data_state(state), names, image_size, predictor_cls.default_size)
    return predictor_cls(task, contract.with_viz_bands(viz_bands), device=device, **options)


def load_predictor(
    checkpoint: str | os.PathLike[str],
    *,
    device: str = "auto",
    image_size: int | list[int] | None = None,
    key: str = "ckpt_path",
    runtime: str = "pytorch",
    **options: Any,
) -> Predictor:
    """The Predictor of a visionkit checkpoint (read with weights_only, offline) or of a file visionkit exported
    (`model.onnx`, `model_openvino/`, `model.torchscript`: run by ONNX Runtime, OpenVINO or torch.jit, same
    results), with the input contract it stores; `image_size` overrides the training size.

    Options shared by every task: device ("auto", "cpu", "cuda:N"), precision ("fp32", "bf16", "fp16", "auto"),
    batch_size (16), skip_bad_images (False: an unreadable input stops with its name). Per task: classification
    top_k; detection conf, iou, max_det, save_conf, fuse, rect; segmentation tile_size, tile_overlap, scale;
    fast stylizer size. `key` names the option the user set, in messages.

    runtime: "pytorch" (default), "onnx", "openvino" or "torchscript" (a checkpoint is exported on first use into
    a cache, ~/.cache/visionkit/exports), or "auto": the one that runs the network fastest on this machine at
    `batch_size`, timed once, printed and remembered.
    """

    def build(path: str) -> Predictor:
        state, task_cls, _ = open_checkpoint(path, key)
        return build_predictor(state, task_cls, device=device, image_size=image_size, **dict(options))

    return build(runtime_file(checkpoint, runtime, build, int(options.get("batch_size", 16)), key))


def load_task_predictor(
    checkpoint: str | os.PathLike[str], task: str, key: str, what: str, **options: Any
) -> Predictor:
    """`load_predictor` for a checkpoint that must hold a `task` model (a gallery's embedder, predict's detector):
    another task's checkpoint is refused, naming `key` and saying it is not `what` ("a detector")."""
    state, task_cls, predictor_cls = open_checkpoint(checkpoint, key)
    if predictor_cls.task_name != task:
        raise VisionkitError(f"{key}: {checkpoint} holds a {predictor_cls.task_name} model, not {what}")
    return build_predictor(state, task_cls, **options)


__all__ = [
    "PREDICTORS",
    "ClassificationPredictor",
    "ClassificationResult",
    "DetectionPredictor",
    "DetectionResult",
    "EmbeddingPredictor",
    "EmbeddingResult",
    "ImageInput",
    "InputContract",
    "MultiLabelPredictor",
    "MultiLabelResult",
    "Predictor",
    "Result",
    "SegmentationPredictor",
    "SegmentationResult",
    "StylizedResult",
    "StylizerPredictor",
    "build_predictor",
    "load_predictor",
    "load_task_predictor",
    "open_checkpoint",
    "output_names",
    "predictor_class",
    "predictor_options",
    "write_records",
]
