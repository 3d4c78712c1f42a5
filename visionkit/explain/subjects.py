"""What is explained: a network with its input contract (size, resize, mean/std), its class names, the layers
Grad-CAM reads and how its outputs become Grad-CAM targets. One per task, built from a visionkit checkpoint
(`subject_from_checkpoint`) or, for the VGG19 that style transfer uses, from its weights (`vgg19_subject`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, build_transform, size_hw
from visionkit.errors import VisionkitError
from visionkit.explain.cam import BoxScore, ClassScore, MaskedClassScore, Target
from visionkit.explain.features import default_layers, forward_order
from visionkit.explain.receptive_field import LAYER_TYPES, LayerRow, layer_table
from visionkit.tasks.detection import DetectionTask, decoded_output
from visionkit.utils.logging import get_logger
from visionkit.utils.viz import denormalize

log = get_logger(__name__)


@dataclass
class CamTarget:
    """One Grad-CAM to draw: a title, the target on the raw output and, for detection, the box (x1 y1 x2 y2)."""

    title: str
    slug: str
    target: Target
    box: tuple[float, float, float, float] | None = None


@dataclass
class Subject:
    """A network to explain. `network` is inspected by layer name; `cam_network` returns a batched tensor."""

    kind: str
    network: nn.Module
    image_size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "stretch"
    class_names: list[str] = field(default_factory=list)
    cam_layers: list[str] | None = None  # None: chosen on first use (`cam_layer_names`)
    feature_layers: list[str] | None = None  # None: chosen on first use (`feature_layer_names`)
    cam_network: nn.Module | None = None
    note: str = ""
    _layer_rows: list[LayerRow] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.network = _without_inplace(self.network.eval())
        if self.cam_network is None:
            self.cam_network = self.network

    # Every input has the subject's one size, so the layers it picks and the layer table are found once.
    def feature_layer_names(self, image: Tensor) -> list[str]:
        """The layers whose feature maps are drawn: as set, else one early, one middle and one deep."""
        if self.feature_layers is None:
            self.feature_layers = default_layers(self.network, image)
        return self.feature_layers

    def cam_layer_names(self, image: Tensor) -> list[str]:
        """The layers Grad-CAM reads: as set, else the task's default."""
        if self.cam_layers is None:
            self.cam_layers = self.default_cam_layers(image)
        return self.cam_layers

    def layer_rows(self, image: Tensor) -> list[LayerRow]:
        """Output shape and receptive field of every conv/pool layer for this subject's input size."""
        if self._layer_rows is None:
            self._layer_rows = layer_table(self.network, image)
        return self._layer_rows

    def prepare(self, image: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """(1×C×H×W input tensor, H×W×3 uint8 picture of that input) for an H×W×3 uint8 RGB image."""
        transform = build_transform(None, image_size=self.image_size, mean=self.mean, std=self.std, resize=self.resize)
        tensor = transform(image=image)["image"][None].float()
        device = next(self.network.parameters()).device
        return tensor.to(device), denormalize(tensor, self.mean, self.std)[0]

    def default_cam_layers(self, image: Tensor) -> list[str]:
        """The layers Grad-CAM reads unless told: the last convolution that runs."""
        convs = [name for name, mod, _ in forward_order(self.network, image) if isinstance(mod, LAYER_TYPES[:2])]
        if not convs:
            raise VisionkitError("the network has no convolution layer for Grad-CAM")
        return [convs[-1]]

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        """Grad-CAM targets for this image (top-k classes, chosen classes or detected boxes)."""
        raise NotImplementedError

    def class_index(self, name: str) -> int:
        """A class by name or id; an error listing the names when it is neither."""
        if name in self.class_names:
            return self.class_names.index(name)
        if name.isdigit() and int(name) < len(self.class_names):
            return int(name)
        raise VisionkitError(f"--target-class {name!r} is not a class of this model ({', '.join(self.class_names)})")


def _without_inplace(network: nn.Module) -> nn.Module:
    """In-place activations would overwrite the feature maps hooks keep and break Grad-CAM's gradients."""
    for module in network.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return network


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


class ClassifierSubject(Subject):
    """Classification (and VGG19 on ImageNet): Grad-CAM of the top-k classes, or of the named ones."""

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        with torch.no_grad():
            probs = torch.softmax(self.cam_network(image).float(), dim=1)[0]
        indices = [self.class_index(c) for c in classes] or probs.topk(min(top_k, len(probs))).indices.tolist()
        return [
            CamTarget(f"{self.class_names[i]} ({float(probs[i]):.2f})", f"{rank}_{_slug(self.class_names[i])}",
                      ClassScore(i))
            for rank, i in enumerate(indices, 1)
        ]  # fmt: skip


@dataclass
class SegmenterSubject(Subject):
    """Segmentation: Grad-CAM of a class's logits over the pixels predicted as that class (default: the
    largest predicted foreground class)."""

    binary: bool = False
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cam_layers is None:  # the encoder's last convolution: where the network decided what is there
            convs = [n for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)]
            self.cam_layers = [n for n in convs if n.startswith("encoder.")][-1:] or None

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        with torch.no_grad():
            logits = self.cam_network(image).float()[0]
        labels = (torch.sigmoid(logits[0]) > self.threshold).long() if self.binary else logits.argmax(0)
        if classes:
            wanted = [self.class_index(c) for c in classes]
        else:
            counts = torch.bincount(labels.flatten(), minlength=len(self.class_names))[1:]
            wanted = [int(counts.argmax()) + 1] if counts.sum() else [1]
        targets = []
        for index in wanted:
            if self.binary and index != 1:
                raise VisionkitError("--target-class: a binary model's Grad-CAM is for its foreground class only")
            mask = (labels == index).float()
            where = f"{int(mask.sum())} px predicted"
            if not mask.any():
                mask, where = torch.ones_like(mask), "not predicted: whole image"
            channel = 0 if self.binary else index
            targets.append(CamTarget(f"{self.class_names[index]} ({where})", _slug(self.class_names[index]),
                                     MaskedClassScore(channel, mask)))  # fmt: skip
        return targets


class _RawDetections(nn.Module):
    """A YOLO network returning only its decoded output (B, 4 + classes, anchors) in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return decoded_output(self.model(images))


@dataclass
class DetectorSubject(Subject):
    """Detection: one Grad-CAM per detected box (up to `top_k`), for that box's class score at the anchor
    that produced it; the heat comes from the feature maps the head reads (all scales averaged). Boxes come
    from the task's own NMS with visionkit-predict's settings, `conf` aside."""

    task: DetectionTask | None = None
    conf: float = 0.25  # lowest box score explained

    def default_cam_layers(self, image: Tensor) -> list[str]:
        head = self.network.model[-1]
        if isinstance(getattr(head, "f", None), list):  # ultralytics: the layers the Detect head reads
            return [f"model.{i}" for i in head.f]
        return super().default_cam_layers(image)

    def detections(self, image: Tensor) -> list[tuple[tuple[float, float, float, float], float, int, int]]:
        """(box x1 y1 x2 y2 in input pixels, score, class, anchor index) after NMS, best first."""
        settings = {**type(self.task).predict_settings, "conf": self.conf}
        with torch.no_grad():
            boxes, anchors = self.task.detect(image, **settings, return_anchors=True)
        return [
            (tuple(row[:4].tolist()), float(row[4]), int(row[5]), int(anchor))
            for row, anchor in zip(boxes[0].float().cpu(), anchors[0].tolist())
        ]

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        wanted = {self.class_index(c) for c in classes}
        found = [d for d in self.detections(image) if not wanted or d[2] in wanted][:top_k]
        return [
            CamTarget(f"{self.class_names[c]} ({score:.2f})", f"box{n}_{_slug(self.class_names[c])}",
                      BoxScore(c, anchor), box)
            for n, (box, score, c, anchor) in enumerate(found, 1)
        ]  # fmt: skip


def subject_from_checkpoint(ckpt_path: str, image_size: int | None = None, conf: float = 0.25) -> Subject:
    """The network a visionkit checkpoint holds, with the input contract its data module saved (`conf`: the
    lowest score of the boxes a detector's Grad-CAMs explain)."""
    from visionkit.checkpoints import load_checkpoint
    from visionkit.tasks import ClassificationTask, SegmentationTask
    from visionkit.tasks.segmentation import check_input_size

    task, state = load_checkpoint(ckpt_path)
    size = size_hw(image_size or state.get("image_size") or (640 if isinstance(task, DetectionTask) else 224))
    common = {
        "image_size": size,
        "mean": tuple(state.get("mean", IMAGENET_MEAN)),
        "std": tuple(state.get("std", IMAGENET_STD)),
        "class_names": list(task.class_names),
    }
    if isinstance(task, ClassificationTask):
        return ClassifierSubject("classification", task.model, resize=state.get("resize", "stretch"), **common)
    if isinstance(task, SegmentationTask):
        check_input_size(size, "image_size")
        binary, threshold = bool(task.hparams.binary), float(task.hparams.threshold)
        return SegmenterSubject("segmentation", task.model, binary=binary, threshold=threshold, **common)
    if isinstance(task, DetectionTask):
        return DetectorSubject("detection", task.model, resize="letterbox", cam_network=_RawDetections(task.model),
                               task=task, conf=conf, **common)  # fmt: skip
    raise VisionkitError(
        f"{ckpt_path} holds a {type(task).__name__}; to look inside the VGG19 that style transfer uses, run "
        "visionkit-explain model=vgg19 source=photo.jpg"
    )


def vgg19_subject(weights: str = "imagenet", image_size: int = 224) -> ClassifierSubject:
    """torchvision's VGG19 with ImageNet classes, its `features` named as in style transfer (conv1_1, relu1_1,
    ..., pool5). weights: "imagenet" (torch hub cache), a file (full or features-only state dict), "random"."""
    import torchvision

    from visionkit.style.vgg import LAYER_NAMES, RANDOM_WEIGHTS, read_vgg19_state

    torch.manual_seed(0)
    network = torchvision.models.vgg19()
    note = ""
    if weights == RANDOM_WEIGHTS:
        log.warning("VGG19 with RANDOM weights (for tests only): the pictures show an untrained network")
    else:
        state, _ = read_vgg19_state(weights, "--weights")
        state = {k if k.startswith(("features.", "classifier.")) else f"features.{k}": v for k, v in state.items()}
        has_classifier = any(k.startswith("classifier.") for k in state)
        missing = [k for k in network.state_dict() if k not in state and (has_classifier or k.startswith("features."))]
        if missing:
            raise VisionkitError(
                f"--weights {weights}: not a torchvision vgg19 state dict (missing {missing[0]}); pass the file "
                "torchvision downloads for vgg19 IMAGENET1K_V1 (vgg19-dcbb9e9d.pth)"
            )
        try:
            network.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            detail = str(exc)[:200]
            raise VisionkitError(f"--weights {weights}: shapes do not fit torchvision's vgg19 ({detail})") from None
        if not has_classifier:
            note = "the weights hold VGG19's features only (no ImageNet classifier): Grad-CAM classes are untrained"
    network.features = nn.Sequential(OrderedDict(zip(LAYER_NAMES, network.features)))
    categories = list(torchvision.models.VGG19_Weights.IMAGENET1K_V1.meta["categories"])
    style_layers = ["features.relu1_1", "features.relu3_1", "features.relu5_1"]
    return ClassifierSubject("vgg19", network, size_hw(image_size), class_names=categories, note=note,
                             cam_layers=["features.relu5_4"], feature_layers=style_layers)  # fmt: skip
