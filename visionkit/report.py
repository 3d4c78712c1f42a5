"""`report.html`: one self-contained page per run (pictures embedded, no script, no network): the command, the
final metrics, the training curves, every plot and table the run wrote, the speed report and the resolved
config. Written by `visionkit-train` after its test and by `visionkit-eval` in its folder."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
td, th { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; } img { max-width: 100%; }
figcaption { font-size: 0.8rem; color: #555; } pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
details { margin: 0.5rem 0; }
"""
PLOT_ORDER = ("results", "confusion_matrix", "per_class", "roc", "pr", "reliability")
TABLE_ROWS = 60  # longer tables (curve points) are shown in part; the CSV has them all


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.stem.replace("_", " "))
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def _table(rows: list[list[str]], caption: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv_table(path: Path) -> str:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    shown = rows[: TABLE_ROWS + 1]
    note = f" (first {TABLE_ROWS} of {len(rows) - 1} rows)" if len(rows) > TABLE_ROWS + 1 else ""
    table = _table(shown, f"{path.name}{note}")
    return f"<details{' open' if not note else ''}><summary>{html.escape(path.name)}</summary>{table}</details>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [["metric", "value"]]
    for key, value in sorted(metrics.items()):
        if isinstance(value, (int, float)):
            rows.append([key, f"{value:.4f}" if isinstance(value, float) else str(value)])
    return _table(rows) if len(rows) > 1 else "<p>No final metrics were recorded.</p>"


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
    rows = [["measure", "value"], *([k, str(speed.get(k))] for k in keys)]
    advice = "".join(f"<li>{html.escape(tip)}</li>" for tip in speed.get("advice", []))
    return f"<h2>Speed</h2>{_table(rows)}<ul>{advice}</ul>"


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
        "<h2>Plots</h2>" + "".join(_image(p) for p in plots) if plots else "",
        "<h2>Tables</h2>" + "".join(_csv_table(p) for p in tables) if tables else "",
        _speed(run),
        f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>" if config.is_file() else "",
    ]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title or run.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    path = run / "report.html"
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
