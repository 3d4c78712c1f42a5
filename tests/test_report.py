"""report.html: one self-contained page per run, checked in a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import check_report_page
from visionkit.errors import VisionkitError
from visionkit.report import write_report
from visionkit.run import train


def test_the_run_report_opens_offline_with_every_picture_and_table(make_cfg, tmp_path: Path) -> None:
    """Also: at 1280 px the page does not scroll sideways (wide tables scroll in their own box), numbers show 4
    significant digits, captions are not repeated (the classification report; detection's and segmentation's
    are checked where their runs are made)."""
    train(make_cfg(["trainer.max_epochs=2"]))
    report = tmp_path / "run" / "report.html"
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # nothing to fetch or run
    assert "None" not in text.split("<h2>Speed</h2>")[1].split("</table>")[0]  # speed measures that exist only
    opened = check_report_page(
        tmp_path / "run",
        tmp_path / "report.png",
        "[...document.images].map(i => i.complete ? i.naturalWidth : 0)",
        "[...document.querySelectorAll('figcaption')].map(n => n.textContent)",
        "[...document.querySelectorAll('details')].filter(n => n.textContent.startsWith('per_class.csv'))"
        ".map(n => n.querySelectorAll('tbody tr').length)",
        "document.querySelector('table').innerText",
    )
    widths, captions, per_class, metrics = opened.answers
    assert len(widths) >= 7 and all(w > 0 for w in widths), widths  # curves, 5 test plots, samples
    for name in ("results", "confusion matrix", "roc", "reliability", "confident mistakes", "val samples"):
        assert name in captions, (name, captions)
    assert per_class == [10] and "test_acc" in metrics
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_folder_that_is_not_a_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(VisionkitError, match=r"holds no run: no config.yaml, metrics, plots or tables"):
        write_report(tmp_path)
    with pytest.raises(VisionkitError, match=r"is not a folder"):
        write_report(tmp_path / "missing")


def test_the_sweep_comparison_callback_answers_every_hydra_event(tmp_path: Path) -> None:
    """Hydra warns once per event a callback lacks (it did after every single run); the sweep's end writes the
    page and the other events do nothing."""
    from omegaconf import OmegaConf

    from visionkit.report.compare import CompareSweep

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = CompareSweep()
    for event in ("on_run_start", "on_run_end", "on_multirun_start"):
        getattr(callback, event)(config=config)
    callback.on_job_start(config=config, task_function=print)
    callback.on_job_end(config=config, job_return=None)
    callback.on_multirun_end(config=config)  # no job folders: nothing to compare, no page
    assert not (tmp_path / "compare.html").exists()
