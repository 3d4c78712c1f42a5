"""Detection weights in and out: ultralytics .pt loading (strict, transfer, freeze), exports, predict files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import TrainedDetector, compose_config
from visionkit.data.sources.yolo import parse_label_file
from visionkit.errors import VisionkitError
from visionkit.export import build_graph, export_onnx, export_ultralytics
from visionkit.inference import load_predictor
from visionkit.models.yolo import prepare_ultralytics
from visionkit.run import export, predict
from visionkit.tasks import DetectionTask


def _ultralytics_pt(path: Path, arch: str = "yolov8n.yaml") -> Path:
    """A checkpoint written by ultralytics itself (YOLO(...).save), 80 COCO-sized classes, fp16 as it stores them."""
    prepare_ultralytics()
    from ultralytics import YOLO

    YOLO(arch).save(path)
    return path


def test_ultralytics_pt_loads_with_every_tensor_matching(tmp_path: Path) -> None:
    pt = _ultralytics_pt(tmp_path / "yolov8n.pt")
    saved = torch.load(pt, map_location="cpu", weights_only=False)["model"].float().state_dict()
    task = DetectionTask("yolov8n.yaml", num_classes=80, weights=str(pt))
    ours = task.model.state_dict()
    assert set(ours) == set(saved)
    for key, value in saved.items():
        assert torch.equal(ours[key], value), key
    assert "weights" not in task.hparams  # the file is not needed to reload a checkpoint of this task


def test_transfer_to_new_classes_keeps_all_but_the_class_head_and_freezes(tmp_path: Path) -> None:
    pt = _ultralytics_pt(tmp_path / "yolov8n.pt")
    saved = torch.load(pt, map_location="cpu", weights_only=False)["model"].float().state_dict()
    task = DetectionTask("yolov8n.yaml", num_classes=4, weights=str(pt), freeze=10)
    ours = task.model.state_dict()
    changed = [k for k in ours if ours[k].shape != saved[k].shape or not torch.equal(ours[k], saved[k])]
    assert changed and all(".cv3." in k for k in changed)  # only the class branch of the head starts fresh
    assert all(".cv3." not in k or k.startswith("model.22.") for k in changed)
    frozen = {n for n, p in task.model.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if not n.startswith(tuple(f"model.{i}." for i in range(10)))} <= {
        n for n in frozen if ".dfl." in n
    }
    assert any(n.startswith("model.9.") for n in frozen) and not any(n.startswith("model.10.") for n in frozen)

    # a training step moves only unfrozen weights, and frozen BatchNorm keeps its statistics
    before = copy.deepcopy(task.model.state_dict())
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-2)
    task.train()
    task.model.criterion = task.model.init_criterion()
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.4, 0.6, 0.2, 0.4]]),
    }
    task.model.loss(batch)[0].sum().backward()
    optimizer.step()
    after = task.model.state_dict()
    assert torch.equal(after["model.0.conv.weight"], before["model.0.conv.weight"])
    assert torch.equal(after["model.0.bn.running_mean"], before["model.0.bn.running_mean"])
    assert not torch.equal(after["model.12.cv1.conv.weight"], before["model.12.cv1.conv.weight"])


def test_bad_weights_get_clear_errors(tmp_path: Path) -> None:
    pt = _ultralytics_pt(tmp_path / "yolov8n.pt")
    with pytest.raises(VisionkitError, match=r"does not fit model.arch=yolo11n.yaml"):
        DetectionTask("yolo11n.yaml", num_classes=80, weights=str(pt))
    with pytest.raises(VisionkitError, match=r"yolov8s.pt not found .*download/yolov8s.pt.*model.weights=/path"):
        DetectionTask("yolov8s.yaml", num_classes=80, weights="yolov8s.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(pt.read_bytes()[:5000])
    with pytest.raises(VisionkitError, match=r"broken.pt is not a readable ultralytics checkpoint"):
        DetectionTask("yolov8n.yaml", num_classes=80, weights=str(broken))
    with pytest.raises(VisionkitError, match=r"freeze=40: choose 0..22 \(the network has 23 layers\)"):
        DetectionTask("yolov8n.yaml", num_classes=3, freeze=40)


def _test_images(trained: TrainedDetector) -> list[str]:
    return sorted(str(p) for p in (trained.data_yaml.parent / "images" / "test").glob("*.png"))


def test_predict_writes_annotated_images_json_and_yolo_labels(
    trained_detector: TrainedDetector, tmp_path: Path
) -> None:
    images = _test_images(trained_detector)
    source = tmp_path / "photos"
    source.mkdir()
    for path in images[:6]:
        (source / Path(path).name).write_bytes(Path(path).read_bytes())
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    cfg = compose_config(
        tmp_path / "out",
        [f"ckpt_path={trained_detector.ckpt}", f"source={source}", "conf=0.1", "num_workers=0"],
        name="predict",
    )
    result = predict(cfg)
    out = tmp_path / "out"
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["path"]).name for r in records] == sorted(before) and result["images"] == 6
    assert result["objects"] == sum(len(r["detections"]) for r in records) > 0
    for record in records:
        label = out / "labels" / (Path(record["path"]).stem + ".txt")
        rows = parse_label_file(label, num_classes=4)  # our predictions are valid YOLO training labels
        assert len(rows) == len(record["detections"])
        for det in record["detections"]:
            assert (
                det["confidence"] >= 0.1 and det["class"] == ["circle", "square", "triangle", "cross"][det["class_id"]]
            )
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"]
        assert (out / "images" / Path(record["path"]).name).is_file()
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # inputs untouched


def _largest_box_difference(mine: list[list[dict]], theirs: list) -> float:
    """The largest coordinate difference (pixels) between our detections and ultralytics' results, image by image;
    infinite when the boxes or their classes differ. Ours suppresses boxes that coincide once clipped to the image
    (ultralytics keeps them): the same NMS is applied to their clipped boxes first."""
    largest, compared = 0.0, 0
    for detections, result in zip(mine, theirs, strict=True):
        boxes = result.boxes
        kept = torchvision.ops.batched_nms(boxes.xyxy, boxes.conf, boxes.cls, 0.7).numpy()
        if len(detections) != len(kept) or [d["class_id"] for d in detections] != boxes.cls.numpy()[kept].tolist():
            return float("inf")
        if len(detections):
            largest = max(
                largest, float(np.abs(np.array([d["box_xyxy"] for d in detections]) - boxes.xyxy.numpy()[kept]).max())
            )
        compared += len(detections)
    assert compared >= 5
    return largest


def test_ultralytics_export_predicts_the_same_boxes_and_validates(
    trained_detector: TrainedDetector, tmp_path: Path
) -> None:
    prepare_ultralytics()
    from ultralytics import YOLO

    images = _test_images(trained_detector)[:8]
    cfg = compose_config(
        tmp_path / "export", [f"ckpt_path={trained_detector.ckpt}", "formats=[ultralytics,onnx]"], "export"
    )
    assert export(cfg) == {"files": 2.0}
    pt = tmp_path / "export" / "model.pt"
    model = YOLO(str(pt))
    assert model.names == {0: "circle", 1: "square", 2: "triangle", 3: "cross"}

    source = tmp_path / "photos"
    source.mkdir()
    for path in images:
        (source / Path(path).name).write_bytes(Path(path).read_bytes())
    ours = compose_config(
        tmp_path / "ours",
        [f"ckpt_path={trained_detector.ckpt}", f"source={source}", "num_workers=0", "conf=0.05"],
        "predict",
    )
    predict(ours)
    records = {Path(r["path"]).name: r for r in json.loads((tmp_path / "ours" / "predictions.json").read_text())}
    theirs = model.predict([str(source / n) for n in sorted(records)], imgsz=128, conf=0.05, iou=0.7, verbose=False)
    assert _largest_box_difference([records[n]["detections"] for n in sorted(records)], theirs) < 0.5

    # pictures that are not square: ultralytics' predictor pads them only to multiples of 32 (128 x 96 here), as
    # visionkit's `rect` does by default; padded to the square instead, the boxes move
    import cv2

    crops = [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)[16:112] for path in images]
    theirs = model.predict([crop[:, :, ::-1] for crop in crops], imgsz=128, conf=0.05, iou=0.7, verbose=False)
    assert theirs[0].orig_shape == (96, 128)
    for rect, agrees in ((True, True), (False, False)):
        mine = load_predictor(trained_detector.ckpt, conf=0.05, rect=rect, batch_size=1)(crops)
        difference = _largest_box_difference([r.detections() for r in mine], theirs)
        assert (difference < 0.5) == agrees, f"rect={rect}: boxes {difference:.2f} px from ultralytics'"

    metrics = model.val(
        data=str(trained_detector.data_yaml), imgsz=128, batch=8, split="test", plots=False, verbose=False
    )
    assert 0.0 < metrics.box.map50 <= 1.0


def test_rectangular_inference_pads_to_multiples_of_32_and_mixed_batches_to_their_largest(
    trained_detector: TrainedDetector,
) -> None:
    import albumentations as A
    import cv2

    from visionkit.data.augment import resize_ops
    from visionkit.data.letterbox import Letterbox

    for height, width in ((480, 640), (333, 500), (1000, 700), (100, 30), (64, 64)):  # the square: as training
        picture = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = A.Compose(resize_ops(640, "letterbox"))(image=picture)["image"]
        assert np.array_equal(Letterbox.fit(height, width, 640).place(picture, 114), expected)
    box = Letterbox.fit(333, 500, 640, 32)
    assert box.shape == (448, 640) and (box.left, box.top) == (0, 11)  # 425 rows of picture, padded to 448
    assert box.within((640, 640)) == Letterbox.fit(333, 500, 640)  # centred in the square: the square letterbox

    wide, tall = (cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in _test_images(trained_detector)[:2])
    wide, tall = wide[16:112], tall[:, 24:104]  # 96 x 128 and 128 x 80
    rect = load_predictor(trained_detector.ckpt, conf=0.05, batch_size=2)
    square = load_predictor(trained_detector.ckpt, conf=0.05, batch_size=2, rect=False)
    assert rect.resize(wide).shape == (96, 128, 3) and square.resize(wide).shape == (128, 128, 3)
    # two shapes in one batch: each centred in the largest (128 x 128 here), which is the square letterbox
    for mine, padded in zip(rect([wide, tall]), square([wide, tall]), strict=True):
        assert np.array_equal(mine.boxes, padded.boxes) and np.array_equal(mine.classes, padded.classes)
    # one shape: each picture runs at its own rectangle, alone or batched
    together = rect([wide, wide[:, ::-1]])
    alone = [rect([wide])[0], rect([wide[:, ::-1]])[0]]
    assert sum(len(r.boxes) for r in together) > 0
    for mine, single in zip(together, alone, strict=True):
        assert np.abs(mine.boxes - single.boxes).max(initial=0) < 1e-3


def test_onnx_export_matches_the_network(trained_detector: TrainedDetector, tmp_path: Path) -> None:
    import onnxruntime

    path = export_onnx(build_graph(trained_detector.task, {}, 128), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path))
    images = torch.rand(2, 3, 160, 96)  # other batch and size than the example input
    (output,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = trained_detector.task.model(images)[0].numpy()
    assert output.shape == expected.shape == (2, 8, 20 * 12 + 10 * 6 + 5 * 3)  # anchors at strides 8, 16, 32
    assert np.abs(output - expected).max() < 1e-3 * max(1.0, float(np.abs(expected).max()))
    with pytest.raises(VisionkitError, match="format=ultralytics is for detection checkpoints"):
        from visionkit.tasks import ClassificationTask

        export_ultralytics(ClassificationTask("lenet5", num_classes=3), tmp_path / "x.pt", 28)


def test_boxes_that_become_one_when_clipped_to_the_image_are_suppressed() -> None:
    """A crafted head output at conf 0.001: three boxes of class 0 much larger than a 64 px input, overlapping
    little in the network's pixels (so NMS keeps them), each covering the whole picture once clipped; and a fourth
    box elsewhere. The video's frame 0 had nine identical full-frame boxes this way."""
    from ultralytics.utils.nms import non_max_suppression

    from visionkit.data.letterbox import Letterbox
    from visionkit.inference.detection import boxes_in_image

    # columns: cx cy w h (input pixels), then one score per class (2 classes)
    rows = [
        [-700.0, 32.0, 1600.0, 200.0, 0.30, 0.01],  # x -1500..100
        [32.0, 32.0, 200.0, 200.0, 0.20, 0.01],  # x -68..132
        [900.0, 32.0, 1900.0, 200.0, 0.10, 0.01],  # x -50..1850
        [20.0, 20.0, 8.0, 8.0, 0.01, 0.50],  # a small box of class 1
    ]
    head = torch.tensor(rows).T[None]  # (1, 4 + classes, anchors), what the YOLO head gives
    found = non_max_suppression(head, conf_thres=0.001, iou_thres=0.7, multi_label=False)[0].numpy()
    assert len(found) == 4  # NMS in the network's pixels keeps the three large boxes
    clipped = Letterbox.fit(64, 64, 64).to_image(found[:, :4], 64, 64)
    large = found[:, 5] == 0
    assert large.sum() == 3 and np.abs(clipped[large] - [0, 0, 64, 64]).max() < 1e-6  # all the whole picture
    placed, kept = boxes_in_image(found, Letterbox.fit(64, 64, 64), 64, 64, iou=0.7)
    assert len(kept) == 2 and found[kept[1], 4] == pytest.approx(0.30)  # the surest of the three stays
    assert sorted(placed[:, 5].tolist()) == [0.0, 1.0] and placed[placed[:, 5] == 0][0, 4] == pytest.approx(0.30)


def test_boxes_inside_the_picture_keep_what_nms_kept_in_the_network_pixels() -> None:
    """IoU does not change when boxes are scaled and shifted: boxes that the letterbox maps inside the picture
    (none clipped) keep every row NMS kept, as NMS run again on them would (`boxes_in_image` skips that run)."""
    from ultralytics.utils.nms import non_max_suppression

    from visionkit.data.letterbox import Letterbox
    from visionkit.inference.detection import boxes_in_image
    from visionkit.inference.nms import batched_nms

    rng = np.random.default_rng(3)
    for _ in range(5):  # a 640 x 480 picture letterboxed into 320 px: content rows 40..280 of the input
        centres = rng.uniform([60, 100], [260, 220], (400, 2))
        sizes = rng.uniform(8, 70, (400, 2))
        scores = rng.beta(0.5, 2.0, (400, 3))
        head = torch.tensor(np.concatenate([centres, sizes, scores], 1).T[None], dtype=torch.float32)
        found = non_max_suppression(head, conf_thres=0.05, iou_thres=0.5)[0].numpy()
        letterbox = Letterbox.fit(480, 640, 320)
        placed, kept = boxes_in_image(found, letterbox, 480, 640, iou=0.5)
        inside = (placed[:, :4] > 0).all() and (placed[:, 0:4:2] < 640).all() and (placed[:, 1:4:2] < 480).all()
        assert len(found) > 20 and inside
        np.testing.assert_array_equal(kept, np.arange(len(found)))
        np.testing.assert_array_equal(np.sort(batched_nms(placed[:, :4], placed[:, 4], placed[:, 5], 0.5)), kept)
