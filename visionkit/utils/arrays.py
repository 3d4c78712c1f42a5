"""The few array operations predictors and tasks apply to a network's output, written once for both kinds of
array: PyTorch tensors (checkpoints, on any device) and NumPy arrays (exported files, run where PyTorch is not
installed). Each function returns the kind of array it was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

if TYPE_CHECKING:
    import torch


def is_numpy(array: Any) -> bool:
    """True for a NumPy array (an exported runtime's output), False for a tensor."""
    return isinstance(array, np.ndarray)


def is_tensor(value: Any) -> TypeGuard[torch.Tensor]:
    """True for a PyTorch tensor (told by its type's module, so PyTorch need not be imported to ask)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "permute")


def to_numpy(array: Any) -> np.ndarray:
    """The values as a NumPy array on the CPU (half and bfloat16 tensors as float32, which NumPy can hold)."""
    if is_numpy(array):
        return array
    tensor = array.detach()
    if tensor.is_floating_point() and tensor.dtype.itemsize < 4:
        tensor = tensor.float()
    return tensor.cpu().numpy()


def softmax(logits: Any, axis: int) -> Any:
    """Probabilities along `axis`, in float32."""
    if not is_numpy(logits):
        return logits.float().softmax(axis)
    values = logits.astype(np.float32, copy=False)
    shifted = np.exp(values - values.max(axis, keepdims=True))
    return shifted / shifted.sum(axis, keepdims=True)


def sigmoid(logits: Any) -> Any:
    """The logistic function, in float32 (NumPy's through tanh: no overflow for large negative logits)."""
    if not is_numpy(logits):
        return logits.float().sigmoid()
    return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float32)))).astype(np.float32)


def unit_rows(vectors: Any, eps: float = 1e-12) -> Any:
    """(N, D) rows scaled to length 1, as torch.nn.functional.normalize does (lengths below `eps` count as `eps`)."""
    if not is_numpy(vectors):
        import torch

        return torch.nn.functional.normalize(vectors.float(), dim=1, eps=eps)
    vectors = vectors.astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), eps)


def concat(arrays: Sequence[Any], axis: int) -> Any:
    """The arrays joined along `axis`."""
    if is_numpy(arrays[0]):
        return np.concatenate(arrays, axis)
    import torch

    return torch.cat(list(arrays), axis)


def full_like(array: Any, value: float) -> Any:
    """An array of `array`'s shape, type and device holding `value` everywhere."""
    if is_numpy(array):
        return np.full_like(array, value)
    import torch

    return torch.full_like(array, value)


def class_probabilities(logits: Any, binary: bool) -> Any:
    """Per-class probabilities (N, classes, H, W) of segmentation logits; a binary model's single channel as
    background and foreground (the task and an exported graph share this)."""
    if binary:
        foreground = sigmoid(logits)
        return concat([1 - foreground, foreground], axis=1)
    return softmax(logits, axis=1)
