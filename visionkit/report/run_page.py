"""`report.html`: one self-contained page per run (pictures embedded, no script, no network): the command, the
final metrics, the training curves, every plot and table the run wrote, the speed report and the resolved
config. Written by `visionkit-train` after its test and by `visionkit-eval` in its folder."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from visionkit.errors import VisionkitError
from visionkit.report.html import csv_table, image, table, write_page

PLOT_ORDER = ("results", "confusion_matrix", "per_class", "roc", "pr", "confidence", "reliability")


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [["metric", "value"]]
    for key, value in sorted(metrics.items()):
        if isinstance(value, (int, float)):
            rows.append([key, f"{value:.4g}" if isinstance(value, float) else str(value)])
    return table(rows) if len(rows) > 1 else "<p>No final metrics were recorded.</p>"


def _speed(run: Path) -> str:
    path = run / "speed.json"
    if not path.is_file():
        return ""
    speed = json.loads(path.read_text())
    keys = (
        "verdict",
        "images_per_s",
        "data_wait_share",
        "data_wait_ms",
        "model_step_ms",
        "loader_images_per_s",
        "model_images_per_s",
        "rss_peak_mb",
        "workers_rss_peak_mb",
        "cuda_peak_mb",
    )
    rows = [["measure", "value"], *([k, str(speed[k])] for k in keys if speed.get(k) is not None)]
    advice = "".join(f"<li>{html.escape(tip)}</li>" for tip in speed.get("advice", []))
    return f"<h2>Speed</h2>{table(rows)}<ul>{advice}</ul>"


def _robustness(run: Path) -> str:
    """The latest robustness check found under the run (`visionkit-robustness`, `visionkit-eval robustness=true`):
    its table, sanity checks, curve and flips."""
    found = sorted(run.glob("robustness/**/robustness.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        return ""
    folder = found[-1].parent
    checks_file = folder / "checks.json"
    checks = json.loads(checks_file.read_text()) if checks_file.is_file() else {}
    rows = [["sanity check", "result"], *([k, v] for k, v in checks.items())]
    pictures = "".join(image(folder / name) for name in ("robustness.png", "flips.png") if (folder / name).is_file())
    where = html.escape(str(folder.relative_to(run)))
    return f"<h2>Robustness</h2><p>From <code>{where}</code>.</p>{csv_table(found[-1])}{table(rows)}{pictures}"


def _command(run: Path) -> str:
    overrides = run / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return ""
    items = [line[2:].strip() for line in overrides.read_text().splitlines() if line.startswith("- ")]
    return " ".join(items) or "(no overrides)"


def write_report(run: str | Path, metrics: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """Write `<run>/report.html` from what the run folder holds (and the final `metrics`); return its path."""
    run = Path(run)
    if not run.is_dir():
        raise VisionkitError(f"{run} is not a folder; pass a run folder (outputs/<task>/<date>/<time>)")
    config = run / "config.yaml"
    rank = {name: index for index, name in enumerate(PLOT_ORDER)}
    plots = sorted((run / "plots").glob("*.png"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    tables = sorted((run / "tables").glob("*.csv")) + sorted((run / "plots").glob("*.csv"))
    tables += sorted(run.glob("*per_class*.csv"))
    if not plots and not tables and not metrics and not config.is_file():
        raise VisionkitError(f"{run} holds no run: no config.yaml, metrics, plots or tables")
    command = _command(run)
    parts = [
        f"<h1>{html.escape(title or f'visionkit run {run.name}')}</h1>",
        f"<p>Folder: <code>{html.escape(str(run.resolve()))}</code></p>",
        f"<p>Command overrides: <code>{html.escape(command)}</code></p>" if command else "",
        "<h2>Final metrics</h2>",
        _metrics_table(metrics or {}),
        "<h2>Plots</h2>" + "".join(image(p) for p in plots) if plots else "",
        "<h2>Tables</h2>" + "".join(csv_table(p) for p in tables) if tables else "",
        _speed(run),
        _robustness(run),
        f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>" if config.is_file() else "",
    ]
    return write_page(run / "report.html", title or run.name, parts)
