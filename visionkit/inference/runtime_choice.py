"""`load_predictor(ckpt, runtime=...)`: a checkpoint run by another runtime through an exported copy kept in a cache
(keyed by the checkpoint's path, size and time, so a new checkpoint gets a new copy), and `runtime="auto"`: the
runtime that runs this network fastest on this machine at the batch size, timed once and remembered."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)

RUNTIMES = ("pytorch", "onnx", "openvino", "torchscript")
AUTO_CANDIDATES = ("pytorch", "onnx", "openvino")  # TorchScript runs PyTorch's kernels: never faster on the CPU


def exports_cache() -> Path:
    """Where exported copies are kept: $VISIONKIT_EXPORTS or ~/.cache/visionkit/exports."""
    return Path(os.environ.get("VISIONKIT_EXPORTS") or Path.home() / ".cache" / "visionkit" / "exports")


def _copy_folder(checkpoint: Path) -> Path:
    stat = checkpoint.stat()
    key = f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return exports_cache() / hashlib.sha1(key.encode()).hexdigest()[:16]


def exported_copy(checkpoint: str | os.PathLike[str], runtime: str, key: str = "ckpt_path") -> Path:
    """The checkpoint exported for `runtime` ("onnx", "openvino", "torchscript"), written on first use."""
    from visionkit.checkpoints import check_checkpoint, load_checkpoint
    from visionkit.export import EXPORT_FILES, ExportRequest, write_exports

    path = check_checkpoint(os.fspath(checkpoint), key)
    assert path is not None
    folder = _copy_folder(path)
    target = folder / EXPORT_FILES[runtime]
    if not target.exists():
        task, data_state = load_checkpoint(str(path), key)
        folder.mkdir(parents=True, exist_ok=True)
        write_exports(task, data_state, ExportRequest(formats=(runtime,)), folder)
        log.info(f"exported {path} for {runtime} into {target} (kept for the next runs)")
    return target


def runtime_file(
    checkpoint: str | os.PathLike[str],
    runtime: str,
    build: Callable[[str], Any],
    batch_size: int = 16,
    key: str = "ckpt_path",
) -> str:
    """What to load for `runtime`: the checkpoint itself ("pytorch"), its exported copy ("onnx", "openvino",
    "torchscript"), or for "auto" whichever of those runs fastest (`fastest_runtime`). An exported file runs in
    its own runtime only. `build(path)` makes a predictor (auto times them)."""
    runtime = str(runtime or "pytorch").lower()
    if runtime not in (*RUNTIMES, "auto"):
        raise VisionkitError(f"runtime={runtime}: choose one of {[*RUNTIMES, 'auto']}")
    from visionkit.inference.exported import exported_format

    own = exported_format(checkpoint)
    if own:
        if runtime not in ("pytorch", "auto", own):
            raise VisionkitError(f"runtime={runtime}: {checkpoint} is an {own} export and runs in {own} only")
        return os.fspath(checkpoint)
    if runtime == "pytorch":
        return os.fspath(checkpoint)
    if runtime != "auto":
        return os.fspath(exported_copy(checkpoint, runtime, key))
    return fastest_runtime(checkpoint, batch_size, build, key)


def fastest_runtime(
    checkpoint: str | os.PathLike[str], batch_size: int, build: Callable[[str], Any], key: str = "ckpt_path"
) -> str:
    """The file (checkpoint or exported copy) whose runtime ran a batch of `batch_size` fastest among PyTorch,
    ONNX Runtime and OpenVINO: each predictor's network timed on the same batch in interleaved rounds. The choice
    is printed and stored beside the exported copies per batch size and thread count, and reused by later loads."""
    import torch

    from visionkit.models.fastest import time_forms

    path = Path(checkpoint)
    record = _copy_folder(path) / "fastest.json"
    slot = f"batch {batch_size}, {torch.get_num_threads()} threads"
    known = json.loads(record.read_text()) if record.exists() else {}
    if slot in known:
        return runtime_file(checkpoint, known[slot], build, batch_size, key)
    candidates = {}
    for runtime in AUTO_CANDIDATES:
        try:
            candidates[runtime] = build(runtime_file(checkpoint, runtime, build, batch_size, key))
        except VisionkitError as exc:  # a runtime not installed, a precision only PyTorch runs
            log.info(f"runtime=auto: {runtime} left out ({exc})")
    first = next(iter(candidates.values()))
    height, width = first.contract.image_size

    def probe(size: int) -> torch.Tensor:
        return torch.rand(size, first.contract.pixels.channels, height, width)

    def network(predictor: Any) -> Callable[[torch.Tensor], Any]:  # an exported file's network takes NumPy
        return (lambda images: predictor.model(images.numpy())) if predictor.exported else predictor.model

    forms = {name: network(p) for name, p in candidates.items()}
    times = time_forms(forms, probe, [batch_size])[batch_size]
    chosen = min(times, key=times.__getitem__)
    table = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in times.items())
    print(f"runtime=auto: {chosen} runs {path.name} fastest here at batch {batch_size} ({table})")
    known[slot] = chosen
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(record, "w") as handle:
        json.dump(known, handle, indent=1)
    return runtime_file(checkpoint, chosen, build, batch_size, key)
