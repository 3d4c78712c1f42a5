"""Exact resume: a run killed with SIGKILL and resumed from its newest checkpoint ends where an uninterrupted
run ends (same weights, same test metrics); a kill in the middle of a checkpoint write leaves the previous one."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.object_store import object_store
from tests.serve_requests import BIN

# LeNet-5 on the digits, 3 epochs of 40 steps, a checkpoint after every step, deterministic algorithms, light
# augmentation (its draws are part of what must come out the same).
JOB = [
    "experiment=digits_lenet5",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "~callbacks.sample_predictions",
    "trainer.enable_model_summary=false",
    "logger=csv",
    "scheduler=onecycle",  # per-step schedule from estimated_stepping_batches: the loader is built in setup
]
ENV = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}


def _train(run_dir: Path, *extra: str, env: dict[str, str] = ENV) -> subprocess.Popen:
    command = [str(BIN / "visionkit-train"), *JOB, f"hydra.run.dir={run_dir}", *extra]
    run_dir.mkdir(parents=True, exist_ok=True)
    log = (run_dir.parent / f"{run_dir.name}-{len(list(run_dir.parent.glob(run_dir.name + '-*.log')))}.log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.fixture(scope="module")
def digits_in_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The digits packed into a moto S3 server: the training arguments and environment that read them."""
    with object_store() as store:
        env = ENV | store.env
        url = f"s3://{store.bucket('resume')}/digits"
        folder = tmp_path_factory.mktemp("pack")
        packing = subprocess.run(
            [str(BIN / "visionkit-pack"), f"out={url}", "pack.chunk_mb=0.02", f"hydra.run.dir={folder}"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert packing.returncode == 0, packing.stderr[-3000:]
        yield ["data=stream", f"data.url={url}", f"data.cache_dir={folder / 'cache'}"], env


def _finished(process: subprocess.Popen, run_dir: Path) -> str:
    code = process.wait(timeout=300)
    logs = sorted(run_dir.parent.glob(run_dir.name + "-*.log"))
    text = logs[-1].read_text()
    assert code == 0, text[-3000:]
    return text


def _step_of(checkpoint: Path) -> int:
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1  # not written yet


def _test_metrics(log: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(r"^(test_\w+): ([0-9.]+)$", log, flags=re.MULTILINE)}


@pytest.mark.parametrize("where", ["random", "streamed_ddp_epoch_end"])
def test_a_run_killed_at_a_random_step_resumes_to_the_uninterrupted_result(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """Killed at a random step of 3 epochs (40 steps each), and, streamed from an S3 store by two DDP processes
    (2 epochs of 20 steps), at the last step of the first epoch, the moment before its validation: the resumed run
    validates that epoch as the uninterrupted one did, and the resumed ranks go on after the samples they had
    trained on (best.ckpt, the weights and the test metrics agree)."""
    streamed = where.startswith("streamed")
    extra, env = request.getfixturevalue("digits_in_s3") if streamed else ([], ENV)
    if streamed:
        extra = [*extra, "trainer=ddp_cpu", "trainer.max_epochs=2"]
    whole = _train(tmp_path / "whole", *extra, env=env)  # the two runs share the two cores: start the reference first
    # a random step, or an epoch's end (20 under DDP); KILL_AT=<step> repeats a failure
    kill_at = 20 if streamed else int(os.environ.get("KILL_AT") or random.Random().randint(5, 110))
    killed_dir = tmp_path / "killed"
    killed = _train(killed_dir, *extra, env=env)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while _step_of(last) < kill_at:
        assert killed.poll() is None, f"the run ended before step {kill_at}"
        assert time.monotonic() < deadline, f"step {kill_at} not reached in 300 s"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed_from = _step_of(last)
    # resumed with two loader workers where the killed run had none: order and augmentation must not care
    resumed_log = _finished(_train(killed_dir, *extra, f"ckpt_path={last}", "data.num_workers=2", env=env), killed_dir)
    whole_log = _finished(whole, tmp_path / "whole")

    expected = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(last, weights_only=True)
    assert got["global_step"] == expected["global_step"] > resumed_from
    differing = [k for k, v in expected["state_dict"].items() if not torch.equal(v, got["state_dict"][k])]
    assert not differing, f"killed at step {resumed_from}: weights differ in {differing}"
    assert _test_metrics(resumed_log) == _test_metrics(whole_log) != {}, f"killed at step {resumed_from}"


WRITER = """
import sys, torch
from visionkit.utils.checkpoint_io import save_atomically
save_atomically({"weights": torch.arange(60_000_000, dtype=torch.float32), "step": 2}, sys.argv[1])
"""


def test_a_kill_in_the_middle_of_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"weights": torch.zeros(3), "step": 1}, checkpoint)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(checkpoint)], start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 1_000_000 for p in tmp_path.glob(".last.ckpt.*.tmp")):  # 240 MB on its way
        assert writer.poll() is None, "the write finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    assert torch.load(checkpoint, weights_only=True)["step"] == 1


def test_last_ckpt_holds_the_last_epoch_when_the_metric_stops_improving(tmp_path: Path) -> None:
    """Lightning 2.6 writes last.ckpt only beside a new best one; ours writes it after every epoch, so a resume
    never repeats the epochs that did not improve (validated at the epoch's end and within it)."""
    import lightning as L
    import torch

    from visionkit.callbacks.checkpoint import ModelCheckpoint

    class Falling(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.layer(batch).sum()

        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            self.log("score", -float(self.global_step))  # worse at every validation

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=2)
    for interval in (1.0, 0.5):
        folder = tmp_path / str(interval)
        checkpoint = ModelCheckpoint(dirpath=folder, filename="best", monitor="score", mode="max", save_last=True)
        trainer = L.Trainer(
            max_epochs=3, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=interval,
        )  # fmt: skip
        trainer.fit(Falling(), data, data)
        last = torch.load(folder / "last.ckpt", weights_only=True)
        best = torch.load(folder / "best.ckpt", weights_only=True)
        assert (last["epoch"], last["global_step"]) == (2, 12), interval
        assert best["global_step"] < 12
