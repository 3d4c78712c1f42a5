"""Running the argparse entry points (visionkit-stylize, visionkit-explain): a clean one-line error for bad
input (the traceback only with --verbose), exit status 130 on Ctrl-C, the command's own status otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from visionkit.errors import user_message


def run_console(prog: str, run: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> None:
    """Call `run(argv)` and exit with its status; bugs print their type and message, user errors their fix."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = run(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished outputs are kept", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if "--verbose" in argv:
            raise
        message = user_message(exc)
        if message is None:
            message = f"{type(exc).__name__}: {exc} (run again with --verbose for the full traceback)"
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status)
