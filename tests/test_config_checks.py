"""Composed configs are checked before any work (wrong types, unknown options and choices, misspelt keys named
with what is expected), and every shipped combination of logger and callbacks runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from tests.conftest import compose_config
from visionkit.config import check_config, check_overrides, config_dir, register_resolvers
from visionkit.errors import VisionkitError
from visionkit.run import train

TASKS = ["classification", "detection", "segmentation", "style_transfer"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer or null"),
        (["trainer.precision=12"], "trainer.precision=12: expected one of 64, 32, 16, transformer-engine"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': expected a number"),
        (["data.batch_size=1.5"], "data.batch_size=1.5: expected an integer"),
        (["data.resize=squash"], "data.resize='squash': expected one of stretch, letterbox, crop"),
        (["monitor.mode=up"], "monitor.mode='up': expected one of min, max"),
        (["seed=first"], "seed='first': expected an integer or null"),
        (["+trainer.max_epoch=5"], "trainer.max_epoch is not an option of Trainer; did you mean max_epochs"),
        (["callbacks.early_stopping.patience=soon"], "callbacks.early_stopping.patience='soon': expected an integer"),
        (["+augment.train=[{_target_: albumentations.HorizontalFlip, p: often}]"], "p='often': expected a number"),
    ],
)
def test_wrong_values_are_named_with_what_is_expected(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(VisionkitError) as caught:
        check_config(make_cfg(overrides))
    assert message in str(caught.value)


def test_an_interpolated_value_is_named_where_it_was_set(make_cfg) -> None:
    """trainer.max_epochs also feeds scheduler.T_max: the error names the key the user set."""
    with pytest.raises(VisionkitError, match=r"^trainer\.max_epochs='abc'"):
        check_config(make_cfg(["trainer.max_epochs=abc"]))


SHIPPED = [("train", [f"task={task}"]) for task in TASKS] + [
    ("eval", ["ckpt_path=/some/best.ckpt"]),
    ("predict", ["ckpt_path=/some/best.ckpt", "source=photos/"]),
    ("export", ["ckpt_path=/some/best.ckpt"]),
    ("benchmark", ["ckpt_path=/some/best.ckpt"]),
    ("explain", ["ckpt_path=/some/best.ckpt", "source=photos/"]),
]


@pytest.mark.parametrize(("name", "overrides"), SHIPPED)
def test_every_shipped_config_passes_the_checks(tmp_path: Path, name: str, overrides: list[str]) -> None:
    check_config(compose_config(tmp_path, overrides, name=name))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epoch=5"], "trainer.max_epoch: no such key in trainer; did you mean max_epochs"),
        (["model=resnt18"], "model=resnt18: no such model config; did you mean resnet18"),
        (["-m", "augment=light,strng"], "augment=strng: no such augment config; did you mean strong?"),
        (["data=imagefolder", "data.rot=/x"], "data.rot: no such key in data; did you mean root?"),
        (["callbacks.sample_predictions.num_sample=3"], "did you mean num_samples?"),
        (
            ["task=detection", "model.arch_name=yolo11n.yaml"],
            "model.arch_name: no such key in model; did you mean arch?",
        ),
    ],
)
def test_misspelt_keys_and_unknown_choices_suggest_the_close_match(overrides: list[str], message: str) -> None:
    from visionkit.cli.runner import _overrides

    with pytest.raises(VisionkitError) as caught:
        check_overrides("train", _overrides(overrides))
    assert message in str(caught.value)


def test_correct_overrides_pass(tmp_path: Path) -> None:
    check_overrides("train", ["task=detection", "model=yolo11n", "+trainer.max_steps=3", "~callbacks.lr_monitor"])
    check_overrides("train", ["data=imagefolder", "data.root=/x", "hydra.run.dir=out", "experiment=digits_lenet5"])
    check_overrides("predict", ["ckpt_path=x.ckpt", "expected_task=detection", "conf=0.3"])
    check_overrides("explain", ["network=vgg19", "target_class=[cat,dog]", "layers=[a.b,c]"])


@pytest.mark.parametrize("callbacks", sorted(p.stem for p in (config_dir() / "callbacks").glob("*.yaml")))
@pytest.mark.parametrize("logger", sorted(p.stem for p in (config_dir() / "logger").glob("*.yaml")))
def test_every_logger_and_callbacks_choice_runs(
    tmp_path: Path, logger: str, callbacks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_resolvers()
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network
    overrides = [f"logger={logger}", f"callbacks={callbacks}", "++trainer.fast_dev_run=true"]
    overrides += ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    if logger in ("mlflow", "many"):  # a local store in the test folder, not ./mlruns
        overrides.append(f"logger.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    assert "test_acc" in train(cfg)
