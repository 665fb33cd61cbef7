"""Persistence backends: one small interface, implemented for the CPU, the GPU and gudhi.

A backend computes, for a batch of images, the persistence pairs of the sublevel filtration
under the strict total order (value, C-order flat index) of the tie rule, as flat pixel
indices. Everything else (validation, superlevel filtrations, gathering the values, dropping
zero-persistence pairs, moving results to the caller's library) is done once, by
:func:`satloss_gpu.cubical_persistence`, so callers never branch on the device.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Dict

from .._validation import check_choice

__all__ = ["PairIndices", "PersistenceBackend", "get_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("auto", "cpu", "cuda", "gudhi")


@dataclass(frozen=True)
class PairIndices:
    """Persistence pairs of a batch as flat pixel indices, in a backend's array library.

    Attributes
    ----------
    image : (K,) int64
        Image of each pair; pairs are grouped by image, then by dimension.
    dim : (K,) int64
        Homology dimension, 0 or 1.
    birth_index : (K,) int64
        C-order flat index (row * W + col) of the pixel whose value is the birth.
    death_index : (K,) int64
        Flat index of the pixel whose value is the death; -1 for the essential class.
    last_index : (B,) int64 or None
        Flat index of the last pixel of each image in the (value, index) order, where the
        filtration ends (the loss lets the essential class die there); None when the backend
        does not report it.
    """

    image: Any
    dim: Any
    birth_index: Any
    death_index: Any
    last_index: Any = None


class PersistenceBackend(abc.ABC):
    """Interface of a persistence backend.

    Subclasses implement :meth:`asarray` (move a validated float batch into the array type
    the backend computes on) and :meth:`pairs` (the computation). They may assume a
    C-contiguous float32 or float64 batch of shape (B, H, W) with finite values.
    """

    #: Name used by ``backend=`` arguments.
    name: str = ""

    @classmethod
    def is_available(cls) -> bool:
        """Whether the backend can run on this machine."""
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`is_available` is false, for error messages."""
        return "its dependencies are not installed"

    @abc.abstractmethod
    def asarray(self, images: Any) -> Any:
        """Return ``images`` (B, H, W), detached, C-contiguous, in this backend's array type."""

    @abc.abstractmethod
    def pairs(self, images: Any, construction: str, dims: tuple[int, ...]) -> PairIndices:
        """Persistence pairs of the sublevel filtrations of ``images``.

        Parameters
        ----------
        images : (B, H, W) float32 or float64
            As returned by :meth:`asarray`.
        construction : {"T", "V"}
            Pixels as top-dimensional cells ("T") or as vertices ("V").
        dims : tuple of int
            Homology dimensions to compute, a non-empty subset of (0, 1).

        Returns
        -------
        PairIndices
            Pairs with birth value strictly below the death value in the (value, index)
            order. Pairs whose two values are equal may be included; the caller drops them.
        """


def _cpu() -> type[PersistenceBackend]:
    from .cpu import CPUBackend

    return CPUBackend


def _gudhi() -> type[PersistenceBackend]:
    from .gudhi_backend import GudhiBackend

    return GudhiBackend


def _cuda() -> type[PersistenceBackend]:
    from .cuda import CUDABackend

    return CUDABackend


_FACTORIES: Dict[str, Callable[[], type[PersistenceBackend]]] = {
    "cpu": _cpu,
    "gudhi": _gudhi,
    "cuda": _cuda,
}
_INSTANCES: Dict[str, PersistenceBackend] = {}


def get_backend(name: str, images: Any = None) -> PersistenceBackend:
    """Return the (cached) backend called ``name``; ``"auto"`` picks one for ``images``.

    ``"auto"`` chooses ``"cuda"`` for CUDA inputs when that backend is available, else
    ``"cpu"``.

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    RuntimeError
        If the named backend cannot run on this machine (e.g. ``"cuda"`` without a GPU).
    """
    check_choice("backend", name, BACKEND_NAMES)
    if name == "auto":
        from .._arraylib import is_cuda_array

        name = "cpu"
        if images is not None and is_cuda_array(images) and _cuda().is_available():
            name = "cuda"
    if name not in _INSTANCES:
        cls = _FACTORIES[name]()
        if not cls.is_available():
            raise RuntimeError(
                f"backend {name!r} is not available on this machine: {cls.unavailable_reason()}"
            )
        _INSTANCES[name] = cls()
    return _INSTANCES[name]
