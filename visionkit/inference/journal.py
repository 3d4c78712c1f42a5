"""What a prediction run has written, kept as it goes so that a run cut off can finish and several processes can
share one: each rank appends every result's record to its own journal (`shards/predictions-rank{r}.jsonl`, one
JSON line per image, flushed); a restarted run skips the images any journal holds; at the end the journals are
merged, in input order, into the tables one process writes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from visionkit.errors import VisionkitError

JOURNALS = "shards"
SETTINGS = "settings.json"


def journal_path(folder: Path, rank: int) -> Path:
    """Rank `rank`'s journal in the run folder `folder`."""
    return folder / JOURNALS / f"predictions-rank{rank}.jsonl"


def read_journal(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of one journal. A last line cut off by a kill is left out; with `repair` (the journal's own
    rank, before it appends) the file is cut back to its last whole line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if repair and len(whole) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(whole))
    records = []
    for number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            message = f"{path}:{number}: not a JSON record ({exc.msg}); delete the file to redo its images"
            raise VisionkitError(message) from None
    return records


def journaled(folder: Path) -> dict[str, dict[str, Any]]:
    """Every record the run folder's journals hold, by source path (the first one where a path appears twice)."""
    done: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / JOURNALS).glob("predictions-rank*.jsonl")):
        for record in read_journal(path):
            done.setdefault(str(record["path"]), record)
    return done


def check_settings(folder: Path, settings: dict[str, Any]) -> bool:
    """Whether the run folder's journals were made with `settings` (what changes a result: checkpoint, sizes,
    thresholds, options), stored beside them by the first run: a folder of other settings is refused rather
    than mixed. True when there is nothing to compare yet (the caller then `save_settings`)."""
    stored_path = folder / JOURNALS / SETTINGS
    if not stored_path.is_file():
        return True
    stored = json.loads(stored_path.read_text(encoding="utf-8"))
    changed = sorted(k for k in stored.keys() | settings.keys() if stored.get(k) != settings.get(k))
    if changed:
        shown = "; ".join(f"{k}: {stored.get(k)!r} then, {settings.get(k)!r} now" for k in changed[:3])
        raise VisionkitError(
            f"{folder} holds predictions made with other settings ({shown}): predict into another folder, or "
            f"delete {folder / JOURNALS} to redo them all"
        )
    return False


def save_settings(folder: Path, settings: dict[str, Any]) -> None:
    from visionkit.utils.io import atomic_write

    (folder / JOURNALS).mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / JOURNALS / SETTINGS, "w") as handle:
        json.dump(settings, handle, indent=1, sort_keys=True)


class Journal:
    """Appends records to one rank's journal, each flushed to the operating system at once (a killed process
    loses nothing it reported done)."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = journal_path(folder, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        read_journal(self.path, repair=True)
        self.handle = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def share(items: Sequence[str], rank: int, world: int) -> list[str]:
    """Rank `rank`'s contiguous share of `items` among `world` ranks: the shares differ by at most one item."""
    base, extra = divmod(len(items), world)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def merged(paths: Iterable[str], done: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of `paths` in their order (what one process writes); the ones not done are left out."""
    return [done[p] for p in paths if p in done]


_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.\w+)?$")  # atomic_path's names: .<name>.<8 random chars><suffix>


def remove_temporaries(output_dir: Path) -> int:
    """Delete the half-written files a killed run left (atomic writes that never reached their rename); how many.
    Called by a run started again in the folder, before any of its processes writes."""
    stale = [p for p in output_dir.rglob(".*") if p.is_file() and _TEMPORARY.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
