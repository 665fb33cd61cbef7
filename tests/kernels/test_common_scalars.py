"""The scalar rules of ``kernels/common``, shared by the CPU and CUDA kernels."""
from __future__ import annotations

import math

import numpy as np

from satloss_gpu.kernels.common.matching import edge_cost, is_better, relaxed_distance, slack
from satloss_gpu.kernels.common.scalar import float32_ordered_bits, precedes


def test_edge_cost_real_private_and_forbidden_columns():
    A = np.array([[[4.0, 1.5, 2.0]]])          # one problem, one row, three real columns
    row_diag = np.array([[0.75]])
    col_diag = np.array([[1.0, 0.5, 2.5]])
    assert [edge_cost(A, row_diag, col_diag, 0, 0, c, 3) for c in range(3)] == [3.0, 1.0, -0.5]
    assert edge_cost(A, row_diag, col_diag, 0, 0, 3, 3) == 0.75     # its private column
    assert edge_cost(A, row_diag, col_diag, 0, 0, 4, 3) == math.inf  # another row's


def test_is_better_is_the_lexicographic_order_on_distance_taken_column():
    keys = [(1.0, 1, 0), (1.0, 0, 5), (0.5, 1, 9), (1.0, 0, 2)]
    best = keys[0]
    for key in keys[1:]:
        if is_better(*key, *best):
            best = key
    assert best == min(keys)
    assert not is_better(1.0, 0, 2, 1.0, 0, 2)   # strict


def test_relaxed_distance_and_slack():
    assert relaxed_distance(1.0, 3.0, 0.5, -1.0) == 4.5
    assert slack(3.0, 0.5, -1.0) == 3.5


def test_float32_order_bits_and_precedes_follow_the_value_then_index_order():
    values = np.array([-3e38, -2.5, -0.0, 0.0, 1e-30, 3.0, 3e38], dtype=np.float32)
    bits = [int(float32_ordered_bits(np.uint32(v.view(np.uint32)))) for v in values]
    assert bits == sorted(bits)
    assert precedes(1.0, 3, 1.0, 4) and not precedes(1.0, 4, 1.0, 3)
    assert precedes(0.5, 9, 1.0, 0)
