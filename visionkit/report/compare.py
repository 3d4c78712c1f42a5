"""Several runs side by side on one page: their final metrics (the best of each column marked), their training
curves overlaid on shared axes, and the config values that differ. `visionkit-report RUN RUN ...` writes it, and
every sweep (`-m`) gets one for all its jobs."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, OmegaConf

from visionkit.callbacks.training_curves import Curves, csv_log_tables, panel_of, read_epoch_curves
from visionkit.errors import VisionkitError
from visionkit.report.html import embedded_png, table, write_page
from visionkit.utils.run_status import read_status

LOWER_IS_BETTER = ("loss",)


def check_run(run: Path) -> None:
    """Stop with one line unless `run` is a visionkit run folder with logged metrics."""
    if not run.is_dir():
        raise VisionkitError(f"{run} is not a folder; pass run folders (outputs/<task>/<date>/<time>)")
    if not (run / "config.yaml").is_file():
        raise VisionkitError(f"{run} is not a visionkit run folder (no config.yaml)")
    status = read_status(run) or {}
    if status.get("status") == "failed" and not status.get("epochs_done"):
        raise VisionkitError(f"{run} failed before its first epoch ({status.get('error')}); leave it out")
    if not list(run.glob("csv/version_*/metrics.csv")):
        raise VisionkitError(f"{run} has no metrics (csv/version_*/metrics.csv): it ran with logger=none, or not yet")


def final_metrics(run: Path) -> dict[str, float]:
    """The last logged value of every metric in the run's CSV logs (test metrics, last epoch's validation)."""
    values: dict[str, float] = {}
    for rows in csv_log_tables(run / "csv"):
        for row in rows:
            for key, value in row.items():
                if value and key not in ("epoch", "step") and not key.endswith("_step"):
                    values[key] = float(value)
    return values


def _flat(tree: object, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)}


def config_differences(runs: list[Path]) -> list[list[str]]:
    """Rows `key, value per run` for every config key whose value is not the same in all runs."""
    flats = [_flat(OmegaConf.to_container(OmegaConf.load(r / "config.yaml"), resolve=False)) for r in runs]
    keys = sorted(set().union(*flats))
    skip = ("paths.", "hydra.")

    def own_folder(key: str) -> bool:  # differs only because each run names its own folder (logs, checkpoints)
        return all(
            str(run.name) in f.get(key, "") and str(run.parent.name) in f.get(key, "") for run, f in zip(runs, flats)
        )

    return [
        [key, *(f.get(key, "—") for f in flats)]
        for key in keys
        if not key.startswith(skip) and len({f.get(key, "—") for f in flats}) > 1 and not own_folder(key)
    ]


def overlaid_curves_figure(curves: list[Curves], names: list[str]) -> Figure:
    """One panel per metric the runs share (train and val kept apart), one line per run."""
    metrics = sorted(set().union(*curves), key=lambda m: (panel_of(m) != "loss", m))
    cols = min(4, len(metrics)) or 1
    rows = -(-len(metrics) // cols) or 1
    fig = Figure(figsize=(4 * cols, 3 * rows + 0.5), layout="constrained")
    fig.suptitle("training curves, run by run")
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, index + 1)
        for run_curves, name in zip(curves, names):
            if metric in run_curves:
                epochs = sorted(run_curves[metric])
                ax.plot(epochs, [run_curves[metric][e] for e in epochs], marker="o", markersize=2, label=name)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if index == 0:
            ax.legend(fontsize=7)
    return fig


def _figure_html(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return embedded_png(buffer.getvalue(), "curves")


def compare_runs(runs: Sequence[str | Path], output: str | Path) -> Path:
    """Write the comparison page of `runs` to `output` (a .html file); return its path."""
    folders = [Path(r) for r in runs]
    for folder in folders:
        check_run(folder)
    names = [f"{f.parent.name}/{f.name}" for f in folders]
    metrics = [final_metrics(f) for f in folders]
    columns = sorted({k for m in metrics for k in m if k.startswith(("test_", "val_")) and "/" not in k})
    best = {}
    for column in columns:
        values = [m[column] for m in metrics if column in m]
        pick = min if any(word in column for word in LOWER_IS_BETTER) else max
        best[column] = pick(values) if values else None
    rows = [["run", *columns]]
    for name, m in zip(names, metrics):
        cells = [
            f"{m[c]:.4f}{' ★' if m[c] == best[c] and len(folders) > 1 else ''}" if c in m else "—" for c in columns
        ]
        rows.append([name, *cells])
    differences = config_differences(folders)
    curves = [read_epoch_curves(f / "csv") for f in folders]
    parts = [
        f"<h1>{len(folders)} runs compared</h1>",
        "<p>★ marks the best value of each column (lowest for losses, highest otherwise).</p>",
        "<h2>Final metrics</h2>",
        table(rows),
        "<h2>Training curves</h2>",
        _figure_html(overlaid_curves_figure(curves, names)) if any(curves) else "<p>No epoch metrics.</p>",
        "<h2>Config differences</h2>",
        table([["key", *names], *differences]) if differences else "<p>The configs are the same.</p>",
        "<h2>Runs</h2><ul>"
        + "".join(f"<li><code>{html.escape(str(f.resolve()))}</code></li>" for f in folders)
        + "</ul>",
    ]
    output = Path(output)
    if output.suffix.lower() != ".html":
        raise VisionkitError(f"-o {output}: the comparison is an HTML page; give a file name ending in .html")
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_page(output, f"{len(folders)} runs compared", parts)


class CompareSweep(HydraCallback):
    """Hydra callback (conf/hydra/default.yaml): when a sweep (`-m`) ends, `<sweep dir>/compare.html` compares
    its jobs (those that logged metrics; a failed job is left out and named). Hydra's base class supplies the
    other events (a class without them gets a warning per event from Hydra)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        from visionkit.utils.logging import get_logger

        log = get_logger(__name__)
        sweep = Path(str(config.hydra.sweep.dir))
        jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        usable = []
        for job in jobs:
            try:
                check_run(job)
                usable.append(job)
            except VisionkitError as exc:
                log.warning(f"sweep comparison leaves out {exc}")
        if usable:
            log.info(f"sweep comparison: {compare_runs(usable, sweep / 'compare.html')}")
