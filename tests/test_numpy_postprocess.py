"""The NumPy post-processing of exported files (which predict without PyTorch) against the PyTorch originals on the
same inputs: NMS against ultralytics' `non_max_suppression` and torchvision's `batched_nms`, the array operations
against torch's, and tiled segmentation on NumPy against the same on tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from visionkit.inference.nms import batched_nms, yolo_nms
from visionkit.inference.tiling import class_ids, segment_image, segment_small
from visionkit.utils import arrays


def _decoded(seed: int, batch: int = 2, classes: int = 5, anchors: int = 3000) -> np.ndarray:
    """Decoded YOLO output (B, 4 + classes, anchors) with clusters of overlapping boxes, as a detector gives."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (batch, 40, 2))
    pick = rng.integers(0, 40, (batch, anchors))
    xy = np.take_along_axis(centres, pick[..., None], 1) + rng.normal(0, 6, (batch, anchors, 2))
    wh = rng.uniform(20, 160, (batch, anchors, 2))
    scores = rng.beta(0.3, 3.0, (batch, anchors, classes))  # most low, some high, ties impossible
    return np.concatenate([xy, wh, scores], 2).transpose(0, 2, 1).astype(np.float32)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize(("conf", "iou", "max_det"), [(0.25, 0.7, 300), (0.01, 0.5, 50), (0.001, 0.7, 300)])
def test_yolo_nms_keeps_what_ultralytics_keeps(conf: float, iou: float, max_det: int, multi_label: bool) -> None:
    from ultralytics.utils.nms import non_max_suppression

    decoded = _decoded(seed=int(conf * 1000) + multi_label)
    rows, anchors = yolo_nms(decoded, conf, iou, max_det, multi_label)
    expected, expected_anchors = non_max_suppression(
        torch.from_numpy(decoded),
        conf_thres=conf,
        iou_thres=iou,
        max_det=max_det,
        multi_label=multi_label,
        max_time_img=10.0,
        return_idxs=True,
    )
    for ours, theirs, ours_idx, theirs_idx in zip(rows, expected, anchors, expected_anchors):
        assert len(theirs) > 10  # enough boxes survive for the comparison to mean something
        # boxes of equal scores may come in either order (torchvision's sort is not stable): compare by anchor
        order, theirs_order = np.argsort(ours_idx), np.argsort(theirs_idx.numpy())
        np.testing.assert_array_equal(ours_idx[order], theirs_idx.numpy()[theirs_order])
        np.testing.assert_allclose(ours[order], theirs.numpy()[theirs_order], rtol=0, atol=1e-4)


def test_batched_nms_keeps_what_torchvision_keeps() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (400, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    classes = rng.integers(0, 4, 400)
    for iou in (0.3, 0.7):
        expected = torchvision.ops.batched_nms(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), iou
        )
        np.testing.assert_array_equal(batched_nms(boxes, scores, classes, iou), expected.numpy())
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.5).shape == (0,)


def test_array_operations_give_what_torch_gives_on_either_kind_of_array() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 30, (4, 6, 5, 5))).astype(np.float32)  # large logits: overflow would show
    tensor = torch.from_numpy(logits)
    checks = [
        (arrays.softmax(logits, 1), torch.softmax(tensor, 1)),
        (arrays.sigmoid(logits), torch.sigmoid(tensor)),
        (arrays.unit_rows(logits[:, :, 0, 0]), torch.nn.functional.normalize(tensor[:, :, 0, 0], dim=1)),
        (
            arrays.class_probabilities(logits[:, :1], True),
            torch.cat([1 - tensor[:, :1].sigmoid(), tensor[:, :1].sigmoid()], 1),
        ),
    ]
    for ours, theirs in checks:
        assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)
    on_tensors = arrays.class_probabilities(tensor, False)
    assert isinstance(on_tensors, torch.Tensor)
    np.testing.assert_allclose(arrays.to_numpy(on_tensors), arrays.class_probabilities(logits, False), atol=1e-6)
    assert arrays.to_numpy(tensor.bfloat16()).dtype == np.float32
    assert arrays.is_tensor(tensor) and not arrays.is_tensor(logits)


def test_tiled_segmentation_on_numpy_draws_what_it_draws_on_tensors() -> None:
    """The same scoring function (a fixed random 1x1 convolution and softmax) through both array kinds: tiles,
    overlap blending and the padding of small images agree pixel for pixel."""
    weight = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (4, 3, 1, 1)).astype(np.float32))

    def on_tensors(images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.nn.functional.conv2d(images, weight), 1)

    def on_numpy(images: np.ndarray) -> np.ndarray:
        return arrays.to_numpy(on_tensors(torch.from_numpy(images)))

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    tiled = {
        device: segment_image(fn, image, mean, std, tile=(64, 96), overlap=0.3, batch_size=3, device=device)
        for device, fn in ((None, on_numpy), ("cpu", on_tensors))
    }
    assert np.mean(tiled[None] == tiled["cpu"]) > 0.9999 and len(np.unique(tiled[None])) == 4
    small = [rng.integers(0, 256, (50, 40, 3), dtype=np.uint8), image[:64, :96]]
    numpy_small = segment_small(on_numpy, small, mean, std, (64, 96), device=None)
    torch_small = segment_small(on_tensors, small, mean, std, (64, 96), device="cpu")
    for ours, theirs in zip(numpy_small, torch_small):
        assert ours.shape == theirs.shape and np.mean(ours == theirs) > 0.999


@pytest.mark.parametrize("classes", [1, 2, 5, 40])
def test_class_ids_is_torchs_argmax_on_either_axis_ties_included(classes: int) -> None:
    """The plane-by-plane arg-max gives torch's answer, the first of equal maxima included (scores rounded to a
    few values so that ties are common), over the class axis of a batch and of a band."""
    scores = torch.from_numpy(np.round(np.random.default_rng(classes).random((3, classes, 17, 23)) * 4) / 4).float()
    np.testing.assert_array_equal(class_ids(scores.numpy(), axis=1), scores.argmax(1).numpy())
    np.testing.assert_array_equal(class_ids(scores, axis=1), scores.argmax(1).numpy())  # a tensor's values
    np.testing.assert_array_equal(class_ids(scores[0].numpy(), axis=0), scores[0].argmax(0).numpy())
    assert class_ids(scores.numpy(), axis=1).dtype == np.int32
