"""Prediction over several processes and after a kill: two CPU processes write, file by file, what one process
writes; a run killed mid-way and started again in its folder finishes the rest and ends as an uncut run."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TrainedSegmenter, compose_config
from tests.console_runs import run_console
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.inference.journal import Journal, journal_path, read_journal, share
from visionkit.run import predict

SKIPPED = {"shards", ".hydra", "predict.log", "config.yaml"}  # journals and logs differ by design


def _outputs(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not SKIPPED & set(p.relative_to(folder).parts)
    }


def _assert_same_files(one: Path, other: Path) -> None:
    names = _outputs(one)
    assert names == _outputs(other) and len(names) > 3, names ^ _outputs(other)
    differing = [n for n in sorted(names) if not filecmp.cmp(one / n, other / n, shallow=False)]
    assert not differing, differing


def test_shares_differ_by_at_most_one_and_cover_every_item_once() -> None:
    items = [str(i) for i in range(23)]
    for world in (1, 2, 3, 5, 30):
        shares = [share(items, rank, world) for rank in range(world)]
        assert [item for part in shares for item in part] == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_list_file_names_images_in_its_order_and_a_missing_one_by_line(tmp_path: Path) -> None:
    for name in ("b.png", "a.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "list.txt").write_text(f"# shots\nb.png\n\n{tmp_path / 'a.png'}\n")
    assert list_images(str(tmp_path / "list.txt")) == [str(tmp_path / "b.png"), str(tmp_path / "a.png")]
    (tmp_path / "bad.txt").write_text("a.png\nmissing.png\n")
    with pytest.raises(VisionkitError, match=r"bad.txt:2: missing.png is not a file"):
        list_images(str(tmp_path / "bad.txt"))


def test_a_torn_last_line_is_cut_back_before_the_rank_appends(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 0)
    journal.write({"path": "a.png", "label": "cat"})
    journal.close()
    path = journal_path(tmp_path, 0)
    with path.open("a") as handle:
        handle.write('{"path": "b.p')  # the kill came in the middle of a write
    assert [r["path"] for r in read_journal(path)] == ["a.png"]
    again = Journal(tmp_path, 0)
    again.write({"path": "c.png", "label": "dog"})
    again.close()
    assert [r["path"] for r in read_journal(path)] == ["a.png", "c.png"]


def test_two_processes_write_what_one_process_writes(trained_segmenter: TrainedSegmenter, tmp_path: Path) -> None:
    """Masks, overlays and predictions.json of 2 DDP CPU ranks (gloo) equal one process's, byte for byte; each
    rank journals its own half."""
    images = trained_segmenter.root / "images"
    common = [f"ckpt_path={trained_segmenter.ckpt}", f"source={images}", "batch_size=4"]
    single = predict(compose_config(tmp_path / "one", common, name="predict"))
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    args = [*common, f"hydra.run.dir={tmp_path / 'two'}", "devices=2"]
    proc, killed = run_console("visionkit-predict", args, tmp_path, env, timeout=240)
    assert not killed and proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _assert_same_files(tmp_path / "one", tmp_path / "two")
    halves = [len(read_journal(journal_path(tmp_path / "two", rank))) for rank in (0, 1)]
    assert sum(halves) == single["images"] and abs(halves[0] - halves[1]) <= 1, halves
    log = proc.stdout + proc.stderr
    assert "rank 1:" in log and "images/s" in log and "data wait" in log


def test_a_killed_prediction_run_finishes_the_rest_when_started_again(digits_checkpoint, tmp_path: Path) -> None:
    """SIGKILL once the journal holds some images; the same command again skips them, and the folder ends as an
    uncut run's (tables and pictures)."""
    ckpt, _ = digits_checkpoint
    folder = tmp_path / "digits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(120):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    common = [f"ckpt_path={ckpt}", f"source={folder}", "batch_size=2"]
    predict(compose_config(tmp_path / "whole", common, name="predict"))

    command = [str(Path(sys.executable).with_name("visionkit-predict")), *common, f"hydra.run.dir={tmp_path / 'cut'}"]
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cut = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    journal, deadline = journal_path(tmp_path / "cut", 0), time.monotonic() + 120
    while not journal.is_file() or len(read_journal(journal)) < 10:
        assert cut.poll() is None and time.monotonic() < deadline, "the run ended (or stalled) before 10 images"
        time.sleep(0.02)
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait()
    before = len(read_journal(journal))
    assert 10 <= before < 120, before
    half_written = journal.parent.parent / "images" / ".011.png.ab3_x9z0.tmp"  # as a kill mid-write leaves it
    half_written.parent.mkdir(parents=True, exist_ok=True)
    half_written.write_bytes(b"\x89PNG")

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{before} of 120 image(s) already predicted" in again.stderr + again.stdout
    assert len(read_journal(journal)) == 120
    assert not half_written.exists()  # the restarted run removed what the cut one was writing
    _assert_same_files(tmp_path / "whole", tmp_path / "cut")
