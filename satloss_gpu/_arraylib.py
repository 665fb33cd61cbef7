"""Array-library dispatch: NumPy, torch (CPU or CUDA) and CuPy, without importing CuPy eagerly.

Every public function accepts arrays from any of these libraries and returns results in the
library, dtype and device of its input. This module owns the few conversions that need:
which library an array belongs to, moving it to NumPy, and moving a NumPy result back.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["array_library", "to_numpy", "like", "is_cuda_array"]


def _is_torch(array: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(array, torch.Tensor)


def _is_cupy(array: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(array, cupy.ndarray)


def array_library(array: Any) -> str:
    """Name the array library of ``array``.

    Parameters
    ----------
    array : numpy.ndarray, torch.Tensor or cupy.ndarray
        Any array; Python sequences count as NumPy.

    Returns
    -------
    str
        ``"numpy"``, ``"torch"`` or ``"cupy"``.
    """
    if _is_torch(array):
        return "torch"
    if _is_cupy(array):
        return "cupy"
    return "numpy"


def is_cuda_array(array: Any) -> bool:
    """Whether ``array`` lives in GPU memory (a CUDA torch tensor or a CuPy array)."""
    if _is_torch(array):
        return array.is_cuda
    return _is_cupy(array)


def to_numpy(array: Any) -> np.ndarray:
    """Copy ``array`` to a NumPy array on the host (no copy for NumPy input).

    Gradients are detached: the result is plain data.
    """
    if _is_torch(array):
        return array.detach().cpu().numpy()
    if _is_cupy(array):
        return array.get()
    return np.asarray(array)


def like(result: np.ndarray, reference: Any) -> Any:
    """Return the NumPy array ``result`` in the library and on the device of ``reference``.

    The dtype of ``result`` is kept; only the library and device change.
    """
    library = array_library(reference)
    if library == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(result)).to(reference.device)
    if library == "cupy":
        import cupy

        with cupy.cuda.Device(reference.device.id):
            return cupy.asarray(result)
    return result
