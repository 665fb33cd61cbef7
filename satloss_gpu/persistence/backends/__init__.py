"""Persistence backends: one small interface, implemented for the CPU, the GPU and gudhi.

A backend computes, for a batch of images (or volumes, when it declares
``supports_volumes``), the persistence pairs of the sublevel filtration under the strict total
order (value, C-order flat index) of the tie rule, as flat pixel (voxel) indices. Everything
else (validation, superlevel filtrations, gathering the values, dropping zero-persistence
pairs, moving results to the caller's library) is done once, by
:func:`satloss_gpu.cubical_persistence`, so callers never branch on the device.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from ..._validation import check_choice
from ._base import PairIndices, PersistenceBackend

__all__ = ["PairIndices", "PersistenceBackend", "get_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("auto", "cpu", "cuda", "gudhi")


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


def get_backend(name: str, images: Any = None, spatial_dims: int = 2) -> PersistenceBackend:
    """Return the (cached) backend called ``name``; ``"auto"`` picks one for ``images``.

    ``"auto"`` chooses ``"cuda"`` for CUDA inputs when that backend is available (and, for
    volumes, supports them), else ``"cpu"``.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "gudhi"}
    images : array, optional
        The batch to compute on (only its library and device are looked at).
    spatial_dims : {2, 3}, default 2
        3 for batches of volumes: the backend must declare ``supports_volumes``.

    Raises
    ------
    ValueError
        If ``name`` is unknown, or the backend does not compute volumes and
        ``spatial_dims`` is 3.
    RuntimeError
        If the named backend cannot run on this machine (e.g. ``"cuda"`` without a GPU).
    """
    check_choice("backend", name, BACKEND_NAMES)
    volumes = spatial_dims == 3
    if name == "auto":
        from ..._arraylib import is_cuda_array

        name = "cpu"
        if images is not None and is_cuda_array(images) and _cuda().is_available():
            if not volumes or _cuda().supports_volumes:
                name = "cuda"
    cls = _FACTORIES[name]()
    if volumes and not cls.supports_volumes:
        capable = ", ".join(repr(n) for n in BACKEND_NAMES[1:] if _supports_volumes(n))
        raise ValueError(f"`backend` {name!r} does not compute volumes (spatial_dims=3); use "
                         f"one of {capable} or 'auto'")
    if name not in _INSTANCES:
        if not cls.is_available():
            raise RuntimeError(
                f"backend {name!r} is not available on this machine: {cls.unavailable_reason()}"
            )
        _INSTANCES[name] = cls()
    return _INSTANCES[name]


def _supports_volumes(name: str) -> bool:
    """Whether the backend class ``name`` declares volume support (False if it cannot load)."""
    try:
        return bool(_FACTORIES[name]().supports_volumes)
    except ImportError:
        return False
