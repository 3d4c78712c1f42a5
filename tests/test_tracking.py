"""Experiment tracking against a real MLflow tracking server (started here on a free localhost port) and W&B offline."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import lightning as L
import pytest
from omegaconf import open_dict

from tests.conftest import compose_config
from tests.serve_requests import BIN, free_port
from visionkit.run import train
from visionkit.training.tracking import run_name

pytest.importorskip("mlflow")
QUICK = ["trainer.max_epochs=3", "data.batch_size=128", "callbacks.sample_predictions.every_n_epochs=1"]


@contextmanager
def mlflow_server(folder: Path, timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` with a SQLite store and proxied artifacts in `folder`, on a free port; stopped at the end."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder)]
    with (folder / "server.log").open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"mlflow server not ready after {timeout} s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class StopProcessAfterEpoch(L.Callback):
    """Kills a process group (the tracking server) when training epoch `epoch` ends."""

    def __init__(self, pid: int, epoch: int = 0) -> None:
        self.pid, self.epoch = pid, epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _csv_epochs(run: Path) -> list[int]:
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    return sorted({int(r["epoch"]) for r in rows if r.get("val_acc")})


def test_a_run_is_read_back_from_the_mlflow_server_with_params_metrics_and_files(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "mlflow") as (url, _):
        run_dir = tmp_path / "2026-12-02" / "10-00-00"
        cfg = compose_config(run_dir, [*QUICK, "logger=many", f"logger.mlflow.tracking_uri={url}"])
        metrics = train(cfg)
        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("visionkit-classification")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.run_name == run_name(run_dir) == "2026-12-02/10-00-00" and run.info.status == "FINISHED"
        params = run.data.params
        assert params["model.backbone"] == "lenet5" and float(params["optimizer.lr"]) == cfg.optimizer.lr
        assert params["data.batch_size"] == "128" and params["trainer.max_epochs"] == "3"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert len(history) == 3 and history[-1].value == pytest.approx(_last_csv_value(run_dir, "val_acc"))
        assert run.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"])
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "report.html", "plots", "checkpoints"} <= files, files
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert "plots/val_samples.png" in plots, plots
        copy = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp_path / "down"))
        assert Path(copy).read_bytes() == (run_dir / "checkpoints" / "best.ckpt").read_bytes()
    assert _csv_epochs(run_dir) == [0, 1, 2] and (run_dir / "tensorboard").is_dir()  # logger=many keeps all three


def _last_csv_value(run: Path, key: str) -> float:
    rows = [r for r in csv.DictReader(next(run.rglob("metrics.csv")).open()) if r.get(key)]
    return float(rows[-1][key])


def test_training_goes_on_when_the_tracking_server_goes_away(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with mlflow_server(tmp_path / "mlflow") as (url, server):
        cfg = compose_config(tmp_path / "run", [*QUICK, "logger=many", f"logger.mlflow.tracking_uri={url}"])
        with open_dict(cfg):
            cfg.callbacks.stop_server = {"_target_": f"{__name__}.StopProcessAfterEpoch", "pid": server.pid}
        with caplog.at_level(logging.WARNING, logger="visionkit"):
            started = time.monotonic()
            metrics = train(cfg)
            seconds = time.monotonic() - started
        assert server.poll() is not None  # it was killed after the first epoch
    assert "test_acc" in metrics and (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert _csv_epochs(tmp_path / "run") == [0, 1, 2]  # the CSV log is complete
    text = caplog.text
    assert "did not answer" in text and "training goes on" in text and "the CSV log has them" in text
    assert "is missing" in text and "metric rows" in text and "artifacts" in text
    assert seconds < 240, seconds  # a dead server is skipped, not waited on for minutes


def test_wandb_offline_run_folder_holds_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    train(compose_config(run_dir, [*QUICK, "trainer.max_epochs=2", "logger=wandb"]))
    import wandb

    wandb.teardown()  # run.finish() returns before W&B's service has flushed the .wandb file; teardown waits for it
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    rows, config = _wandb_log(offline)
    assert [row["epoch"] for row in rows if "val_acc" in row] == [0, 1]
    assert any("test_acc" in row for row in rows)
    assert config["model.backbone"] == "lenet5" and config["data.batch_size"] == "128", sorted(config)[:20]
    assert (offline / "files" / "report.html").is_file() and (offline / "files" / "checkpoints" / "best.ckpt").is_file()


def _wandb_log(offline: Path) -> tuple[list[dict], dict]:
    """The history rows and the config of an offline W&B run, read from its .wandb file: W&B's record log (a
    7-byte header, then LevelDB-log blocks of 32 KiB holding protobuf `Record`s in FULL/FIRST/MIDDLE/LAST chunks)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data = next(offline.glob("*.wandb")).read_bytes()
    assert data[:4] == b":W&B", data[:7]
    rows, config, pending, position, block = [], {}, b"", 7, 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return rows, config
