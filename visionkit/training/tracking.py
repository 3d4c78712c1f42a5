"""Experiment trackers (MLflow, Weights & Biases) that also hold what a run folder holds: the resolved config as
parameters, and at the end the plots, report, config and best checkpoint as artifacts.

The MLflow tracker never stops training: when the tracking server is unreachable it warns once, keeps the
count of what it could not log, tries again after `retry_after_s`, and says at the end what is missing (the
CSV log beside it stays complete). Lightning's loggers already log from rank 0 only under DDP.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from visionkit.utils.logging import get_logger

log = get_logger(__name__)

RUN_FILES = ("config.yaml", "report.html", "speed.json", "plots", "checkpoints/best.ckpt")
PARAM_CHARS = 500  # MLflow's limit on a parameter value (older servers); longer values are cut


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as `{"model.backbone": "resnet18", ...}` (Hydra's own settings left out)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_CHARS]
    return flat


def run_name(run_dir: str | os.PathLike[str]) -> str:
    """The run's name in a tracker: the last two parts of its folder (`<date>/<time>`, or `<time>/<job>`)."""
    parts = Path(run_dir).parts
    return "/".join(parts[-2:])


def run_files(run_dir: Path) -> list[tuple[Path, str]]:
    """(file or folder, artifact folder) of the run's outputs that exist."""
    found = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists():
            found.append((path, str(Path(name).parent) if "/" in name else ""))
    return found


class MLflowTracker(MLFlowLogger):
    """Lightning's MLFlowLogger, named after the run folder, that survives a tracking server going away.

    tracking_uri: `sqlite:///mlruns/mlflow.db` (a local store, the default), `http://host:5000` (a server) or
    any MLflow URI. retry_after_s: after a failed call, how long to skip MLflow before trying again.
    """

    def __init__(
        self,
        run_dir: str,
        experiment_name: str = "visionkit",
        tracking_uri: str = "sqlite:///mlruns/mlflow.db",
        artifact_location: str | None = None,
        retry_after_s: float = 30.0,
        request_timeout_s: int = 10,
        request_retries: int = 1,
        tags: dict[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout_s))  # MLflow's defaults wait
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(request_retries))  # minutes on a dead server
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
            if artifact_location is None:  # beside the database, not in whatever folder the run started in
                store = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().absolute().parent
                artifact_location = (store / "artifacts" / experiment_name).as_uri()
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name(run_dir),
            tracking_uri=tracking_uri,
            tags=tags,
            artifact_location=artifact_location,
            log_model=False,  # the best checkpoint goes with the run's files at the end (log_run_files)
        )
        self.run_dir = Path(run_dir)
        self.retry_after_s = float(retry_after_s)
        self.not_logged: dict[str, int] = {}
        self._paused_until = 0.0

    def _guarded(self, what: str, call: Callable[[], Any]) -> None:
        """Run one MLflow call; when MLflow fails, warn (once per outage), count `what` as not logged, pause."""
        if time.monotonic() < self._paused_until:
            self.not_logged[what] = self.not_logged.get(what, 0) + 1
            return
        try:
            call()
        except Exception as exc:  # any transport or server error: training must go on
            if not self.not_logged:
                log.warning(
                    f"MLflow at {self._tracking_uri} did not answer ({type(exc).__name__}: {str(exc)[:200]}): "
                    f"training goes on, {what} and later values are not logged to MLflow; the CSV log has them"
                )
            self.not_logged[what] = self.not_logged.get(what, 0) + 1
            self._paused_until = time.monotonic() + self.retry_after_s

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guarded("metric rows", partial(super().log_metrics, metrics, step))

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self._guarded("parameter sets", partial(super().log_hyperparams, params))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self._guarded("run status", partial(super().finalize, status))

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The resolved config as parameters (`model.backbone`, `optimizer.lr`, ...)."""
        self.log_hyperparams(flat_config(config))

    @rank_zero_only
    def log_run_files(self) -> None:
        """The run's plots, report, config and best checkpoint as artifacts; then what could not be logged."""
        for path, folder in run_files(self.run_dir):
            self._guarded("artifacts", partial(self._upload, path, folder))
        if self.not_logged:
            missing = ", ".join(f"{count} {what}" for what, count in self.not_logged.items())
            log.warning(f"MLflow run {self.run_id} is missing {missing}; metrics.csv in {self.run_dir} is complete")

    def _upload(self, path: Path, folder: str) -> None:
        if path.is_dir():
            self.experiment.log_artifacts(self.run_id, str(path), path.name)
        else:
            self.experiment.log_artifact(self.run_id, str(path), folder or None)


class WandbTracker(WandbLogger):
    """Lightning's WandbLogger named after the run folder, with the resolved config and the run's files.
    `WANDB_MODE=offline` (or `offline: true`) keeps everything in `<run>/wandb/` for `wandb sync` later."""

    def __init__(self, run_dir: str, project: str = "visionkit", offline: bool = False, **kwargs: Any) -> None:
        super().__init__(name=run_name(run_dir), project=project, save_dir=run_dir, offline=offline, **kwargs)
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def log_config(self, config: Mapping[str, Any]) -> None:
        self.experiment.config.update(flat_config(config), allow_val_change=True)

    @rank_zero_only
    def log_run_files(self) -> None:
        """The run's plots, report and best checkpoint into the W&B run, which then ends (flushed). Its config is
        there already (W&B's own files/config.yaml, which ours would overwrite)."""
        for path, _ in run_files(self.run_dir):
            if path.name == "config.yaml":
                continue
            for file in path.rglob("*") if path.is_dir() else [path]:
                if file.is_file():
                    self.experiment.save(str(file), base_path=str(self.run_dir), policy="now")
        self.experiment.finish()


def trackers(loggers: Iterable[Any]) -> list[MLflowTracker | WandbTracker]:
    """The loggers of a trainer that take the run's config and files."""
    return [logger for logger in loggers if isinstance(logger, (MLflowTracker, WandbTracker))]
