"""The dataset cache: built-in datasets are generated once into it, atomically, and reused afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from visionkit.utils.io import give_default_mode


def default_cache_dir() -> Path:
    """Where built-in datasets are generated: $VISIONKIT_DATA or ~/.cache/visionkit/datasets."""
    return Path(os.environ.get("VISIONKIT_DATA") or Path.home() / ".cache" / "visionkit" / "datasets")


def generated_once(
    cache_dir: str | os.PathLike[str] | None, version: str, generate: Callable[[Path], object], marker: str
) -> Path:
    """`<cache>/<version>`, written by `generate(folder)` unless its `marker` file is already there.

    Generation goes to a temporary folder renamed into place, so an interrupted run leaves no half set and
    concurrent processes (DDP ranks, parallel tests) never read a partial one.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / version
    if (target / marker).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache))
    try:
        generate(tmp)
        give_default_mode(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / marker).is_file():  # another process may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
