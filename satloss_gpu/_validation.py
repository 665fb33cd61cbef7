"""Checks of user input, shared by every public function.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the argument,
says what was expected and what was found. Checks never use ``assert``.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ._arraylib import array_library, to_numpy

__all__ = ["check_choice", "check_images", "check_dims", "check_finite"]

_FLOAT_KINDS = "f"
_CONVERTIBLE_KINDS = "biuf"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {options}; got {value!r}")
    return value


def check_dims(dims: Iterable[int], allowed: Sequence[int] = (0, 1)) -> tuple[int, ...]:
    """Normalise the homology dimensions ``dims`` to a sorted tuple of distinct ints."""
    try:
        values = tuple(sorted({int(d) for d in dims}))
    except (TypeError, ValueError):
        raise TypeError(f"`dims` must be an iterable of ints from {tuple(allowed)}; got {dims!r}")
    if not values or any(d not in allowed for d in values):
        raise ValueError(f"`dims` must be a non-empty subset of {tuple(allowed)}; got {dims!r}")
    return values


def _dtype_kind(array: Any) -> tuple[str, str]:
    """(kind letter, dtype name) of an array of any supported library."""
    if array_library(array) == "torch":
        import torch

        dtype = array.dtype
        if dtype.is_complex:
            return "c", str(dtype)
        if dtype.is_floating_point:
            return "f", str(dtype)
        if dtype == torch.bool:
            return "b", str(dtype)
        return "i", str(dtype)
    dtype = np.dtype(array.dtype)
    return dtype.kind, dtype.name


def check_images(images: Any, name: str = "images") -> tuple[Any, bool]:
    """Validate a single image (H, W) or a batch (B, H, W) and return it as a float batch.

    Parameters
    ----------
    images : array_like, shape (H, W) or (B, H, W)
        NumPy array (or sequence), torch tensor or CuPy array. Integer and bool arrays are
        converted to float64 (NumPy, CuPy) or float32 (torch); float16/bfloat16 to float32.
    name : str
        The argument name used in error messages.

    Returns
    -------
    batch : array, shape (B, H, W), float32 or float64
        In the input's library and on its device (a view where no conversion was needed).
    single : bool
        Whether the input was a single image.

    Raises
    ------
    TypeError
        For complex or non-numeric dtypes.
    ValueError
        For a rank other than 2 or 3, a zero-sized dimension, or NaN/inf values.
    """
    library = array_library(images)
    if library == "numpy":
        images = np.asarray(images)
    kind, dtype_name = _dtype_kind(images)
    if kind not in _CONVERTIBLE_KINDS:
        raise TypeError(
            f"`{name}` must hold real numbers (float, int or bool); got dtype {dtype_name}"
        )
    if images.ndim not in (2, 3):
        raise ValueError(
            f"`{name}` must have shape (H, W) or (B, H, W); got shape {tuple(images.shape)}"
        )
    if any(int(s) == 0 for s in images.shape):
        raise ValueError(f"`{name}` must not be empty; got shape {tuple(images.shape)}")
    images = _as_float(images, library, kind)
    check_finite(images, name)
    single = images.ndim == 2
    return (images[None] if single else images), single


def _as_float(images: Any, library: str, kind: str) -> Any:
    """Convert integer, bool and half-precision arrays to a float dtype the backends take."""
    if library == "torch":
        import torch

        if images.dtype not in (torch.float32, torch.float64):
            return images.to(torch.float32)
        return images
    if kind in "biu":
        return images.astype(np.float64)
    if images.dtype.itemsize < 4:
        return images.astype(np.float32)
    return images


def check_finite(array: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``array`` holds NaN or infinite values."""
    library = array_library(array)
    if library == "torch":
        import torch

        bad = ~torch.isfinite(array)
        if bool(bad.any()):
            n_nan = int(torch.isnan(array).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(f"`{name}` must be finite; found {n_nan} NaN and {n_inf} inf values")
        return
    if library == "cupy":
        import cupy as xp
    else:
        xp = np
    bad = ~xp.isfinite(array)
    if bool(bad.any()):
        n_nan = int(xp.isnan(array).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(f"`{name}` must be finite; found {n_nan} NaN and {n_inf} inf values")


def as_numpy_batch(images: Any) -> np.ndarray:
    """C-contiguous NumPy copy (or view) of a validated float batch."""
    return np.ascontiguousarray(to_numpy(images))
