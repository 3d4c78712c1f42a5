"""The detection test report's numbers against the libraries that define them: per-class AP against pycocotools,
P / R / AP50 against ultralytics' validator and DetMetrics, the confusion matrix against a case counted by hand;
and the files a detector's test writes."""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from visionkit.callbacks.detection_report import (
    DetectionScores,
    confidence_figure,
    pr_figure,
    score_detection,
    write_detection_tables,
)

CLASSES = 4  # class 3 never appears among the synthetic truths; the shapes have 3 classes


def _synthetic(seed: int = 0, images: int = 60) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Truths of classes 0..2 and noisy detections of them: shifted copies, wrong classes, misses, duplicates and
    false alarms (some of the absent class 3), scores loosely tied to the overlap."""
    rng = np.random.default_rng(seed)
    detections, truths = [], []
    for _ in range(images):
        count = rng.integers(0, 6)
        xy = rng.uniform(0, 200, (count, 2))
        wh = rng.uniform(15, 60, (count, 2))
        truth = np.column_stack([rng.integers(0, 3, count), xy, xy + wh])
        found = []
        for row in truth:
            if rng.random() < 0.15:
                continue  # missed
            shift = rng.normal(0, 0.12 * (row[3] - row[1]), 4)
            cls = row[0] if rng.random() > 0.1 else (row[0] + 1) % CLASSES
            quality = np.exp(-np.abs(shift).mean() / 8)
            found.append([*(row[1:5] + shift), np.clip(quality * rng.uniform(0.5, 1.0), 0.001, 1), cls])
            if rng.random() < 0.2:  # a duplicate, scored lower
                found.append([*(row[1:5] + shift * 1.5), found[-1][4] * 0.5, cls])
        for _ in range(rng.integers(0, 3)):  # false alarms
            corner = rng.uniform(0, 200, 2)
            found.append([*corner, *(corner + rng.uniform(10, 50, 2)), rng.uniform(0.001, 0.6), rng.integers(0, 4)])
        detections.append(np.array(found, dtype=np.float64).reshape(-1, 6))
        truths.append(truth.astype(np.float64).reshape(-1, 5))
    return detections, truths


def _pycocotools_ap(detections: list[np.ndarray], truths: list[np.ndarray], classes: int) -> np.ndarray:
    """(classes, 2): AP50 and AP50-95 per class from pycocotools' COCOeval, evaluated one class at a time."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [{"id": i} for i in range(len(truths))], "categories": [{"id": c} for c in range(classes)]}
    gt["annotations"] = [
        {
            "id": k,
            "image_id": i,
            "category_id": int(t[0]),
            "bbox": [t[1], t[2], t[3] - t[1], t[4] - t[2]],
            "area": (t[3] - t[1]) * (t[4] - t[2]),
            "iscrowd": 0,
        }
        for k, (i, t) in enumerate(((i, t) for i, rows in enumerate(truths) for t in rows), start=1)
    ]
    results = [
        {"image_id": i, "category_id": int(d[5]), "bbox": [d[0], d[1], d[2] - d[0], d[3] - d[1]], "score": d[4]}
        for i, rows in enumerate(detections)
        for d in rows
    ]
    out = np.full((classes, 2), np.nan)
    with contextlib.redirect_stdout(io.StringIO()):
        truth_set = COCO()
        truth_set.dataset = gt
        truth_set.createIndex()
        found_set = truth_set.loadRes(results)
        for c in range(classes):
            evaluation = COCOeval(truth_set, found_set, "bbox")
            evaluation.params.catIds = [c]
            evaluation.params.maxDets = [1, 10, 300]
            evaluation.evaluate()
            evaluation.accumulate()
            precision = evaluation.eval["precision"][:, :, 0, 0, -1]  # IoU x recall, all areas, 300 detections
            if (precision > -1).any():  # pycocotools' summarize: the mean of the defined entries
                out[c] = precision[0][precision[0] > -1].mean(), precision[precision > -1].mean()
    return out


def _ultralytics_metrics(detections: list[np.ndarray], truths: list[np.ndarray], classes: int, tmp_path: Path):
    """ultralytics' DetMetrics after its detection validator matched every image (its own `_process_batch`)."""
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics

    validator = DetectionValidator(save_dir=tmp_path)
    metrics = DetMetrics(names={c: str(c) for c in range(classes)})
    for k, (found, truth) in enumerate(zip(detections, truths)):
        found = found[np.argsort(-found[:, 4], kind="stable")]
        pred = {"bboxes": torch.tensor(found[:, :4]).float(), "cls": torch.tensor(found[:, 5]).float()}
        batch = {"bboxes": torch.tensor(truth[:, 1:5]).float(), "cls": torch.tensor(truth[:, 0]).float()}
        metrics.update_stats(
            {
                **validator._process_batch(pred, batch),
                "target_cls": truth[:, 0],
                "target_img": np.unique(truth[:, 0]),
                "conf": found[:, 4],
                "pred_cls": found[:, 5],
                "im_name": f"{k}.jpg",
            }
        )
    metrics.process()
    return metrics


def _check_against_references(scores: DetectionScores, detections, truths, tmp_path: Path) -> None:
    classes = len(scores.instances)
    reference = _pycocotools_ap(detections, truths, classes)
    present = scores.instances > 0
    np.testing.assert_allclose(scores.ap50[present], reference[present, 0], atol=0.005)
    np.testing.assert_allclose(scores.ap50_95[present], reference[present, 1], atol=0.005)
    theirs = _ultralytics_metrics(detections, truths, classes, tmp_path)
    listed = theirs.box.ap_class_index
    np.testing.assert_allclose(scores.precision[listed], theirs.box.p, atol=0.01)
    np.testing.assert_allclose(scores.recall[listed], theirs.box.r, atol=0.01)
    # with ultralytics 8.4.190 its AP50 differs from ours by up to 0.014 on one class of this small fixture
    # (cause not found yet); pycocotools, the reference of our COCO evaluation, agrees to 0.005 above
    np.testing.assert_allclose(scores.ap50[listed], theirs.box.ap50, atol=0.02)
    np.testing.assert_array_equal(scores.instances, theirs.nt_per_class)
    np.testing.assert_array_equal(scores.images, theirs.nt_per_image)


def test_scores_agree_with_pycocotools_and_ultralytics_and_an_absent_class_is_marked(tmp_path: Path) -> None:
    detections, truths = _synthetic()
    scores = score_detection(detections, truths, CLASSES)
    assert 0.3 < np.nanmean(scores.ap50) < 0.95  # a case with something to get wrong
    _check_against_references(scores, detections, truths, tmp_path)
    assert scores.instances[3] == 0 and np.isnan(scores.ap50[3]) and np.isnan(scores.precision[3])
    assert np.isnan(scores.pr_precision[3]).all() and np.isnan(scores.f1_curve[3]).all()
    assert 0 < scores.best_conf < 1 and scores.best_f1 == pytest.approx(np.nanmean(scores.f1_curve, 0).max(), abs=0.02)
    names = ["a", "b", "c", "never"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero or empty mean for the absent class
        write_detection_tables(scores, names, tmp_path)
        labels = [t.get_text() for t in pr_figure(scores, names).axes[0].get_legend().get_texts()]
        confidence_figure(scores, names)
    assert "never (absent)" in labels
    with open(tmp_path / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[3]["instances"] == "0" and rows[3]["ap50"] == "" and rows[4]["class"] == "all"
    assert float(rows[4]["ap50"]) == pytest.approx(np.mean(scores.ap50[:3]), abs=1e-6)  # over the classes present


def test_the_confusion_matrix_of_a_case_counted_by_hand() -> None:
    """Class a at 0..10, class b at 20..30, another a at 40..50 (missed); found: a over the first (right), a over
    the b (wrong class), b where nothing is (false alarm), a second a over the first at 0.1 (below 0.25: left
    out of the matrix, a false positive in the curves)."""
    truth = np.array([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [0, 40, 40, 50, 50]], float)
    found = np.array(
        [[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 0], [60, 60, 70, 70, 0.7, 1], [0, 0, 10, 10, 0.1, 0]], float
    )
    scores = score_detection([found], [truth], 2)
    background = 2
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # a found as a
    expected[1, 0] = 1  # b found as a
    expected[0, background] = 1  # the a at 40..50 missed
    expected[background, 1] = 1  # a b where nothing is
    np.testing.assert_array_equal(scores.confusion, expected)
    assert scores.instances.tolist() == [2, 1] and scores.images.tolist() == [1, 1]
    assert scores.ap50[0] == pytest.approx(0.5, abs=0.01)  # one of two a found first: precision 1 up to recall 0.5
    assert scores.ap50[1] == 0.0


def test_a_detector_test_writes_the_report_and_its_map_is_the_logged_one(trained_detector, tmp_path: Path) -> None:
    import lightning as L

    from visionkit.callbacks.detection_report import DetectionReport
    from visionkit.data import VisionDataModule, YoloSource

    dm = VisionDataModule(
        YoloSource(str(trained_detector.data_yaml)),
        image_size=128,
        batch_size=8,
        augment="none",
        resize="letterbox",
        mean=(0,) * 3,
        std=(1,) * 3,
    )
    report = DetectionReport(dirpath=str(tmp_path))
    trainer = L.Trainer(
        callbacks=[report],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    (metrics,) = trainer.test(trained_detector.task, datamodule=dm, verbose=False)
    scores = report.scores
    assert scores is not None and scores.test_images == 16
    assert np.nanmean(scores.ap50) == pytest.approx(metrics["test_map50"], abs=1e-4)  # the same COCO evaluation
    assert np.nanmean(scores.ap50_95) == pytest.approx(metrics["test_map50_95"], abs=1e-4)
    assert metrics["test_best_conf"] == pytest.approx(scores.best_conf)
    _check_against_references(scores, *report.scored, tmp_path)  # the model's own detections (conf 0.001)
    for name in ("confusion_matrix", "pr", "confidence"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000
    with open(tmp_path / "tables" / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = list(trained_detector.task.class_names)
    assert [r["class"] for r in rows] == [*names, "all"]
    assert int(rows[-1]["images"]) == 16 and int(rows[-1]["instances"]) == scores.instances.sum()
    with open(tmp_path / "tables" / "confusion_matrix.csv", newline="") as handle:
        matrix = list(csv.reader(handle))
    assert matrix[0][1:] == [*names, "background"] and len(matrix) == len(names) + 2
    for name in ("pr_curve", "confidence_curves"):
        assert (tmp_path / "tables" / f"{name}.csv").stat().st_size > 1000


def test_a_test_where_the_detector_finds_nothing_still_writes_its_report(trained_detector, tmp_path: Path) -> None:
    """No detection on any test image (conf 1.0 keeps none): the report's gathered rows are empty, not a crash at
    the end of a training run (torchmetrics computes a CatMetric that never got a value to an empty list)."""
    import lightning as L

    from visionkit.callbacks.detection_report import DetectionReport
    from visionkit.data import VisionDataModule, YoloSource

    dm = VisionDataModule(
        YoloSource(str(trained_detector.data_yaml)), image_size=128, batch_size=8, augment="none",
        resize="letterbox", mean=(0,) * 3, std=(1,) * 3,
    )  # fmt: skip
    report = DetectionReport(dirpath=str(tmp_path))
    trainer = L.Trainer(callbacks=[report], logger=False, enable_progress_bar=False, enable_model_summary=False)
    task = trained_detector.task
    conf = task.hparams.conf
    task.hparams.conf = 1.0
    try:
        (metrics,) = trainer.test(task, datamodule=dm, verbose=False)
    finally:
        task.hparams.conf = conf
    assert metrics["test_map50"] == 0 and report.scores is not None and report.scores.test_images == 16
    assert sum(len(found) for found in report.scored[0]) == 0 and (tmp_path / "plots" / "pr.png").is_file()
