"""Where the shipped Hydra configs live: inside the wheel, or `conf/` beside the package in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """Absolute path of the config tree (`visionkit/conf` when installed, `<repo>/conf` when editable)."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"visionkit's config tree is missing (looked in {_PACKAGE}/conf and ../conf)")
