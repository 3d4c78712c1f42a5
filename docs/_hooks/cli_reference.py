"""The command reference: each console script's own `--help` (Hydra commands list their usage, examples, config
groups and composed config; argparse commands their options), so the page says what the installed commands say."""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def commands() -> dict[str, str]:
    """{command: its module}, as pyproject.toml installs them."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def help_text(command: str, module: str) -> str:
    """What `<command> --help` prints (run in this process: the imports are shared between commands)."""
    entry = importlib.import_module(module)
    saved = sys.argv
    sys.argv = [command, "--help"]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            entry.main()
    except SystemExit:
        pass
    finally:
        sys.argv = saved
    return printed.getvalue().rstrip()


def markdown() -> str:
    """The reference page: one section per command with its --help in a code block."""
    out = [
        "# Command reference",
        "",
        "Generated when the site is built from each installed command's `--help`. Hydra commands take "
        "`group=option` and `key=value` overrides (the [configuration reference](config.md) lists every key); "
        "`--cfg job` prints the composed config without running.",
        "",
    ]
    for command, module in commands().items():
        out += [f"## `{command}`", "", "```text", help_text(command, module), "```", ""]
    return "\n".join(out)
