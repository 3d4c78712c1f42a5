"""One exception type for user-facing problems, so entry points can print a clean one-line message."""

from __future__ import annotations


class VisionkitError(Exception):
    """A problem with the user's input (data, config, weights) that they can fix; never a bug."""


def user_message(exc: BaseException) -> str | None:
    """The one-line message of the first VisionkitError in the cause chain, or None for a bug.

    DataLoader workers re-raise with the worker's traceback glued into the message, and Hydra's
    instantiate wraps errors from constructors; both are unwrapped so the user sees only the fix.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, VisionkitError):
            text = str(exc)
            if "Original Traceback" in text:  # raised inside a DataLoader worker
                last = text.strip().splitlines()[-1]
                text = last.split("VisionkitError: ", 1)[-1]
            return text
        exc = exc.__cause__ or exc.__context__
    return None
