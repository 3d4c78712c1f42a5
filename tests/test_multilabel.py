"""Several labels per image: CSV label cells and detection sets read as tags, the thresholds and F1 against
scikit-learn, a short run that learns the built-in tags, and a predictor that answers label sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score

from tests.conftest import compose_config, open_in_chromium
from visionkit.callbacks.multilabel_report import per_class_scores
from visionkit.data import CsvSource, YoloSource
from visionkit.data.shapes import generate_shapes_detection
from visionkit.errors import VisionkitError
from visionkit.explain import explain_image
from visionkit.explain.subjects import subject_from_checkpoint
from visionkit.inference import MultiLabelResult, load_predictor
from visionkit.run import explore, robustness, train
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


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], Path]:
    """The built-in multi-label job (which shapes an image holds), trained once: run folder, metrics, data folder."""
    cfg = compose_config(tmp_path_factory.mktemp("multilabel") / "run", ["task=multilabel", "data.num_workers=0"])
    return Path(cfg.paths.output_dir), train(cfg), Path(cfg.paths.data_dir)


def test_multilabel_run_learns_the_tags_and_predicts_label_sets(multilabel_run) -> None:
    """The built-in job: mAP on the test images well above the 0.5 that guessing each label's frequency gives; the
    checkpoint keeps the validation thresholds; the predictor answers label sets with them; the report's table
    has a row per class."""
    run, metrics, data_dir = multilabel_run
    assert metrics["test_map"] >= 0.6, metrics
    rows = (run / "tables" / "per_class.csv").read_text().splitlines()
    assert rows[0].startswith("class_id,class,support,average_precision,threshold") and len(rows) == 5
    assert (run / "plots" / "pr.png").is_file()

    predictor = load_predictor(run / "checkpoints" / "best.ckpt")
    stored = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]["thresholds"]
    assert np.allclose(predictor.thresholds, stored.numpy())
    images = sorted((data_dir / "shapes_det_v2" / "images" / "test").glob("*.png"))[:4]
    results = predictor(images)
    assert all(isinstance(r, MultiLabelResult) for r in results)
    for result in results:
        expected = [n for n, p, t in zip(result.names, result.probs, predictor.thresholds) if p >= t]
        assert sorted(name for name, _ in result.labels) == sorted(expected)
        assert set(result.to_dict()["scores"]) == {"circle", "square", "triangle", "cross"}


def test_multilabel_checkpoints_are_explained_explored_and_attacked(multilabel_run, tmp_path: Path) -> None:
    """Grad-CAM of each label the image is given; the explore page's decision shows each sigmoid against its
    threshold and FGSM moves the label set; robustness attacks the BCE and scores macro mAP with its checks."""
    run, metrics, data_dir = multilabel_run
    ckpt = run / "checkpoints" / "best.ckpt"
    images = sorted((data_dir / "shapes_det_v2" / "images" / "test").glob("*.png"))
    predictor = load_predictor(ckpt)
    image = next(i for i in images if len(predictor(i)[0].labels) >= 2)
    given = [name for name, _ in predictor(image)[0].labels]

    subject = subject_from_checkpoint(str(ckpt))
    assert subject.kind == "multilabel"
    explained = explain_image(subject, image, tmp_path / "explain", top_k=5)
    assert [h.title.split(" (")[0] for h in explained.heatmaps] == given
    assert all((tmp_path / "explain" / f"gradcam_{rank}_{name}.png").is_file() for rank, name in enumerate(given, 1))

    page = explore(compose_config(tmp_path / "page", [f"ckpt_path={ckpt}", f"source={image}"], name="explore"))
    assert page["page_mb"] > 0
    bars = "Array.from(document.querySelectorAll('#probs .bar')).map((b) => b.textContent)"
    slider = (
        "(() => { const s = document.getElementById('fool-slider'); s.value = s.max;"
        " s.dispatchEvent(new Event('input')); return document.getElementById('fool-label').textContent; })()"
    )
    opened = open_in_chromium(tmp_path / "page" / "explore.html", tmp_path / "explore.png", bars, slider)
    assert not opened.errors, opened.errors
    shown = opened.answers[0]
    assert len(shown) == 4 and sum("≥" in bar for bar in shown) == len(given), shown
    assert opened.answers[1] and opened.answers[1] != ", ".join(given)  # the strongest FGSM changes the label set

    overrides = [f"ckpt_path={ckpt}", "eps=[2,8]", "n=100"]
    attacked = robustness(compose_config(tmp_path / "robust", overrides, name="robustness"))
    assert attacked["robust_checks_failed"] == 0, attacked
    assert attacked["robust_clean_map"] == pytest.approx(metrics["test_map"], abs=0.05)  # 100 of the test images
    assert attacked["robust_pgd_eps8_map"] < attacked["robust_clean_map"] - 0.05, attacked
