"""visionkit-export: ONNX, TorchScript and OpenVINO of every task, each run by its own runtime next to PyTorch on
the validation split (check=true), the graph options (dynamic, half, simplify, preprocess, nms), and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TrainedDetector, TrainedSegmenter, compose_config
from tests.test_cli import run
from visionkit.checkpoints import load_checkpoint
from visionkit.errors import VisionkitError
from visionkit.export import ExportRequest, GraphOptions, build_graph, check_exports, load_runtime, write_exports
from visionkit.inference import load_predictor
from visionkit.run import export
from visionkit.training.fit import checkpoint_datamodule

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def _export(tmp_path: Path, ckpt: Path, *overrides: str) -> tuple[list[dict], Path]:
    """visionkit-export with check=true, as a user runs it (OpenVINO stays out of the test process: its threads
    and those of later tests' browsers and loaders do not mix): (check.json records, export folder)."""
    folder = tmp_path / "export"
    run("visionkit-export", [f"ckpt_path={ckpt}", "check=true", f"hydra.run.dir={folder}", *overrides], tmp_path)
    return json.loads((folder / "check.json").read_text()), folder


def _assert_checked(records: list[dict], formats: set[str], metric: str) -> None:
    assert {r["format"] for r in records} == formats
    for r in records:
        assert r["passed"] and r["metric"] == metric and r["images"] > 0, r
        assert r["relative_diff"] <= r["tolerance"] and r["metric_move"] <= 0.005, r


def test_classifier_exports_three_formats_that_answer_like_pytorch(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = digits_checkpoint
    records, folder = _export(tmp_path, ckpt, "data=digits", "formats=[onnx,torchscript,openvino]")
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "model.torchscript", "model_openvino", "check.json"}
    assert (folder / "model_openvino" / "model.xml").is_file() and (folder / "model_openvino" / "model.bin").is_file()
    _assert_checked(records, {"onnx", "torchscript", "openvino"}, "val_acc")
    assert all(r["pytorch"] > 0.7 for r in records)  # LeNet-5 after 3 epochs on digits: the metric is real
    assert all(r["relative_diff"] < 1e-5 for r in records)  # float32 everywhere


def test_uint8_input_half_and_simplified_graphs_pass_the_check(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    import onnxruntime as ort

    ckpt, image = digits_checkpoint
    overrides = ["data=digits", "formats=[onnx,openvino]", "preprocess=true", "half=true", "simplify=true"]
    records, folder = _export(tmp_path, ckpt, *overrides)
    _assert_checked(records, {"onnx", "openvino"}, "val_acc")
    assert all(r["tolerance"] == 2e-2 and r["relative_diff"] > 0 for r in records)  # float16 differs a little
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    # a runtime with nothing but the resize: uint8 pixels in, the checkpoint's predictor's class out
    from PIL import Image

    pixels = np.asarray(Image.open(image).convert("RGB").resize((32, 32), Image.BILINEAR))
    (logits,) = session.run(None, {"images": pixels.transpose(2, 0, 1)[None].copy()})
    assert int(logits.argmax()) == int(load_predictor(ckpt)([pixels])[0].probs.argmax())


def test_detector_with_nms_in_the_graph_exports_final_boxes_that_match(
    trained_detector: TrainedDetector, tmp_path: Path
) -> None:
    overrides = [
        "data=yolo",
        f"data.yaml={trained_detector.data_yaml}",
        "formats=[onnx,torchscript,openvino]",
        "nms=true",
        "check_batches=2",
    ]
    records, folder = _export(tmp_path, trained_detector.ckpt, *overrides)
    _assert_checked(records, {"onnx", "torchscript", "openvino"}, "val_map50_95")
    assert all(r["pytorch"] > 0.01 for r in records), json.dumps(records)  # the 12-epoch fixture: about 0.09
    # the graph's NMS is ultralytics' (one class per box) for a batch of another size than the example's
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    task, data_state = load_checkpoint(trained_detector.ckpt)
    dm = checkpoint_datamodule(
        compose_config(
            tmp_path,
            [f"ckpt_path={trained_detector.ckpt}", "data=yolo", f"data.yaml={trained_detector.data_yaml}"],
            "export",
        ),
        task,
        data_state,
    )
    dm.setup("validate")
    images = dm.normalize_batch(next(iter(dm.val_dataloader())))["image"][:5]
    (boxes,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = task.detect(images, multi_label=False)
    assert boxes.shape == (5, task.hparams.max_det, 6)
    assert sum(len(theirs) for theirs in expected) > 0  # an image without boxes is fine, all five are not
    for mine, theirs in zip(boxes, expected, strict=True):
        mine = mine[mine[:, 4] > 0]
        assert len(mine) == len(theirs)
        if len(mine):
            assert np.abs(mine - theirs.numpy()).max() < 1e-3


def test_segmenter_exports_fixed_size_graphs_checked_by_miou(
    trained_segmenter: TrainedSegmenter, tmp_path: Path
) -> None:
    from visionkit.data.shapes_seg import SEG_CLASSES

    overrides = [
        "data=masks",
        f"data.root={trained_segmenter.root}",
        f"data.class_names=[{','.join(SEG_CLASSES)}]",
        "formats=[onnx,openvino]",
        "dynamic=false",
        "simplify=true",
    ]
    records, folder = _export(tmp_path, trained_segmenter.ckpt, *overrides)
    _assert_checked(records, {"onnx", "openvino"}, "val_miou")
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]  # dynamic=false: the batch and size are fixed
    with pytest.raises(VisionkitError, match=r"takes 64×64 images only \(exported with a fixed size\)"):
        load_predictor(folder / "model.onnx", image_size=128)  # a detector or segmenter exported that way too


def test_stylizer_exports_run_in_each_runtime(tmp_path: Path) -> None:
    from visionkit.tasks import StyleTransferTask

    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1).eval()
    request = ExportRequest(formats=("onnx", "torchscript"), image_size=64)  # OpenVINO: in the CLI tests
    _, written = write_exports(task, {"mean": (0, 0, 0), "std": (1, 1, 1)}, request, tmp_path)
    images = torch.rand(2, 3, 48, 80)  # any size: the stylizer's graph leaves height and width free
    with torch.no_grad():
        expected = task(images)
    for format, path in written.items():
        assert (load_runtime(format, path)(images) - expected).abs().max() < 1e-4, format


def test_an_export_that_answers_differently_fails_the_check(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = digits_checkpoint
    task, data_state = load_checkpoint(ckpt)
    request = ExportRequest(formats=("onnx", "torchscript"))
    graph, written = write_exports(task, data_state, request, tmp_path)
    other = load_checkpoint(ckpt)[0]
    torch.nn.init.normal_(
        other.model.classifier[-1].weight if hasattr(other.model, "classifier") else next(other.model.parameters())
    )
    write_exports(other, data_state, ExportRequest(formats=("onnx",)), tmp_path / "other")
    written = {**written, "onnx": tmp_path / "other" / "model.onnx"}  # a file from other weights
    dm = checkpoint_datamodule(
        compose_config(tmp_path, [f"ckpt_path={ckpt}", "data=digits"], "export"), task, data_state
    )
    with pytest.raises(VisionkitError, match=r"1 export\(s\) answer differently.*\n  onnx .*FAILED") as failure:
        check_exports(task, graph, request, written, dm, tmp_path, max_batches=2)
    assert "torchscript" not in str(failure.value)
    records = json.loads((tmp_path / "check.json").read_text())
    assert [r["passed"] for r in records] == [False, True]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["formats=[tflite]"], r"formats=\['tflite'\]: choose from"),
        (["formats=[onnx]", "nms=true"], "nms=true is for detection checkpoints"),
        (["formats=[torchscript]", "half=true"], r"half=true applies to \['onnx', 'openvino'\]"),
        (["formats=[onnx]", "opset=5"], "opset=5: choose an ONNX opset"),
        (["formats=[onnx]", "check=true"], "not inside a visionkit run folder.*pass data=<name>"),
        (["formats=[onnx,torchscript]", "int8=true"], r"writes \['onnx', 'openvino'\] only; export \['torchscript'\]"),
        (["formats=[openvino]", "int8=true", "half=true"], "half=true and int8=true exclude each other"),
        (["formats=[onnx]", "int8=true", "calibration_images=0"], "calibration_images=0: expected an integer of 1"),
        (["formats=[onnx]", "int8=true", "int8_tolerance=1"], "int8_tolerance=1: expected a fraction from 0 to below"),
        (["formats=[onnx]", "int8=true"], "not inside a visionkit run folder.*pass data=<name>"),
    ],
)
def test_bad_export_requests_say_what_to_change(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = compose_config(tmp_path / "export", [f"ckpt_path={digits_checkpoint[0]}", *overrides], "export")
    with pytest.raises(VisionkitError, match=message):
        export(cfg)


def test_graph_options_default_to_a_free_batch() -> None:
    assert GraphOptions().dynamic and not GraphOptions().nms
    from visionkit.tasks import ClassificationTask

    graph = build_graph(ClassificationTask("lenet5", num_classes=3), {"image_size": 28})
    assert graph.axes() == {"images": {0: "batch"}, "logits": {0: "batch"}}  # LeNet's head fixes the size


def test_benchmark_tables_every_format_with_its_metric_and_speed(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    import csv

    folder = tmp_path / "bench"
    overrides = [f"ckpt_path={digits_checkpoint[0]}", "data=digits", "rounds=1", "seconds=0.05", "check_batches=2"]
    run("visionkit-benchmark", [*overrides, f"hydra.run.dir={folder}"], tmp_path)
    rows = list(csv.DictReader((folder / "benchmark.csv").open()))
    assert [r["format"] for r in rows] == ["pytorch", "onnx", "torchscript", "openvino"]
    accuracies = {float(r["metric"]) for r in rows}
    assert len(accuracies) == 1 and 0.7 < accuracies.pop() <= 1.0  # every runtime gives the same accuracy
    assert all(float(r["size_mb"]) > 0 and float(r["ms_per_image_b16"]) > 0 for r in rows)
    assert "| openvino | OpenVINO |" in (folder / "benchmark.md").read_text()
