"""Segmentation networks from segmentation-models-pytorch (smp): any architecture with any encoder, encoder
weights by name (Hugging Face hub cache, never silently replaced) or from a local file, encoder freezing."""

from __future__ import annotations

from typing import Any

from torch import nn

from visionkit.errors import VisionkitError
from visionkit.models.weights import adapt_input_convs, is_weights_file, load_backbone_state, offline, read_weights_file

_TIMM_PREFIX = "tu-"


def _smp() -> Any:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise VisionkitError(
            "segmentation needs segmentation-models-pytorch: pip install 'visionkit[segmentation]'"
        ) from None
    return smp


def available_architectures() -> list[str]:
    """smp architecture names usable as `model.arch` (unet, unetplusplus, fpn, deeplabv3plus, segformer, ...)."""
    return sorted(_smp().MODEL_ARCHITECTURES_MAPPING)


def available_encoders() -> list[str]:
    """smp's own encoder names usable as `model.encoder`; any timm model also works as `tu-<timm name>`."""
    return sorted(_smp().encoders.get_encoder_names())


def _check_names(arch: str, encoder: str) -> None:
    import difflib

    if arch.lower() not in available_architectures():
        raise VisionkitError(
            f"model.arch={arch!r} is not an smp architecture; choose one of {available_architectures()}"
        )
    if encoder.startswith(_TIMM_PREFIX):
        import timm

        if not timm.list_models(encoder[len(_TIMM_PREFIX) :].split(".")[0]):
            raise VisionkitError(f"model.encoder={encoder!r}: timm has no model {encoder[len(_TIMM_PREFIX) :]!r}")
        return
    if encoder not in available_encoders():
        close = difflib.get_close_matches(encoder, available_encoders(), n=4)
        raise VisionkitError(
            f"model.encoder={encoder!r} is not an smp encoder (closest: {', '.join(close) or 'none'}); "
            "see visionkit.models.available_encoders(), or use any timm model as tu-<name>"
        )


def _hub_encoder_state(encoder: str, weights: str) -> dict[str, Any]:
    """An smp encoder's named weights from the Hugging Face hub cache (downloaded once when online)."""
    smp = _smp()
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise VisionkitError(
            f"model.encoder_weights={weights!r} is not a weight set of {encoder}; choose one of {list(settings)} "
            "or give a file path"
        )
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    url = f"https://huggingface.co/{repo}/resolve/{revision}/model.safetensors"
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    try:
        path = hf_hub_download(repo, "model.safetensors", revision=revision, local_files_only=offline())
    except Exception as exc:  # offline, no network, or a damaged cache: all end the same way
        raise VisionkitError(
            f"encoder weights {encoder} {weights!r} are not available offline ({type(exc).__name__}): download "
            f"{url} on a machine with internet and pass model.encoder_weights=/path/to/model.safetensors "
            "(or copy the Hugging Face cache and point HF_HOME at it)"
        ) from None
    return load_file(path)


def _timm_encoder_model(arch: str, encoder: str, classes: int, **kwargs: Any) -> nn.Module:
    """An smp model whose `tu-` encoder starts from timm's pretrained weights: from the Hugging Face cache,
    downloaded once when online; offline and uncached, an error that says which file to fetch."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    name = encoder[len(_TIMM_PREFIX) :]
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    cached = None
    for filename in ("model.safetensors", "pytorch_model.bin") if hub_id else ():
        hit = try_to_load_from_cache(str(hub_id), filename)
        if isinstance(hit, str):
            cached = hit
            break
    where = f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors" if hub_id else f"timm's {name} weights"
    advice = f"download {where} on a machine with internet and pass model.encoder_weights=/path/to/model.safetensors"
    if cached is None and offline():
        raise VisionkitError(
            f"timm weights for {encoder} are not in the Hugging Face cache and downloads are off: {advice}"
        )
    overlay = {"pretrained_cfg_overlay": {"file": cached}} if cached else {}
    try:
        return _smp().create_model(
            arch, encoder_name=encoder, encoder_weights=True, classes=classes, **overlay, **kwargs
        )
    except Exception as exc:
        raise VisionkitError(
            f"timm weights for {encoder} could not be loaded ({type(exc).__name__}): {advice}"
        ) from None


def _encoder_keys(state: dict[str, Any], own: set[str]) -> dict[str, Any]:
    """The encoder's part of a state dict saved from an encoder, a timm/torchvision classifier, an smp model
    or a visionkit checkpoint: the key prefix that makes the most keys fit is removed or added."""
    best, best_hits = state, -1
    for prefix in ("", "model.encoder.", "encoder.", "model."):
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        for candidate in (stripped, {f"model.{k}": v for k, v in stripped.items()}):
            hits = len(own & candidate.keys())
            if hits > best_hits:
                best, best_hits = candidate, hits
    return best


def load_encoder_file(encoder: nn.Module, path: str) -> None:
    """Load a weights file into `encoder`: every encoder tensor must be there with its shape (clear error
    otherwise); tensors the encoder does not use (a classifier's head, a decoder) are left out."""
    own = set(encoder.state_dict())
    state = _encoder_keys(read_weights_file(path), own)
    load_backbone_state(encoder, state, set(state) - own, path)


def build_segmentation_model(
    arch: str = "unet",
    encoder: str = "resnet34",
    num_classes: int = 2,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """An smp model with `num_classes` output channels (1 for binary) taking `in_channels`-channel images; extra
    kwargs go to smp's constructor. RGB encoder weights are adapted to other channel counts (as timm does).

    encoder_weights: None (random), a weight-set name ("imagenet"; for `tu-` encoders any name means timm's
    pretrained weights of the tag in the encoder name, e.g. tu-resnet18.a1_in1k), or a local file
    (.safetensors/.pth/.ckpt of the encoder, of a torchvision/timm classifier with the same body, or of a
    whole smp/visionkit model).
    """
    smp = _smp()
    _check_names(arch, encoder)
    if encoder_weights and not is_weights_file(str(encoder_weights)) and encoder.startswith(_TIMM_PREFIX):
        return _timm_encoder_model(arch, encoder, num_classes, in_channels=in_channels, **kwargs)
    model = smp.create_model(
        arch, encoder_name=encoder, encoder_weights=None, classes=num_classes, in_channels=in_channels, **kwargs
    )
    if encoder_weights:
        weights = str(encoder_weights)
        if is_weights_file(weights):
            load_encoder_file(model.encoder, weights)
        else:
            hub = adapt_input_convs(_hub_encoder_state(encoder, weights), model.encoder.state_dict())
            model.encoder.load_state_dict(hub, strict=True)
    return model


def freeze_encoder(model: nn.Module) -> None:
    """Stop training the encoder: no gradients, and its BatchNorm statistics stay fixed (see `encoder_eval`)."""
    encoder = model.get_submodule("encoder")
    for param in encoder.parameters():
        param.requires_grad_(False)
    encoder.eval()
