"""Exported files predict like their checkpoints: each task's trained fixture exported to ONNX, OpenVINO and
TorchScript by `visionkit-export` (the task, input contract and thresholds inside each file), then
`visionkit-predict ckpt_path=<the file>` on the validation images with nothing else given. The results agree with
the PyTorch predictor within the issue's bounds: the same top-1 on ≥ 99.5 % of images, boxes matched at IoU ≥ 0.99
with the same class for ≥ 99 %, masks equal on ≥ 99.5 % of pixels, embeddings with cosine ≥ 0.9999."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TrainedDetector, TrainedEmbedder, TrainedSegmenter
from tests.test_cli import run
from visionkit.errors import VisionkitError
from visionkit.inference import load_predictor
from visionkit.inference.runtime_choice import runtime_file

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

FILES = {"onnx": "model.onnx", "openvino": "model_openvino", "torchscript": "model.torchscript"}
ROOT = Path(__file__).resolve().parents[1]
# visionkit installed without PyTorch (`make runtime`: the base install and the `runtime` extra)
RUNTIME_VENV = Path(os.environ.get("VISIONKIT_RUNTIME_VENV", ROOT / ".venv-runtime"))


def _export(tmp_path: Path, ckpt: Path) -> Path:
    """`visionkit-export` of `ckpt` to every format: the export folder."""
    export = tmp_path / "export"
    formats = "formats=[onnx,openvino,torchscript]"
    run("visionkit-export", [f"ckpt_path={ckpt}", formats, f"hydra.run.dir={export}"], tmp_path)
    return export


@pytest.fixture(scope="module")
def digits_exports(digits_checkpoint: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("digits-exports"), digits_checkpoint[0])


@pytest.fixture(scope="module")
def detector_exports(trained_detector: TrainedDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("detector-exports"), trained_detector.ckpt)


@pytest.fixture(scope="module")
def segmenter_exports(trained_segmenter: TrainedSegmenter, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("segmenter-exports"), trained_segmenter.ckpt)


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 validation digits as PNG files."""
    from visionkit.data import DigitsSource

    images = tmp_path_factory.mktemp("digit-images")
    for i, pixels in enumerate(DigitsSource().splits(0.1, 0.2, 0)["val"].images[:100]):
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
    return images


def _exported_predictions(
    tmp_path: Path, ckpt: Path, images: Path, *options: str, export: Path | None = None
) -> dict[str, Path]:
    """Export `ckpt` to every format (unless `export` holds them), then predict `images` from each file: format ->
    its predict folder. (The CLI, in processes of their own: OpenVINO's threads stay out of the test process.)"""
    export = export or _export(tmp_path, ckpt)
    folders = {}
    for format, name in FILES.items():
        folder = tmp_path / f"predict-{format}"
        args = [f"ckpt_path={export / name}", f"source={images}", f"hydra.run.dir={folder}", *options]
        run("visionkit-predict", args, tmp_path)
        folders[format] = folder
    return folders


def _records(folder: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in json.loads((folder / "predictions.json").read_text())}


def _same_labels(reference: dict[str, str], records: dict[str, dict]) -> float:
    """The share of images whose top-1 label agrees with the reference's."""
    assert len(records) == len(reference)
    return float(np.mean([records[name]["label"] == label for name, label in reference.items()]))


def test_a_classifier_exported_to_each_runtime_predicts_the_same_classes(
    digits_checkpoint: tuple[Path, Path], digits_exports: Path, digit_images: Path, tmp_path: Path
) -> None:
    ckpt, _ = digits_checkpoint
    reference = {Path(r.source).name: r.label for r in load_predictor(ckpt)(str(digit_images))}
    for format, folder in _exported_predictions(tmp_path, ckpt, digit_images, export=digits_exports).items():
        same = _same_labels(reference, _records(folder))
        assert same >= 0.995, (format, same)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1 y1 x2 y2 boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _matched_boxes(reference: dict[str, Any], records: dict[str, dict]) -> float:
    """The share of the reference's boxes found again at IoU ≥ 0.99 with the same class."""
    total = sum(len(r.boxes) for r in reference.values())
    assert total >= 20  # enough boxes for the share to mean something
    matched = 0
    for name, result in reference.items():
        found = records[name]["detections"]
        boxes = np.array([b["box_xyxy"] for b in found], dtype=np.float64).reshape(-1, 4)
        classes = np.array([b["class_id"] for b in found])
        if len(result.boxes) and len(boxes):
            same = (_iou(result.boxes, boxes) >= 0.99) & (result.classes[:, None] == classes[None, :])
            matched += int(same.any(1).sum())
    return matched / total


def test_a_detector_exported_to_each_runtime_finds_the_same_boxes(
    trained_detector: TrainedDetector, detector_exports: Path, tmp_path: Path
) -> None:
    images = trained_detector.data_yaml.parent / "images" / "val"
    reference = {Path(r.source).name: r for r in load_predictor(trained_detector.ckpt, conf=0.1)(str(images))}
    exported = _exported_predictions(tmp_path, trained_detector.ckpt, images, "conf=0.1", export=detector_exports)
    for format, folder in exported.items():
        share = _matched_boxes(reference, _records(folder))
        assert share >= 0.99, (format, share)


def test_openvino_takes_pixels_and_compiles_a_repeated_input_shape_for_itself(detector_exports: Path) -> None:
    model = load_predictor(detector_exports / "model_openvino").model
    assert model.takes_pixels and not load_predictor(detector_exports / "model.onnx").model.takes_pixels
    runtime, contract = model.runtime, model.contract
    rng = np.random.default_rng(0)
    pixels = {batch: rng.integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8) for batch in range(1, 7)}
    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in (contract.mean, contract.std))
    normalized = (pixels[2].transpose(0, 3, 1, 2) / np.float32(contract.peak) - mean) / std
    reference = runtime(normalized.astype(np.float32))  # the graph as exported, on the predictor's old input
    assert model(pixels[2]).shape == reference.shape
    np.testing.assert_allclose(model(pixels[2]), reference, rtol=1e-4, atol=1e-3)  # normalized inside the model
    assert runtime.fixed_shapes == [(2, 96, 96, 3)]  # compiled for the shape on its second batch
    np.testing.assert_allclose(model(pixels[2]), reference, rtol=1e-4, atol=1e-3)
    for batch in (1, 3, 4, 5, 6):
        model(pixels[batch])
        model(pixels[batch])
    assert runtime.fixed_shapes == [(3, 96, 96, 3), (4, 96, 96, 3), (5, 96, 96, 3), (6, 96, 96, 3)]  # at most 4
    for batch in range(7, 21):  # shapes that come once run on the free-shape model's one request of this thread
        model(rng.integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8))
    assert len(runtime._local.requests) <= 2 * runtime.static_shapes + 1  # requests do not pile up per shape
    frozen = pixels[6].copy()
    frozen.setflags(write=False)  # read-only, as PIL's arrays are (a predictor hands one picture as it is)
    np.testing.assert_array_equal(model(frozen), model(pixels[6]))  # OpenVINO copies what it may not share


def test_openvino_runs_small_batches_in_streams_when_timing_says_so_with_the_same_results_in_order(
    trained_detector: TrainedDetector,
    detector_exports: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from visionkit.inference.exported import ExportedModel

    folder = trained_detector.data_yaml.parent / "images" / "val"
    files = [str(path) for path in sorted(folder.iterdir())[:9]]
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    files.insert(4, str(tmp_path / "broken.jpg"))
    exported = detector_exports / "model_openvino"
    # the reference: one batch at a time over every core (a reading thread turns streams off)
    reference = load_predictor(exported, conf=0.1, num_workers=1, skip_bad_images=True)(files, batch_size=1)
    model = load_predictor(exported).model
    lanes = model.streams(1)  # OpenVINO's streams for a batch of one on this CPU
    assert lanes >= min(2, os.cpu_count() or 1) and model.streams(64) == 1  # a batch that fills them: none
    with caplog.at_level("INFO"):
        model.faster_in_streams(1)  # timed here: either may win, and the choice is said
    assert re.search(r"OpenVINO: (streams|one batch at a time) chosen by timing \d+ batches of 1", caplog.text)
    assert not model.faster_in_streams(64)  # nothing to time

    monkeypatch.setattr(ExportedModel, "faster_in_streams", lambda *_: True)  # the streams path, whatever won here
    predictor = load_predictor(exported, conf=0.1, skip_bad_images=True)
    seen_threads = []
    results = []
    for result in predictor.stream(files, batch_size=1):
        seen_threads.append(sorted(t.name for t in threading.enumerate() if t.name.startswith("visionkit-stream")))
        results.append(result)
    assert any(seen_threads)
    assert [r.source for r in results] == files and [r.ok for r in results] == [r.ok for r in reference]
    assert not results[4].ok and predictor.counts == {"images": 9, "skipped": 1}
    for ours, alone in zip(results, reference):
        np.testing.assert_allclose(ours.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_array_equal(ours.classes, alone.classes)
    stopping = load_predictor(exported, conf=0.1)  # without skip_bad_images: the files before it, then the error
    done = []
    with pytest.raises(VisionkitError, match=r"broken\.jpg"):
        done.extend(r.source for r in stopping.stream(files, batch_size=1))
    assert done == files[:4]


# Two OpenVINO predictors made, used and dropped in the order they came, then Ctrl-C: a KeyboardInterrupt, as
# without them (each held its own OpenVINO Core, whose CPU plugin left a freed alternate signal stack installed:
# the process died there with a segmentation fault, and in the test suite at a child's exit)
_TWO_PREDICTORS_THEN_CTRL_C = """
import gc, signal, sys
import numpy as np
signal.signal(signal.SIGINT, signal.default_int_handler)  # a runner may start us with Ctrl-C ignored
from visionkit.inference import load_predictor
picture = np.zeros((28, 28, 3), np.uint8)
first = load_predictor(sys.argv[1])
first(picture)
second = load_predictor(sys.argv[1])
second(picture)
del first; gc.collect()
del second; gc.collect()
try:
    signal.raise_signal(signal.SIGINT)  # to this thread, whose signal stack OpenVINO set (os.kill may reach another)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_openvino_predictors_dropped_in_any_order_leave_signals_working(digits_exports: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _TWO_PREDICTORS_THEN_CTRL_C, str(digits_exports / "model_openvino")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", (done.returncode, done.stderr[-2000:])


def test_a_segmenter_exported_to_each_runtime_draws_the_same_masks(
    trained_segmenter: TrainedSegmenter, segmenter_exports: Path, tmp_path: Path
) -> None:
    images = trained_segmenter.root / "images" / "val"
    reference = {Path(r.source).stem: r.mask for r in load_predictor(trained_segmenter.ckpt)(str(images))}
    exported = _exported_predictions(tmp_path, trained_segmenter.ckpt, images, export=segmenter_exports)
    for format, folder in exported.items():
        equal = [np.mean(np.asarray(Image.open(folder / "masks" / f"{n}.png")) == m) for n, m in reference.items()]
        assert np.mean(equal) >= 0.995, (format, np.mean(equal))


@pytest.fixture(scope="module")
def runtime_venv() -> Path:
    """The torch-free venv (`make runtime`); its absence skips, or fails with VISIONKIT_REQUIRE_RUNTIME=1 (CI)."""
    if not (RUNTIME_VENV / "bin" / "python").exists():
        reason = f"no torch-free venv at {RUNTIME_VENV}: `make runtime` (or set VISIONKIT_RUNTIME_VENV)"
        if os.environ.get("VISIONKIT_REQUIRE_RUNTIME"):
            pytest.fail(reason)
        pytest.skip(reason)
    return RUNTIME_VENV


def test_exported_files_predict_where_pytorch_is_not_installed(
    runtime_venv: Path,
    digits_checkpoint: tuple[Path, Path],
    digits_exports: Path,
    digit_images: Path,
    trained_detector: TrainedDetector,
    detector_exports: Path,
    trained_segmenter: TrainedSegmenter,
    segmenter_exports: Path,
    tmp_path: Path,
) -> None:
    """`pip install visionkit[runtime]` without PyTorch: `load_predictor` on each task's ONNX and OpenVINO files
    gives the answers the checkpoint gives in PyTorch (the issue's bounds), and `visionkit-predict` of an
    exported file writes its files, while a checkpoint there is refused with what to install."""
    detections = trained_detector.data_yaml.parent / "images" / "val"
    scenes = trained_segmenter.root / "images" / "val"
    plan = []
    for folder, images, options in (
        (digits_exports, digit_images, {}),
        (detector_exports, detections, {"conf": 0.1}),
        (segmenter_exports, scenes, {}),
    ):
        for name in ("model.onnx", "model_openvino"):
            plan.append({"file": str(folder / name), "images": str(images), "options": options})
    out = tmp_path / "found.json"
    script = Path(__file__).with_name("runtime_predict.py")
    done = subprocess.run(
        [str(runtime_venv / "bin" / "python"), str(script), json.dumps(plan), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())

    def by_name(spec: dict, key: str = "name") -> dict[str, dict]:
        records = found[spec["file"]]["records"]
        return {(Path(r["path"]).stem if key == "stem" else Path(r["path"]).name): r for r in records}

    labels = {Path(r.source).name: r.label for r in load_predictor(digits_checkpoint[0])(str(digit_images))}
    boxes = {Path(r.source).name: r for r in load_predictor(trained_detector.ckpt, conf=0.1)(str(detections))}
    masks = {Path(r.source).stem: r.mask for r in load_predictor(trained_segmenter.ckpt)(str(scenes))}
    for spec in plan:
        assert found[spec["file"]]["runtime"] in ("ONNX Runtime", "OpenVINO")
        if spec["images"] == str(digit_images):
            assert _same_labels(labels, by_name(spec)) >= 0.995, spec["file"]
        elif spec["images"] == str(detections):
            assert _matched_boxes(boxes, by_name(spec)) >= 0.99, spec["file"]
        else:
            records = by_name(spec, "stem")
            equal = [np.mean(np.asarray(records[n]["mask"]) == m) for n, m in masks.items()]
            assert np.mean(equal) >= 0.995, (spec["file"], np.mean(equal))

    command = str(runtime_venv / "bin" / "visionkit-predict")
    args = [f"ckpt_path={detector_exports / 'model.onnx'}", f"source={detections}", "conf=0.1"]
    cli = subprocess.run([command, *args, f"hydra.run.dir={tmp_path / 'cli'}"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert _matched_boxes(boxes, _records(tmp_path / "cli")) >= 0.99
    assert len(list((tmp_path / "cli" / "labels").glob("*.txt"))) == len(boxes)
    refused = subprocess.run(
        [command, f"ckpt_path={trained_detector.ckpt}", f"source={detections}", f"hydra.run.dir={tmp_path / 'no'}"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "torch is not installed" in refused.stderr and "pip install 'visionkit[train]'" in refused.stderr


def test_an_exported_file_is_served_where_pytorch_is_not_installed(
    runtime_venv: Path, digits_checkpoint: tuple[Path, Path], digits_exports: Path, digit_images: Path, tmp_path: Path
) -> None:
    """`pip install 'visionkit[runtime,serve]'` without PyTorch: `visionkit-serve` of the classifier's ONNX file
    answers `/predict` with the checkpoint's labels, and `/info` names ONNX Runtime; a checkpoint is refused."""
    import httpx

    from tests.serve_requests import running_server

    files = sorted(digit_images.glob("*.png"))[:8]
    expected = {Path(r.source).name: r.label for r in load_predictor(digits_checkpoint[0])([str(f) for f in files])}
    with running_server(digits_exports / "model.onnx", tmp_path, "workers=1", bin_dir=runtime_venv / "bin") as server:
        info = httpx.get(f"{server.url}/info", timeout=30).json()
        upload = [("image", (f.name, f.read_bytes(), "image/png")) for f in files]
        answer = httpx.post(f"{server.url}/predict", files=upload, timeout=60)
    assert answer.status_code == 200, answer.text
    assert {r["path"]: r["label"] for r in answer.json()} == expected
    assert "ONNX Runtime" in json.dumps(info), info
    refused = subprocess.run(
        [str(runtime_venv / "bin" / "visionkit-serve"), f"ckpt_path={digits_checkpoint[0]}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "pip install 'visionkit[train]'" in refused.stderr


def test_an_embedder_exported_to_each_runtime_gives_the_same_features_and_threshold(
    trained_embedder: TrainedEmbedder, tmp_path: Path
) -> None:
    embedder = load_predictor(trained_embedder.ckpt)
    reference = {Path(r.source).name: r.embedding for r in embedder(str(trained_embedder.queries))}
    for format, folder in _exported_predictions(tmp_path, trained_embedder.ckpt, trained_embedder.queries).items():
        rows = [line.split(",") for line in (folder / "embeddings.csv").read_text().splitlines()[1:]]
        vectors = np.load(folder / "embeddings.npy")
        found = {Path(row[1]).name: vectors[int(row[0])] for row in rows}
        cosines = [float(np.dot(found[n], v)) for n, v in reference.items()]
        assert min(cosines) >= 0.9999, (format, min(cosines))
    exported = load_predictor(tmp_path / "export" / "model.onnx")
    assert exported.threshold == pytest.approx(embedder.threshold) and exported.far == embedder.far
    assert exported.model.exported == "ONNX Runtime"


def test_an_exported_file_says_what_it_holds_and_refuses_what_it_cannot_do(
    digits_checkpoint: tuple[Path, Path], digits_exports: Path, tmp_path: Path
) -> None:
    import onnx

    ckpt, image = digits_checkpoint
    folder = digits_exports
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert props["task"] == "classification" and json.loads(props["imgsz"]) == [32, 32]
    assert json.loads(props["mean"]) == [0.5] * 3 and len(json.loads(props["names"])) == 10
    record = json.loads(props["visionkit"])
    assert record["task"] == "visionkit.tasks.classification.ClassificationTask" and record["graph"]["nms"] is False
    written = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert written == {"model.onnx", "model_openvino", "model.torchscript", "export.log"}  # nothing beside them

    with pytest.raises(VisionkitError, match=r"takes 32×32 images only \(exported with a fixed size\)"):
        load_predictor(folder / "model.onnx", image_size=64)
    with pytest.raises(VisionkitError, match="precision=bf16: ONNX Runtime runs an export at fp32; other precisions"):
        load_predictor(folder / "model.onnx", precision="bf16")
    plain = tmp_path / "plain.onnx"
    model = onnx.load(str(folder / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(VisionkitError, match=r"does not say what it holds.*export it again with visionkit-export"):
        load_predictor(plain)
    assert load_predictor(folder / "model.onnx")(str(image))[0].label == load_predictor(ckpt)(str(image))[0].label


def test_a_checkpoint_runs_in_the_runtime_asked_for_or_the_fastest(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, image = digits_checkpoint
    monkeypatch.setenv("VISIONKIT_EXPORTS", str(tmp_path / "exports"))
    onnx = load_predictor(ckpt, runtime="onnx")
    assert onnx.model.exported == "ONNX Runtime" and len(list((tmp_path / "exports").rglob("model.onnx"))) == 1
    assert onnx(str(image))[0].label == load_predictor(ckpt)(str(image))[0].label
    with pytest.raises(VisionkitError, match=r"runtime=tensorrt: choose one of \['pytorch', 'onnx'"):
        load_predictor(ckpt, runtime="tensorrt")
    exported = next((tmp_path / "exports").rglob("model.onnx"))
    with pytest.raises(VisionkitError, match="is an onnx export and runs in onnx only"):
        load_predictor(exported, runtime="openvino")

    args = [f"ckpt_path={ckpt}", f"source={image}", "runtime=auto", "batch_size=4"]
    first = run("visionkit-predict", [*args, f"hydra.run.dir={tmp_path / 'auto1'}"], tmp_path)
    line = r"runtime=auto: (pytorch|onnx|openvino) runs best.ckpt fastest here at batch 4 \(pytorch"
    assert re.search(line, first.stdout)
    chosen = re.search(r"runtime=auto: (\w+) runs", first.stdout).group(1)

    def build(path: str) -> None:
        raise AssertionError(f"timed again ({path})")

    remembered = json.loads(next((tmp_path / "exports").rglob("fastest.json")).read_text())
    slot, choice = next(iter(remembered.items()))  # per batch size and thread count: this process's may differ
    assert choice == chosen and slot.startswith("batch 4, ")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(re.search(r"(\d+) threads", slot).group(1)))
    try:
        again = runtime_file(ckpt, "auto", build, batch_size=4)  # timed once, remembered
    finally:
        torch.set_num_threads(threads)
    assert again == str(ckpt) if chosen == "pytorch" else Path(again).parent == exported.parent


def test_converting_to_openvino_sends_no_telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO's converter posts usage events from a process forked off a thread, which can deadlock in a process
    with threads and hang it at exit (a test run did): visionkit's conversion sends none; the converter on its own,
    with consent given, does (so the check can fail)."""
    import openvino as ov
    from openvino.tools.ovc.telemetry_utils import init_ovc_telemetry
    from openvino_telemetry.utils.sender import TelemetrySender

    from visionkit.export.formats import convert_onnx

    sent: list[Any] = []
    monkeypatch.setattr(TelemetrySender, "send", lambda self, backend, message: sent.append(message))
    onnx_file = tmp_path / "linear.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(onnx_file), dynamo=False)
    model = convert_onnx(onnx_file)
    assert sent == [] and [o.get_partial_shape().to_string() for o in model.outputs] == ["[1,2]"]
    init_ovc_telemetry().consent = True  # the converter alone, as a user who agreed to telemetry runs it
    ov.convert_model(str(onnx_file))
    assert sent, "the converter sent nothing with consent: this check would not see it"
    init_ovc_telemetry().consent = False  # the rest of this process sends nothing either
