"""satloss-gpu: batched Spatial-Aware Topological Loss and cubical persistence on the GPU.

Public API
----------
cubical_persistence
    Persistence diagrams of a batch of 2D images or 3D volumes with the critical pixel
    (voxel) of every value.
PersistenceDiagrams
    The packed container it returns.
match_batch
    Exact matching of a padded batch of persistence diagrams with the diagonal.
SATLoss, TopoLoss
    Batched topological segmentation losses (``torch.nn.Module``).
sliding_window_inference
    Predict large images window by window, blended (needs torch only).

The losses and ``sliding_window_inference`` are loaded on first use, so ``import satloss_gpu``
does not import torch (whose import also loads tqdm when it is installed).
"""
from typing import Any

from ._numba_cache import install_cache_locator
from ._threads import prefer_passive_openmp

prefer_passive_openmp()
install_cache_locator()  # before any kernel module: Numba picks the cache folder then

from .matching import match_batch  # noqa: E402
from .persistence import PersistenceDiagrams, cubical_persistence  # noqa: E402

__all__ = ["cubical_persistence", "PersistenceDiagrams", "match_batch", "SATLoss", "TopoLoss",
           "sliding_window_inference"]
__version__ = "0.1.0"

_LAZY = {"SATLoss": "losses", "TopoLoss": "losses",
         "sliding_window_inference": "training.sliding_window"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
