"""Device and precision choice for inference, style optimization and training: one rule for `auto` everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch

from visionkit.errors import VisionkitError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` = CUDA when available, else CPU; a requested CUDA device that is missing is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise VisionkitError(f"device={device!r}: choose auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise VisionkitError(f"device={device} but CUDA is not available here; use device=cpu or auto")
    return chosen


def check_accelerator(accelerator: str) -> None:
    """Stop before any work when `trainer.accelerator` asks for a GPU that PyTorch cannot see, naming the CPU
    configs (Lightning's own message, "No supported gpu backend found!", named neither cause nor fix)."""
    name = str(accelerator).lower()
    mps = getattr(torch.backends, "mps", None)
    has_gpu = torch.cuda.is_available() or (name == "gpu" and mps is not None and mps.is_available())
    if name in ("gpu", "cuda") and not has_gpu:
        build = "PyTorch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise VisionkitError(
            f"trainer.accelerator={accelerator} asks for a GPU (as trainer=gpu and trainer=ddp do) but this "
            f"machine has none PyTorch can use ({build}): train on the CPU with trainer=cpu, or with DDP on CPU "
            "processes with trainer=ddp_cpu trainer.devices=2"
        )


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: CUDA compute capability 8.0+, or a CPU with AVX512-BF16
    or AMX instructions (elsewhere bf16 is emulated and no faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` = bf16 (autocast) where the device computes it natively, else fp32; fp16 needs CUDA."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise VisionkitError(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise VisionkitError("precision=fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return precision


def autocast(device: str | torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of a resolved precision (fp32: none)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's CPU thread pool at `count` threads inside the block, as it was after it. An exported model's
    runtime has threads of its own: PyTorch's, still spinning after a tensor operation, would take their cores."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
