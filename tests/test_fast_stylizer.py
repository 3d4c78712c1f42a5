"""The fast stylizer: trains on the built-in photos (packed and streamed back, as a large content set would be) with
a plain Lightning Trainer, its loss falls, and the checkpoint stylizes photos (any size, batched) and exports to ONNX
with the same output. Training from the photo folder itself: test_stylize_cli (DDP)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_config, fit_quietly
from visionkit.data import PhotoSource, StreamSource, VisionDataModule
from visionkit.data.sources.photos import CROPS_PER_PHOTO, SKIMAGE_PHOTOS
from visionkit.errors import VisionkitError
from visionkit.inference import load_predictor
from visionkit.models.transformer_net import TransformerNet
from visionkit.run import pack
from visionkit.tasks import StyleTransferTask


def test_transformer_net_keeps_any_image_size() -> None:
    net = TransformerNet(width=8, residual_blocks=1)
    for height, width in ((64, 64), (37, 50), (33, 101)):
        assert net(torch.rand(2, 3, height, width)).shape == (2, 3, height, width)


def test_fast_stylizer_loss_falls_and_its_checkpoint_stylizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cache, packed = tmp_path / "cache", tmp_path / "packed"  # the built-in photos, generated here, then packed
    overrides = [f"out={packed}", "task=style_transfer", f"paths.data_dir={cache}", "data.image_size=64"]
    pack(compose_config(tmp_path / "pack-run", overrides, name="pack"))
    source = StreamSource(str(packed), task="style_transfer")
    dm = VisionDataModule(
        source, image_size=64, batch_size=8, augment="photo", resize="crop", mean=(0,) * 3, std=(1,) * 3
    )
    splits, photos = source.splits(0.1, 0.1, 0), PhotoSource(cache_dir=str(cache)).splits(0.1, 0.1, 0)
    assert len(splits["train"]) == len(photos["train"]) == len(SKIMAGE_PHOTOS) * CROPS_PER_PHOTO["train"]
    assert source.meta["image_size"] == [64, 64]  # stored at the training size: a quarter of the pixels
    task = StyleTransferTask(
        vgg_weights="random",
        width=8,
        residual_blocks=2,
        style_size=64,
        optimizer=partial(torch.optim.Adam, lr=3e-3),
    )
    _, ckpt, rows = fit_quietly(task, dm, tmp_path / "run", epochs=3, limit_train_batches=8, limit_val_batches=1)
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0] / 2, losses

    stylizer = load_predictor(ckpt, batch_size=4)  # no VGG19 and no style file needed
    assert stylizer.task_name == "style_transfer" and stylizer.precision == "fp32"
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = [(80, 60), (80, 60), (45, 70)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    paths = sorted(str(p) for p in photos.iterdir())
    results = stylizer(paths)
    outputs = [r.save(tmp_path / "out")[0] for r in results]
    assert [Image.open(p).size for p in outputs] == sizes and [r.size for r in results] == [(h, w) for w, h in sizes]
    direct = stylizer.model(torch.from_numpy(np.asarray(Image.open(paths[2]), np.float32) / 255).permute(2, 0, 1)[None])
    saved = torch.from_numpy(np.asarray(Image.open(outputs[2]), np.float32) / 255).permute(2, 0, 1)[None]
    assert (direct - saved).abs().max() < 1 / 255 + 1e-4  # batched file path = one forward pass, rounded


def test_fast_stylizer_exports_onnx_with_the_same_output(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from visionkit.export import build_graph, export_onnx

    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1).eval()
    path = export_onnx(build_graph(task, {}, 64), tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path))
    images = np.random.default_rng(0).random((2, 3, 70, 90), dtype=np.float32)
    with torch.no_grad():
        expected = task(torch.from_numpy(images)).numpy()
    assert np.abs(session.run(None, {"images": images})[0] - expected).max() < 1e-4


def test_images_outside_zero_one_are_refused_with_the_fix() -> None:
    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1)
    with pytest.raises(VisionkitError, match=r"mean=\(0, 0, 0\), std=\(1, 1, 1\)"):
        task._losses(torch.full((1, 3, 32, 32), -2.0))


def test_a_checkpoint_of_another_task_is_not_taken_for_a_stylizer(tmp_path: Path) -> None:
    from visionkit.tasks import ClassificationTask

    path = tmp_path / "cls.ckpt"
    task = ClassificationTask("lenet5", num_classes=3)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    from visionkit.cli.stylize import run

    with pytest.raises(VisionkitError, match="holds a classification model, not a fast stylizer"):
        run([str(path), "--model", str(path), "-o", str(tmp_path / "out")])
