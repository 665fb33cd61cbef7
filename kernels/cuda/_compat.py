"""Compatibility of numba-cuda with the installed NumPy.

numba-cuda up to at least 0.30.4 registers a device overload for ``numpy.row_stack`` when it
compiles its first kernel; NumPy 2.5 removed that alias of ``numpy.vstack``, so the first
launch fails with ``AttributeError: module 'numpy' has no attribute 'row_stack'`` (seen on a
GPU machine with numba-cuda 0.30.4 and NumPy 2.5.2). Restoring the alias, only where it is
missing, lets numba-cuda register its overload; nothing in this package uses it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ensure_numpy_aliases"]


def ensure_numpy_aliases() -> None:
    """Give NumPy back the ``row_stack`` alias (of ``vstack``) if this NumPy lacks it."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


ensure_numpy_aliases()
