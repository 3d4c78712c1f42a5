"""`<run>/status.json`: whether a training run is running, finished, interrupted or failed (and why, after how many
epochs), so a folder left by a run that died before its first epoch is not taken for a real run."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from visionkit.errors import user_message
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import is_rank_zero

STATUS_FILE = "status.json"


def write_status(run: Path, status: str, **details: Any) -> None:
    """Record the run's `status` (running, finished, interrupted, failed) with `details` (rank 0 only)."""
    if not is_rank_zero() or not run.is_dir():
        return
    record = {"status": status, "time": datetime.now().astimezone().isoformat(timespec="seconds"), **details}
    with atomic_write(run / STATUS_FILE, "w") as handle:
        json.dump(record, handle, indent=1)


def failure_details(exc: BaseException, epochs_done: int) -> dict[str, Any]:
    """What status.json says of a run that stopped on `exc`: the user's one-line error, or the bug's type and text."""
    message = (
        user_message(exc) or f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    )
    return {"error": message, "epochs_done": epochs_done}


def read_status(run: Path) -> dict[str, Any] | None:
    """The run's status record, or None for runs written before status files existed."""
    path = run / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
