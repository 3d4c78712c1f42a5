"""visionkit's Optuna sweeper for Hydra (`visionkit-train -m hparams_search=...`): TPE by default, bad trials
pruned by optuna-integration's Lightning callback, trials kept in an Optuna storage so that running the same
command again after a crash runs only the remaining trials. Hydra's own Optuna plugin pins optuna<3.

The Hydra plugin class is `hydra_plugins.visionkit_optuna.optuna_sweeper.VisionkitOptunaSweeper`; the training
side (`pruning_callback`) finds its trial through the environment the sweeper sets for each job.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import socket
from pathlib import Path
from typing import Any, Literal

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write, exclusive_lock
from visionkit.utils.logging import get_logger, is_rank_zero

log = get_logger(__name__)
TRIAL_ENV = ("VISIONKIT_OPTUNA_STORAGE", "VISIONKIT_OPTUNA_STUDY", "VISIONKIT_OPTUNA_TRIAL")
_sweeping: dict[tuple[str, str], Any] = {}  # (storage, study name) -> the sweeper's study, with its pruner


def distribution(override: Override) -> Any:
    """The Optuna distribution of a Hydra sweep override: choice(...) -> categorical, range(a,b[,step]) -> int or
    float steps (b excluded, as in Hydra), interval(a,b) -> uniform, tag(log, interval(a,b)) -> log-uniform.
    A plain `key=value` is not a distribution: its value string is returned (fixed in every trial)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))  # numbers stay numbers
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:
            raise VisionkitError(f"{override.input_line}: range() needs a start and a stop for the Optuna sweeper")
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop) - float(step), step=float(step))
        return IntDistribution(int(start), int(stop) - int(step), step=int(step))
    if isinstance(value, IntervalSweep) and value.start is not None and value.end is not None:
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log="log" in value.tags)
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    raise VisionkitError(
        f"{override.input_line}: the Optuna sweeper takes choice(), range(), interval() or tag(log, ...)"
    )


def search_space(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The distributions of the config's `params` and the command line's sweep overrides, and the fixed overrides."""
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):  # a later line of a key replaces an earlier
        key, found = override.get_key_element(), distribution(override)
        space.pop(key, None)
        fixed.pop(key, None)
        (fixed if isinstance(found, str) else space)[key] = found
    if not space:
        raise VisionkitError("the Optuna sweep has no search space: set hydra.sweeper.params (see conf/hparams_search)")
    return space, [f"{key}={value}" for key, value in fixed.items()]


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """`trial.suggest_*` for an Optuna distribution (what `study.ask(space)` does, through the public API)."""
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _overrides(key: str, value: Any) -> str:
    """A trial's value as a Hydra override (strings quoted only when Hydra would misread them)."""
    return f"{key}={value!r}" if isinstance(value, str) and any(c in value for c in " ,()[]{}=") else f"{key}={value}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OptunaSweeperImpl(Sweeper):
    """Asks Optuna for a trial, launches it as a Hydra job (folder `<sweep dir>/<trial number>`), tells the result."""

    def __init__(
        self,
        params: dict[str, str] | None = None,
        direction: str = "maximize",
        n_trials: int = 10,
        study_name: str = "visionkit",
        storage: str | None = None,
        sampler: Any = None,
        pruner: Any = None,
    ) -> None:
        self.params = dict(params or {})
        if direction not in ("minimize", "maximize"):
            raise VisionkitError(
                f"hydra.sweeper.direction={direction!r}: choose maximize or minimize (of optimized_metric)"
            )
        self.direction: Literal["minimize", "maximize"] = "minimize" if direction == "minimize" else "maximize"
        self.n_trials, self.study_name = int(n_trials), study_name
        self.storage, self.sampler, self.pruner = storage, sampler, pruner

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.metric = config.get("optimized_metric")
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def study(self) -> Any:
        """The study in its storage (created, or loaded when an earlier run of the same command left it)."""
        import optuna

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage or f"sqlite:///{(self.sweep_dir / 'optuna.db').absolute()}"
        # two processes started together would both create the database's tables: one at a time
        with exclusive_lock(self.sweep_dir / ".optuna.lock"):
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self._sampler_for(0, None),
                pruner=self.pruner,
                direction=self.direction,
                load_if_exists=True,
            )
        self.storage_url = storage
        _sweeping[(storage, self.study_name)] = study  # the jobs of this process prune with its pruner
        return study

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        if self.launcher is None:
            raise RuntimeError("OptunaSweeperImpl.sweep runs after Hydra's setup(), which makes the launcher")
        launcher = self.launcher
        space, fixed = search_space(self.params, arguments)
        study = self.study()
        self._requeue_killed(study)
        while (done := self._counted(study)) < self.n_trials:
            trial = study.ask()  # its number is unique among every process that shares the storage
            study.sampler = self._sampler_for(trial.number, study.sampler)
            for name, dist in space.items():
                suggest(trial, name, dist)  # an enqueued retry gets its own parameters back
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("folder", str(self.sweep_dir / str(trial.number)))
            log.info(f"Optuna trial {trial.number} ({done + 1} of {self.n_trials}): {trial.params}")
            overrides = [*fixed, *(_overrides(k, v) for k, v in trial.params.items())]
            os.environ.update(dict(zip(TRIAL_ENV, (self.storage_url, self.study_name, str(trial._trial_id)))))
            try:
                (result,) = launcher.launch([overrides], initial_job_idx=trial.number)
            finally:
                for name in TRIAL_ENV:
                    os.environ.pop(name, None)
            raised = result._return_value
            if isinstance(raised, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
                log.info(f"Optuna trial {trial.number} pruned ({raised}); its folder is kept")
                continue
            value = None if isinstance(raised, BaseException) else raised
            if value is None or not math.isfinite(float(value)):
                study.tell(trial, state=TrialState.FAIL)
                metric = self.metric
                log.warning(f"Optuna trial {trial.number} failed or returned no {metric} (got {value}): told FAIL")
                continue
            study.tell(trial, float(value))
        self._write_results(study)

    def _sampler_for(self, number: int, current: Any) -> Any:
        """The configured sampler seeded with seed + trial number: a resumed or a parallel sweep does not replay
        the draws of the first one, and trial N draws the same whichever process runs it."""
        if not isinstance(self.sampler, functools.partial):
            return self.sampler  # a sampler object (or None, Optuna's default): as configured
        seed = self.sampler.keywords.get("seed")
        if seed is None:
            return current if current is not None else self.sampler()
        return self.sampler(seed=int(seed) + number)

    def _counted(self, study: Any) -> int:
        """Trials that count towards n_trials: finished (complete, pruned, failed) or running in a live process;
        a trial killed with its process was re-queued and does not count."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        return sum(1 for t in study.get_trials(deepcopy=False) if t.state in states and not t.user_attrs.get("killed"))

    def _requeue_killed(self, study: Any) -> None:
        """Trials left RUNNING by a killed sweep on this host are marked FAIL (`killed`) and queued again."""
        from optuna.trial import Trial, TrialState

        host = socket.gethostname()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = frozen.user_attrs.get("pid")
            if frozen.user_attrs.get("host") != host or pid is None or _process_alive(int(pid)):
                continue  # another worker's trial (Optuna's way of sharing a study), still running
            Trial(study, frozen._trial_id).set_user_attr("killed", True)
            study.tell(frozen.number, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
            log.info(f"Optuna trial {frozen.number} was cut off when the sweep stopped: queued again")

    def _write_results(self, study: Any) -> None:
        """`<sweep dir>/optuna_trials.csv` (every trial) and `optuna_best.yaml`; a table of them in the log."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        keys = sorted({k for t in trials for k in t.params})
        with atomic_write(self.sweep_dir / "optuna_trials.csv", "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(["number", "state", "value", *keys, "last_step", "seconds", "folder"])
            for t in trials:
                seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
                writer.writerow(
                    [
                        t.number,
                        t.state.name,
                        "" if t.value is None else t.value,
                        *(t.params.get(k, "") for k in keys),
                        t.last_step if t.last_step is not None else "",
                        "" if seconds == "" else round(float(seconds), 1),
                        t.user_attrs.get("folder", ""),
                    ]
                )
        counts = {
            s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
        }
        if not any(t.state == TrialState.COMPLETE for t in trials):
            log.warning(f"Optuna sweep {self.study_name}: no trial completed ({counts}); see optuna_trials.csv")
            return
        best = study.best_trial
        summary = {
            "name": self.study_name,
            "storage": self.storage_url,
            "direction": self.direction,
            "metric": self.metric,
            "best_value": best.value,
            "best_params": best.params,
            "best_trial": best.number,
            "best_folder": best.user_attrs.get("folder"),
            "trials": counts,
        }
        with atomic_write(self.sweep_dir / "optuna_best.yaml", "w") as handle:
            handle.write(OmegaConf.to_yaml(OmegaConf.create(summary)))
        log.info(
            f"Optuna sweep {self.study_name}: best {summary['metric']}={best.value:.4f} in trial {best.number} "
            f"{best.params}; trials {counts}; {self.sweep_dir / 'optuna_trials.csv'}"
        )


def pruning_callback(cfg: DictConfig) -> Any:
    """optuna-integration's pruning callback for the trial this job is (None outside an Optuna sweep). It watches
    the optimized metric (its validation twin for a test_ metric, which only exists after training), in the
    study's direction; under DDP rank 0 writes to the storage."""
    storage, study_name, trial_id = (os.environ.get(name, "") for name in TRIAL_ENV)
    if not (storage and study_name and trial_id):
        return None
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    # The sweeper's own study carries the configured pruner; DDP workers (rank > 0) load theirs from the storage
    # and never ask it (only rank 0 reports and decides).
    study = _sweeping.get((storage, study_name)) or optuna.load_study(study_name=study_name, storage=storage)
    metric = str(cfg.optimized_metric)
    metric = "val_" + metric.removeprefix("test_") if metric.startswith("test_") else metric
    if is_rank_zero():
        log.info(f"Optuna pruning watches {metric} after each validation")
    return PyTorchLightningPruningCallback(optuna.trial.Trial(study, int(trial_id)), monitor=metric)
