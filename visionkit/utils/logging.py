"""Rank-aware logging: messages carry the process rank and can be limited to rank 0."""

from __future__ import annotations

import logging
import os
import sys

_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # the ones Lightning reads


def process_rank() -> int:
    """Global rank of this process: Lightning's view once Lightning is loaded (DDP set-up updates it), else the
    launcher's environment as Lightning reads it at start-up (so the commands need not import it to know)."""
    if "lightning.pytorch" in sys.modules:
        from lightning.pytorch.utilities import rank_zero_only

        return int(getattr(rank_zero_only, "rank", 0))
    return next((int(os.environ[k]) for k in _RANK_VARIABLES if os.environ.get(k)), 0)


def is_rank_zero() -> bool:
    """True only in the process that may write run folders: global rank 0 (and not a worker of another
    node or of torchrun/SLURM, whose rank variables say otherwise before Lightning sets up)."""
    launcher_ranks = (os.environ.get(k, "0") or "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
    return process_rank() == 0 and all(int(r) == 0 for r in launcher_ranks)


class RankedLogger(logging.LoggerAdapter):
    """A logger that prefixes `[rank N]` in multi-process runs and logs on rank 0 only by default."""

    def __init__(self, name: str, rank_zero_only: bool = True) -> None:
        super().__init__(logging.getLogger(name), extra={})
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: object, *args: object, rank: int | None = None, **kwargs: object) -> None:  # type: ignore[override]  # adds `rank`
        if not self.isEnabledFor(level):
            return
        current = process_rank()
        if self.rank_zero_only and current != 0:
            return
        if rank is not None and rank != current:
            return
        world = int(os.environ.get("WORLD_SIZE", "1"))
        text = f"[rank {current}] {msg}" if world > 1 else str(msg)
        self.logger.log(level, text, *args, **kwargs)


def get_logger(name: str, rank_zero_only: bool = True) -> RankedLogger:
    """Logger for a visionkit module; see RankedLogger."""
    return RankedLogger(name, rank_zero_only=rank_zero_only)


# Lightning's log lines that tell the user nothing they can act on in a visionkit run.
_SILENCED = (
    "💡 Tip:",  # an advertisement for Lightning's cloud logger
    "Trainer already configured with model summary callbacks",  # our configured summary replaces the default
)


class _DropSilenced(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _SILENCED)


def one_line_per_message() -> None:
    """Each Lightning log line printed once, through the handlers the command configured (Hydra's): Lightning adds
    its own stderr handler when it is imported before logging is set up, so every line came out twice; and its
    lines with nothing to act on (a tip for its cloud service, a skipped default callback) are dropped."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        if logging.getLogger().hasHandlers():
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning",
        *(f"lightning.{n}.utilities.rank_zero" for n in ("pytorch", "fabric")),
    ):
        logger = logging.getLogger(name)  # filters act on a logger's own records only: set on each that logs them
        if not any(isinstance(f, _DropSilenced) for f in logger.filters):
            logger.addFilter(_DropSilenced())
