"""Classification predictions as rows, written as CSV and JSON (atomically)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from visionkit.utils.io import atomic_write


def prediction_rows(
    paths: Sequence[str], batches: Sequence[dict[str, torch.Tensor]], class_names: Sequence[str], top_k: int
) -> list[dict[str, Any]]:
    """One row per image: path, label, confidence and the `top_k` ranked (label, probability) pairs.

    Images that could not be read (skipped) get `label=None`.
    """
    rows: list[dict[str, Any]] = []
    k = max(1, min(top_k, len(class_names)))
    for batch in batches:
        probs, indices = batch["probs"].float().topk(k, dim=1)
        for i, index in enumerate(batch["index"].tolist()):
            if not bool(batch["ok"][i]):
                rows.append({"path": paths[index], "label": None, "confidence": None, "top_k": []})
                continue
            ranked = [(class_names[c], round(float(p), 6)) for p, c in zip(probs[i].tolist(), indices[i].tolist())]
            rows.append({"path": paths[index], "label": ranked[0][0], "confidence": ranked[0][1], "top_k": ranked})
    return sorted(rows, key=lambda row: row["path"])


def write_predictions(rows: Sequence[dict[str, Any]], output_dir: Path) -> None:
    """`predictions.csv` (path,label,confidence,top_k as label:prob;...) and `predictions.json`."""
    with atomic_write(output_dir / "predictions.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "confidence", "top_k"])
        for row in rows:
            ranked = ";".join(f"{label}:{prob:.4f}" for label, prob in row["top_k"])
            label = row["label"] if row["label"] is not None else "SKIPPED (unreadable)"
            writer.writerow([row["path"], label, row["confidence"] if row["confidence"] is not None else "", ranked])
    with atomic_write(output_dir / "predictions.json", "w") as handle:
        json.dump(rows, handle, indent=1)
