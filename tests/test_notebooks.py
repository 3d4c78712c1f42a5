"""Every notebook executes top to bottom (CI runs them), and none is committed with outputs. The two longest
trainings (detection, segmentation) are cut to two epochs here: the test checks that each step runs and shows its
pictures, not what their full runs reach (the tasks' own tests do)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SHORTENED = {"detection.ipynb", "segmentation.ipynb"}  # 46 and 68 s at their 10 and 12 epochs on 2 cores


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel inherits it: the notebook's run folder is cleaned up
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "strip outputs"
    for cell in notebook.cells if path.name in SHORTENED else []:
        cell.source = re.sub(r"max_epochs=\d+", "max_epochs=2", cell.source)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # each notebook shows its data, its training result and its predictions


def test_there_is_a_notebook_per_task() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {f"{t}.ipynb" for t in ("classification", "detection", "segmentation", "style_transfer", "explain")} <= names
