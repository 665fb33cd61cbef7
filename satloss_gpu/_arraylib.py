"""Array-library dispatch: one namespace object per library (NumPy, torch, CuPy).

Every public function accepts arrays from any of these libraries and returns results in the
library, dtype and device of its input. :func:`get_namespace` returns the (cached)
:class:`ArrayNamespace` of its arguments; its methods do what differs between libraries
(conversions, dtype kinds, finiteness, stacking), so callers never branch on a library name.
torch and CuPy are never imported here: an array can only be a tensor of a library that is
already loaded.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["ArrayNamespace", "get_namespace", "array_library", "to_numpy", "like",
           "is_cuda_array"]


class ArrayNamespace:
    """NumPy, and the interface every namespace implements (POT's ``Backend``, in small).

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"torch"`` or ``"cupy"``.
    xp : module
        The array module (``numpy``, ``torch`` or ``cupy``).
    """

    name = "numpy"

    @property
    def xp(self) -> Any:
        return np

    def owns(self, array: Any) -> bool:
        """Whether ``array`` belongs to this library (NumPy takes everything else)."""
        return True

    def is_cuda(self, array: Any) -> bool:
        """Whether ``array`` lives in GPU memory."""
        return False

    def device_type(self, array: Any) -> str:
        """``"cpu"``, ``"cuda"``, or another device type (torch's ``"meta"``, ``"mps"``...)."""
        return "cpu"

    def to_numpy(self, array: Any) -> np.ndarray:
        """A host NumPy copy of ``array`` (no copy for NumPy input; gradients detached)."""
        return np.asarray(array)

    def from_numpy(self, result: np.ndarray, reference: Any) -> Any:
        """``result`` in this library, on the device of ``reference``; its dtype kept."""
        return result

    def convert(self, array: Any, reference: Any) -> Any:
        """``array`` of any library in this library, on the device of ``reference``."""
        return get_namespace(array).to_numpy(array)

    def dtype_kind(self, array: Any) -> tuple[str, str]:
        """(NumPy kind letter ``"b"``, ``"i"``, ``"u"``, ``"f"``, ``"c"``..., dtype name)."""
        dtype = np.dtype(array.dtype)
        return dtype.kind, dtype.name

    def as_float(self, array: Any) -> Any:
        """``array`` as float64 (integers, bools) or float32 (half precision); floats kept."""
        kind = self.dtype_kind(array)[0]
        if kind in "biu":
            return array.astype(self.xp.float64)
        if array.dtype.itemsize < 4:
            return array.astype(self.xp.float32)
        return array

    def count_nonfinite(self, array: Any) -> tuple[int, int]:
        """(number of NaN, number of infinite values) of ``array``."""
        xp = self.xp
        with np.errstate(invalid="ignore"):
            bad = ~xp.isfinite(array)
        n_bad = int(bad.sum())
        n_nan = int(xp.isnan(array).sum()) if n_bad else 0
        return n_nan, n_bad - n_nan

    def where_scalar(self, mask: Any, scalar: float, values: Any) -> Any:
        """A copy of ``values`` with ``scalar`` where ``mask``."""
        out = values.copy()
        out[mask] = scalar
        return out

    def stack_columns(self, columns: list) -> Any:
        """Stack 1-D arrays as the columns of a 2-D array."""
        return self.xp.stack(columns, axis=1)


class TorchNamespace(ArrayNamespace):
    """torch tensors, on any device."""

    name = "torch"

    @property
    def xp(self) -> Any:
        return sys.modules["torch"]

    def owns(self, array: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(array, torch.Tensor)

    def is_cuda(self, array: Any) -> bool:
        return bool(array.is_cuda)

    def device_type(self, array: Any) -> str:
        return str(array.device.type)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def from_numpy(self, result: np.ndarray, reference: Any) -> Any:
        return self.xp.from_numpy(np.ascontiguousarray(result)).to(reference.device)

    def convert(self, array: Any, reference: Any) -> Any:
        source = get_namespace(array)
        if source is self:
            return array.to(reference.device)
        if source.name == "cupy":
            return self.xp.from_dlpack(array).to(reference.device)
        return self.from_numpy(np.asarray(array), reference)

    def dtype_kind(self, array: Any) -> tuple[str, str]:
        dtype = array.dtype
        if dtype.is_complex:
            return "c", str(dtype)
        if dtype.is_floating_point:
            return "f", str(dtype)
        if dtype == self.xp.bool:
            return "b", str(dtype)
        return "i", str(dtype)

    def as_float(self, array: Any) -> Any:
        torch = self.xp
        if array.dtype in (torch.float32, torch.float64):
            return array
        return array.to(torch.float32)

    def count_nonfinite(self, array: Any) -> tuple[int, int]:
        bad = ~self.xp.isfinite(array)
        n_bad = int(bad.sum())
        n_nan = int(self.xp.isnan(array).sum()) if n_bad else 0
        return n_nan, n_bad - n_nan

    def where_scalar(self, mask: Any, scalar: float, values: Any) -> Any:
        return self.xp.where(mask, self.xp.full_like(values, scalar), values)

    def stack_columns(self, columns: list) -> Any:
        return self.xp.stack(columns, dim=1)


class CupyNamespace(ArrayNamespace):
    """CuPy arrays."""

    name = "cupy"

    @property
    def xp(self) -> Any:
        return sys.modules["cupy"]

    def owns(self, array: Any) -> bool:
        cupy = sys.modules.get("cupy")
        return cupy is not None and isinstance(array, cupy.ndarray)

    def is_cuda(self, array: Any) -> bool:
        return True

    def device_type(self, array: Any) -> str:
        return "cuda"

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.get()

    def from_numpy(self, result: np.ndarray, reference: Any) -> Any:
        with self.xp.cuda.Device(reference.device.id):
            return self.xp.asarray(result)

    def convert(self, array: Any, reference: Any) -> Any:
        source = get_namespace(array)
        if source is self:
            return array
        if source.name == "torch":
            return self.xp.from_dlpack(array)
        return self.from_numpy(np.asarray(array), reference)


_NAMESPACES = (TorchNamespace(), CupyNamespace(), ArrayNamespace())


def get_namespace(*arrays: Any) -> ArrayNamespace:
    """The namespace of ``arrays`` (Python sequences count as NumPy).

    Raises
    ------
    TypeError
        If the arrays come from different libraries; the message lists the types found.
    """
    found = {next(ns for ns in _NAMESPACES if ns.owns(a)) for a in arrays}
    if len(found) > 1:
        names = ", ".join(sorted(type(a).__module__ + "." + type(a).__name__ for a in arrays))
        raise TypeError(f"arrays must come from one array library; got {names}")
    return found.pop() if found else _NAMESPACES[-1]


def array_library(array: Any) -> str:
    """Name the array library of ``array``: ``"numpy"``, ``"torch"`` or ``"cupy"``."""
    return get_namespace(array).name


def is_cuda_array(array: Any) -> bool:
    """Whether ``array`` lives in GPU memory (a CUDA torch tensor or a CuPy array)."""
    return get_namespace(array).is_cuda(array)


def to_numpy(array: Any) -> np.ndarray:
    """Copy ``array`` to a NumPy array on the host (no copy for NumPy input).

    Gradients are detached: the result is plain data.
    """
    return get_namespace(array).to_numpy(array)


def like(result: np.ndarray, reference: Any) -> Any:
    """Return the NumPy array ``result`` in the library and on the device of ``reference``.

    The dtype of ``result`` is kept; only the library and device change.
    """
    return get_namespace(reference).from_numpy(result, reference)
