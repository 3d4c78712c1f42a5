"""The console scripts end to end, run from a folder outside the repository like a user would."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import check_report_page
from tests.console_runs import run_console
from visionkit.data import DigitsSource
from visionkit.data.shapes_seg import VERSION as SEG_VERSION

BIN = Path(sys.executable).parent
QUIET = ["~callbacks.progress_bar", "~callbacks.model_summary", "trainer.enable_model_summary=false"]


def run(
    tool: str, args: list[str], cwd: Path, expect_ok: bool = True, timeout: float = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """Run a console script (through tests/console_runs.py; `fresh=True`: a new interpreter); a run past
    `timeout` is killed with all its children (DDP ranks, loader workers) and the test fails with what it had
    printed, so a hang is diagnosable and leaves no orphans."""
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc, killed = run_console(tool, args, cwd, env, timeout, fresh=fresh)
    if killed:
        pytest.fail(f"{tool} {' '.join(args)} ran past {timeout} s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_folder(stdout: str) -> Path:
    match = re.search(r"^run folder: (.+)$", stdout, flags=re.MULTILINE)
    assert match, stdout[-2000:]
    return Path(match.group(1).strip())


def test_every_installed_console_script_starts_in_a_new_interpreter(tmp_path: Path) -> None:
    """The other tests fork a helper that has imported everything; this one launches each installed script."""
    scripts = [e.name for e in entry_points(group="console_scripts") if e.value.startswith("visionkit.")]
    assert len(scripts) >= 9, scripts
    for script in scripts:
        out = run(script, ["--help"], tmp_path, fresh=True).stdout
        assert out.lower().startswith(f"usage: {script}") or out.startswith(f"{script}: "), (script, out[:300])
        if "Compose your configuration from those groups" in out:  # a Hydra command: its usage and examples first
            assert f"Usage: {script} " in out and f"\n  {script} " in out.split("== Configuration groups")[0]


def test_train_then_eval_the_best_checkpoint(tmp_path: Path) -> None:
    out = run("visionkit-train", ["trainer.max_epochs=2", *QUIET], tmp_path).stdout
    train_acc = float(re.search(r"^test_acc: ([0-9.]+)$", out, flags=re.MULTILINE).group(1))
    run_dir = run_folder(out)
    assert run_dir.parent.parent == tmp_path / "outputs" / "classification"
    for name in ("config.yaml", ".hydra/config.yaml", "train.log", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert "trainer.max_epochs=2" in (run_dir / "report.html").read_text()  # the command's overrides
    assert next((run_dir / "csv").rglob("metrics.csv")).is_file()
    assert next((run_dir / "tensorboard").rglob("events.out.tfevents.*")).is_file()

    proc = run("visionkit-eval", [f"ckpt_path={run_dir}/checkpoints/best.ckpt"], tmp_path, fresh=True)
    out = proc.stdout
    assert (out + proc.stderr).count("GPU available") == 1  # Lightning imported after logging: each line once
    eval_acc = float(re.search(r"^test_acc: ([0-9.]+)$", out, flags=re.MULTILINE).group(1))
    assert eval_acc == pytest.approx(train_acc, abs=1e-4)
    assert run_folder(out).parent == run_dir / "eval"
    assert (run_folder(out) / "plots" / "confusion_matrix.png").is_file()
    assert "evaluation of" in (run_folder(out) / "report.html").read_text()  # its own report, in its folder

    # Predict on loose files: 8×8 digit PNGs in a nested folder, plus one broken file.
    digits = load_digits()
    photos = tmp_path / "photos" / "nested"
    photos.mkdir(parents=True)
    for i in range(1500, 1520):  # the end of the set: mostly outside the training split
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(photos / f"{i}_{digits.target[i]}.png")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"")
    ckpt = f"ckpt_path={run_dir}/checkpoints/best.ckpt"
    proc = run("visionkit-predict", [ckpt, "source=photos"], tmp_path, expect_ok=False)
    assert proc.returncode == 1 and "image photos/broken.jpg is empty (0 bytes)" in proc.stderr
    out = run("visionkit-predict", [ckpt, "source=photos", "skip_bad_images=true", "top_k=3"], tmp_path).stdout
    rows = list(csv.DictReader((run_folder(out) / "predictions.csv").open()))
    assert run_folder(out).parent == run_dir / "predict" and len(rows) == 21
    assert rows[0]["path"] == "photos/broken.jpg" and rows[0]["label"].startswith("SKIPPED")
    correct = sum(row["label"] == Path(row["path"]).stem.split("_")[1] for row in rows[1:])
    assert correct >= 14, rows  # 2 epochs of training: most, not all, digits right
    assert all(len(row["top_k"].split(";")) == 3 for row in rows[1:])
    assert json.loads((run_folder(out) / "predictions.json").read_text())[1]["label"] == rows[1]["label"]


def test_ddp_two_cpu_processes_make_one_run_folder(tmp_path: Path) -> None:
    proc = run("visionkit-train", ["trainer=ddp_cpu", "trainer.max_epochs=2", *QUIET], tmp_path)
    out = proc.stdout
    assert "sync_dist=True" not in out + proc.stderr  # what is logged per epoch is synced across ranks
    runs = list((tmp_path / "outputs" / "classification").glob("*/*"))
    assert runs == [run_folder(out)]
    assert out.count("test_acc:") == 1  # the summary comes from rank 0 only
    assert float(re.search(r"test_acc: ([0-9.]+)", out).group(1)) > 0.6
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    per_rank = math.ceil(len(DigitsSource().splits(0.1, 0.2, seed=0)["train"]) / 2)  # DistributedSampler
    batch = OmegaConf.load(runs[0] / "config.yaml").data.batch_size
    assert ckpt["global_step"] == 2 * math.ceil(per_rank / batch)  # 2 epochs of each rank's half


def test_torchrun_launch_makes_one_run_folder(tmp_path: Path) -> None:
    """Every rank is started from outside (as with torchrun on many machines, or SLURM): still one folder."""
    args = ["--nproc_per_node=2", "-m", "visionkit.train", "trainer=ddp_cpu", "trainer.max_epochs=1", *QUIET]
    out = run("torchrun", args, tmp_path).stdout
    assert list((tmp_path / "outputs" / "classification").glob("*/*")) == [run_folder(out)]
    assert out.count("test_acc:") == 1


def test_multirun_sweep_runs_each_job_in_its_own_folder(tmp_path: Path) -> None:
    out = run("visionkit-train", ["-m", "optimizer.lr=1e-3,3e-3", "trainer.max_epochs=1", *QUIET], tmp_path).stdout
    jobs = sorted((tmp_path / "multirun" / "classification").glob("*/*/[0-9]"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
    lrs = [float(re.search(r"lr: ([0-9.e-]+)", (j / "config.yaml").read_text()).group(1)) for j in jobs]
    assert lrs == [1e-3, 3e-3]
    assert out.count("test_acc:") == 2
    page = (jobs[0].parent / "compare.html").read_text()  # the sweep ends with one comparison page
    assert page.count("<tr><td>") >= 2 + 1 and "★" in page and "optimizer.lr" in page and "data:image/png" in page
    assert "logger.csv.save_dir" not in page  # a difference only because each job has its own folder
    compared = run("visionkit-report", [*map(str, jobs), "-o", str(tmp_path / "two.html")], tmp_path)
    assert compared.stdout.strip().endswith("two.html") and "optimizer.lr" in (tmp_path / "two.html").read_text()
    rewritten = run("visionkit-report", [str(jobs[0])], tmp_path).stdout.strip()
    assert rewritten.endswith("report.html") and "test_acc" in Path(rewritten).read_text()
    for bad, message in (
        (tmp_path, "is not a visionkit run folder (no config.yaml)"),
        (tmp_path / "no", "not a folder"),
    ):
        failed = run("visionkit-report", [str(bad), str(jobs[0])], tmp_path, expect_ok=False)
        assert failed.returncode == 1 and message in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=imagefolder", "data.root=/no/such/folder"], "data.root: folder /no/such/folder does not exist"),
        (["data=imagefolder"], "data.root is not set: pass data.root=<value> on the command line"),
        (["model.backbone=resnt18"], "unknown backbone 'resnt18'; did you mean resnet18"),
        (["data.num_classes=7"], "data.num_classes=7 but built-in handwritten digits"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer or null"),
        (["trainer.max_epoch=5"], "trainer.max_epoch: no such key in trainer; did you mean max_epochs"),
        (["model=resnt18"], "model=resnt18: no such model config; did you mean resnet18"),
        (  # a class that refuses its arguments: the key and its own reason, not Hydra's "Error in call to target"
            ["callbacks.model_checkpoint.every_n_train_steps=5", "+callbacks.model_checkpoint.every_n_epochs=1"],
            "callbacks.model_checkpoint: Combination of parameters every_n_train_steps=5, every_n_epochs=1",
        ),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_failing_exit_code(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run("visionkit-train", args, tmp_path, expect_ok=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert lines == [f"visionkit-train: error: {lines[0].split('error: ', 1)[1]}"] and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Epoch" not in proc.stdout and "LeNet" not in proc.stdout  # stopped before any work


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    proc = run("visionkit-train", ["data=imagefolder", "data.root=/no/such/folder", "--verbose"], tmp_path, False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "VisionkitError" in proc.stderr


def test_predict_without_source_or_images(tmp_path: Path) -> None:
    proc = run("visionkit-predict", ["ckpt_path=/no/best.ckpt", "source=x"], tmp_path, expect_ok=False)
    assert proc.returncode == 1 and "ckpt_path: checkpoint /no/best.ckpt does not exist" in proc.stderr


def test_eval_of_a_missing_checkpoint(tmp_path: Path) -> None:
    proc = run("visionkit-eval", ["ckpt_path=/no/best.ckpt"], tmp_path, expect_ok=False)
    assert proc.returncode == 1 and "ckpt_path: checkpoint /no/best.ckpt does not exist" in proc.stderr
    proc = run("visionkit-eval", [], tmp_path, expect_ok=False)
    assert proc.returncode == 1 and "ckpt_path is not set: pass ckpt_path=/path/to/best.ckpt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_wheel_ships_the_configs(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("visionkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "train.yaml",
        "eval.yaml",
        "data/digits.yaml",
        "augment/light.yaml",
        "experiment/digits_lenet5.yaml",
        "task/style_transfer.yaml",
    ):
        assert f"visionkit/conf/{config}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(
        f"visionkit-{tool} =" in scripts for tool in ("train", "eval", "predict", "export", "benchmark", "stylize")
    )


def test_detection_ddp_two_cpu_processes_train_export_and_predict(tmp_path: Path, builtin_data: Path) -> None:
    """Detection under DDP (2 CPU processes, gloo): one run folder, checkpoints written (a collective on
    every rank), test mAP reported once; then the CLI exports and predicts with the result."""
    cache = builtin_data
    args = [
        "task=detection",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "data.image_size=64",
        f"paths.data_dir={cache}",
        *QUIET,
    ]
    out = run("visionkit-train", args, tmp_path).stdout
    runs = list((tmp_path / "outputs" / "detection").glob("*/*"))
    assert runs == [run_folder(out)]
    assert out.count("test_map50_95:") == 1
    with open(runs[0] / "tables" / "per_class.csv", newline="") as handle:
        overall = list(csv.DictReader(handle))[-1]
    assert overall["class"] == "all" and int(overall["images"]) == 2 * 2 * 16  # both ranks' 2 test batches
    assert {p.name for p in (runs[0] / "plots").glob("*.png")} >= {"pr.png", "confidence.png", "confusion_matrix.png"}
    best = runs[0] / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["visionkit"]["task"] == "visionkit.tasks.detection.DetectionTask"

    exported = run_folder(run("visionkit-export", [f"ckpt_path={best}", "formats=[onnx,ultralytics]"], tmp_path).stdout)
    assert exported.parent.parent == runs[0] and {p.name for p in exported.iterdir()} >= {"model.onnx", "model.pt"}
    images = cache / "shapes_det_v2" / "images" / "test"
    predicted = run_folder(
        run("visionkit-predict", [f"ckpt_path={best}", f"source={images}", "conf=0.01"], tmp_path).stdout
    )
    assert (
        len(list((predicted / "labels").glob("*.txt"))) == 100
        and len(list((predicted / "images").glob("*.png"))) == 100
    )
    assert len(json.loads((predicted / "predictions.json").read_text())) == 100


def test_segmentation_ddp_two_cpu_processes_train_predict_and_export(tmp_path: Path, builtin_data: Path) -> None:
    """Segmentation under DDP (2 CPU processes, gloo): one run folder, the per-class table, metrics and speed
    report once, decoded images cached on disk by both ranks; then the CLIs predict (a larger image, tiled) and
    export ONNX with the result."""
    cache = builtin_data
    args = [
        "task=segmentation",
        "trainer=ddp_cpu",
        "data.cache=disk",
        f"data.cache_dir={tmp_path / 'decoded'}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "data.image_size=64",
        f"paths.data_dir={cache}",
        *QUIET,
    ]
    out = run("visionkit-train", args, tmp_path).stdout
    runs = list((tmp_path / "outputs" / "segmentation").glob("*/*"))
    assert runs == [run_folder(out)]
    assert out.count("test_miou:") == 1
    table = (runs[0] / "test_per_class.csv").read_text().splitlines()
    assert table[0] == "class_id,class,iou,dice" and len(table) == 6
    assert json.loads((runs[0] / "speed.json").read_text())["world_size"] == 2 and out.count("speed: ") == 1
    for name in ("per_class", "confusion_matrix", "lowest_iou", "results"):  # the test report, drawn once
        assert Image.open(runs[0] / "plots" / f"{name}.png").size[0] > 300, name
    check_report_page(runs[0], tmp_path / "report.png")  # 1280 px wide, no error, short numbers
    pixels = (runs[0] / "tables" / "confusion_matrix.csv").read_text().splitlines()
    assert len(pixels) == 6 and sum(int(v) for row in pixels[1:] for v in row.split(",")[1:]) > 0
    assert len(list((tmp_path / "decoded").rglob("*.npy"))) >= 3 * 2 * 2  # 3 train batches of 2+ per rank
    best = runs[0] / "checkpoints" / "best.ckpt"
    photos = tmp_path / "photos"
    photos.mkdir()
    tiles = [np.asarray(Image.open(p)) for p in sorted((cache / SEG_VERSION / "images" / "test").glob("*.png"))[:2]]
    Image.fromarray(np.concatenate(tiles, 1)).save(photos / "wide.png")  # 128 x 256 with 64 px training size
    predicted = run_folder(
        run("visionkit-predict", ["task=segmentation", f"ckpt_path={best}", f"source={photos}"], tmp_path).stdout
    )
    assert Image.open(predicted / "masks" / "wide.png").size == (256, 128)
    assert (predicted / "overlays" / "wide.png").is_file()
    exported = run_folder(run("visionkit-export", [f"ckpt_path={best}", "formats=[onnx]"], tmp_path).stdout)
    assert (exported / "model.onnx").is_file()
    wrong = run("visionkit-predict", ["task=detection", f"ckpt_path={best}", f"source={photos}"], tmp_path, False)
    assert wrong.returncode == 1 and "holds a segmentation model" in wrong.stderr


def test_more_cpu_processes_than_cores_are_warned_with_their_cost(
    make_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from visionkit.training.fit import set_cpu_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with caplog.at_level("WARNING"):
        assert set_cpu_threads(make_cfg(["trainer.accelerator=cpu", "trainer.devices=3"])) == 1
    assert "trainer.devices=3 starts 3 training processes on 2 CPU core(s)" in caplog.text
    assert "about 1.5x as long" in caplog.text and "trainer.devices=2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        set_cpu_threads(make_cfg(["trainer.accelerator=cpu", "trainer.devices=2"]))
    assert "training processes" not in caplog.text


def test_a_default_run_prints_each_line_once_and_no_warning(tmp_path: Path) -> None:
    """`visionkit-train` as a new user runs it (a new interpreter, Python's default warning filters): every log line
    once (Lightning added its own stderr handler beside Hydra's), no warning, no tip to install a cloud logger."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"VISIONKIT_OFFLINE": "1"}
    proc, killed = run_console("visionkit-train", ["trainer.max_epochs=1"], tmp_path, env, 300, fresh=True)
    assert not killed and proc.returncode == 0, proc.stderr[-3000:]
    assert "warn" not in proc.stderr.lower() and "Tip:" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    logged = [line.split(" - ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("[") and " - " in line]
    assert logged and len(logged) == len(set(logged)), logged
    assert not [line for line in proc.stderr.splitlines() if line.startswith("INFO:")], proc.stderr[-2000:]
