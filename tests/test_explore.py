"""visionkit-explore: the page opens from file:// in Chromium without an error for every task, its convolution and
pooling step-throughs show the values PyTorch computes, the kernel editor filters like conv2d, the ε slider shows
FGSM's flip, and the served page puts an edited kernel into the real network."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import TrainedDetector, TrainedSegmenter, compose_config, open_in_chromium
from visionkit.explain import subject_from_checkpoint
from visionkit.explain.explore_data import ExploreOptions
from visionkit.explain.explore_decision import pixel_space
from visionkit.explain.explore_page import ExploreServer
from visionkit.run import explore
from visionkit.tasks.adversarial import fgsm
from visionkit.utils.io import read_image


def _page(tmp_path: Path, overrides: list[str]) -> Path:
    metrics = explore(compose_config(tmp_path / "page", overrides, name="explore"))
    assert 0 < metrics["page_mb"] < 20 and metrics["build_s"] > 0
    return tmp_path / "page" / "explore.html"


def _fooled_digit(ckpt: Path, folder: Path) -> Path:
    """A test digit whose label FGSM flips at 8/255 (saved as a PNG at the checkpoint's 32 px)."""
    from visionkit.data import DigitsSource, VisionDataModule

    subject = subject_from_checkpoint(str(ckpt))
    dm = VisionDataModule(DigitsSource(), image_size=32, batch_size=8, augment="none")
    dm.setup("test")
    space = pixel_space(subject)
    for index in range(len(dm.datasets["test"])):
        picture = dm.datasets["test"][index]["image"].permute(1, 2, 0).numpy()
        tensor, _ = subject.prepare(picture)
        label = subject.predictor.probabilities(tensor).argmax(1)

        def loss(x: torch.Tensor, label: torch.Tensor = label) -> torch.Tensor:
            return F.cross_entropy(subject.cam_network(x), label, reduction="sum")

        if subject.predictor.probabilities(fgsm(loss, tensor, 8 / 255, space)).argmax(1) != label:
            path = folder / f"digit{index}.png"
            Image.fromarray(picture).save(path)
            return path
    raise AssertionError("no test digit flips at 8/255")


def _conv_outputs(ckpt: Path, image: Path, name: str) -> torch.Tensor:
    """PyTorch's own output of layer `name` for the image, as the checkpoint's predictor prepares it."""
    subject = subject_from_checkpoint(str(ckpt))
    tensor, _ = subject.prepare(read_image(image))
    found = {}
    module = dict(subject.network.named_modules())[name]
    handle = module.register_forward_hook(lambda _m, _i, out: found.setdefault("out", out.detach()))
    with torch.no_grad():
        subject.network(tensor)
    handle.remove()
    return found["out"][0]


def test_classification_page_steps_filters_and_fools_like_pytorch(digits_checkpoint, tmp_path: Path) -> None:
    ckpt = digits_checkpoint[0]
    image = _fooled_digit(ckpt, tmp_path)
    page = _page(tmp_path, [f"ckpt_path={ckpt}", f"source={image}", "data=digits", "data_images=16"])
    conv, pool = "backbone.features.3", "backbone.features.2"
    positions = [(0, 0, 0), (2, 4, 7), (5, 9, 9)]  # (channel, row, col): a corner (padding-free here), inner cells
    queries = []
    for channel, row, col in positions:
        queries.append(
            f"(() => {{ vkExplore.select('{conv}', {channel}); vkExplore.state.row = {row};"
            f" vkExplore.state.col = {col}; vkExplore.move(0);"
            " const t = (id) => document.getElementById(id).textContent;"
            " return [t('dot-value'), t('torch-value'), t('layer-name')]; })()"
        )
    queries.append(  # a click on a stage card shows that layer and its maps
        "(() => { document.querySelector('.stage[data-index=\"3\"]').click(); return [document.getElementById("
        "'layer-name').textContent, document.querySelectorAll('#channels .channel').length]; })()"
    )
    queries.append(
        f"(() => {{ vkExplore.select('{pool}', 1); vkExplore.state.row = 3; vkExplore.state.col = 5; vkExplore.move(0);"
        " return document.getElementById('dot-value').textContent; })()"
    )
    sharpen = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    queries.append(f"(() => {{ vkExplore.setKernel({sharpen}); return window.vkFiltered; }})()")
    queries.append(
        "(() => { const s = document.getElementById('fool-slider'); s.value = 4; s.dispatchEvent(new Event('input'));"
        " const t = (id) => document.getElementById(id).textContent;"
        " return [t('fool-eps'), t('fool-label'), t('fool-flipped'), t('fool-clean-caption')]; })()"
    )
    queries.append(
        "(() => { vkExplore.select('backbone.features.0', 2); return [document.querySelectorAll('#data-patches img')"
        ".length, document.getElementById('data-patches-title').textContent]; })()"
    )
    opened = open_in_chromium(page, tmp_path / "explore_classification.png", *queries)
    assert not opened.errors, opened.errors
    assert opened.scroll_width <= opened.window_width

    outputs = _conv_outputs(ckpt, image, conv)
    for (channel, row, col), (dot, shown, title) in zip(positions, opened.answers[:3]):
        assert conv in title
        assert float(dot) == pytest.approx(float(outputs[channel, row, col]), abs=2e-4, rel=1e-3)
        assert float(shown) == pytest.approx(float(outputs[channel, row, col]), abs=1e-4, rel=1e-4)
    clicked, maps = opened.answers[3]
    assert clicked.startswith(f"{conv} — Conv2d, output 16×10×10") and maps == 8, opened.answers[3]
    pooled = _conv_outputs(ckpt, image, pool)
    assert float(opened.answers[4]) == pytest.approx(float(pooled[1, 3, 5]), abs=1e-4, rel=1e-4)

    filtered = opened.answers[5]
    subject = subject_from_checkpoint(str(ckpt))
    _, picture = subject.prepare(read_image(image))
    gray = torch.from_numpy(picture.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    expected = F.conv2d(gray[None, None], torch.tensor(sharpen, dtype=torch.float32)[None, None], padding=1)[0, 0]
    assert (filtered["height"], filtered["width"]) == tuple(expected.shape)
    assert np.abs(np.array(filtered["values"]).reshape(expected.shape) - expected.numpy()).max() < 1e-3

    eps, label, flipped, clean = opened.answers[6]
    assert eps == "8" and "fooled" in flipped and not clean.startswith(f"original: {label.split(' ')[0]} ")
    patches, title = opened.answers[7]
    assert patches == 3 and title == "In 16 validation images", opened.answers[7]  # from the checkpoint's data


def test_detection_and_segmentation_pages_open_without_errors(
    trained_detector: TrainedDetector, trained_segmenter: TrainedSegmenter, tmp_path: Path
) -> None:
    box_image = next((trained_detector.data_yaml.parent / "images" / "test").glob("*.*"))
    page = _page(tmp_path / "det", [f"ckpt_path={trained_detector.ckpt}", f"source={box_image}", "conf=0.05"])
    box = (
        "(() => { const r = document.querySelector('#decision-body rect'); if (r) r.dispatchEvent(new Event('click'));"
        " return [document.querySelectorAll('#decision-body rect').length,"
        " (document.getElementById('box-level') || {}).textContent || ''];"
        " })()"
    )
    slider = (
        "(() => { const s = document.getElementById('fool-slider'); s.value = 5; s.dispatchEvent(new Event('input'));"
        " return document.getElementById('fool-label').textContent; })()"
    )
    opened = open_in_chromium(page, tmp_path / "explore_detection.png", box, slider)
    assert not opened.errors, opened.errors
    assert opened.scroll_width <= opened.window_width
    boxes, level = opened.answers[0]
    assert boxes >= 1 and "stride" in level and "from model." in level, opened.answers
    assert "box(es)" in opened.answers[1]

    mask_image = next((trained_segmenter.root / "images").rglob("*.png"))
    page = _page(tmp_path / "seg", [f"ckpt_path={trained_segmenter.ckpt}", f"source={mask_image}"])
    parts = "[document.querySelectorAll('#skips line').length, document.querySelectorAll('#decision-body img').length]"
    opened = open_in_chromium(page, tmp_path / "explore_segmentation.png", parts)
    assert not opened.errors, opened.errors
    assert opened.scroll_width <= opened.window_width
    skips, pictures = opened.answers[0]
    assert skips >= 3 and pictures >= 4  # U-Net/ResNet-18: four skips; the mask and the class probabilities


def test_vgg19_page_has_gram_matrices(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    page = _page(tmp_path, ["network=vgg19", "weights=random", f"source={photo}", "image_size=64"])
    grams = "window.vkExplore.data().decision.grams.map(g => g.layer)"
    opened = open_in_chromium(page, tmp_path / "explore_vgg19.png", grams)
    assert not opened.errors, opened.errors
    assert opened.answers[0] == [f"features.relu{i}_1" for i in range(1, 6)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_page_puts_an_edited_kernel_into_the_network(digits_checkpoint) -> None:
    ckpt, image = digits_checkpoint
    subject = subject_from_checkpoint(str(ckpt))
    server = ExploreServer(subject, read_image(image), ExploreOptions(), "digit")
    httpd = server.serve("127.0.0.1", _free_port())
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        page = urllib.request.urlopen(f"{base}/", timeout=30).read().decode()
        assert '"op":"conv"' in page and "VISIONKIT_DATA" not in page
        kernel = [[0.0] * 5 for _ in range(5)]
        kernel[2][2] = 9.0
        request = urllib.request.Request(f"{base}/kernel", data=json.dumps({"channel": 0, "kernel": kernel}).encode())
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        bad = urllib.request.Request(f"{base}/kernel", data=json.dumps({"channel": 0, "kernel": [[1.0]]}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=30)
        assert refused.value.code == 400 and "(5, 5) kernels" in refused.value.read().decode()
    finally:
        httpd.shutdown()

    tensor, _ = subject.prepare(read_image(image))
    conv = subject.network.backbone.features[0]
    with torch.no_grad():
        before = subject.predictor.probabilities(tensor)[0]
        saved = conv.weight[0].clone()
        conv.weight[0] = torch.tensor(kernel).expand_as(saved) / conv.in_channels
        expected = subject.predictor.probabilities(tensor)[0]
        conv.weight[0] = saved
        assert torch.equal(subject.predictor.probabilities(tensor)[0], before)  # the real weights are back
    top = answer["probs"][0]
    assert top["p"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert top["name"] == subject.class_names[int(expected.argmax())]
    assert not torch.allclose(expected, before)  # the edited kernel changed the answer


def test_embedding_page_shows_the_embedding_and_pushes_it_past_the_threshold(trained_embedder, tmp_path: Path) -> None:
    """An embedding checkpoint's page: the embedding strip and its Grad-CAMs; FGSM moves the embedding away from
    its clean self, further at larger ε, and says when it passes the threshold."""
    image = next(trained_embedder.queries.glob("*.png"))
    page = _page(tmp_path / "emb", [f"ckpt_path={trained_embedder.ckpt}", f"source={image}"])
    slider = (
        "(() => { const s = document.getElementById('fool-slider'); const out = [];"
        " for (const v of [1, 5]) { s.value = v; s.dispatchEvent(new Event('input'));"
        " out.push(document.getElementById('fool-label').textContent); } return out; })()"
    )
    parts = "[!!document.getElementById('strip'), document.querySelectorAll('#decision-body img').length]"
    opened = open_in_chromium(page, tmp_path / "explore_embedding.png", parts, slider)
    assert not opened.errors, opened.errors
    assert opened.scroll_width <= opened.window_width
    assert opened.answers[0] == [True, 2]  # the strip and the Grad-CAM of the identity features
    small, large = (float(text.split()[1]) for text in opened.answers[1])
    assert 0 < small < large, opened.answers[1]  # ε 1/255, then 16/255
