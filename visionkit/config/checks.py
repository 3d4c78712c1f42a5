"""The checks of a composed config (and of command-line overrides) that run before any work, so a wrong key,
value or choice is named at once, with the closest right one."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionkit.config.folders import config_dir, register_resolvers
from visionkit.config.ranges import check_ranges
from visionkit.errors import VisionkitError
from visionkit.utils.hints import describe, fits, parameters

# ---- checks of a composed config ---------------------------------------------------------------------------

Size = int | list[int] | None
# visionkit's own keys (those not passed to a `_target_`), with the types the code expects.
DOCUMENTED_KEYS: dict[str, Any] = {
    "seed": int | None,
    "cpu_threads": int | None,
    "test_after_fit": bool,
    "ckpt_path": str | None,
    "optimized_metric": str | None,
    "monitor.metric": str,
    "monitor.mode": Literal["min", "max"],
    "data.num_classes": int | None,
    "data.class_names": list[str] | None,
    "data.image_size": Size,
    "data.resize": Literal["stretch", "letterbox", "crop"] | None,
    "data.batch_size": int,
    "data.eval_batch_size": int | None,
    "data.num_workers": int,
    "data.pin_memory": bool | None,
    "data.persistent_workers": bool,
    "data.val_fraction": float,
    "data.test_fraction": float,
    "data.split_seed": int,
    "data.skip_bad_images": bool,
    "data.mosaic": float,
    "data.cache": Literal["ram", "disk"] | None,
    "data.cache_dir": str | None,
    "data.cache_max_gb": float | None,
    "data.per_identity": int | Literal["auto"] | None,
    "data.pairs": str | None,
    "data.builtin": Literal["glyphs", "patches"],
    "source": str | int | None,
    "stride": int,
    "start": float | None,
    "end": float | None,
    "max_frames": int | None,
    "timeout": float,
    "shutdown_timeout": float,
    "output": str | None,
    "overwrite": bool,
    "save_txt": bool,
    "track": bool,
    "tracker": Literal["bytetrack", "botsort"],
    "background": str | None,
    "foreground": list[str | int] | None,
    "feather": float,
    "save_masks": bool,
    "batch_size": int,
    "num_workers": int | None,
    "image_size": Size,
    "skip_bad_images": bool,
    "top_k": int,
    "conf": float,
    "iou": float,
    "max_det": int,
    "rect": bool,
    "save_images": bool,
    "save_conf": bool,
    "tile_size": Size,
    "tile_overlap": float,
    "scale": float,
    "device": str,
    "host": str,
    "port": int,
    "workers": int,
    "max_batch_size": int,
    "batch_timeout": float,
    "api_key": str | None,
    "max_upload_mb": float,
    "max_image_pixels": int,
    "max_images": int,
    "mask_format": Literal["png", "rle", "both"],
    "image_format": Literal["png", "jpeg"],
    "size": int | None,
    "precision": Literal["auto", "fp32", "bf16", "fp16"],
    "runtime": Literal["pytorch", "onnx", "openvino", "torchscript", "auto"],
    "split": Literal["test", "val"],
    "attacks": list[str],
    "eps": list[float],
    "steps": int,
    "n": int,
    "triptychs": int,
    "robustness": bool,
    "channels": int,
    "step_mb": float,
    "map_size": int,
    "patches": int,
    "data_images": int,
    "serve": bool,
    "formats": list[str],
    "opset": int,
    "dynamic": bool,
    "half": bool,
    "simplify": bool,
    "int8": bool,
    "calibration_images": int,
    "int8_tolerance": float,
    "preprocess": bool,
    "nms": bool,
    "nms_conf": float | None,
    "nms_iou": float | None,
    "nms_max_det": int | None,
    "check": bool,
    "check_batches": int | None,
    "batch_sizes": list[int],
    "rounds": int,
    "seconds": float,
    "network": Literal["vgg19"] | None,
    "weights": str,
    "output_dir": str,
    "layers": list[str] | None,
    "cam_layers": list[str] | None,
    "list_layers": bool,
    "target_class": list[str | int],
    "max_channels": int,
    "reference": str | None,
    "action": Literal["build", "add", "search"],
    "out": str | None,
    "k": int,
    "threshold": float | None,
    "index": Literal["auto", "flat", "hnsw", "ivf"],
    "gallery": str | None,
    "images": list[str],
    "detector": str | None,
    "crop_margin": float,
}
_CALL_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
FILLED_AT_BUILD = ("task.num_classes", "task.class_names")  # run.build_task passes what the data found


def _check_value(key: str, value: Any, hint: Any, source: str | None = None) -> None:
    if not fits(value, hint):
        origin = f" (from {source})" if source else ""
        raise VisionkitError(f"{key}={value!r}{origin}: expected {describe(hint)}")


Check = tuple[str, Any, Any, str | None]  # key, value, type hint, the interpolation it came from


def _closest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"did you mean {', '.join(close)}? " if close else ""


def _signature(target: str) -> tuple[dict[str, Any], bool] | None:
    """({parameter: type hint}, takes **kwargs) of a `_target_`, or None when it cannot be inspected."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        raise VisionkitError(f"_target_: {target} cannot be imported; check the name") from None
    return parameters(obj)


def _plain(node: Any, key: str | int) -> tuple[bool, Any]:
    """(resolved?, plain value) of one child, leaving interpolations that only Hydra resolves alone."""
    try:
        value = node[key]
    except Exception:
        return False, None
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return True, OmegaConf.to_container(value, resolve=True)
        except Exception:
            return False, None
    return True, value


def _value_check(node: DictConfig, key: str, where: str, hint: Any) -> Check | None:
    """The check of one child value (None when only Hydra can resolve it, or it is an object config)."""
    ok, value = _plain(node, key)
    if not ok or (isinstance(value, dict) and "_target_" in value):
        return None
    child = node._get_node(key)
    source = str(child._value()) if child is not None and OmegaConf.is_interpolation(node, key) else None
    return where, value, hint, source


def _check_call(path: str, node: DictConfig, checks: list[Check]) -> None:
    """The keys of a `_target_` node must be parameters of the target; their value checks go to `checks`."""
    target = str(node._target_)
    found = _signature(target)
    if found is None:
        return
    params, takes_any = found
    for key in node:
        key = str(key)
        if key in _CALL_KEYS:
            continue
        if key not in params:
            if takes_any:
                continue
            where = f"{path}.{key}" if path else key
            raise VisionkitError(
                f"{where} is not an option of {target.rsplit('.', 1)[-1]}; {_closest(key, list(params))}"
                f"(options: {', '.join(params)})"
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig) and "_target_" in child:
            continue  # an object built from its own config: checked on its own
        where = f"{path}.{key}" if path else key
        check = None if where in FILLED_AT_BUILD else _value_check(node, key, where, params[key])
        if check is not None:
            checks.append(check)


def _require_values(cfg: DictConfig) -> None:
    """Stop early, naming the keys, when the config still holds mandatory `???` values."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        keys = ", ".join(missing)
        raise VisionkitError(f"{keys} is not set: pass {missing[0]}=<value> on the command line")


def check_config(cfg: DictConfig) -> None:
    """Before any work: no `???` values left; every `_target_` node takes its keys with values of the right type;
    visionkit's own keys (DOCUMENTED_KEYS) have their types. Errors name the key, the value and what is expected."""
    _require_values(cfg)
    checks: list[Check] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, DictConfig):
            if "_target_" in node:
                _check_call(path, node, checks)
            for key in node:
                if key == "hydra":
                    continue
                child = node._get_node(key)
                if isinstance(child, (DictConfig, ListConfig)):
                    visit(child, f"{path}.{key!s}" if path else str(key))
        elif isinstance(node, ListConfig):
            for index in range(len(node)):
                item = node._get_node(index)
                if isinstance(item, (DictConfig, ListConfig)):
                    visit(item, f"{path}[{index}]")

    visit(cfg, "")
    for key, hint in DOCUMENTED_KEYS.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            check = _value_check(node, leaf, key, hint)
            if check is not None:
                checks.append(check)
    # values set directly first: a wrong value is named where the user set it, not where it is interpolated
    for key, value, hint, source in sorted(checks, key=lambda c: c[3] is not None):
        _check_value(key, value, hint, source)
    check_ranges(cfg)


# ---- checks of command-line overrides ----------------------------------------------------------------------


def _groups() -> dict[str, list[str]]:
    """Config groups and their choices (`conf/<group>/<choice>.yaml`)."""
    root = config_dir()
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name != "hydra"
    }


def _missing_key(cfg: DictConfig, dotted: str) -> tuple[str, str, list[str]] | None:
    """None when `dotted` exists, else (its deepest existing parent, the first missing part, that parent's keys)."""
    node: Any = cfg
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        keys = [str(k) for k in node] if isinstance(node, DictConfig) else []  # `in` would miss `???` values
        if part not in keys:
            return ".".join(parts[:depth]), part, keys
        node = node._get_node(part)
    return None


def unreadable_override(parser: Any, overrides: Sequence[str], exc: Exception) -> str:
    """The override Hydra's grammar cannot read, and how to quote it (a path with non-ASCII letters, unclosed
    brackets): Hydra's own message shows the list's text only."""
    reason = str(exc).splitlines()[0]
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:
            key, _, value = override.partition("=")
            if any(value.count(a) != value.count(b) for a, b in ("[]", "{}", "()")):
                return f"cannot read the override {override!r} ({reason}): close its brackets"
            quoted = f"{key}='{value}'" if "'" not in value else f'{key}="{value}"'
            return (
                f"cannot read the override {override!r} ({reason}): quote a value with characters other than ASCII "
                f'letters, digits and ./-_:~ (in the shell: "{quoted}")'
            )
    return f"cannot read the overrides: {reason}"


def check_overrides(config_name: str, overrides: Sequence[str]) -> None:
    """Check `key=value` overrides before Hydra runs: a group choice must exist, a key must exist (unless added
    with `+`); the error names the override and the close matches."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
    except Exception as exc:
        raise VisionkitError(unreadable_override(parser, overrides, exc)) from None
    groups = _groups()
    selections, values = [], []
    for override in parsed:
        key = override.key_or_group
        if override.is_hydra_override():
            continue
        if key in groups and not override.is_delete():
            given = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            chosen = [None if c is None else str(c) for c in given]
            for choice in chosen:
                if choice is not None and choice not in groups[key]:
                    raise VisionkitError(
                        f"{key}={choice}: no such {key} config; {_closest(choice, groups[key])}"
                        f"(choices: {', '.join(groups[key])})"
                    )
            prefix = "+" if override.is_add() else ""
            selections.append(f"{prefix}{key}={'null' if chosen[0] is None else chosen[0]}")
        elif not (override.is_add() or override.is_force_add()):
            values.append(key)
    if not values:
        return
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=selections)
    for key in values:
        missing = _missing_key(cfg, key)
        if missing is not None:
            parent, part, known = missing
            place = f" in {parent}" if parent else ""
            hint = _closest(part, known) or f"its keys: {', '.join(known)}; "
            raise VisionkitError(f"{key}: no such key{place}; {hint}(to add a new key: +{key}=...)")
