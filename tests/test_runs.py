"""`train(cfg)` / `evaluate(cfg)` as sweeps and tests call them: resume, experiments, config contracts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import compose_config, write_shapes_folder
from visionkit.config.folders import config_dir, run_dir_of_checkpoint
from visionkit.errors import VisionkitError
from visionkit.run import evaluate, train

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def test_resume_from_last_checkpoint_continues_the_epoch_count(make_cfg, tmp_path: Path) -> None:
    train(make_cfg(["trainer.max_epochs=2", "test_after_fit=false"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = torch.load(last, map_location="cpu", weights_only=True)
    assert first["epoch"] == 1
    assert run_dir_of_checkpoint(str(last)) == tmp_path / "run"  # resumed runs are put back in their folder

    metrics = train(make_cfg(["trainer.max_epochs=4", f"ckpt_path={last}", "test_after_fit=false"]))
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 3 and resumed["global_step"] == 2 * first["global_step"]
    assert metrics["val_acc"] > 0.5
    epochs = (tmp_path / "run" / "csv" / "version_1" / "metrics.csv").read_text()
    assert "\n2," in epochs or ",2," in epochs  # the second run logged epochs 2 and 3, not 0 and 1
    with open(tmp_path / "run" / "tables" / "results.csv") as handle:  # one continuous curve over both runs
        table = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in table] == [0, 1, 2, 3]
    assert all(r["val_loss"] and r["train_loss_epoch"] and r["lr-AdamW/weights"] for r in table)
    assert Image.open(tmp_path / "run" / "plots" / "results.png").size[0] > 800
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "finished" and status["epochs_done"] == 4


def test_a_run_that_fails_before_its_first_epoch_is_marked_failed(
    make_cfg, tmp_path: Path, digits_checkpoint: tuple[Path, Path]
) -> None:
    """Resuming a LeNet-5 checkpoint into a ResNet-18 run stops while restoring, before any epoch: the folder
    says so in status.json and run comparisons refuse it with the reason."""
    from visionkit.report.compare import check_run

    ckpt, _ = digits_checkpoint
    with pytest.raises(RuntimeError):
        train(make_cfg(["model=resnet18", f"ckpt_path={ckpt}"], run="failed"))
    status = json.loads((tmp_path / "failed" / "status.json").read_text())
    assert status["status"] == "failed" and status["epochs_done"] == 0 and "state_dict" in status["error"]
    with pytest.raises(VisionkitError, match=r"failed before its first epoch \(RuntimeError: .*\); leave it out"):
        check_run(tmp_path / "failed")


def test_evaluate_uses_the_run_config_of_the_checkpoint(make_cfg, tmp_path: Path) -> None:
    trained = train(make_cfg(["trainer.max_epochs=2"]))
    cfg = make_cfg([f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}"], name="eval", run="eval")
    assert cfg.get("data") is None  # nothing given: taken from <run>/config.yaml
    assert evaluate(cfg)["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-6)


def test_a_run_on_a_relative_data_folder_evaluates_from_any_folder(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.root=shapes` typed in one folder: the run's config.yaml holds the folder's absolute path, so
    visionkit-eval finds the data from another folder (it stopped with 'data.root: folder shapes does not exist')."""
    write_shapes_folder(tmp_path / "project" / "shapes", per_class=6)
    monkeypatch.chdir(tmp_path / "project")
    overrides = ["data=imagefolder", "data.root=shapes", "data.image_size=24", "trainer.max_epochs=1", "model=lenet5"]
    trained = train(make_cfg(overrides))
    assert (OmegaConf.load(tmp_path / "run" / "config.yaml").data.root) == str(tmp_path / "project" / "shapes")
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg([f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}"], name="eval", run="eval")
    assert evaluate(cfg)["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-6)


def test_num_classes_is_interpolated_from_the_data_config(make_cfg) -> None:
    cfg = make_cfg(["data.num_classes=10"])
    assert cfg.task.num_classes == 10
    raw = OmegaConf.load(config_dir() / "task" / "classification.yaml")
    assert OmegaConf.to_container(raw)["task"]["num_classes"] == "${data.num_classes}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_under_fast_dev_run(
    experiment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builtin_data: Path
) -> None:
    """Recipes that need a folder of photos get a tiny generated one; pretrained weights come from a
    state dict placed in a temporary torch hub cache (the real loading code, offline)."""
    from urllib.parse import urlparse

    import torchvision

    overrides = [
        f"experiment={experiment}",
        "++trainer.fast_dev_run=true",
        "data.num_workers=0",
        f"paths.data_dir={builtin_data}",
    ]
    cfg = compose_config(tmp_path / "run", overrides)
    if "train_images" in cfg.data:  # built-in segmentation recipes: a small generated training split
        overrides.append("data.train_images=32")
    if OmegaConf.is_missing(cfg.data, "root"):
        overrides.append(f"data.root={write_shapes_folder(tmp_path / 'photos', per_class=6)}")
        overrides.append("data.image_size=64")
    weights = cfg.model.get("weights")
    if weights and "/" not in str(weights):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        entry = torchvision.models.get_model_weights(cfg.model.backbone)[weights]
        cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(urlparse(entry.url).path).name
        cached.parent.mkdir(parents=True)
        torch.save(torchvision.models.get_model(cfg.model.backbone).state_dict(), cached)
    metrics = train(compose_config(tmp_path / "run", overrides))
    tested = {key: value for key, value in metrics.items() if key.startswith("test_")}
    assert tested and all(torch.isfinite(torch.tensor(v)) for v in tested.values()), metrics


def test_experiment_headers_state_command_hardware_and_result() -> None:
    for name in EXPERIMENTS:
        header = (config_dir() / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
        for field in ("command:", "hardware:", "reached:"):
            assert field in header, (name, field)
        assert f"experiment={name}" in header
