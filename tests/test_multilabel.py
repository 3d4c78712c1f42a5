"""Several labels per image: CSV label cells and detection sets read as tags, the thresholds and F1 against
scikit-learn, a short run that learns the built-in tags, and a predictor that answers label sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

from visionkit.callbacks.multilabel_report import per_class_scores
from visionkit.data import CsvSource, YoloSource
from visionkit.data.shapes import generate_shapes_detection
from visionkit.errors import VisionkitError
from visionkit.inference import MultiLabelResult, load_predictor
from visionkit.run import train
from visionkit.tasks.multilabel import best_thresholds, f1_scores


def test_csv_label_cells_become_flags(tmp_path: Path) -> None:
    for name in "abc":
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "tags.csv").write_text('path,labels\na.png,"cat;dog"\nb.png,\nc.png, dog ;\n')
    source = CsvSource(str(tmp_path / "tags.csv"), multilabel=True)
    assert source.task == "multilabel" and source.class_names() == ["cat", "dog"]
    flags = source.splits(0.0, 0.0, 0)["train"].targets
    assert flags.tolist() == [[1, 1], [0, 0], [0, 1]] and flags.dtype == np.uint8
    (tmp_path / "bad.csv").write_text('path,labels\na.png,"cat;bird"\n')
    with pytest.raises(VisionkitError, match=r"bad.csv:2: unknown label 'bird' \(known labels: cat, dog\)"):
        CsvSource(str(tmp_path / "bad.csv"), class_names=["cat", "dog"], multilabel=True).splits(0.0, 0.0, 0)


def test_detection_sets_read_as_image_tags(tmp_path: Path) -> None:
    yaml = generate_shapes_detection(tmp_path, {"train": 6, "val": 2}, image_size=48)
    boxes = YoloSource(str(yaml)).splits(0.0, 0.0, 0)["train"]
    tags = YoloSource(str(yaml), multilabel=True).splits(0.0, 0.0, 0)["train"]
    for rows, flags in zip(boxes.targets, tags.targets):
        assert sorted(np.flatnonzero(flags)) == sorted({int(c) for c in rows[:, 0]})


def test_thresholds_f1_and_ap_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    target = (rng.random((300, 5)) < [0.1, 0.3, 0.5, 0.7, 0.05]).astype(np.int64)
    probs = np.clip(target * 0.35 + rng.random((300, 5)) * 0.65, 0, 1).astype(np.float32)
    p, t = torch.from_numpy(probs), torch.from_numpy(target)
    thresholds = best_thresholds(p, t)
    predicted = (probs >= thresholds.numpy()).astype(np.int64)
    ours = f1_scores(p, t, thresholds)
    assert ours["f1_micro"] == pytest.approx(f1_score(target, predicted, average="micro"), abs=1e-6)
    assert ours["f1_macro"] == pytest.approx(f1_score(target, predicted, average="macro"), abs=1e-6)
    for k in range(5):  # each class's threshold is the best of the grid for that class
        grid = np.linspace(0.01, 0.99, 99)
        best = max(f1_score(target[:, k], probs[:, k] >= g) for g in grid)
        assert f1_score(target[:, k], predicted[:, k]) == pytest.approx(best, abs=1e-9)
    scores = per_class_scores(p, t, thresholds)
    expected = [average_precision_score(target[:, k], probs[:, k]) for k in range(5)]
    assert np.allclose(scores["average_precision"], expected, atol=1e-5)


def test_multilabel_run_learns_the_tags_and_predicts_label_sets(make_cfg, tmp_path: Path) -> None:
    """The built-in job (which shapes an image holds): mAP on the test images well above the 0.5 that
    guessing each label's frequency gives; the checkpoint keeps the validation thresholds; the predictor answers
    label sets with them; the report's table has a row per class."""
    cfg = make_cfg(["task=multilabel", "data.num_workers=0"])
    metrics = train(cfg)
    assert metrics["test_map"] >= 0.6, metrics
    run = Path(cfg.paths.output_dir)
    rows = (run / "tables" / "per_class.csv").read_text().splitlines()
    assert rows[0].startswith("class_id,class,support,average_precision,threshold") and len(rows) == 5
    assert (run / "plots" / "pr.png").is_file()

    predictor = load_predictor(run / "checkpoints" / "best.ckpt")
    stored = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]["thresholds"]
    assert np.allclose(predictor.thresholds, stored.numpy())
    images = sorted((Path(cfg.paths.data_dir) / "shapes_det_v2" / "images" / "test").glob("*.png"))[:4]
    results = predictor(images)
    assert all(isinstance(r, MultiLabelResult) for r in results)
    for result in results:
        expected = [n for n, p, t in zip(result.names, result.probs, predictor.thresholds) if p >= t]
        assert sorted(name for name, _ in result.labels) == sorted(expected)
        assert set(result.to_dict()["scores"]) == {"circle", "square", "triangle", "cross"}
