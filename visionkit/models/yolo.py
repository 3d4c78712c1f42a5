"""YOLO detection networks from the installed ultralytics (imported only here), built offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch

from visionkit.errors import VisionkitError
from visionkit.utils.logging import get_logger

log = get_logger(__name__)


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
    names: set[str] = set()
    for yaml in root.rglob("*.yaml"):
        stem = yaml.stem
        if any(tag in stem for tag in ("-seg", "-pose", "-obb", "-cls", "-world", "-p2", "-p6", "-ghost", "rtdetr")):
            continue
        scales = ("n", "s", "m", "l", "x") if stem[-1].isdigit() else ("",)
        names.update(f"{stem}{scale}.yaml" for scale in scales)
    return sorted(names)


def build_yolo(arch: str, num_classes: int, weights: str | None = None) -> Any:
    """An ultralytics DetectionModel for `arch` (e.g. "yolov8n.yaml") with a `num_classes` head, from scratch
    or initialised from an ultralytics `.pt` file (`weights`; a new class head when the classes differ).

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
    model.args = get_cfg()  # type: ignore[assignment]  # a plain attribute of the network (its loss reads it)
    if weights:
        state, _, names = load_ultralytics_weights(weights)
        loaded = transfer_weights(model, state, weights)
        total = len(model.state_dict())
        head = "" if loaded == total else f"; class head re-initialised for {num_classes} classes (was {len(names)})"
        log.info(f"loaded {loaded}/{total} tensors from {weights}{head}")
    return model


def _find_weights(weights: str) -> Path:
    """A local ultralytics `.pt`: the path as given, else the ultralytics weights folder; never downloaded."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    from ultralytics.utils import SETTINGS

    cached = Path(SETTINGS.get("weights_dir", "")) / path.name
    if path.name == str(weights) and cached.is_file():
        return cached
    url = f"https://github.com/ultralytics/assets/releases/latest/download/{path.name}"
    raise VisionkitError(
        f"model.weights: {weights} not found (visionkit does not download weights). Download it on a machine "
        f"with internet ({url} for the official ones), copy it here and pass model.weights=/path/to/{path.name}"
    )


def load_ultralytics_weights(weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """State dict (float32), model yaml and class names of an ultralytics `.pt` (their own training or ours),
    read with `torch.load(weights_only=True)` through ultralytics' allow-list of its model classes."""
    prepare_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    path = _find_weights(weights)
    try:
        checkpoint, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as exc:  # ultralytics raises TypeError/RuntimeError/UnpicklingError on foreign files
        reason = str(exc).strip().splitlines()[0] if isinstance(exc, (TypeError, ValueError)) and str(exc) else ""
        raise VisionkitError(
            f"model.weights: {path} is not a readable ultralytics checkpoint "
            f"({reason or type(exc).__name__ + ': damaged, or not a torch.save file'}); re-download or re-export it"
        ) from None
    network = checkpoint.get("ema") or checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(network, torch.nn.Module) or not hasattr(network, "yaml"):
        raise VisionkitError(f"model.weights: {path} holds no ultralytics detection network ('model'/'ema')")
    names = getattr(network, "names", None) or {}
    names = [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    state = {k: v.float() if v.is_floating_point() else v for k, v in network.state_dict().items()}
    return state, dict(cast(dict, network.yaml)), names


def transfer_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Load `state` into `model`: every tensor must match, except the class-score layers when the number of
    classes differs (transfer learning: those start fresh). Returns how many tensors were loaded."""
    own = model.state_dict()
    own_nc, their_nc = int(cast(dict[str, Any], model.yaml)["nc"]), _classes_of(state, own)
    fresh: list[str] = []
    wrong: list[str] = []
    for key, value in own.items():
        theirs = state.get(key)
        if theirs is not None and theirs.shape == value.shape:
            continue
        is_class_layer = theirs is not None and their_nc != own_nc and theirs.shape[:1] == (their_nc,)
        (fresh if is_class_layer else wrong).append(key)
    unexpected = sorted(set(state) - set(own))
    if wrong or unexpected:
        example = (wrong or unexpected)[0]
        raise VisionkitError(
            f"model.weights: {source} does not fit model.arch={cast(dict[str, Any], model.yaml).get('yaml_file')} "
            f"({len(wrong)} tensors differ or are missing, {len(unexpected)} unexpected, e.g. {example}); "
            "choose the model config of the architecture the weights were trained with"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return len(own) - len(fresh)


def _classes_of(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> int:
    """Number of classes the checkpoint's head predicts (the output rows of its last class-score conv)."""
    keys = [k for k in own if ".cv3." in k and k.endswith(".bias") and k in state]
    return int(state[keys[-1]].shape[0]) if keys else -1


def freeze_layers(model: torch.nn.Module, count: int) -> list[str]:
    """Stop gradients for the first `count` layers of an ultralytics network (their `model.<i>.` parameters)."""
    layers = len(cast(torch.nn.Sequential, model.model))
    if count < 0 or count >= layers:
        raise VisionkitError(f"freeze={count}: choose 0..{layers - 1} (the network has {layers} layers)")
    prefixes = tuple(f"model.{i}." for i in range(count))
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def yolo_head(network: torch.nn.Module) -> torch.nn.Module:
    """The last layer of an ultralytics network: its Detect (or Segment, Pose, ...) head."""
    return cast(torch.nn.Sequential, network.model)[-1]


def decode_boxes_in_float32(network: torch.nn.Module) -> bool:
    """Under bf16 or fp16 autocast a YOLO head decodes its boxes in that precision, and bfloat16 keeps 8 bits: a
    box edge near 640 px moves in steps of 4 px (2.3 px median, 5.8 px at most on 640 px images, measured). This
    makes the head's decode (distribution to distances, anchors, strides, class sigmoid) run in float32, the
    convolutions staying in the low precision. Returns False for a head without ultralytics' `_inference`."""
    head = yolo_head(network)
    decode = getattr(head, "_inference", None)
    if decode is None:
        return False

    def decode_float32(x: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(x["boxes"].device.type, enabled=False):
            out = decode({**x, "boxes": x["boxes"].float(), "scores": x["scores"].float()})
        head.anchors, head.strides = head.anchors.float(), head.strides.float()  # made from the features' dtype
        return out

    head._inference = decode_float32  # type: ignore[assignment]  # the head's own method, replaced
    return True
