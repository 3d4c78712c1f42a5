"""YOLO detection networks from the installed ultralytics (imported only here), built offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from visionkit.errors import VisionkitError


def prepare_ultralytics() -> None:
    """Environment for ultralytics before its first import: offline, no auto-installs, settings in our
    cache, and the thread count left as torch has it (ultralytics would force OMP_NUM_THREADS=1)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path.home() / ".cache" / "visionkit" / "ultralytics"))
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def available_yolo_models() -> list[str]:
    """Detection model yamls the installed ultralytics ships (e.g. yolov8n.yaml, yolo11s.yaml)."""
    prepare_ultralytics()
    import ultralytics

    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    names = set()
    for yaml in root.rglob("*.yaml"):
        stem = yaml.stem
        if any(tag in stem for tag in ("-seg", "-pose", "-obb", "-cls", "-world", "-p2", "-p6", "-ghost", "rtdetr")):
            continue
        scales = ("n", "s", "m", "l", "x") if stem[-1].isdigit() else ("",)
        names.update(f"{stem}{scale}.yaml" for scale in scales)
    return sorted(names)


def build_yolo(arch: str, num_classes: int) -> Any:
    """An ultralytics DetectionModel for `arch` (e.g. "yolov8n.yaml") with a `num_classes` head.

    `model.args` is set to ultralytics' default hyper-parameters, which its loss reads.
    """
    prepare_ultralytics()
    try:
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel
    except ImportError:
        raise VisionkitError("detection needs ultralytics: pip install 'visionkit[detection]'") from None

    name = arch if arch.endswith((".yaml", ".yml")) else f"{arch}.yaml"
    if name not in available_yolo_models() and not Path(name).is_file():
        import difflib

        close = difflib.get_close_matches(name, available_yolo_models(), n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise VisionkitError(f"unknown YOLO model {arch!r}{hint} (visionkit.models.yolo.available_yolo_models())")
    model = DetectionModel(cfg=name, nc=num_classes, verbose=False)
    model.args = get_cfg()
    return model
