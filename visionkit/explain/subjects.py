"""What is explained: a network with the Predictor that serves it (its input contract and its predictions: the
top classes, the predicted pixels, the boxes), the layers Grad-CAM reads and how predictions become Grad-CAM
targets. One per task (the SUBJECTS table), built from a visionkit checkpoint (`subject_from_checkpoint`) or, for
the VGG19 that style transfer uses, from its weights (`vgg19_subject`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionkit.checkpoints import InputContract
from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, size_hw
from visionkit.errors import VisionkitError
from visionkit.explain.cam import BoxScore, ClassScore, MaskedClassScore, Similarity, Target
from visionkit.explain.features import default_layers, forward_order
from visionkit.explain.receptive_field import LAYER_TYPES, LayerRow, layer_table
from visionkit.inference import (
    ClassificationPredictor,
    DetectionPredictor,
    MultiLabelPredictor,
    Predictor,
    SegmentationPredictor,
)
from visionkit.inference.result import InputImage
from visionkit.models.yolo import yolo_head
from visionkit.tasks.detection import decoded_output
from visionkit.utils.io import read_image
from visionkit.utils.logging import get_logger
from visionkit.utils.rasters import read_raster

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
    """A network to explain. `network` is inspected by layer name; `cam_network` returns a batched tensor;
    `predictor` prepares its inputs and makes the predictions Grad-CAM explains."""

    kind: str
    network: nn.Module
    predictor: Predictor
    cam_layers: list[str] | None = None  # None: chosen on first use (`cam_layer_names`)
    feature_layers: list[str] | None = None  # None: chosen on first use (`feature_layer_names`)
    cam_network: nn.Module = None  # type: ignore[assignment]  # None: `network` (filled in __post_init__)
    note: str = ""
    _layer_rows: list[LayerRow] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.network = _without_inplace(self.network.eval())
        if self.cam_network is None:
            self.cam_network = self.network

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.predictor.contract.image_size

    @property
    def class_names(self) -> list[str]:
        return self.predictor.names

    @property
    def device(self) -> torch.device:
        return torch.device(self.predictor.device)  # an exported model's predictor names its device as text

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

    def load(self, path: str) -> np.ndarray:
        """An image file as `prepare` takes it: H×W×3 uint8 RGB, or for scans and bands the file as stored."""
        return read_image(path) if self.predictor.contract.pixels.rgb8 else read_raster(path)

    def prepare(self, image: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """(1×C×H×W input tensor, H×W×3 uint8 picture of that input) for an H×W×3 uint8 RGB image (or a scan or
        raster as stored, for such a model), prepared exactly as the predictor prepares it."""
        pixels, raw = self.predictor.read_input(image, "image")
        (network,) = self.predictor.resized([InputImage(0, "image", pixels, raw=raw)])
        picture = network if raw is None else self.predictor.contract.pixels.picture(network)
        return self.predictor.to_network([network]), picture

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
        raise VisionkitError(f"target_class: {name!r} is not a class of this model ({', '.join(self.class_names)})")


def _without_inplace(network: nn.Module) -> nn.Module:
    """In-place activations would overwrite the feature maps hooks keep and break Grad-CAM's gradients."""
    for module in network.modules():
        if getattr(module, "inplace", False) is True:
            activation: Any = module  # ReLU, SiLU, ...: their own `inplace` flag
            activation.inplace = False
    return network


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


class ClassifierSubject(Subject):
    """Classification (and VGG19 on ImageNet): Grad-CAM of the top-k classes, or of the named ones."""

    predictor: ClassificationPredictor | MultiLabelPredictor  # (MultiLabelSubject's)

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        with torch.no_grad():
            probs = self.predictor.probabilities(image)[0]
        indices = [self.class_index(c) for c in classes] or probs.topk(min(top_k, len(probs))).indices.tolist()
        return [
            CamTarget(f"{self.class_names[i]} ({float(probs[i]):.2f})", f"{rank}_{_slug(self.class_names[i])}",
                      ClassScore(i))
            for rank, i in enumerate(indices, 1)
        ]  # fmt: skip


class MultiLabelSubject(ClassifierSubject):
    """Multi-label: Grad-CAM of each label the image is given (probability at or above its class's threshold, at
    most top-k; the top-k probabilities when none is), or of the named classes."""

    predictor: MultiLabelPredictor

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        if classes:
            return super().cam_targets(image, top_k, classes)
        with torch.no_grad():
            probs = self.predictor.probabilities(image)[0].cpu()
        given = torch.nonzero(probs >= torch.from_numpy(self.predictor.thresholds)).flatten()
        ranked = given[probs[given].argsort(descending=True)] if len(given) else probs.argsort(descending=True)
        names = [self.class_names[i] for i in ranked[: max(1, top_k)].tolist()]
        return super().cam_targets(image, top_k, names)


@dataclass
class SegmenterSubject(Subject):
    """Segmentation: Grad-CAM of a class's logits over the pixels predicted as that class (default: the
    largest predicted foreground class)."""

    predictor: SegmentationPredictor

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cam_layers is None:  # the encoder's last convolution: where the network decided what is there
            convs = [n for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)]
            self.cam_layers = [n for n in convs if n.startswith("encoder.")][-1:] or None

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        with torch.no_grad():
            labels = self.predictor.scores(image)[0].argmax(0)
        binary = self.predictor.binary
        if classes:
            wanted = [self.class_index(c) for c in classes]
        else:
            counts = torch.bincount(labels.flatten(), minlength=len(self.class_names))[1:]
            wanted = [int(counts.argmax()) + 1] if counts.sum() else [1]
        targets = []
        for index in wanted:
            if binary and index != 1:
                raise VisionkitError("target_class: a binary model's Grad-CAM is for its foreground class only")
            mask = (labels == index).float()
            where = f"{int(mask.sum())} px predicted"
            if not mask.any():
                mask, where = torch.ones_like(mask), "not predicted: whole image"
            channel = 0 if binary else index
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
    from the detection predictor (its NMS; its `conf` is the lowest box score explained)."""

    predictor: DetectionPredictor

    def __post_init__(self) -> None:
        if self.cam_network is None:
            self.cam_network = _RawDetections(self.network)
        super().__post_init__()

    def default_cam_layers(self, image: Tensor) -> list[str]:
        read = getattr(yolo_head(self.network), "f", None)  # ultralytics: the layers the Detect head reads
        if isinstance(read, list):
            return [f"model.{i}" for i in read]
        return super().default_cam_layers(image)

    def detections(self, image: Tensor) -> list[tuple[tuple[float, float, float, float], float, int, int]]:
        """(box x1 y1 x2 y2 in input pixels, score, class, anchor index) after NMS, best first."""
        with torch.no_grad():
            boxes, anchors = self.predictor.detect(image)
        assert anchors is not None  # the subject's predictor keeps them (anchors=True, made below)
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


class _BeforeNormalization(nn.Module):
    """An embedding network's output before its L2 normalization (the BN-neck's): gradients of a unit vector's
    length are zero, those of the features it is made from are not."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> Tensor:
        embedder: Any = self.network  # an EmbeddingNetwork: backbone, then the BN-neck
        return embedder.neck(embedder.backbone(images))


def _strength(output: Tensor) -> Tensor:
    """Target: the length of the embedding before normalization (how strongly the identity features respond)."""
    return output.norm()


@dataclass
class EmbedderSubject(Subject):
    """Embeddings: Grad-CAM of the cosine similarity with a reference image's embedding (`set_reference`: which
    parts make the two images one identity), and of the embedding's length before normalization (where the
    identity features respond)."""

    reference: tuple[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.cam_network is None:
            self.cam_network = _BeforeNormalization(self.network)
        super().__post_init__()

    def set_reference(self, name: str, image: np.ndarray) -> None:
        """Compare every explained image with this one (an H×W×3 uint8 RGB image)."""
        with torch.no_grad():
            self.reference = (name, self.network(self.prepare(image)[0])[0])

    def cam_targets(self, image: Tensor, top_k: int, classes: Sequence[str]) -> list[CamTarget]:
        with torch.no_grad():
            own = self.network(image)[0]
        targets = []
        if self.reference is not None:
            name, embedding = self.reference
            similarity = float(own @ embedding)
            title = f"like {name} (cos {similarity:.2f}, distance {1 - similarity:.2f})"
            targets.append(CamTarget(title, f"like_{_slug(name)}", Similarity(embedding)))
        targets.append(CamTarget("identity features (embedding length)", "identity", _strength))
        return targets


SUBJECTS: dict[str, type[Subject]] = {
    "classification": ClassifierSubject,
    "multilabel": MultiLabelSubject,
    "segmentation": SegmenterSubject,
    "detection": DetectorSubject,
    "embedding": EmbedderSubject,
}  # one row per task: how its checkpoints are explained (keyed by the predictor's task name)


def subject_from_checkpoint(
    ckpt_path: str, image_size: int | None = None, conf: float = 0.25, device: str = "auto"
) -> Subject:
    """The network a visionkit checkpoint holds, served by its predictor (unfused, so layer names are the
    trained network's); `conf`: the lowest score of the boxes a detector's Grad-CAMs explain."""
    from visionkit.inference import build_predictor, open_checkpoint
    from visionkit.inference.exported import exported_format

    if exported_format(ckpt_path):
        raise VisionkitError(
            f"{ckpt_path} is an exported graph: looking inside a network needs its layers and gradients, which only "
            "the checkpoint holds; pass the .ckpt it was exported from"
        )
    state, task_cls, predictor_cls = open_checkpoint(ckpt_path)
    subject_cls = SUBJECTS.get(predictor_cls.task_name)
    if subject_cls is None:
        raise VisionkitError(
            f"{ckpt_path} is a {predictor_cls.task_name} checkpoint; to look inside the VGG19 that style transfer "
            "uses, run visionkit-explain model=vgg19 source=photo.jpg"
        )
    options: dict[str, Any] = (
        {"conf": conf, "fuse": False, "anchors": True} if predictor_cls is DetectionPredictor else {}
    )
    predictor = build_predictor(state, task_cls, device=device, image_size=image_size, **options)
    return subject_cls(predictor.task_name, predictor.model.model, predictor)


def vgg19_subject(weights: str = "imagenet", image_size: int = 224, device: str = "auto") -> ClassifierSubject:
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
        state, _ = read_vgg19_state(weights, "weights")
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
    categories = tuple(torchvision.models.VGG19_Weights.IMAGENET1K_V1.meta["categories"])
    contract = InputContract(size_hw(image_size), "stretch", IMAGENET_MEAN, IMAGENET_STD, categories)
    predictor = ClassificationPredictor(network, contract, device=device)
    style_layers = ["features.relu1_1", "features.relu3_1", "features.relu5_1"]
    return ClassifierSubject("vgg19", predictor.model, predictor, note=note, cam_layers=["features.relu5_4"],
                             feature_layers=style_layers)  # fmt: skip
