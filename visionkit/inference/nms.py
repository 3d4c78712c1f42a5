"""Non-maximum suppression in NumPy, for detectors run from an exported file (where PyTorch may not be installed):
the same rules as ultralytics' `non_max_suppression` (boxes above `conf`, the best class per box, at most
30,000 candidates by score, classes kept apart by an offset, torchvision's greedy NMS, `max_det` kept), and
torchvision's `batched_nms` for boxes already in image pixels. Tests check both against the originals."""

from __future__ import annotations

import numpy as np

MAX_CANDIDATES = 30000  # ultralytics' max_nms: the highest-scoring boxes NMS looks at
CLASS_OFFSET = 7680.0  # ultralytics' max_wh: moves each class's boxes apart so they never overlap another's


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Indices of the boxes (N, 4) x1 y1 x2 y2 kept by greedy NMS, highest score first: a box goes when its IoU
    with a kept, higher-scoring box is above `iou` (torchvision.ops.nms). `limit`: stop after that many are kept
    (the first `limit` of the full answer, found without looking at the rest: a detector keeps `max_det`)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    kept: list[int] = []
    with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0/0, not above any threshold
        while order.size and (limit is None or len(kept) < limit):
            first, rest = order[0], order[1:]
            kept.append(int(first))
            if not rest.size:
                break
            width = np.maximum(np.minimum(x2[first], x2[rest]) - np.maximum(x1[first], x1[rest]), 0)
            height = np.maximum(np.minimum(y2[first], y2[rest]) - np.maximum(y1[first], y1[rest]), 0)
            overlap = width * height
            ious = overlap / (areas[first] + areas[rest] - overlap)
            order = rest[~(ious > iou)]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """`nms` within each class (torchvision.ops.batched_nms): indices kept, highest score first."""
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    offsets = classes.astype(np.float64)[:, None] * (float(boxes.max()) + 1.0)
    return nms(boxes.astype(np.float64) + offsets, scores, iou)


def yolo_nms(
    decoded: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image of decoded YOLO output (B, 4 + classes, anchors: centre x, y, width, height, class scores):
    (K, 6) float32 rows x1 y1 x2 y2 score class after NMS, and the anchor each row came from."""
    rows_per_image, anchors_per_image = [], []
    decoded = decoded.astype(np.float32, copy=False)
    classes = decoded.shape[1] - 4
    multi_label = multi_label and classes > 1
    if not multi_label:  # the best score of every anchor of the batch at once: fewer calls per image
        best_score = decoded[:, 4:].max(1)
    for index, prediction in enumerate(decoded):
        if multi_label:
            scores = prediction[4:].T  # (anchors, classes)
            anchor, cls = np.nonzero(scores > conf)
            score = scores[anchor, cls]
        else:  # the best class of the anchors above `conf` only (an argmax over all 8,400 costs a tenth of a ms)
            anchor = np.flatnonzero(best_score[index] > conf)
            cls, score = prediction[4:, anchor].argmax(0), best_score[index, anchor]
        if len(anchor) > MAX_CANDIDATES:
            best = np.argsort(-score, kind="stable")[:MAX_CANDIDATES]
            anchor, cls, score = anchor[best], cls[best], score[best]
        boxes = _xyxy(prediction[:4, anchor].T)  # the candidates' boxes only
        kept = nms(boxes + (cls[:, None] * CLASS_OFFSET).astype(np.float32), score, iou, limit=max_det)
        rows = np.concatenate([boxes[kept], score[kept, None], cls[kept, None].astype(np.float32)], 1)
        rows_per_image.append(rows.astype(np.float32))
        anchors_per_image.append(anchor[kept].astype(np.int64))
    return rows_per_image, anchors_per_image


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, y, width, height as x1 y1 x2 y2."""
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], 1)
