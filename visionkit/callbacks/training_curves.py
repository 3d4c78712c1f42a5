"""Training curves per epoch as one picture (ultralytics' `results.png`), drawn from the run's own metrics CSV
files when a fit ends, every version of them, so a resumed run keeps one continuous curve."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from visionkit.callbacks.figures import publish
from visionkit.utils.io import atomic_write

Curves = dict[str, dict[int, float]]  # metric -> epoch -> value


def _version(path: Path) -> int:
    match = re.search(r"version_(\d+)", str(path.parent))
    return int(match.group(1)) if match else 0


def csv_log_tables(csv_dir: str | Path) -> list[list[dict[str, str]]]:
    """The rows of every `csv_dir/version_*/metrics.csv` (Lightning's CSVLogger), one list per version, oldest
    first (version_10 after version_9)."""
    tables = []
    for path in sorted(Path(csv_dir).glob("version_*/metrics.csv"), key=_version):
        with open(path, newline="") as handle:
            tables.append(list(csv.DictReader(handle)))
    return tables


def read_epoch_curves(csv_dir: str | Path) -> Curves:
    """Per-epoch values of every epoch-level metric in `csv_dir/version_*/metrics.csv`, older versions first so
    a resumed run's later epochs follow (and overwrite) its earlier ones. Step-level columns (`*_step`) and
    test metrics (one value, not a curve) are left out; learning rates (logged by step) get the epoch that
    step belongs to."""
    curves: Curves = {}
    for rows in csv_log_tables(csv_dir):
        steps = sorted((int(r["step"]), int(r["epoch"])) for r in rows if r.get("step") and r.get("epoch"))
        for row in rows:
            epoch = row.get("epoch")
            if not epoch and row.get("step") and steps:  # a learning rate: the epoch of the next logged step
                step = int(row["step"])
                epoch = next((str(e) for s, e in steps if s >= step), str(steps[-1][1]))
            if not epoch:
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or not value or key.endswith("_step") or key.startswith("test_"):
                    continue
                curves.setdefault(key, {})[int(float(epoch))] = float(value)
    return curves


def panel_of(metric: str) -> str:
    """Which picture a metric goes in: train and val of one quantity together, learning rates together."""
    if metric.startswith("lr-"):
        return "learning rate"
    return re.sub(r"^(train|val)_", "", metric).removesuffix("_epoch")


def curves_figure(curves: Curves, title: str = "training curves") -> Figure:
    """One panel per quantity (loss, each metric, learning rate), train and validation on shared axes."""
    panels: dict[str, list[str]] = {}
    for metric in sorted(curves):
        panels.setdefault(panel_of(metric), []).append(metric)
    order = sorted(panels, key=lambda p: (p != "loss", p == "learning rate", p))
    cols = min(4, len(order)) or 1
    rows = math.ceil(len(order) / cols) or 1
    fig = Figure(figsize=(4 * cols, 3 * rows + 0.4), layout="constrained")
    fig.suptitle(title)
    for index, panel in enumerate(order):
        ax = fig.add_subplot(rows, cols, index + 1)
        for metric in panels[panel]:
            epochs = sorted(curves[metric])
            ax.plot(epochs, [curves[metric][e] for e in epochs], marker="o", markersize=2.5, label=metric)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def write_curves_table(curves: Curves, path: Path) -> Path:
    """The curves as one CSV: a row per epoch, a column per metric (empty where it was not logged)."""
    metrics = sorted(curves)
    epochs = sorted({e for values in curves.values() for e in values})
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *metrics])
        for epoch in epochs:
            writer.writerow([epoch, *(curves[m].get(epoch, "") for m in metrics)])
    return path


class TrainingCurves(L.Callback):
    """At the end of a fit, rank 0 draws `plots/results.png` and writes `tables/results.csv` from the CSV
    logger's files (with no CSV logger there is nothing to draw: it says so once)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not trainer.default_root_dir or trainer.sanity_checking:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None:
            return
        logger.save()  # metrics of the last epochs may still be in memory
        curves = read_epoch_curves(Path(logger.log_dir).parent)
        if not curves:
            return
        root = Path(trainer.default_root_dir)
        write_curves_table(curves, root / "tables" / "results.csv")
        fig = curves_figure(curves, f"training curves ({type(pl_module).__name__})")
        publish(trainer, "train/curves", fig, root / "plots" / "results.png")
