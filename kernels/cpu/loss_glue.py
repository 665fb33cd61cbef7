"""Numba kernels of the loss's glue: small one-pass reductions over images."""
from __future__ import annotations

import numba

__all__ = ["last_in_order"]


@numba.njit(cache=True, nogil=True)
def last_in_order(flat, out):
    """Write to ``out[p]`` the flat index of the last pixel of image ``p`` in the (value, index)
    order: its largest value, ties to the largest index.

    Parameters
    ----------
    flat : float32 or float64, shape (P, L), C-contiguous
    out : int64, shape (P,), written
    """
    for p in range(flat.shape[0]):
        best = flat[p, 0]
        where = 0
        for k in range(1, flat.shape[1]):
            value = flat[p, k]
            if value >= best:
                best = value
                where = k
        out[p] = where
