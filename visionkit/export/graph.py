"""The network an export writes: the task's inference module, optionally with normalization in front (uint8 in)
and, for detection, NMS behind it (final boxes out). Every format writes the same graph, and the check runs
this module in PyTorch as the reference for the exported file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.checkpoints import InputContract
from visionkit.errors import VisionkitError
from visionkit.tasks.base import VisionTask
from visionkit.tasks.detection import decoded_output


@dataclass(frozen=True)
class GraphOptions:
    """What goes into the exported graph besides the network (conf/export.yaml documents each)."""

    dynamic: bool = True  # batch (and height/width where the network allows) left free
    preprocess: bool = False  # uint8 (B, 3, H, W) pixels in; the graph divides by 255 and normalizes
    nms: bool = False  # detection: NMS in the graph, (B, max_det, 6) final boxes out
    conf: float | None = None  # nms: score threshold (None = the checkpoint's)
    iou: float | None = None  # nms: IoU threshold (None = the checkpoint's)
    max_det: int | None = None  # nms: boxes kept per image (None = the checkpoint's)


@dataclass(frozen=True)
class ExportGraph:
    """The module to export and how it is called: input name, output names, free axes and input dtype."""

    module: nn.Module
    output_names: tuple[str, ...]
    dynamic_hw: bool  # height and width may vary
    options: GraphOptions
    contract: InputContract

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.uint8 if self.options.preprocess and self.contract.pixels.rgb8 else torch.float32

    def example(self, batch: int = 1) -> Tensor:
        """An input of the export size, in the graph's dtype."""
        height, width = self.contract.image_size
        channels = self.contract.pixels.channels
        if self.input_dtype == torch.uint8:
            return torch.randint(0, 256, (batch, channels, height, width), dtype=torch.uint8)
        return torch.rand(batch, channels, height, width)

    def graph_input(self, images: Tensor) -> Tensor:
        """The graph's input for images normalized as in training (what the task's network takes): the same
        float tensor, or with `preprocess` the pixels it came from: uint8 (rounded), 0..1 floats for other formats."""
        if not self.options.preprocess:
            return images
        return graph_pixels(images, self.contract, self.input_dtype == torch.uint8)

    def axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: none without `dynamic`; else the batch, and height/width where they may vary."""
        if not self.options.dynamic:
            return {}
        axes: dict[str, dict[int, str]] = {"images": {0: "batch"}}
        if self.dynamic_hw:
            axes["images"].update({2: "height", 3: "width"})
        for name in self.output_names:
            axes[name] = {0: "batch"}
        return axes


def graph_pixels(images: Tensor, contract: InputContract, uint8: bool) -> Tensor:
    """The pixels normalized `images` came from, as a `preprocess=true` graph takes them: uint8 (rounded), or
    0..1 floats for scans and bands (`contract.peak` 1)."""
    mean = torch.tensor(contract.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(contract.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    pixels = (images * std + mean) * contract.peak
    return pixels.round().clamp(0, 255).to(torch.uint8) if uint8 else pixels


def build_graph(
    task: VisionTask,
    data_state: Mapping[str, Any],
    image_size: int | Sequence[int] | None = None,
    options: GraphOptions = GraphOptions(),
) -> ExportGraph:
    """The export graph of a checkpoint's task with `options` (normalization and NMS folded in when asked);
    `image_size` (default: the training size) is the example input's, and the only one when not dynamic."""
    contract = InputContract.of(data_state, getattr(task, "class_names", ()) or (), image_size)
    module, output_names, dynamic_hw = task.export_module()
    is_detector = task.task_name == "detection"
    if options.nms:
        if not is_detector:
            raise VisionkitError(f"nms=true is for detection checkpoints; this one is a {type(task).__name__}")
        hp = task.hparams
        module = DetectionsWithNMS(
            module,
            conf=float(hp.conf if options.conf is None else options.conf),
            iou=float(hp.iou if options.iou is None else options.iou),
            max_det=int(hp.max_det if options.max_det is None else options.max_det),
        )
        output_names = ["detections"]
    if options.preprocess:
        module = Normalized(module, contract.mean, contract.std, contract.peak)
    return ExportGraph(module.eval(), tuple(output_names), dynamic_hw, options, contract)


class Normalized(nn.Module):
    """Pixels in, uint8 (B, 3, H, W) RGB (or (B, C, H, W) 0..1 floats, `peak` 1, for scans and bands): divided by
    `peak` and normalized with the training mean/std, then the network."""

    scale: Tensor  # buffers registered in __init__, named here for the type checker
    shift: Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], peak: float = 255.0) -> None:
        super().__init__()
        self.net = net
        scale = 1.0 / (peak * torch.tensor(std, dtype=torch.float32))
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", (torch.tensor(mean, dtype=torch.float32) * peak * scale).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.float() * self.scale - self.shift)


class DetectionsWithNMS(nn.Module):
    """A YOLO network followed by class-wise NMS for the whole batch in one call: (B, max_det, 6) rows of
    x1 y1 x2 y2 (input pixels), score, class, best first; rows past an image's boxes are zeros.

    One class per box (its best score), as ultralytics' predict and its `nms=True` exports do. Images and classes
    are kept apart by shifting boxes (x by the image, y by the class) in units of the input size, so offsets stay
    small and float32 keeps sub-pixel precision; there is no Python loop over the batch, so the batch stays free.
    """

    def __init__(self, net: nn.Module, conf: float, iou: float, max_det: int) -> None:
        super().__init__()
        self.net = net
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def forward(self, images: Tensor) -> Tensor:
        from torchvision.ops import nms

        pred = decoded_output(self.net(images)).transpose(1, 2)  # (B, anchors, 4 + classes)
        batch, anchors = pred.shape[0], pred.shape[1]
        centre, size = pred[..., :2], pred[..., 2:4]
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1).reshape(-1, 4)
        scores, classes = pred[..., 4:].max(-1)
        scores, classes = scores.reshape(-1), classes.reshape(-1)
        image = torch.arange(batch, device=pred.device).view(-1, 1).expand(batch, anchors).reshape(-1)
        candidates = (scores > self.conf).nonzero().squeeze(1)
        boxes, scores, classes, image = boxes[candidates], scores[candidates], classes[candidates], image[candidates]
        span = torch.maximum(torch.as_tensor(images.shape[2]), torch.as_tensor(images.shape[3])).to(boxes.dtype)
        unit = boxes / span  # about [0, 1]; shifted by 4 units per image (x) and per class (y)
        shift = torch.stack([image, classes, image, classes], 1).to(boxes.dtype) * 4.0
        kept = nms(unit + shift, scores, self.iou)  # best first
        # each kept box's rank within its image: sort by (image, position in `kept`); keys are unique
        count = kept.shape[0]
        position = torch.arange(count, device=pred.device)
        order = torch.argsort(image[kept] * count + position)
        kept = kept[order]
        owner = image[kept]
        counts = torch.zeros(batch, dtype=torch.long, device=pred.device).scatter_add(0, owner, torch.ones_like(owner))
        firsts = counts.cumsum(0) - counts  # where each image's boxes start in `kept`
        rank = position - firsts[owner]
        inside = rank < self.max_det
        kept, owner, rank = kept[inside], owner[inside], rank[inside]
        rows = torch.cat([boxes[kept], scores[kept, None], classes[kept, None].to(boxes.dtype)], 1)
        out = boxes.new_zeros(batch, self.max_det, 6)
        out[owner, rank] = rows
        return out
