"""The Optuna sweeper: search space from Hydra's sweep syntax, pruning, and a killed sweep resumed by rerunning it."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.serve_requests import BIN

optuna = pytest.importorskip("optuna")
from visionkit.errors import VisionkitError  # noqa: E402
from visionkit.training.sweep import OptunaSweeperImpl, distribution  # noqa: E402


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=choice(32, 64)", optuna.distributions.CategoricalDistribution([32, 64])),
        ("a=range(1, 10, 3)", optuna.distributions.IntDistribution(1, 7, step=3)),
        ("a=interval(0.0, 0.5)", optuna.distributions.FloatDistribution(0.0, 0.5)),
        ("a=int(interval(2, 9))", optuna.distributions.IntDistribution(2, 9)),
        ("a=tag(log, interval(1e-4, 1e-1))", optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)),
        ("a=0.3", "0.3"),
    ],
)
def test_hydra_sweep_syntax_maps_to_optuna_distributions(line: str, expected: object) -> None:
    (override,) = OverridesParser.create().parse_overrides([line])
    assert distribution(override) == expected


def test_a_wrong_direction_is_named_with_its_choices() -> None:
    with pytest.raises(VisionkitError, match=r"hydra.sweeper.direction='max': choose maximize or minimize"):
        OptunaSweeperImpl(direction="max")
    assert OptunaSweeperImpl(direction="minimize").direction == "minimize"


KILLED_SWEEP = ["hydra.sweeper.n_trials=5", "trainer.max_epochs=3", "data.batch_size=128"]
KILLED_SWEEP += ["optimizer.lr=choice(0.003,0.00001)"]  # a good and a hopeless rate, in place of the config's range
KILLED_SWEEP += ["hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0"]


def _sweep(sweep_dir: Path, log: Path, overrides: list[str] = KILLED_SWEEP) -> subprocess.Popen:
    command = [str(BIN / "visionkit-train"), "-m", "hparams_search=digits_optuna", f"hydra.sweep.dir={sweep_dir}"]
    command += [*overrides, "~callbacks.progress_bar", "~callbacks.model_summary"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as sink:
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=log.parent, env=env, start_new_session=True
        )


def _files_and_times(sweep_dir: Path, trials: tuple[str, ...]) -> dict[str, float]:
    """Every file of the given trial folders with its modification time: a rerun trial would change them."""
    files = [f for n in trials for f in (sweep_dir / n).rglob("*") if f.is_file()]
    assert {f.relative_to(sweep_dir).parts[0] for f in files} == set(trials)
    return {str(f.relative_to(sweep_dir)): f.stat().st_mtime for f in files}


def test_a_killed_sweep_resumes_with_the_remaining_trials_and_prunes_hopeless_ones(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    first = _sweep(sweep_dir, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while not (sweep_dir / "2" / "config.yaml").exists():  # trial 2 is training
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "trial 2 did not start in 300 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished_before = _files_and_times(sweep_dir, ("0", "1"))  # trial 1 is pruned: it has no report

    second = _sweep(sweep_dir, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "Optuna trial 2 was cut off" in log and "Optuna trial 0 (" not in log and "Optuna trial 1 (" not in log
    assert _files_and_times(sweep_dir, ("0", "1")) == finished_before

    study = optuna.load_study(study_name="digits_lenet5", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.get_trials()
    killed = [t for t in trials if t.user_attrs.get("killed")]
    assert [t.number for t in killed] == [2] and killed[0].state.name == "FAIL"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 2)
    assert retry.params == killed[0].params and retry.state.name in ("COMPLETE", "PRUNED")
    counted = [t for t in trials if not t.user_attrs.get("killed")]
    assert len(counted) == 5 and all(t.state.name in ("COMPLETE", "PRUNED") for t in counted)

    pruned = [t for t in counted if t.state.name == "PRUNED"]
    hopeless = [t for t in counted if t.params["optimizer.lr"] == 0.00001]
    assert hopeless and all(t.state.name == "PRUNED" for t in hopeless)  # a good rate may be pruned too: noise
    assert all((sweep_dir / str(t.number) / "config.yaml").exists() for t in pruned)  # their folders kept

    best = yaml.safe_load((sweep_dir / "optuna_best.yaml").read_text())
    complete = [t for t in counted if t.state.name == "COMPLETE"]
    assert best["best_value"] == max(t.value for t in complete) > 0.8
    assert best["best_params"]["optimizer.lr"] == 0.003
    rows = list(csv.DictReader((sweep_dir / "optuna_trials.csv").open()))
    assert len(rows) == len(trials) and (sweep_dir / "compare.html").exists()


def test_sweep_module_imports_without_optuna_loaded() -> None:
    code = "import sys, visionkit.training.sweep; assert 'optuna' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_two_sweeps_share_one_storage_and_ddp_trials_report_from_rank_zero(tmp_path: Path) -> None:
    """Optuna's way to run trials in parallel: the same command twice (here in two processes, one of them
    training each trial with DDP on 2 CPU processes) shares the study in the sweep folder's storage."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    common = ["hydra.sweeper.n_trials=4", "trainer.max_epochs=2", "data.batch_size=128", "optimizer.lr=choice(0.003)"]
    plain = _sweep(sweep_dir, tmp_path / "plain.log", common)
    ddp = _sweep(sweep_dir, tmp_path / "ddp.log", [*common, "trainer=ddp_cpu"])
    for process, name in ((plain, "plain"), (ddp, "ddp")):
        assert process.wait(timeout=400) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("plain", "ddp")}
    ran = {name: [int(n) for n in re.findall(r"Optuna trial (\d+) \(", text)] for name, text in logs.items()}
    assert ran["plain"] and ran["ddp"] and not set(ran["plain"]) & set(ran["ddp"]), ran  # each trial once

    study = optuna.load_study(study_name="digits_lenet5", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.get_trials()
    # both may ask for the last trial at the same moment (as with Optuna's own n_trials): one extra at most
    assert 4 <= len(trials) <= 5 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), trials
    assert all(t.intermediate_values.keys() == {0, 1} for t in trials)  # one report per epoch, from rank 0
    drawn = {tuple(sorted(t.params.items())) for t in trials}
    assert len(drawn) == len(trials)  # the sampler is seeded per trial number: two processes do not draw alike
    for number in ran["ddp"]:  # each of its trials trained on 2 processes
        trainer = yaml.safe_load((sweep_dir / str(number) / "config.yaml").read_text())["trainer"]
        assert (trainer["strategy"], trainer["devices"]) == ("ddp", 2)
    assert "Starting with 2 processes" in logs["ddp"]
    assert "already reported" not in logs["ddp"]  # what Optuna warns when a step is reported twice
