"""What the explore page shows about the network's answer, per task (the DECISIONS table): classes with their
Grad-CAMs, the VGG19's Gram matrices, a segmentation's mask, class probabilities and skip connections, a detector's
boxes with the feature level and Grad-CAM of each; and the same image under FGSM at each ε of the page's slider,
attacking the network's own clean answer (a user's photo has no label)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from visionkit.explain.attack_targets import DetectorTarget
from visionkit.explain.cam import grad_cam, overlay
from visionkit.explain.explore_data import png_url, viridis
from visionkit.explain.features import resolve_layers
from visionkit.explain.subjects import DetectorSubject, Subject
from visionkit.models.yolo import yolo_head
from visionkit.tasks.adversarial import PixelSpace, fgsm
from visionkit.tasks.multilabel import flag_names
from visionkit.utils.palette import overlay as mask_overlay
from visionkit.utils.viz import denormalize

if TYPE_CHECKING:
    from visionkit.inference.classification import ClassificationPredictor
    from visionkit.inference.multilabel import MultiLabelPredictor
    from visionkit.inference.segmentation import SegmentationPredictor

FOOL_EPS = (0, 1, 2, 4, 8, 16)  # /255: the page's slider
STYLE_LAYERS = ("features.relu1_1", "features.relu2_1", "features.relu3_1", "features.relu4_1", "features.relu5_1")


def pixel_space(subject: Subject) -> PixelSpace:
    """The subject's normalization: attacks move pixels by ε in 0..1 units."""
    contract = subject.predictor.contract
    return PixelSpace(contract.mean, contract.std)


SHOWN = 320  # the largest side of the slider's pictures (they are drawn 200 px wide; the attack ran at full size)


def shown_png(picture: np.ndarray) -> str:
    """A picture for the slider, at most SHOWN px a side (nearest neighbour: single-pixel changes stay visible)."""
    from PIL import Image

    if max(picture.shape[:2]) <= SHOWN:
        return png_url(picture)
    scale = SHOWN / max(picture.shape[:2])
    size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
    return png_url(np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.NEAREST)))


def perturbation_png(adversarial: np.ndarray, clean: np.ndarray, eps: float) -> str:
    """The pixel change amplified so ±ε spans black to white (grey: unchanged)."""
    delta = adversarial.astype(np.float32) - clean.astype(np.float32)
    return shown_png(np.clip(127.5 + delta * 127.5 / max(eps, 1e-6), 0, 255).astype(np.uint8))


def _cams(subject: Subject, tensor: Tensor, picture: np.ndarray, count: int) -> list[dict[str, Any]]:
    modules = list(resolve_layers(subject.network, subject.cam_layer_names(tensor)).values())
    out = []
    for target in subject.cam_targets(tensor, count, []):
        heat = grad_cam(subject.cam_network, tensor, modules, target.target)
        out.append({"title": target.title, "png": png_url(overlay(picture, heat)), "box": target.box})
    return out


def _fooled(
    subject: Subject,
    tensor: Tensor,
    loss: Callable[[Tensor], Tensor],
    answer: Callable[[Tensor, np.ndarray], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The image under FGSM at each ε of FOOL_EPS (/255) against `loss`, with `answer` for each."""
    space, bands = pixel_space(subject), subject.predictor.contract.pixels.viz_bands
    clean = denormalize(tensor, space.mean, space.std, bands)[0]
    rows = []
    for eps in FOOL_EPS:
        adversarial = fgsm(loss, tensor, eps / 255, space)
        picture = denormalize(adversarial, space.mean, space.std, bands)[0]
        with torch.no_grad():
            told = answer(adversarial, picture)
        change = perturbation_png(picture, clean, eps)
        rows.append({"eps": eps, "png": shown_png(picture), "perturbation": change, **told})
    return rows


def classification(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """Softmax bars (top 10), Grad-CAM of the top 3, and FGSM against the top class."""
    names, predictor = subject.class_names, cast("ClassificationPredictor", subject.predictor)
    with torch.no_grad():
        probs = predictor.probabilities(tensor)[0].float().cpu()
    order = probs.argsort(descending=True)[:10].tolist()
    top = order[0]
    label = torch.tensor([top], device=tensor.device)

    def loss(images: Tensor) -> Tensor:
        return F.cross_entropy(subject.cam_network(images).float(), label, reduction="sum")

    def answer(images: Tensor, _picture: np.ndarray) -> dict[str, Any]:
        p = predictor.probabilities(images)[0].float().cpu()
        best = int(p.argmax())
        return {"label": names[best], "confidence": float(p[best]), "original": float(p[top]), "flipped": best != top}

    decision = {
        "probs": [{"name": names[i], "p": float(probs[i])} for i in order],
        "cams": _cams(subject, tensor, picture, 3),
    }
    if subject.kind == "vgg19":
        decision["grams"] = gram_matrices(subject, tensor)
    return {"decision": decision, "fool": _fooled(subject, tensor, loss, answer)}


def multilabel(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """A sigmoid bar per class (top 10) with its threshold, Grad-CAM of the labels given, and FGSM against the
    whole label set (binary cross-entropy towards the clean answer's labels)."""
    predictor = cast("MultiLabelPredictor", subject.predictor)
    names, thresholds = subject.class_names, torch.from_numpy(predictor.thresholds)
    with torch.no_grad():
        probs = predictor.probabilities(tensor)[0].cpu()
    given = probs >= thresholds
    target = given[None].float().to(tensor.device)

    def loss(images: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(subject.cam_network(images).float(), target, reduction="sum")

    def answer(images: Tensor, _picture: np.ndarray) -> dict[str, Any]:
        p = predictor.probabilities(images)[0].cpu()
        now = p >= thresholds
        agree = float((now == given).float().mean())
        return {"label": flag_names(now, names), "confidence": agree, "flipped": bool((now != given).any())}

    order = probs.argsort(descending=True)[:10].tolist()
    decision = {
        "probs": [{"name": names[i], "p": float(probs[i]), "threshold": float(thresholds[i])} for i in order],
        "labels": flag_names(given, names),
        "cams": _cams(subject, tensor, picture, 3),
    }
    return {"decision": decision, "fool": _fooled(subject, tensor, loss, answer)}


def gram_matrices(subject: Subject, tensor: Tensor, channels: int = 64) -> list[dict[str, Any]]:
    """The Gram matrix (channel × channel correlations, what style transfer matches) of each style layer,
    its first `channels` channels, as a picture."""
    from visionkit.explain.features import feature_maps

    maps = feature_maps(subject.network, tensor, list(STYLE_LAYERS))
    out = []
    for name, values in maps.items():
        flat = torch.from_numpy(values[:channels]).flatten(1)
        gram = (flat @ flat.T / flat.shape[1]).numpy()
        out.append({"layer": name, "png": png_url(viridis(gram, float(gram.min()), float(gram.max()))),
                    "channels": int(gram.shape[0])})  # fmt: skip
    return out


def segmentation(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """The mask over the image, each class's probability map, the encoder/decoder skip connections, and FGSM
    against the predicted mask."""
    predictor = cast("SegmentationPredictor", subject.predictor)
    names, binary = subject.class_names, predictor.binary
    with torch.no_grad():
        scores = predictor.scores(tensor)[0].float().cpu()
    labels = scores.argmax(0)
    target = labels[None].to(tensor.device)

    def loss(images: Tensor) -> Tensor:
        logits = subject.network(images).float()
        if binary:
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="sum")
        return F.cross_entropy(logits, target, reduction="sum")

    def answer(images: Tensor, adversarial: np.ndarray) -> dict[str, Any]:
        found = predictor.scores(images)[0].argmax(0).cpu()
        agree = float((found == labels).float().mean())
        mask = shown_png(mask_overlay(adversarial, found.numpy()))
        return {"mask": mask, "label": f"{agree:.0%} of pixels as before", "confidence": agree, "flipped": agree < 0.9}

    probabilities = [
        {"name": names[c], "png": png_url(viridis(scores[c].numpy(), 0.0, 1.0))} for c in range(min(len(names), 12))
    ]
    decision = {
        "mask": png_url(mask_overlay(picture, labels.numpy())),
        "classes": [{"name": names[c], "pixels": int((labels == c).sum())} for c in range(len(names))],
        "probabilities": probabilities,
        "skips": skip_connections(subject, tensor),
    }
    return {"decision": decision, "fool": _fooled(subject, tensor, loss, answer)}


def skip_connections(subject: Subject, tensor: Tensor) -> dict[str, Any]:
    """The encoder's feature maps (as it hands them to the decoder) and the decoder blocks' outputs, each as its
    channel mean, and which encoder map each decoder block joins (the same height and width): a U-Net's skips."""
    network = subject.network
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    blocks = getattr(decoder, "blocks", None)
    if encoder is None or blocks is None:
        return {}
    outputs: list[Tensor] = []
    handles = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach())) for block in blocks]
    try:
        with torch.no_grad():
            features = [f.detach() for f in encoder(tensor)]
            network(tensor)
    finally:
        for handle in handles:
            handle.remove()

    def thumb(name: str, value: Tensor) -> dict[str, Any]:
        mean = value[0].float().mean(0).cpu().numpy()
        return {"name": name, "shape": list(value.shape[1:]), "png": png_url(viridis(mean, mean.min(), mean.max()))}

    encoded = [thumb(f"encoder stage {i}", f) for i, f in enumerate(features)]
    decoded = [thumb(f"decoder.blocks.{i}", out) for i, out in enumerate(outputs)]
    links = []
    for j, out in enumerate(outputs):  # a block's skip has the size of its output (it upsamples by 2 first)
        match = [i for i, f in enumerate(features[1:-1], 1) if f.shape[-2:] == out.shape[-2:]]
        if match:
            links.append([match[-1], j])
    return {"encoder": encoded, "decoder": decoded, "links": links}


def _levels(subject: DetectorSubject, tensor: Tensor) -> list[tuple[int, str]]:
    """(first anchor index past this level, its name) per detection level of a YOLO head."""
    head = yolo_head(subject.network)
    height, width = tensor.shape[-2:]
    ends, total = [], 0
    for index, stride in enumerate(cast(Tensor, head.stride).tolist()):
        total += int(height // stride) * int(width // stride)
        layer = head.f[index] if isinstance(head.f, list) else index
        ends.append((total, f"P{index + 3} (stride {int(stride)}, from model.{layer})"))
    return ends


def detection(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """The boxes, each with its feature level and Grad-CAM, and FGSM against the detected boxes (ultralytics'
    detection loss with them as the truth)."""
    assert isinstance(subject, DetectorSubject)
    names = subject.class_names
    found = subject.detections(tensor)
    levels = _levels(subject, tensor)
    cams = _cams(subject, tensor, picture, 10)
    boxes = []
    for index, (box, score, cls, anchor) in enumerate(found[:10]):
        level = next(name for end, name in levels if anchor < end)
        boxes.append({"box": list(box), "score": score, "name": names[cls], "level": level,
                      "cam": cams[index]["png"] if index < len(cams) else None})  # fmt: skip
    target = DetectorTarget(subject.predictor.model)
    truth = target.own_answers(tensor, subject.predictor.conf)
    loss = target.loss(truth)
    kept = truth["cls"]

    def answer(images: Tensor, _picture: np.ndarray) -> dict[str, Any]:
        now = subject.detections(images)
        shown = [{"box": list(b), "score": s, "name": names[c]} for b, s, c, _ in now if s >= subject.predictor.conf]
        best = float(max((s for _, s, _, _ in now), default=0.0))
        label = f"{len(shown)} box(es), {len(kept)} before"
        return {"boxes": shown, "label": label, "confidence": best, "flipped": len(shown) != len(kept)}

    return {"decision": {"boxes": boxes}, "fool": _fooled(subject, tensor, loss, answer)}


def embedding(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """The embedding (its values as a strip) with the Grad-CAMs of `EmbedderSubject`, and FGSM pushing the
    embedding away from its clean self: fooled once the distance passes the checkpoint's threshold (the
    network would then call the image someone else)."""
    with torch.no_grad():
        clean = subject.network(tensor)[0].float()
    threshold = float(getattr(subject.predictor, "threshold", float("nan")))

    def loss(images: Tensor) -> Tensor:  # the features before normalization along the clean direction: the
        return -(subject.cam_network(images).float() @ clean).sum()  # cosine itself has no gradient at its maximum

    def answer(images: Tensor, _picture: np.ndarray) -> dict[str, Any]:
        distance = float(1 - F.normalize(subject.network(images).float(), dim=1)[0] @ clean)
        return {"label": f"distance {distance:.3f} to the clean embedding", "confidence": 1 - distance,
                "flipped": bool(distance > threshold)}  # fmt: skip

    values = clean.cpu().numpy()
    scale = max(float(np.abs(values).max()), 1e-12)
    strip = viridis(np.repeat(values[None, :], 8, axis=0), -scale, scale)
    decision = {"strip": png_url(strip), "dim": len(values), "threshold": threshold,
                "cams": _cams(subject, tensor, picture, 2)}  # fmt: skip
    return {"decision": decision, "fool": _fooled(subject, tensor, loss, answer)}


DECISIONS: dict[str, Callable[[Subject, Tensor, np.ndarray], dict[str, Any]]] = {
    "classification": classification,
    "vgg19": classification,
    "multilabel": multilabel,
    "segmentation": segmentation,
    "detection": detection,
    "embedding": embedding,
}  # one row per subject kind: its decision panel and what FGSM does to it


def decision_and_fool(subject: Subject, tensor: Tensor, picture: np.ndarray) -> dict[str, Any]:
    """The row of DECISIONS for this subject."""
    return DECISIONS[subject.kind](subject, tensor, picture)
