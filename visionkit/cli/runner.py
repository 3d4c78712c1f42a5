"""One runner for every console script: the Hydra commands (train, eval, predict, export, explain) and the
argparse one (stylize) share the error formatter, the exit-code policy and `--verbose`.

Exit codes: 0 done; 1 bad input (one line that names it and the fix), a bug (its type and message), some
inputs left unprocessed, or failed sweep jobs; 130 interrupted (finished outputs are kept).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionkit.config.checks import check_overrides
from visionkit.config.folders import RUN_CONFIG, RUN_DIR_ENV, config_dir, new_run_dir, register_resolvers
from visionkit.errors import NEEDS_TRAIN, exception_chain, user_message
from visionkit.utils.logging import is_rank_zero, one_line_per_message

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
TORCH_FREE_JOBS = ("predict", "serve")  # what a base install runs (`visionkit[runtime]`: exported files, no PyTorch)
_NOISE = (
    ".*treespec.*",
    ".*does not have many workers.*",
    ".*litlogger.*",
    ".*configure_callbacks` will override.*",
    ".*WeightAveraging callback, but loading a checkpoint outside.*",
    ".*all_gather is deprecated.*",
    ".*No positive samples.*",  # torchmetrics, for a class without test images; the reports name the class
    ".*Glyph .* missing from font.*",  # matplotlib, at every figure; training names the characters once
)


def error_line(exc: BaseException) -> str:
    """One line that says what is wrong and how to fix it, for user errors and config errors alike."""
    message = user_message(exc)
    if message is not None:
        return message
    for cause in exception_chain(exc):
        missing = re.search(r"Missing mandatory value: ([\w.]+)", str(cause))
        if isinstance(cause, OmegaConfBaseException) and missing:
            key = missing.group(1)
            return f"{key} is not set: pass {key}=<value> on the command line"
        if isinstance(cause, OmegaConfBaseException):
            return f"config error: {str(cause).splitlines()[0]}"
    built = re.search(r"full_key: ([\w.]+)", str(exc))
    if isinstance(exc, InstantiationException) and built and exc.__cause__ is not None:
        # Hydra's first line only names the class; the key and the class's own complaint are what to act on
        reason = (
            str(exc.__cause__).strip().splitlines()[0] if str(exc.__cause__).strip() else type(exc.__cause__).__name__
        )
        return f"{built.group(1)}: {reason} (check the {built.group(1)}.* values)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first} (run again with --verbose for the full traceback)"


def report(prog: str, exc: Exception, verbose: bool) -> None:
    """Print the one line of `exc` on stderr; with --verbose, raise it (its full traceback)."""
    if verbose:
        raise exc
    print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)


def guarded(prog: str, verbose: bool, work: Callable[[], Any]) -> Any:
    """Run `work()`; Ctrl-C exits 130 and any error exits 1 with its one line (the traceback with --verbose)."""
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished outputs are kept", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:
        report(prog, exc, verbose)
        sys.exit(EXIT_ERROR)


def _verbose(argv: list[str]) -> bool:
    """Take `--verbose` out of `argv` (in place); it also asks Hydra for full tracebacks."""
    if "--verbose" not in argv:
        return False
    argv.remove("--verbose")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    return True


def run_argparse(prog: str, run: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> None:
    """An argparse command: `run(argv)` returns its exit status (1 when some inputs were skipped)."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.exit(guarded(prog, "--verbose" in args, lambda: run(args)))


def _worker_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The config of a non-zero rank, composed without Hydra's run folder (only rank 0 writes files).

    Workers Lightning started read rank 0's saved config; torchrun/SLURM ranks compose the same overrides.
    """
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir and (Path(run_dir) / RUN_CONFIG).is_file():
        saved = OmegaConf.load(Path(run_dir) / RUN_CONFIG)
        if isinstance(saved, DictConfig):  # rank 0 wrote a mapping; anything else is composed afresh below
            return saved
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=[o for o in overrides if not o.startswith(("hydra.", "-"))])
    cfg.paths.output_dir = new_run_dir(str(cfg.get("task_name", "run")))
    return cfg


def _print_summary(metrics: dict[str, float], output_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if not is_rank_zero():
        return
    table = Table(title="results", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        if key.startswith(("test_", "val_", "robust_")):
            table.add_row(key, f"{metrics[key]:.4f}")
    console = Console()
    if table.row_count:
        console.print(table)
    headlines = ("test_acc", "test_map50_95", "test_miou", "val_acc", "val_map50_95", "val_miou")
    headline = next((k for k in headlines if k in metrics), None)
    if headline:
        print(f"{headline}: {metrics[headline]:.4f}", flush=True)
    print(f"run folder: {output_dir}", flush=True)


def _overrides(argv: list[str]) -> list[str]:
    """The `key=value` overrides of a Hydra command line (its flags, such as -m or --cfg job, left out)."""
    from hydra._internal.utils import get_args_parser

    known, _ = get_args_parser().parse_known_args(argv)
    return list(known.overrides or [])


def _pruned(exc: BaseException) -> bool:
    """An Optuna trial stopped by its pruner (optuna is imported only when a sweep uses it)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(exc, optuna.TrialPruned)


def run_hydra(prog: str, config_name: str, job: str, renamed: dict[str, str] | None = None) -> None:
    """Run `job` (a function of `visionkit.run`, by name) under Hydra with the shipped configs, after checking the
    overrides (a misspelt key or an unknown choice is named with its close matches, in a second: the job's
    heavy imports come after). A job whose metrics report `failed` inputs exits 1.

    renamed: command-line keys passed on under another name (`task=` of visionkit-predict is a plain value
    there, while Hydra would take it for the `task` config group of training).
    """
    if job not in TORCH_FREE_JOBS and importlib.util.find_spec("torch") is None:  # before Hydra builds callbacks
        print(f"{prog}: error: {NEEDS_TRAIN.format(name='torch')}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    for old, new in (renamed or {}).items():
        sys.argv = [f"{new}={a.split('=', 1)[1]}" if a.startswith(f"{old}=") else a for a in sys.argv]
    argv = sys.argv[1:]
    verbose = _verbose(argv)
    sys.argv = sys.argv[:1] + argv
    register_resolvers()
    for noise in _NOISE:
        warnings.filterwarnings("ignore", message=noise)
    failed: list[str] = []

    def run_job(cfg: DictConfig) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        sweeping = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        one_line_per_message()  # Hydra has configured logging by now
        try:
            metrics = getattr(importlib.import_module("visionkit.run"), job)(cfg)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if sweeping and _pruned(exc):
                raise  # the Optuna sweeper tells the study; a pruned trial is not a failed job
            report(prog, exc, verbose)
            if sweeping:
                failed.append(str(HydraConfig.get().job.num))
                return float("nan")  # one failed job must not end the sweep
            sys.exit(EXIT_ERROR)
        _print_summary(metrics, str(cfg.paths.output_dir))
        if metrics.get("failed"):
            if not sweeping:
                sys.exit(EXIT_ERROR)
            failed.append(str(HydraConfig.get().job.num))
        target = cfg.get("optimized_metric")
        return metrics.get(target) if target else None

    if not is_rank_zero():
        cfg = guarded(prog, verbose, lambda: _worker_config(config_name, argv))
        guarded(prog, verbose, lambda: run_job(cfg))
        return

    import hydra

    if not {"-h", "--help", "--hydra-help"} & set(argv):
        guarded(prog, verbose, lambda: check_overrides(config_name, _overrides(argv)))
    main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(run_job)
    guarded(prog, verbose, main)
    if failed:
        print(f"{prog}: error: sweep job(s) {', '.join(failed)} failed (messages above)", file=sys.stderr)
        sys.exit(EXIT_ERROR)
