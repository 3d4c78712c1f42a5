"""Pretrained weights: torchvision enums from the torch hub cache, timm hub weights, or a local file.

Weights are never downloaded silently in offline mode and never replaced by random ones: when they
cannot be had, the error says which file to fetch and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from visionkit.errors import VisionkitError

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def offline() -> bool:
    """True when downloads must not be attempted (VISIONKIT_OFFLINE=1 or HF_HUB_OFFLINE=1)."""
    return any(os.environ.get(k, "0") not in ("", "0", "false") for k in ("VISIONKIT_OFFLINE", "HF_HUB_OFFLINE"))


def is_weights_file(weights: str) -> bool:
    """Whether a `weights` value names a file rather than a torchvision enum or hub tag."""
    return os.sep in weights or "/" in weights or weights.lower().endswith(WEIGHT_FILE_SUFFIXES)


def torchvision_weights_state(arch: str, weights: str, option: str = "model.weights") -> dict[str, torch.Tensor]:
    """State dict of torchvision `arch` for enum name `weights` ("DEFAULT", "IMAGENET1K_V1", ...).

    Reads the torch hub cache; downloads only when online. Offline and uncached: an error that says
    where to put the file, or how to pass it with `option` (the setting the user gives a file with).
    """
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        entry = enum.DEFAULT if weights.upper() == "DEFAULT" else enum[weights]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise VisionkitError(
            f"{option}={weights!r} is not a weight set of {arch}; choose one of {names} or give a file path"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.url).path).name
    if cached.is_file() or not offline():
        try:
            return entry.get_state_dict(progress=True, check_hash=False)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            reason = f" ({exc})"
        if cached.is_file():
            raise VisionkitError(f"cached weights {cached} could not be read{reason}; delete the file and retry")
    else:
        reason = ""
    raise VisionkitError(
        f"pretrained weights {arch} {entry.name} are not available offline{reason}: download {entry.url} on a "
        f"machine with internet and copy it to {cached} (the torch hub cache; TORCH_HOME moves it), "
        f"or pass {option}=/path/to/{cached.name}"
    )


def read_weights_file(path: str | os.PathLike[str], option: str = "model.weights") -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt/.bin/.safetensors file or a Lightning checkpoint (weights_only); errors
    name `option`, the setting the file was given with."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VisionkitError(f"{option}: file {path} does not exist")
    state: Any  # a state dict, or a checkpoint holding one under a key below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VisionkitError(f"{option}: {path} is not a readable weights file ({exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VisionkitError(f"{option}: {path} holds no state dict of tensors")
    # A visionkit checkpoint: keep the backbone of `model.backbone.*`, drop its head.
    if any(k.startswith("model.backbone.") for k in state):
        state = {k[len("model.backbone.") :]: v for k, v in state.items() if k.startswith("model.backbone.")}
    return state


def adapt_input_convs(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with its RGB first-layer kernels fitted to a network of another channel count, the way timm does
    (`adapt_input_conv`): summed over RGB for 1 channel, repeated and rescaled by 3/N for N channels, so the
    first layer's response to a grey or multi-band image keeps the scale the pretrained layers expect."""
    from timm.models import adapt_input_conv

    adapted = dict(state)
    for key, weight in state.items():
        target = own.get(key)
        if (
            target is not None
            and weight.ndim == 4
            and target.ndim == 4
            and weight.shape[1] == 3
            and target.shape[1] != 3
            and weight.shape[0] == target.shape[0]
            and weight.shape[2:] == target.shape[2:]
        ):
            adapted[key] = adapt_input_conv(int(target.shape[1]), weight)
    return adapted


def with_input_channels(net: nn.Module, in_channels: int) -> nn.Module:
    """`net` with its first convolution taking `in_channels` instead of 3 (new kernels, same shape otherwise):
    torchvision models have no such argument."""
    if in_channels == 3:
        return net
    name, conv = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if conv is None or conv.in_channels != 3:
        raise VisionkitError(f"{type(net).__name__}: no 3-channel first convolution to give {in_channels} channels")
    geometry: dict[str, Any] = {k: getattr(conv, k) for k in ("kernel_size", "stride", "padding", "dilation")}
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        **geometry,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], new)
    return net


def load_backbone_state(body: nn.Module, state: dict[str, torch.Tensor], head_keys: set[str], source: str) -> None:
    """Load `state` into a headless backbone: every backbone key must be present; only old-head keys may be extra.
    RGB first-layer kernels are adapted to a backbone of another channel count (`adapt_input_convs`)."""
    own = body.state_dict()
    state = adapt_input_convs(state, own)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own and k not in head_keys]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if extra:
            problems.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        if wrong:
            k = wrong[0]
            problems.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise VisionkitError(f"weights {source} do not fit this backbone: {'; '.join(problems)}")
    body.load_state_dict({k: state[k] for k in own}, strict=True)
