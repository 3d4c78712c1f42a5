"""Shared fixtures: composed configs shrunk for speed, small image datasets written to tmp folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from visionkit.config_dir import config_dir
from visionkit.resolvers import register_resolvers

os.environ.setdefault("VISIONKIT_OFFLINE", "1")  # never try a download from the tests
os.environ.setdefault("PYTHONWARNINGS", "ignore")

FAST = [
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
]


def compose_config(output_dir: Path, overrides: list[str] | None = None, name: str = "train") -> DictConfig:
    """The shipped config with `overrides`, quiet trainer settings and the run folder in `output_dir`."""
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=[*(FAST if name == "train" else []), *(overrides or [])])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config bound to a fresh run folder under tmp_path."""

    def make(overrides: list[str] | None = None, name: str = "train", run: str = "run") -> DictConfig:
        return compose_config(tmp_path / run, overrides, name)

    return make


def write_shapes_folder(root: Path, per_class: int = 12, size: int = 24, seed: int = 0) -> Path:
    """A tiny 3-class image folder: a bright square, a horizontal bar or a vertical bar on noise."""
    rng = np.random.default_rng(seed)
    for name in ("square", "hbar", "vbar"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            a, b = rng.integers(2, size // 3, 2)
            if name == "square":
                img[a : a + size // 2, b : b + size // 2] = 230
            elif name == "hbar":
                img[a : a + 4, 2 : size - 2] = 230
            else:
                img[2 : size - 2, b : b + 4] = 230
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    return write_shapes_folder(tmp_path / "shapes")
