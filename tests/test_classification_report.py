"""The classification test report's numbers against the libraries that define them (scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score, roc_curve

from visionkit.callbacks.classification_report import CALIBRATION_BINS, score_classification


def _predictions(seed: int = 0, count: int = 400, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy probabilities that favour the true class; class 3 never appears among the targets."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes - 1, count)
    logits = rng.normal(0, 1.0, (count, classes))
    logits[np.arange(count), target] += 1.5
    return torch.softmax(torch.tensor(logits), 1).float(), torch.tensor(target)


def test_per_class_scores_agree_with_scikit_learn_and_an_absent_class_is_marked() -> None:
    probs, target = _predictions()
    scores = score_classification(probs, target)
    predicted = probs.argmax(1).numpy()
    precision, recall, f1, support = precision_recall_fscore_support(
        target.numpy(), predicted, labels=range(4), zero_division=0
    )
    np.testing.assert_allclose(scores.precision, precision, atol=1e-9)
    np.testing.assert_allclose(scores.recall, recall, atol=1e-9)
    np.testing.assert_allclose(scores.f1, f1, atol=1e-9)
    assert scores.support.tolist() == support.tolist() and support[3] == 0
    for c in range(3):  # one vs rest
        truth = (target.numpy() == c).astype(int)
        assert scores.roc_auc[c] == pytest.approx(roc_auc_score(truth, probs[:, c].numpy()), abs=1e-6)
        assert scores.average_precision[c] == pytest.approx(
            average_precision_score(truth, probs[:, c].numpy()), abs=1e-6
        )
        fpr, tpr, _ = roc_curve(truth, probs[:, c].numpy(), drop_intermediate=False)
        ours = np.trapezoid(scores.roc[c][1], scores.roc[c][0])
        assert ours == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-6)
    assert np.isnan(scores.roc_auc[3]) and np.isnan(scores.average_precision[3])  # absent: marked, not 0/0


def test_reliability_bins_give_the_expected_calibration_error() -> None:
    probs, target = _predictions(seed=1)
    scores = score_classification(probs, target)
    bins = scores.bins
    assert bins.shape == (CALIBRATION_BINS, 5) and bins[:, 2].sum() == len(target)
    filled = bins[:, 2] > 0
    gap = np.abs(bins[filled, 3] - bins[filled, 4]) * bins[filled, 2] / len(target)
    assert gap.sum() == pytest.approx(scores.ece, abs=1e-5)  # torchmetrics' ECE from our bins
    confident = torch.softmax(torch.log(probs) * 4, 1)  # sharper, same ranking: over-confident
    assert score_classification(confident, target).ece > scores.ece


def test_a_class_without_test_images_is_named_in_the_log(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """A class whose one image went to training: the report says its scores are left out (torchmetrics only
    warned 'No positive samples in targets', which the commands silence)."""
    import lightning as L
    from PIL import Image

    from tests.conftest import write_shapes_folder
    from visionkit.callbacks.classification_report import ClassificationReport
    from visionkit.data import ImageFolderSource, VisionDataModule
    from visionkit.tasks import ClassificationTask

    root = write_shapes_folder(tmp_path / "shapes", per_class=6)
    (root / "rare").mkdir()
    Image.new("RGB", (24, 24), (200, 0, 0)).save(root / "rare" / "only.png")
    data = VisionDataModule(ImageFolderSource(str(root)), image_size=24, batch_size=8, augment="none")
    task = ClassificationTask("lenet5", num_classes=data.num_classes, class_names=data.class_names)
    trainer = L.Trainer(
        callbacks=[ClassificationReport(dirpath=str(tmp_path))], logger=False, enable_progress_bar=False
    )
    with caplog.at_level("INFO"):
        trainer.test(task, datamodule=data, verbose=False)
    assert "no test image of rare: recall, ROC AUC and AP left out (NaN)" in caplog.text
