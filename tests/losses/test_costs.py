"""Padded diagram batches and cost matrices against plain per-problem loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from satloss_gpu.losses.costs import (
    PaddedDiagrams,
    cost_matrices,
    diagonal_costs,
    pack_pairs,
    pair_costs,
)


def _random_table(rng: np.random.Generator, n_problems: int, sizes=None, dtype=torch.float64):
    """A shuffled flat pair table with the given number of pairs per problem."""
    if sizes is None:
        sizes = rng.integers(0, 6, n_problems)
    problem = np.repeat(np.arange(n_problems), sizes)
    rng.shuffle(problem)
    k = problem.size
    birth = rng.random(k)
    death = birth + rng.random(k)
    birth_pixel = rng.integers(0, 20, (k, 2))
    death_pixel = rng.integers(0, 20, (k, 2))
    return dict(
        problem=torch.as_tensor(problem, dtype=torch.int64),
        birth=torch.as_tensor(birth, dtype=dtype),
        death=torch.as_tensor(death, dtype=dtype),
        birth_pixel=torch.as_tensor(birth_pixel, dtype=torch.int64),
        death_pixel=torch.as_tensor(death_pixel, dtype=torch.int64),
    ), np.asarray(sizes)


def _pack(table, n_problems, **kwargs) -> PaddedDiagrams:
    return pack_pairs(table["problem"], n_problems, table["birth"], table["death"],
                      table["birth_pixel"], table["death_pixel"], **kwargs)


def test_pack_pairs_keeps_table_order_per_problem():
    rng = np.random.default_rng(0)
    table, sizes = _random_table(rng, 7)
    packed = _pack(table, 7)
    assert packed.width == max(sizes.max(), 1)
    np.testing.assert_array_equal(packed.size.numpy(), sizes)
    for q in range(7):
        rows = np.nonzero(table["problem"].numpy() == q)[0]
        n = sizes[q]
        np.testing.assert_array_equal(packed.source[q, :n].numpy(), rows)
        assert (packed.source[q, n:] == -1).all()
        np.testing.assert_array_equal(packed.birth[q, :n].numpy(), table["birth"][rows].numpy())
        np.testing.assert_array_equal(packed.death_pixel[q, :n].numpy(),
                                      table["death_pixel"][rows].numpy())
        assert (packed.birth[q, n:] == 0).all()
        np.testing.assert_array_equal(packed.valid[q].numpy(), np.arange(packed.width) < n)


def test_pack_pairs_empty_and_gradient():
    table, _ = _random_table(np.random.default_rng(1), 3, sizes=[0, 0, 0])
    packed = _pack(table, 3)
    assert packed.birth.shape == (3, 1) and (packed.size == 0).all()
    table, _ = _random_table(np.random.default_rng(2), 2, sizes=[2, 1])
    birth = table["birth"].clone().requires_grad_(True)
    table["birth"] = birth
    _pack(table, 2, min_width=4).birth.sum().backward()
    np.testing.assert_array_equal(birth.grad.numpy(), np.ones(3))


def _loop_costs(pred, target, sizes_p, sizes_t, shape, spatial, clamp):
    """Cost matrices problem by problem, with the math module."""
    height, width = shape
    out = np.zeros((len(sizes_p), pred.width, target.width))
    for q, (n, m) in enumerate(zip(sizes_p, sizes_t)):
        for i in range(n):
            for j in range(m):
                b1, d1 = float(pred.birth[q, i]), float(pred.death[q, i])
                b2, d2 = float(target.birth[q, j]), float(target.death[q, j])
                r1, c1 = (int(v) for v in pred.birth_pixel[q, i])
                r2, c2 = (int(v) for v in target.birth_pixel[q, j])
                cost = math.hypot(b1 - b2, d1 - d2)
                if spatial:
                    sp = math.hypot((r1 - r2) / height, (c1 - c2) / width)
                    cost *= min(max(sp, clamp[0]), clamp[1])
                out[q, i, j] = cost
    return out


@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("clamp", [(0.05, 1.0), (0.2, 0.5)])
def test_cost_matrices_match_loop(spatial, clamp):
    rng = np.random.default_rng(3)
    t_pred, sizes_p = _random_table(rng, 5)
    t_target, sizes_t = _random_table(rng, 5)
    pred, target = _pack(t_pred, 5), _pack(t_target, 5)
    cost = cost_matrices(pred, target, (17, 23), spatial, clamp)
    assert cost.shape == (5, pred.width, target.width)
    assert cost.dtype == torch.float64 and not cost.requires_grad
    expected = _loop_costs(pred, target, sizes_p, sizes_t, (17, 23), spatial, clamp)
    np.testing.assert_allclose(cost.numpy(), expected, rtol=1e-14, atol=1e-15)


def test_cost_matrices_follow_dtype():
    rng = np.random.default_rng(4)
    t_pred, _ = _random_table(rng, 3, dtype=torch.float32)
    t_target, _ = _random_table(rng, 3, dtype=torch.float32)
    cost = cost_matrices(_pack(t_pred, 3), _pack(t_target, 3), (8, 8))
    assert cost.dtype == torch.float32


def test_diagonal_costs():
    rng = np.random.default_rng(5)
    table, sizes = _random_table(rng, 4)
    packed = _pack(table, 4)
    diag = diagonal_costs(packed)
    for q in range(4):
        n = sizes[q]
        expected = np.abs(packed.death[q, :n].numpy() - packed.birth[q, :n].numpy()) / math.sqrt(2)
        np.testing.assert_allclose(diag[q, :n].numpy(), expected, rtol=1e-15)
        assert (diag[q, n:] == 0).all()


def test_pair_costs_gradient_is_zero_at_coinciding_points():
    birth = torch.tensor([0.3, 0.3], dtype=torch.float64, requires_grad=True)
    death = torch.tensor([0.9, 0.8], dtype=torch.float64, requires_grad=True)
    pixel = torch.tensor([[1, 1], [2, 2]])
    other = torch.tensor([0.3, 0.4], dtype=torch.float64)
    other_death = torch.tensor([0.9, 0.8], dtype=torch.float64)
    cost = pair_costs(birth, death, pixel, other, other_death, torch.tensor([[1, 1], [9, 2]]),
                      (10, 10))
    cost.sum().backward()
    assert torch.isfinite(birth.grad).all() and torch.isfinite(death.grad).all()
    assert cost[0].item() == 0.0 and float(birth.grad[0]) == 0.0
    # second point: sp = 0.7, pd = 0.1, d(cost)/d(birth) = 0.7 * (0.3 - 0.4) / 0.1
    assert cost[1].item() == pytest.approx(0.07)
    assert float(birth.grad[1]) == pytest.approx(-0.7)
