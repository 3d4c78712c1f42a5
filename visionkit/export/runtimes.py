"""Each exported format run by its own runtime (onnxruntime, torch.jit, OpenVINO) behind one call: graph input in,
output out, as NumPy arrays (predictors from exported files, which need no PyTorch) or as tensors (the export
check and `visionkit-benchmark`, whose reference is PyTorch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.export.metadata import METADATA_KEY, OPENVINO_SECTION

if TYPE_CHECKING:
    from torch import Tensor, nn

Array = TypeVar("Array", np.ndarray, "Tensor")

RUNTIME_NAMES = {
    "pytorch": "PyTorch",
    "onnx": "ONNX Runtime",
    "torchscript": "TorchScript",
    "openvino": "OpenVINO",
}


class Runtime(Protocol):
    """Runs one exported model: the graph's input (B, 3, H, W) in, its one output out, on the CPU, each as the
    same kind of array (NumPy, or a tensor)."""

    name: str

    def __call__(self, images: Array) -> Array: ...


class FileRuntime(Runtime, Protocol):
    """A runtime of an exported file, which also reads the file's stored key/value strings (visionkit's input
    contract and task record)."""

    def metadata(self) -> dict[str, str]: ...


def _numpy(images: Any) -> np.ndarray:
    """The input as a contiguous NumPy array (a tensor's values, moved to the CPU)."""
    if isinstance(images, np.ndarray):
        return np.ascontiguousarray(images)
    return np.ascontiguousarray(images.detach().cpu().numpy())


def _like(images: Any, output: np.ndarray) -> Any:
    """`output` as the kind of array `images` was: NumPy stays NumPy, a tensor's answer is a tensor."""
    if isinstance(images, np.ndarray):
        return output
    import torch

    return torch.from_numpy(output)


class PyTorchRuntime:
    """The export graph itself, eager, in PyTorch: the reference every export is compared with."""

    name = RUNTIME_NAMES["pytorch"]

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    def __call__(self, images: Tensor) -> Tensor:
        import torch

        with torch.inference_mode():
            return self.module(images)


class OnnxRuntime:
    """An ONNX file in onnxruntime (CUDA, then TensorRT, when asked for and installed)."""

    name = RUNTIME_NAMES["onnx"]

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.startswith("cuda") else []
        providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: Array) -> Array:
        return _like(images, self.session.run(None, {self.input: _numpy(images)})[0])

    def metadata(self) -> dict[str, str]:
        """The file's `metadata_props`."""
        return dict(self.session.get_modelmeta().custom_metadata_map)


class TorchScriptRuntime:
    """A TorchScript file in torch.jit (no visionkit code involved)."""

    name = RUNTIME_NAMES["torchscript"]

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch

        self.device = torch.device(device if device.startswith("cuda") else "cpu")
        self._extra = {f"{METADATA_KEY}.txt": ""}
        self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=self._extra).eval()

    def __call__(self, images: Array) -> Array:
        import torch

        given = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        with torch.inference_mode():
            output = self.module(given.to(self.device)).cpu()
        return output if isinstance(images, torch.Tensor) else output.numpy()

    def metadata(self) -> dict[str, str]:
        """The record visionkit saved as an extra file (the flat entries are beside it in the archive)."""
        text = self._extra[f"{METADATA_KEY}.txt"]
        return {METADATA_KEY: text.decode() if isinstance(text, bytes) else text} if text else {}


class OpenVINORuntime:
    """An OpenVINO IR folder (model.xml + model.bin) compiled for the CPU in float32 by default: on CPUs with bf16
    units (AVX512-BF16, AMX) OpenVINO would otherwise run in bf16, and its answers would move by about 1e-2.
    `precision`: "fp32", "bf16", or "auto" (OpenVINO's own choice: bf16 where the CPU computes it natively)."""

    name = RUNTIME_NAMES["openvino"]
    precisions = ("fp32", "bf16", "auto")

    def __init__(self, path: Path, device: str = "cpu", precision: str = "fp32") -> None:
        import openvino as ov

        core = ov.Core()
        network = core.read_model(str(path / "model.xml"))
        self._metadata = {}
        if network.has_rt_info([OPENVINO_SECTION]):
            section = network.get_rt_info([OPENVINO_SECTION])
            self._metadata = {str(k): v.astype(str) for k, v in section.astype(dict).items()}
        config = {"PERFORMANCE_HINT": "LATENCY"}  # one synchronous request at a time, as the predictor runs it
        if precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.model = core.compile_model(network, "CPU", config)
        self.request = self.model.create_infer_request()

    def __call__(self, images: Array) -> Array:
        result = self.request.infer([_numpy(images)])
        return _like(images, np.array(result[self.model.output(0)]))

    def metadata(self) -> dict[str, str]:
        """The entries of the model's `rt_info` section `visionkit`."""
        return dict(self._metadata)


_RUNTIMES: dict[str, Callable[..., FileRuntime]] = {
    "onnx": OnnxRuntime,
    "torchscript": TorchScriptRuntime,
    "openvino": OpenVINORuntime,
}


def load_runtime(
    format: str, path: str | os.PathLike[str], device: str = "cpu", precision: str = "fp32"
) -> FileRuntime:
    """The runtime for an exported `format` file (or OpenVINO folder) at `path`; `precision` other than "fp32"
    only where the runtime offers it (`precisions`)."""
    if format not in _RUNTIMES:
        raise VisionkitError(f"no runtime for format {format!r}: choose from {sorted(_RUNTIMES)}")
    path = Path(path)
    if not path.exists():
        raise VisionkitError(f"{format} export {path} does not exist")
    offered = getattr(_RUNTIMES[format], "precisions", ("fp32",))
    if precision not in offered:
        raise VisionkitError(
            f"precision={precision}: {RUNTIME_NAMES[format]} runs an export at {' or '.join(offered)}; other "
            "precisions are for checkpoints run by PyTorch (or export with half=true)"
        )
    try:
        if precision != "fp32":
            return _RUNTIMES[format](path, device, precision)  # the ones that offer it (checked above)
        return _RUNTIMES[format](path, device)
    except ImportError as exc:
        extra = "train" if format == "torchscript" else "runtime"
        raise VisionkitError(f"running {format} needs {exc.name}: pip install 'visionkit[{extra}]'") from None
