"""The pieces every visionkit HTML page is made of: one stylesheet, embedded pictures, tables, the page."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from visionkit.utils.io import atomic_write

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
td, th { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; } img { max-width: 100%; }
figcaption { font-size: 0.8rem; color: #555; } pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
details { margin: 0.5rem 0; } code { overflow-wrap: anywhere; }
.wide { overflow-x: auto; max-width: 100%; }
"""
TABLE_ROWS = 60  # longer tables (curve points) are shown in part; the CSV has them all


def embedded_png(data: bytes, name: str) -> str:
    """A PNG inside the page (a data URI), captioned with `name`."""
    encoded = base64.b64encode(data).decode()
    name = html.escape(name)
    return f'<figure><img src="data:image/png;base64,{encoded}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def image(path: Path) -> str:
    """A PNG file inside the page, captioned with its name."""
    return embedded_png(path.read_bytes(), path.stem.replace("_", " "))


def number_text(text: str) -> str:
    """A cell as people read it: a number written with a point or exponent to 4 significant digits
    (6.698729810778065e-05 -> 6.699e-05, 0.912345 -> 0.9123, 1.000000 -> 1); integers and words as they are."""
    try:
        value = float(text)
    except ValueError:
        return text
    written_as_integer = not any(mark in text for mark in ".eE")
    if written_as_integer or value != value or value in (float("inf"), float("-inf")):
        return text
    return f"{value:.4g}"


def table(rows: list[list[str]], caption: str = "") -> str:
    """An HTML table (first row the header), numbers to 4 significant digits, in a box that scrolls sideways by
    itself when the table is wider than the page."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(number_text(c))}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="wide"><table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def csv_table(path: Path) -> str:
    """A CSV file's table under a fold named after the file (the first TABLE_ROWS rows of a long one)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    shown = rows[: TABLE_ROWS + 1]
    note = f" (first {TABLE_ROWS} of {len(rows) - 1} rows)" if len(rows) > TABLE_ROWS + 1 else ""
    summary = html.escape(f"{path.name}{note}")
    return f"<details{' open' if not note else ''}><summary>{summary}</summary>{table(shown)}</details>"


def write_page(path: Path, title: str, parts: list[str]) -> Path:
    """A complete page: no script, no external resource (the icon too is inline), written atomically."""
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
