"""Scalar rules of exact diagram matching, shared by the CPU solver and the CUDA kernel.

Plain ``numba.njit`` functions: the CPU solver (:mod:`satloss_gpu.kernels.cpu.matching_sap`)
compiles them for the CPU and the CUDA kernel (:mod:`satloss_gpu.kernels.cuda.matching_sap`)
calls them as device functions, so both take the same steps and break ties the same way.
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["CERTIFICATE_RTOL", "edge_cost", "is_better", "relaxed_distance", "slack"]

#: Problems whose certificate violation exceeds ``CERTIFICATE_RTOL * scale`` are re-solved.
CERTIFICATE_RTOL = 1e-11


@numba.njit(cache=True, inline="always")
def edge_cost(A, row_diag, col_diag, b, r, c, n_cols):
    """Cost (float64) of row ``r`` to column ``c`` (real if ``c < n_cols``, else private)."""
    if c < n_cols:
        return np.float64(A[b, r, c]) - np.float64(col_diag[b, c])
    if c == n_cols + r:
        return np.float64(row_diag[b, r])
    return math.inf


@numba.njit(cache=True, inline="always")
def is_better(value, taken, col, best_value, best_taken, best_col):
    """Lexicographic order on (distance, column taken, column index): True if strictly smaller."""
    if value != best_value:
        return value < best_value
    if taken != best_taken:
        return taken < best_taken
    return col < best_col


@numba.njit(cache=True, inline="always")
def relaxed_distance(min_value, cost, u_row, v_col):
    """Distance to a column through the row being scanned, in reduced costs (one fixed order)."""
    return ((min_value + cost) - u_row) - v_col


@numba.njit(cache=True, inline="always")
def slack(cost, u_row, v_col):
    """Reduced cost of an edge, ``cost - u - v`` (non-negative for feasible duals)."""
    return (cost - u_row) - v_col
