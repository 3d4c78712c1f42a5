"""Composed configs are checked before any work (wrong types, unknown options and choices, misspelt keys named
with what is expected), and every shipped combination of logger and callbacks runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from tests.conftest import compose_config
from visionkit.config.checks import DOCUMENTED_KEYS, check_config, check_overrides
from visionkit.config.folders import config_dir, register_resolvers
from visionkit.config.ranges import RANGES
from visionkit.errors import VisionkitError
from visionkit.run import train
from visionkit.utils.hints import describe

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
        (["data=imagefolder", "data.root=照片/猫"], "quote a value with characters other than ASCII letters"),
        (["data=imagefolder", "data.root=照片/猫"], """(in the shell: "data.root='照片/猫'")"""),
        (["data.class_names=[a,b"], "cannot read the override 'data.class_names=[a,b' (no viable alternative"),
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=0"], "data.image_size=0: expected an integer of 1 or more"),
        (["data.image_size=[32,0]"], "data.image_size=[32, 0]: expected an integer of 1 or more"),
        (["data.image_size=[32]"], "data.image_size=[32]: expected one integer (a square) or [height, width]"),
        (["data.image_size=[32,32,3]"], "data.image_size=[32, 32, 3]: expected one integer (a square) or [height"),
        (["data.batch_size=-4"], "data.batch_size=-4: expected an integer of 1 or more"),
        (["data.val_fraction=1.5"], "data.val_fraction=1.5: expected a fraction from 0 to 1"),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], "leave no images to train on"),
        (["data.num_workers=-1"], "data.num_workers=-1: expected 0 or more"),
        (["optimizer.lr=0"], "optimizer.lr=0: expected a positive number"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0: expected an integer of 1 or more (-1: no limit)"),
        (["seed=-3"], "seed=-3: expected an integer from 0 to 4294967295"),
    ],
)
def test_sizes_counts_and_fractions_out_of_range_are_named(make_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(VisionkitError) as caught:
        check_config(make_cfg(overrides))
    assert message in str(caught.value)
    check_config(make_cfg(["trainer.max_epochs=-1", "data.num_workers=0", "data.test_fraction=0"]))  # edges pass


COMMANDS = ["train", "eval", "predict", "export", "benchmark", "explain", "serve", "robustness", "explore", "gallery"]
COMMANDS += ["verify"]
LIBRARY_WORDS = ("Traceback", "ValidationError", "InitSchema", "RuntimeError", "TypeError", "ValueError", "KeyError")


def _bad_values(hint: Any) -> list[Any]:
    """A wrong-type value and the out-of-range values for a documented key's type hint."""
    text = describe(hint)
    if "an integer" in text or "a number" in text:
        return ["abc", -1, 0, -0.5]
    if "one of" in text:
        return ["nonsense-choice"]
    if "true or false" in text:
        return ["maybe"]
    return []


def test_a_corpus_of_bad_values_for_every_documented_key_is_named(tmp_path: Path) -> None:
    """Every documented key of every command, given a wrong type, a negative number, zero or an unknown choice:
    each is refused by the config check with a VisionkitError naming the key (no library's words) unless the value
    is valid for that key (0 workers, a 0 start time, ...); and every numeric key has a range."""
    refused, accepted = 0, []
    for name in COMMANDS:
        needed = ["source=photos/"] if name in ("predict", "explain", "explore") else []
        needed += [] if name == "train" else ["ckpt_path=/some/best.ckpt"]
        base = compose_config(tmp_path / name, needed, name=name)
        for key, hint in DOCUMENTED_KEYS.items():
            if OmegaConf.select(base, key, default="<absent>") == "<absent>":
                continue
            numeric = "an integer" in describe(hint) or "a number" in describe(hint)
            assert not numeric or key in RANGES or key in UNRANGED, f"{key} has no range check"
            for value in _bad_values(hint):
                cfg = copy.deepcopy(base)
                with open_dict(cfg):
                    OmegaConf.update(cfg, key, value, force_add=True)
                try:
                    check_config(cfg)
                except VisionkitError as exc:
                    message = str(exc)
                    assert message.startswith(key) or f" {key}=" in message, (key, value, message)
                    assert not any(word in message for word in LIBRARY_WORDS), message
                    refused += 1
                    continue
                accepted.append((name, key, value))
    allowed = {(k, v) for k, v in ALLOWED}
    surprising = [(n, k, v) for n, k, v in accepted if (k, v) not in allowed]
    assert not surprising, surprising
    assert refused > 150


UNRANGED = ("data.num_classes", "source")  # a count the data checks against itself; a webcam index
ALLOWED = [  # valid values among the corpus
    *[(k, 0) for k in ("data.num_workers", "num_workers", "data.split_seed", "start", "feather", "seed")],
    ("crop_margin", 0),
    *[(k, 0) for k in ("data.val_fraction", "data.test_fraction", "data.mosaic", "conf", "iou", "tile_overlap")],
    *[(k, 0) for k in ("batch_timeout", "shutdown_timeout", "nms_conf", "nms_iou", "source", "data.num_classes")],
    ("trainer.max_epochs", -1), ("source", -1), ("source", -0.5), ("data.num_classes", -1), ("source", "abc"),
    ("data.num_classes", -0.5), ("optimizer.weight_decay", 0),
    ("triptychs", 0), ("data_images", 0), ("step_mb", 0),  # no flip pictures; this image's patches only; maps only
    ("threshold", 0),  # verify and gallery: only an identical embedding is the same identity
    ("int8_tolerance", 0),  # an INT8 export may not lower the metric at all
]  # fmt: skip


def test_a_gpu_asked_for_where_pytorch_sees_none_names_the_cpu_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from visionkit.utils.device import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(
            VisionkitError, match=rf"trainer.accelerator={accelerator} asks for a GPU .*trainer=ddp_cpu"
        ):
            check_accelerator(accelerator)
    for accelerator in ("cpu", "auto"):
        check_accelerator(accelerator)
