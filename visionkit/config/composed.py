"""The pieces of a run's config that jobs share once it is composed: plain values of config nodes, option dataclasses
filled from it, the saved run config DDP workers re-read, and the launcher environment undone after a job."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from visionkit.config.folders import RUN_CONFIG, RUN_DIR_ENV
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import is_rank_zero

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", RUN_DIR_ENV)


def plain(value: Any) -> Any:
    """A config node as plain Python (resolved); anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def options_from(cfg: DictConfig, options: type[T]) -> T:
    """The dataclass `options` filled with the config keys of its field names (the others keep their defaults)."""
    return options(**{f.name: plain(cfg[f.name]) for f in fields(options) if f.name in cfg})


@contextmanager
def launcher_env_restored() -> Iterator[None]:
    """Undo the environment Lightning's DDP launcher sets in this process, and the run folder set for its
    workers, so the next job of a sweep (or a later launch from this process's environment: torchrun, a test's
    console run) starts its own workers and folder instead of joining this run's."""
    saved = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch = sys.modules.get("torch")  # a process that never imported PyTorch holds no process group
        launched_here = saved["LOCAL_RANK"] is None  # a DDP child's process group is its launcher's to end
        if (
            torch is not None
            and launched_here
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            torch.distributed.destroy_process_group()


def save_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config to `<run>/config.yaml` (rank 0 only); DDP children re-read it."""
    if not is_rank_zero():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(output_dir / RUN_CONFIG, "w") as handle:
        handle.write(OmegaConf.to_yaml(cfg, resolve=True))
