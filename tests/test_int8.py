"""INT8 exports (`visionkit-export int8=true`): ONNX Runtime static quantization and NNCF for OpenVINO, calibrated on
training images, checked against float32 by the validation metric, and run by the same predictors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TrainedDetector
from tests.test_cli import run
from visionkit.inference import load_predictor

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _int8_export(tmp_path: Path, ckpt: Path, *overrides: str, expect_ok: bool = True) -> tuple[list[dict], Path, str]:
    """`visionkit-export formats=[onnx,openvino] int8=true` of `ckpt`: (check.json records, folder, output)."""
    folder = tmp_path / "export"
    args = [f"ckpt_path={ckpt}", "formats=[onnx,openvino]", "int8=true", f"hydra.run.dir={folder}", *overrides]
    proc = run("visionkit-export", args, tmp_path, expect_ok=expect_ok)
    return json.loads((folder / "check.json").read_text()), folder, proc.stdout + proc.stderr


def _quantized_ops(path: Path) -> tuple[list, set[str]]:
    """(the ONNX file's nodes, the op types whose weights are INT8 initializers)."""
    import onnx

    model = onnx.load(str(path))
    int8_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    return list(model.graph.node), int8_weights


def test_an_int8_classifier_is_calibrated_checked_and_predicts_like_float32(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    from visionkit.data import DigitsSource

    ckpt, _ = digits_checkpoint
    records, folder, _ = _int8_export(tmp_path, ckpt, "data=digits", "calibration_images=120")
    assert {p.name for p in folder.iterdir()} >= {"model_int8.onnx", "model_int8_openvino", "check.json"}
    assert not (folder / "model.onnx").exists()  # int8=true writes the INT8 copies only
    assert {r["format"] for r in records} == {"onnx", "openvino"}
    for r in records:
        assert r["int8"] and r["passed"] and r["metric"] == "val_acc" and r["metric_tolerance"] == 0.01, r
        assert r["pytorch"] > 0.7 and r["pytorch"] - r["exported"] <= 0.01, r
        assert r["max_diff"] > 0  # it is quantized: the logits moved
    nodes, int8_weights = _quantized_ops(folder / "model_int8.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in nodes} and int8_weights
    import onnxruntime as ort

    meta = ort.InferenceSession(str(folder / "model_int8.onnx")).get_modelmeta().custom_metadata_map
    assert meta["int8"] == "True" and json.loads(meta["visionkit"])["graph"]["calibration_images"] == 120
    # the INT8 OpenVINO folder predicts through visionkit-predict: the same classes as the checkpoint
    images = tmp_path / "images"
    images.mkdir()
    for i, pixels in enumerate(DigitsSource().splits(0.1, 0.2, 0)["val"].images[:60]):
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
    reference = {Path(r.source).name: r.label for r in load_predictor(ckpt)(str(images))}
    predicted = tmp_path / "predict"
    args = [f"ckpt_path={folder / 'model_int8_openvino'}", f"source={images}", f"hydra.run.dir={predicted}"]
    run("visionkit-predict", args, tmp_path)
    records = {Path(r["path"]).name: r for r in json.loads((predicted / "predictions.json").read_text())}
    assert np.mean([records[name]["label"] == label for name, label in reference.items()]) >= 0.95


def test_an_int8_export_whose_metric_drops_past_the_tolerance_fails_the_check(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    from tests.conftest import compose_config
    from visionkit.checkpoints import load_checkpoint
    from visionkit.errors import VisionkitError
    from visionkit.export import ExportRequest, build_graph, check_exports, write_exports
    from visionkit.training.fit import checkpoint_datamodule

    ckpt, _ = digits_checkpoint
    task, data_state = load_checkpoint(ckpt)
    cfg = compose_config(tmp_path, [f"ckpt_path={ckpt}", "data=digits"], "export")
    dm = checkpoint_datamodule(cfg, task, data_state)
    request = ExportRequest(formats=("onnx",), int8=True, calibration_images=32)
    other = load_checkpoint(ckpt)[0]
    torch.nn.init.normal_(next(other.model.parameters()))  # another network: its INT8 copy classifies badly
    _, written = write_exports(other, data_state, request, tmp_path / "other", dm)
    assert written["onnx"].name == "model_int8.onnx"
    with pytest.raises(VisionkitError) as failure:
        check_exports(task, build_graph(task, data_state), request, written, dm, tmp_path, max_batches=2)
    message = str(failure.value)
    assert "1 export(s) answer differently" in message and "onnx INT8 (ONNX Runtime)" in message
    assert "a drop of at most 0.01 allowed) - FAILED" in message and "raise calibration_images=" in message
    (record,) = json.loads((tmp_path / "check.json").read_text())
    assert record["int8"] and not record["passed"] and record["metric_move"] > 0.01


def test_an_int8_detector_keeps_box_decoding_float(trained_detector: TrainedDetector, tmp_path: Path) -> None:
    data = ["data=yolo", f"data.yaml={trained_detector.data_yaml}"]
    # the 12-epoch fixture's mAP50-95 is about 0.09 on 40 images: INT8 moves it by 0.0002 to 0.015
    records, folder, _ = _int8_export(tmp_path, trained_detector.ckpt, *data, "int8_tolerance=0.05")
    for r in records:
        assert r["passed"] and r["pytorch"] > 0.01 and abs(r["exported"] - r["pytorch"]) <= 0.05, r
    # the network is INT8 (its convolutions among the rest); the head's box decoding (DFL softmax) and class
    # sigmoid read float tensors
    nodes, int8_weights = _quantized_ops(folder / "model_int8.onnx")
    producer = {out: node for node in nodes for out in node.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    quantized = [n for n in convs if any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)]
    assert len(quantized) >= 0.9 * len(convs) and int8_weights
    softmax = [n for n in nodes if n.op_type == "Softmax"]  # the DFL's, over each side's 16 bins
    final = next(n for n in nodes if n.output[0] == "output0")  # boxes and class scores concatenated
    sigmoid = [producer[i] for i in final.input if producer[i].op_type == "Sigmoid"]
    assert len(softmax) == 1 and len(sigmoid) == 1
    assert all(producer[n.input[0]].op_type != "DequantizeLinear" for n in softmax + sigmoid)
    dfl = next(n for n in nodes if n.op_type == "Conv" and "/dfl/" in n.name)
    assert dfl not in quantized  # the DFL's fixed 0..15 weights stay float32


def test_the_benchmark_tables_int8_files_beside_pytorch(digits_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    import csv

    folder = tmp_path / "bench"
    args = [f"ckpt_path={digits_checkpoint[0]}", "data=digits", "formats=[pytorch,onnx,openvino]", "int8=true"]
    args += ["calibration_images=32", "rounds=1", "seconds=0.05", "check_batches=2", f"hydra.run.dir={folder}"]
    run("visionkit-benchmark", args, tmp_path)
    rows = {r["format"]: r for r in csv.DictReader((folder / "benchmark.csv").open())}
    assert [rows[f]["runtime"] for f in ("pytorch", "onnx", "openvino")] == [
        "PyTorch",
        "ONNX Runtime INT8",
        "OpenVINO INT8",
    ]
    assert rows["onnx"]["file"].endswith("model_int8.onnx") and rows["openvino"]["file"].endswith("model_int8_openvino")
    assert all(abs(float(rows[f]["metric"]) - float(rows["pytorch"]["metric"])) <= 0.05 for f in ("onnx", "openvino"))


def test_an_int8_request_made_in_python_is_checked_too() -> None:
    from visionkit.errors import VisionkitError
    from visionkit.export import ExportRequest

    with pytest.raises(VisionkitError, match="calibrate on at least 1 image"):
        ExportRequest(formats=("onnx",), int8=True, calibration_images=0)
    with pytest.raises(VisionkitError, match=r"int8=true writes \['onnx', 'openvino'\] only"):
        ExportRequest(formats=("torchscript",), int8=True)


@pytest.mark.parametrize("batches", [3, 13])
def test_onnx_calibration_takes_any_number_of_images(tmp_path: Path, batches: int) -> None:
    """ONNX Runtime measures ranges in strides of 8 and refuses a count that does not fill them: 3 and 13 do not."""
    import onnx
    import torch

    from visionkit.export.quantize import quantize_onnx

    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).eval()
    source = tmp_path / "float.onnx"
    torch.onnx.export(network, (torch.rand(1, 3, 16, 16),), str(source), input_names=["images"], dynamo=False)
    rng = np.random.default_rng(0)
    calibration = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(batches)]
    quantize_onnx(source, tmp_path / "int8.onnx", calibration, detection=False)
    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) >= 2
