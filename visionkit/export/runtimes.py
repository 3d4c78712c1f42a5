"""Each exported format run by its own runtime (onnxruntime, torch.jit, OpenVINO) behind one call: graph input in,
output out, as NumPy arrays (predictors from exported files, which need no PyTorch) or as tensors (the export
check and `visionkit-benchmark`, whose reference is PyTorch)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

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


@runtime_checkable
class PixelRuntime(Protocol):
    """A runtime that can also take uint8 (B, H, W, C) pictures and normalize them inside the model."""

    def accept_pixels(self, mean: Sequence[float], std: Sequence[float]) -> None: ...

    def pixels(self, images: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class StreamRuntime(Protocol):
    """A runtime that can run several batches at once, each called from a thread of its own."""

    def streams(self, batch_size: int) -> int: ...

    def run_in_streams(self) -> None: ...


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


@cache
def openvino_core() -> Any:
    """The process's one OpenVINO Core, shared by every model it runs. Each Core loads a CPU plugin of its own, which
    installs an alternate signal stack and puts back the previous one when it goes: two Cores dropped in the order
    they came left freed memory as that stack, and the next Python signal handler (Ctrl-C, a child's exit under a
    DataLoader) crashed the process with a segmentation fault (OpenVINO 2026.4)."""
    import openvino as ov

    return ov.Core()


class OpenVINORuntime:
    """An OpenVINO IR folder (model.xml + model.bin) compiled for the CPU in float32 by default: on CPUs with bf16
    units (AVX512-BF16, AMX) OpenVINO would otherwise run in bf16, and its answers would move by about 1e-2.
    `precision`: "fp32", "bf16", or "auto" (OpenVINO's own choice: bf16 where the CPU computes it natively).

    An input shape seen a second time gets a model compiled for exactly that shape (up to `static_shapes` of them,
    least recently used dropped): OpenVINO's kernels for a fixed shape ran YOLOv8-n at 640 px 1.07-1.20x faster than
    the free-shape model here (docs/benchmarks.md), and a predictor's batches repeat one shape. After
    `accept_pixels`, `pixels` takes uint8 (B, H, W, C) pictures and OpenVINO converts and normalizes them inside
    the compiled model (the predictor's NumPy transpose and float conversion, 10-20 % of a YOLOv8-n image, go).

    Calls are safe from several threads (each thread has its own infer requests). A thread that called
    `run_in_streams` runs on models compiled for throughput: OpenVINO's CPU streams, each on its own share of the
    cores, so `streams` batches run at once, one per thread, where a latency-compiled model spreads one batch
    over every core (which waits at each layer for the slowest)."""

    name = RUNTIME_NAMES["openvino"]
    precisions = ("fp32", "bf16", "auto")
    static_shapes = 4

    def __init__(self, path: Path, device: str = "cpu", precision: str = "fp32") -> None:
        self._core = openvino_core()
        network = self._core.read_model(str(path / "model.xml"))
        self._metadata = {}
        if network.has_rt_info([OPENVINO_SECTION]):
            section = network.get_rt_info([OPENVINO_SECTION])
            self._metadata = {str(k): v.astype(str) for k, v in section.astype(dict).items()}
        chosen = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
        self._configs = {  # by whether the calling thread runs in streams
            False: {"PERFORMANCE_HINT": "LATENCY", **chosen},  # one batch at a time over every core
            True: {"PERFORMANCE_HINT": "THROUGHPUT", **chosen},
        }
        self._networks = {"normalized": network}  # the free-shape network per kind of input
        self._free = {("normalized", False): self._compile(network, False)}  # compiled models of the free shapes
        self._seen: set[tuple[str, tuple[int, ...], bool]] = set()
        self._fixed: OrderedDict[tuple[str, tuple[int, ...], bool], Any] = OrderedDict()
        self._lock = threading.Lock()  # over the compiled models: a shape's model is compiled once
        self._local = threading.local()  # per thread: whether it runs in streams, its infer requests
        self._streams: int | None = None  # the CPU streams of the throughput-compiled model (`streams`)
        self._normalization: tuple[list[float], list[float]] | None = None  # of `pixels` (`accept_pixels`)

    def _compile(self, network: Any, streams: bool) -> Any:
        return self._core.compile_model(network, "CPU", self._configs[streams])

    def streams(self, batch_size: int) -> int:
        """How many batches of `batch_size` to run at once, each from a thread that called `run_in_streams`: the
        number of CPU streams OpenVINO's throughput mode picks for the model (2 on 2 cores) when a batch is smaller
        than that, else 1 (a batch that fills the streams itself runs faster over every core, and batches taken
        in streams leave cores idle at the end of a run while the last one finishes alone)."""
        if batch_size >= self._core.get_property("CPU", "RANGE_FOR_STREAMS")[1]:
            return 1  # more pictures than the CPU could ever have streams: no compile needed to know
        with self._lock:
            if self._streams is None:
                compiled = self._free.get(("normalized", True)) or self._compile(self._networks["normalized"], True)
                self._free["normalized", True] = compiled
                self._streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return self._streams if batch_size < self._streams else 1

    def run_in_streams(self) -> None:
        """Make this thread's calls run on the throughput-compiled models (a predictor's batch threads)."""
        self._local.streams = True

    def accept_pixels(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Let `pixels` take uint8 (B, H, W, C) pictures: the model then computes (pixel - mean) / std per channel
        (`mean`, `std` on the 0..255 scale) and the channels-first layout itself (compiled on the first call)."""
        self._normalization = ([float(v) for v in mean], [float(v) for v in std])

    def _add_pixel_network(self) -> None:
        """The network with the pixel conversion of `accept_pixels` in front, kept and compiled free-shape."""
        from openvino import Layout, Type
        from openvino.preprocess import PrePostProcessor

        if self._normalization is None:
            raise VisionkitError("OpenVINORuntime.pixels needs accept_pixels(mean, std) first")
        mean, std = self._normalization
        steps = PrePostProcessor(self._networks["normalized"].clone())
        steps.input().tensor().set_element_type(Type.u8).set_layout(Layout("NHWC"))
        steps.input().model().set_layout(Layout("NCHW"))
        convert = steps.input().preprocess().convert_element_type(Type.f32)
        if any(mean):
            convert.mean(mean)
        convert.scale(std)
        self._networks["pixels"] = steps.build()

    def _model(self, kind: str, shape: tuple[int, ...], streams: bool) -> Any:
        """The compiled model for an input of `shape`: the free-shape one the first time a shape comes, one compiled
        for that shape from its second time on (a one-off shape never pays the compile)."""
        key = (kind, shape, streams)
        with self._lock:
            if key in self._fixed:
                self._fixed.move_to_end(key)
                return self._fixed[key]
            network = self._networks[kind]
            if not network.input(0).partial_shape.is_dynamic or key not in self._seen:
                if len(self._seen) >= 64:  # shapes that keep changing (files of every size): remember the recent
                    self._seen.clear()
                self._seen.add(key)
                if (kind, streams) not in self._free:
                    self._free[kind, streams] = self._compile(network, streams)
                return self._free[kind, streams]
            fixed = network.clone()
            fixed.reshape(list(shape))
            self._fixed[key] = self._compile(fixed, streams)
            if len(self._fixed) > self.static_shapes:
                self._fixed.popitem(last=False)
            return self._fixed[key]

    def _request(self, kind: str, shape: tuple[int, ...]) -> Any:
        """This thread's infer request on the compiled model for an input of `shape` (`_model`): one per model and
        thread (the free-shape model's serves every shape it runs)."""
        model = self._model(kind, shape, getattr(self._local, "streams", False))
        requests = self._local.__dict__.setdefault("requests", {})  # id of a compiled model -> (it, its request)
        entry = requests.get(id(model))  # the entry holds the model: its id is not reused while it is there
        if entry is None:
            if len(requests) > 2 * self.static_shapes:  # drop the requests of models no longer kept
                with self._lock:
                    live = {id(kept) for kept in (*self._fixed.values(), *self._free.values())}
                requests = self._local.requests = {key: kept for key, kept in requests.items() if key in live}
            entry = requests[id(model)] = (model, model.create_infer_request())
        return entry[1]

    @property
    def fixed_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes that have a model compiled for them, least recently used first."""
        return [shape for _, shape, streams in self._fixed if not streams]

    def _infer(self, kind: str, images: Any) -> Any:
        """The first output for `images`, handed to OpenVINO without a copy; the tensor calls, not `infer(inputs)`,
        whose input dispatch cost 65 us a call (4 % of a 128 px image)."""
        from openvino import Tensor

        given = _numpy(images)
        request = self._request(kind, given.shape)
        request.set_input_tensor(Tensor(given, shared_memory=given.flags.writeable))  # OpenVINO copies a read-only one
        request.infer()
        return _like(images, np.array(request.get_output_tensor(0).data))  # a copy: the next call reuses the memory

    def __call__(self, images: Array) -> Array:
        return self._infer("normalized", images)

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """The output for uint8 (B, H, W, C) pictures, normalized inside the model (`accept_pixels` first)."""
        with self._lock:
            if "pixels" not in self._networks:
                self._add_pixel_network()
        return self._infer("pixels", images)

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
