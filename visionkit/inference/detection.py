"""Detection inference: letterboxed batches through the fused YOLO network, NMS with ultralytics' predict
settings, boxes mapped back to each image's own pixels; results drawn, as JSON and as YOLO txt labels."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from visionkit.data.contract import SIZE_MULTIPLE
from visionkit.data.letterbox import Letterbox
from visionkit.inference.base import Predictor
from visionkit.inference.nms import batched_nms
from visionkit.inference.outputs import save_picture
from visionkit.inference.result import InputImage, Result
from visionkit.utils.arrays import to_numpy
from visionkit.utils.fonts import label_font
from visionkit.utils.io import atomic_write
from visionkit.utils.palette import box_colour


def _empty(columns: int, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros((0, columns) if columns else (0,), dtype=dtype)


@dataclass
class DetectionResult(Result):
    """Boxes found in one image. boxes: (K, 4) x1 y1 x2 y2 in the image's own pixels; scores: (K,);
    classes: (K,) class ids (names in `names`); anchors: (K,) the network output column each box came from (with
    the predictor's `anchors` option, else empty); track_ids: (K,) each box's track id when a tracker ran
    (`ObjectTracker`, video), else empty."""

    task: ClassVar[str] = "detection"
    boxes: np.ndarray = field(default_factory=lambda: _empty(4))
    scores: np.ndarray = field(default_factory=lambda: _empty(0))
    classes: np.ndarray = field(default_factory=lambda: _empty(0, np.int64))
    anchors: np.ndarray = field(default_factory=lambda: _empty(0, np.int64), repr=False)
    save_conf: bool = False  # `save` appends each box's score to its label line
    track_ids: np.ndarray = field(default_factory=lambda: _empty(0, np.int64))  # per box, when tracked (video)

    def __len__(self) -> int:
        return len(self.boxes)

    def detections(self) -> list[dict[str, Any]]:
        """Per box: class id and name, confidence, `box_xyxy` in pixels and `box_xywhn` (YOLO, normalized)."""
        height, width = self.size
        out = []
        for (x1, y1, x2, y2), score, cls in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist()):
            centre_w = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
            out.append(
                {
                    "class_id": int(cls),
                    "class": self.names[int(cls)],
                    "confidence": round(float(score), 5),
                    "box_xyxy": [round(v, 2) for v in (x1, y1, x2, y2)],
                    "box_xywhn": [round(v, 6) for v in centre_w],
                }
            )
        for det, track_id in zip(out, self.track_ids.tolist()):
            det["track_id"] = int(track_id)
        return out

    def fields(self) -> dict[str, Any]:
        return {"detections": self.detections() if self.ok else []}

    def yolo_lines(self, save_conf: bool | None = None) -> list[str]:
        """The boxes as YOLO label lines `class cx cy w h` (normalized; the score appended with save_conf)."""
        save_conf = self.save_conf if save_conf is None else save_conf
        lines = []
        for det in self.detections():
            fields = [str(det["class_id"]), *(f"{v:.6f}" for v in det["box_xywhn"])]
            lines.append(" ".join(fields + ([f"{det['confidence']:.5f}"] if save_conf else [])))
        return lines

    def plot(self) -> np.ndarray:
        """The image with each box outlined in its class colour and labelled `class score` (`#id class score`
        when tracked)."""
        texts = [f"{self.names[int(c)]} {s:.2f}" for c, s in zip(self.classes.tolist(), self.scores.tolist())]
        return self.drawn(texts, [box_colour(int(c)) for c in self.classes.tolist()])

    def drawn(self, texts: list[str], colours: list[tuple[int, int, int]]) -> np.ndarray:
        """The image with each box outlined in its colour and labelled with its text (after `#id ` when tracked)."""
        canvas = Image.fromarray(self.original)
        draw = ImageDraw.Draw(canvas)
        thickness = max(1, round(max(canvas.size) / 300))
        font = label_font(max(10, round(max(canvas.size) / 40)), texts)
        ids = [f"#{i} " for i in self.track_ids.tolist()] if len(self.track_ids) else [""] * len(self.boxes)
        for (x1, y1, x2, y2), label, colour, track in zip(self.boxes.tolist(), texts, colours, ids):
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=thickness)
            text = f"{track}{label}"
            left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
            lift = bottom - top + 2
            y_text = y1 - lift if y1 - lift >= 0 else y1
            draw.rectangle([x1, y_text, x1 + right - left + 4, y_text + lift], fill=colour)
            draw.text((x1 + 2, y_text), text, fill=(255, 255, 255), font=font)
        return np.asarray(canvas)

    def save(self, folder: str | os.PathLike[str], name: str | None = None, draw: bool = True) -> list[Path]:
        """`labels/<name>.txt` (YOLO format, usable as training labels unless `save_conf`) and, with `draw`,
        `images/<name>` with the boxes drawn."""
        if not self.ok:
            return []
        folder, name = Path(folder), self.file_name(name)
        lines = self.yolo_lines()
        label = (folder / "labels" / name).with_suffix(".txt")
        with atomic_write(label, "w") as handle:
            handle.write("\n".join(lines) + ("\n" if lines else ""))
        return [label, save_picture(self.plot(), folder / "images" / name)] if draw else [label]


def boxes_in_image(
    found: np.ndarray, letterbox: Letterbox, height: int, width: int, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """(K, 6) NMS output rows (x1 y1 x2 y2 score class, input pixels) in the image's own pixels, clipped to it,
    and the indices of the rows kept. NMS saw the boxes before clipping: at a low `conf` boxes far larger than
    the picture overlap little there (IoU < `iou`) yet become one and the same box once clipped (nine identical
    full-frame boxes of one class on a video frame at conf=0.001), so NMS runs again on the clipped boxes. When no
    box touches the picture's edge none was clipped, and IoU, unchanged by scaling and shifting, is as NMS saw it."""
    placed = np.concatenate([letterbox.to_image(found[:, :4], height, width), found[:, 4:6]], axis=1)
    kept = np.arange(len(placed))
    xs, ys = placed[:, 0:4:2], placed[:, 1:4:2]
    if len(placed) > 1 and ((xs <= 0).any() or (xs >= width).any() or (ys <= 0).any() or (ys >= height).any()):
        kept = batched_nms(placed[:, :4], placed[:, 4], placed[:, 5], iou)
    return placed[kept], kept


class DetectionPredictor(Predictor):
    """Boxes per image from a DetectionTask checkpoint.

    conf, iou, max_det: NMS settings (ultralytics' predict defaults 0.25, 0.7, 300); one class per box.
    save_conf: results' `save` appends the score to each YOLO label line (then it is no longer a training label).
    anchors: also give each box's network output column (`DetectionResult.anchors`; explain's Grad-CAM uses it).
    fuse: fold BatchNorm into the convolutions (same boxes, about a third faster; off for explain, which names
    the unfused layers); in float32 on the CPU also hand each convolution to oneDNN with its SiLU fused
    (`visionkit.models.onednn`: the batch-16 forward about 0.8x the time).
    rect: rectangular inference, as ultralytics' predictor for a .pt and a dynamic export (not a fixed one): a
    picture is padded only to the next multiple of 32 on its short side, so a 4:3 picture at 640 runs 640 x 480
    and a 16:9 one 640 x 384 (the network 1.3x and 1.6x as fast); a batch of several shapes runs at the largest.
    False, or a file exported with a fixed size: every picture padded to the square training size.
    """

    task_name = "detection"
    finds_boxes = True
    default_size = 640

    def __init__(
        self,
        model: Any,
        contract: Any,
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        save_conf: bool = False,
        fuse: bool = True,
        anchors: bool = False,
        rect: bool = True,
        **common: Any,
    ) -> None:
        self.conf, self.iou, self.max_det, self.fuse = float(conf), float(iou), int(max_det), fuse
        self.save_conf, self.anchors = save_conf, anchors
        self.cpu_form: dict[int, str] = {}  # {batch size: the network form measured fastest there} (CPU, fp32)
        super().__init__(model, contract.with_resize("letterbox"), **common)
        self.rect = bool(rect) and (not self.exported or self.model.any_size)  # a fixed-size file takes its size

    def prepare(self, model: Any) -> Any:
        """Fused, frozen, with in-place activations: each conv's output feeds only its activation, so SiLU may
        overwrite it (same boxes; the batch-16 forward 8 % faster on 2 CPU cores, and 3 % more with weights that
        need no gradient, measured; ultralytics' loader does both). Each Conv gets its own SiLU: ultralytics shares
        one instance between all its models, which training must not see in place. In bf16/fp16 the head decodes
        its boxes in float32 (`decode_boxes_in_float32`: bf16 alone moved them by up to 6 px on 640 px images)."""
        if self.exported:  # an exported graph: fused and laid out when it was written
            return model
        import torch

        from visionkit.models.yolo import decode_boxes_in_float32

        if self.precision != "fp32":
            decode_boxes_in_float32(model.model)
        if not self.fuse:
            return model
        model.fuse_for_inference().requires_grad_(False)
        for module in model.modules():
            if type(getattr(module, "act", None)) is torch.nn.SiLU:
                module.act = torch.nn.SiLU(inplace=True)
        if self.on_cpu and self.precision == "fp32":  # bf16 runs under autocast, which these skip
            model.model = self.fastest_cpu_form(model.model)
        return model

    def fastest_cpu_form(self, network: Any) -> Any:
        """The form of the fused network that runs fastest on this CPU, timed at batch 1 and at the batch size:
        channels-last (what `fuse_for_inference` gives), contiguous (ultralytics' own), or each Conv block handed
        to oneDNN packed with its SiLU fused (`fuse_onednn`; kept only when its output matches). Packing made the
        forward 0.83x as long on an Intel Xeon with AMX and 12x as long on an AMD EPYC: no form is right for
        every CPU, so the choice is measured (and logged) here."""
        import torch
        from ultralytics.nn.modules.conv import Conv

        from visionkit.models.fastest import fastest_form
        from visionkit.models.onednn import fuse_onednn

        def probe(batch: int) -> torch.Tensor:
            return torch.rand(batch, 3, *self.contract.image_size)

        forms = {"channels-last": network}
        forms["contiguous"] = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
        packed = fuse_onednn(network, lambda m: isinstance(m, Conv) and not hasattr(m, "bn"), probe(1))
        if packed is not network:
            forms["oneDNN-packed"] = packed
        chosen, self.cpu_form = fastest_form(forms, probe, [1, self.batch_size], what="detector forward")
        return chosen

    def detect(self, images: Any) -> tuple[list[Any], list[Any] | None]:
        """(per image (K, 6) rows x1 y1 x2 y2 score class in input pixels, per image the anchor of each box or
        None when `anchors` is off: keeping them costs NMS a few percent); tensors, or NumPy for an exported
        file."""
        found = self.model.detect(
            images, conf=self.conf, iou=self.iou, max_det=self.max_det, multi_label=False, return_anchors=self.anchors
        )
        return found if self.anchors else (found, None)

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray:
        return self.resize(pixels)

    def letterbox(self, height: int, width: int) -> Letterbox:
        """Where a picture of `height` x `width` lands in the network input (`rect`: the smallest input of
        multiples of 32 that holds it, else the training size)."""
        return Letterbox.fit(height, width, self.contract.image_size, SIZE_MULTIPLE if self.rect else None)

    def resize(self, pixels: np.ndarray) -> np.ndarray:
        """The picture letterboxed into its network input (see `letterbox`; into the training size, the pixels
        are those of the `letterbox` resize mode)."""
        return self.letterbox(*pixels.shape[:2]).place(pixels, self.fill)

    def batch_input(self, items: list[InputImage]) -> tuple[list[np.ndarray], list[Letterbox]]:
        """The batch's network pictures and each one's letterbox; pictures of several shapes are each centred
        in the largest height and width among them."""
        pictures = self.resized(items)
        boxes = [self.letterbox(*item.rgb.shape[:2]) for item in items]
        shape = (max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures))
        if all(p.shape[:2] == shape for p in pictures):
            return pictures, boxes
        return [box.widen(p, shape, self.fill) for box, p in zip(boxes, pictures)], [b.within(shape) for b in boxes]

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        pictures, letterboxes = self.batch_input(items)
        boxes, anchors = self.detect(self.to_network(pictures))
        results: list[Result] = []
        for item, found, anchor, letterbox in zip(items, boxes, anchors or [None] * len(items), letterboxes):
            height, width = item.rgb.shape[:2]
            array, kept = boxes_in_image(to_numpy(found).astype(np.float32), letterbox, height, width, self.iou)
            results.append(
                DetectionResult(
                    **self.common(item),
                    boxes=array[:, :4].astype(np.float32),
                    scores=array[:, 4].astype(np.float32),
                    classes=array[:, 5].astype(np.int64),
                    anchors=_empty(0, np.int64) if anchor is None else to_numpy(anchor)[kept].astype(np.int64),
                    save_conf=self.save_conf,
                )
            )
        return results

    def skipped(self, item: InputImage) -> Result:
        return DetectionResult(source=item.source, size=(0, 0), names=self.names, error=item.error)
