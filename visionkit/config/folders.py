"""Where the config tree lives, and the run folders its resolvers choose (`outputs/<task>/<date>/<time>`, or beside
a checkpoint's run), so every job writes to a fresh folder and a later job finds the run it belongs to."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_PACKAGE = Path(__file__).resolve().parent.parent  # visionkit/
RUN_CONFIG = "config.yaml"
RUN_DIR_ENV = "VISIONKIT_RUN_DIR"  # set by rank 0 so DDP workers Lightning starts find its config
# data keys that name files or folders relative to where the command runs (not to another key)
DATA_PATHS = (
    "root",
    "csv",
    "yaml",
    "pairs",
    "cache_dir",
    "url",
    *(f"{s}_{k}" for s in ("train", "val", "test") for k in ("json", "images")),
)


def config_dir() -> Path:
    """Absolute path of the config tree (`visionkit/conf` when installed, `<repo>/conf` when editable)."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"visionkit's config tree is missing (looked in {_PACKAGE}/conf and ../conf)")


# ---- run folders -------------------------------------------------------------------------------------------


def run_dir_of_checkpoint(ckpt_path: str | None) -> Path | None:
    """The visionkit run folder a checkpoint belongs to (`<run>/checkpoints/x.ckpt`), if it is one."""
    if not ckpt_path:
        return None
    ckpt = Path(str(ckpt_path)).expanduser()
    run = ckpt.parent.parent
    if ckpt.is_file() and ckpt.parent.name == "checkpoints" and (run / RUN_CONFIG).is_file():
        return run
    return None


def new_run_dir(task_name: str) -> str:
    """`outputs/<task>/<date>/<time>` for a fresh run."""
    now = datetime.now()
    return unused(f"outputs/{task_name}/{now:%Y-%m-%d}/{now:%H-%M-%S}")


def _run_dir(ckpt_path: str | None, task_name: str) -> str:
    run = run_dir_of_checkpoint(ckpt_path)
    return str(run) if run is not None else new_run_dir(task_name)


def _sub_run_dir(ckpt_path: str | None, kind: str) -> str:
    """`<run>/<kind>/<date>_<time>` beside the checkpoint's run, else `outputs/<kind>/<date>/<time>`."""
    run = run_dir_of_checkpoint(ckpt_path)
    now = datetime.now()
    if run is not None:
        return unused(str(run / kind / f"{now:%Y-%m-%d_%H-%M-%S}"))
    return unused(f"outputs/{kind}/{now:%Y-%m-%d}/{now:%H-%M-%S}")


def unused(folder: str) -> str:
    """`folder`, or `folder-2`, `-3`, ... when a run started in the same second already has it."""
    candidate, number = folder, 1
    while Path(candidate).exists():
        number += 1
        candidate = f"{folder}-{number}"
    return candidate


def register_resolvers() -> None:
    """Register `vk_run_dir` and `vk_sub_run_dir` (cached, so one run resolves to one folder)."""
    if not OmegaConf.has_resolver("vk_run_dir"):
        OmegaConf.register_new_resolver("vk_run_dir", _run_dir, use_cache=True)
    if not OmegaConf.has_resolver("vk_sub_run_dir"):
        OmegaConf.register_new_resolver("vk_sub_run_dir", _sub_run_dir, use_cache=True)


def absolute_data_paths(cfg: DictConfig) -> None:
    """The data's relative paths that exist, made absolute before the run's config.yaml is written: `visionkit-eval`
    and `visionkit-export check=true` read the data from that file, in whatever folder they run. A path that does
    not exist is left as typed, for its error message."""
    data = cfg.get("data")
    for key in DATA_PATHS if isinstance(data, DictConfig) else ():
        value = OmegaConf.select(data, key, default=None)
        if isinstance(value, str) and "://" not in value:
            path = Path(value).expanduser()
            if not path.is_absolute() and path.exists():
                data[key] = str(path.absolute())
