"""Scans and bands end to end: the built-in 16-bit and 5-band sets are learnt with the full pipeline and not when
squeezed to 8-bit RGB (the information is used, not only read); the checkpoint carries the pixel format and the
measured statistics to prediction, export and serving."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
import torch

from tests.conftest import compose_config
from tests.serve_requests import running_server
from tests.test_export import _assert_checked, _export
from visionkit.data.pixels import PixelFormat
from visionkit.data.stats import channel_stats
from visionkit.inference import load_predictor
from visionkit.run import train

EPOCHS = "trainer.max_epochs=15"


@pytest.fixture(scope="module")
def bands_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The built-in 5-band job (LeNet-5, all five bands, 16 bits) trained for 15 epochs: its run folder, metrics."""
    cfg = compose_config(tmp_path_factory.mktemp("bands") / "run", ["data=bands5", "augment=flips", EPOCHS])
    return Path(cfg.paths.output_dir), train(cfg)


def test_16_bit_scans_are_learnt_where_8_bits_merge_the_classes(tmp_path: Path) -> None:
    """Blobs 80, 160 and 240 levels of 65,535 above the tissue: under one 8-bit level. Read at 16 bits the three
    are told apart; read as 8-bit RGB (what the photo path does) the test accuracy stays near chance (1/3)."""
    full = train(compose_config(tmp_path / "16bit", ["data=scans16", "augment=flips", EPOCHS]))
    squeezed_cfg = ["data=scans16", "augment=flips", EPOCHS, "data.channels=3", "data.dtype=uint8"]
    squeezed = train(compose_config(tmp_path / "8bit", squeezed_cfg))
    assert full["test_acc"] >= 0.85, full
    assert squeezed["test_acc"] <= 0.65, squeezed
    state = torch.load(tmp_path / "16bit" / "checkpoints" / "best.ckpt", weights_only=True)["VisionDataModule"]
    assert state["pixels"]["channels"] == 1 and state["pixels"]["dtype"] == "uint16"
    assert len(state["mean"]) == 1 and 0.45 < state["mean"][0] < 0.47  # tissue near 30,000 of 65,535


def test_a_class_seen_only_in_near_infrared_needs_the_fifth_band(
    bands_run: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    """Green paint and vegetation share their RGB colour; only band 3 (near-infrared) differs. All five bands:
    every class learnt; the RGB bands at 8 bits: paint and vegetation confused."""
    _, full = bands_run
    rgb_cfg = ["data=bands5", "augment=flips", EPOCHS, "data.channels=3", "data.bands=[0,1,2]", "data.dtype=uint8"]
    rgb = train(compose_config(tmp_path / "rgb", rgb_cfg))
    assert full["test_acc"] >= 0.95, full
    assert rgb["test_acc"] <= 0.75, rgb


def test_auto_statistics_are_the_training_images_own(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 65535, (6, 7, 2), dtype=np.uint16) for _ in range(5)]
    unit = [image.astype(np.float32) / 65535 for image in images]
    paths = [str(tmp_path / f"{i}.tif") for i in range(5)]
    mean, std = channel_stats(paths, lambda i: unit[i], "key", tmp_path / "cache")
    stacked = np.concatenate([u.reshape(-1, 2) for u in unit]).astype(np.float64)
    assert np.allclose(mean, stacked.mean(0), rtol=1e-6) and np.allclose(std, stacked.std(0), rtol=1e-6)
    assert channel_stats(paths, lambda i: None, "key", tmp_path / "cache") == (mean, std)  # cached, not read again


def test_the_checkpoint_predicts_rasters_from_files_arrays_and_pictures_its_bands(
    bands_run: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    run, _ = bands_run
    predictor = load_predictor(run / "checkpoints" / "best.ckpt", device="cpu")
    assert predictor.contract.pixels == PixelFormat(channels=5, dtype="uint16")
    root = Path(compose_config(tmp_path, []).paths.data_dir) / "bands5_v1" / "test"
    files = sorted((root / "paint").glob("*.tif"))[:20] + sorted((root / "vegetation").glob("*.tif"))[:20]
    results = predictor(files)
    truth = [f.parent.name for f in files]
    assert np.mean([r.label == t for r, t in zip(results, truth)]) >= 0.9
    arrays = [tifffile.imread(f) for f in files[:4]]
    for result in predictor(arrays):
        assert result.pixels.shape == (32, 32, 3) and result.pixels.dtype == np.uint8
    assert np.allclose([r.probs for r in predictor(arrays)], [r.probs for r in results[:4]], atol=1e-6)
    false_colour = load_predictor(run / "checkpoints" / "best.ckpt", device="cpu", viz_bands=[3, 2, 1])
    natural, nir = results[0].original, false_colour(files[:1])[0].original
    assert nir.shape == natural.shape and not np.array_equal(nir, natural)


def test_a_5_band_model_exports_and_serves(bands_run: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    """ONNX with the normalization inside takes (B, 5, H, W) 0..1 floats and passes the check on the test split;
    the server, given the ONNX file alone, reads 5-band TIFF uploads as stored and answers what the checkpoint's
    predictor answers."""
    import onnxruntime as ort

    run, _ = bands_run
    ckpt = run / "checkpoints" / "best.ckpt"
    records, folder = _export(tmp_path, ckpt, "formats=[onnx]", "preprocess=true")
    _assert_checked(records, {"onnx"}, "val_acc")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_inputs()[0].shape[1] == 5

    root = Path(compose_config(tmp_path, []).paths.data_dir) / "bands5_v1" / "test"
    files = [sorted((root / name).glob("*.tif"))[0] for name in ("paint", "vegetation", "water")]
    expected = [r.label for r in load_predictor(ckpt, device="cpu")(files)]
    (tmp_path / "serve").mkdir()
    served = folder / "model.onnx"
    with running_server(served, tmp_path / "serve", "workers=1") as server, httpx.Client(timeout=60) as client:
        info = client.get(f"{server.url}/info", headers=server.headers).json()["model"]
        assert info["pixels"]["channels"] == 5 and info["runtime"] == "ONNX Runtime"
        uploads = [("image", (f.name, f.read_bytes())) for f in files]
        answer = client.post(f"{server.url}/predict", files=uploads, headers=server.headers)
        assert answer.status_code == 200, answer.text
        assert [r["label"] for r in answer.json()] == expected
        png = client.post(f"{server.url}/predict", files={"image": ("rgb.png", b"\x89PNG\r\n")}, headers=server.headers)
        assert png.status_code == 400 and "rgb.png" in png.json()["detail"]


def test_a_5_band_network_is_explored_with_its_validation_rasters(
    bands_run: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    """visionkit-explore reads the raster as stored, steps through the 5-band first layer and searches the run's
    validation rasters (read as stored too) for each channel's patches."""
    import json

    from visionkit.run import explore

    run, _ = bands_run
    root = Path(compose_config(tmp_path, []).paths.data_dir) / "bands5_v1" / "test"
    source = sorted((root / "paint").glob("*.tif"))[0]
    overrides = [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"source={source}", "data_images=6"]
    explore(compose_config(tmp_path / "page", overrides, name="explore"))
    html = (tmp_path / "page" / "explore.html").read_text()
    data = json.loads(html.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    assert data["first_conv"]["in_channels"] == 5 and data["data_images"] == 6
    assert data["stages"][0]["data_patches"] and data["fool"][0]["png"].startswith("data:image/png")
