"""Tests of the exact reduced matching (candidate lists + small exact solve) against ot.emd2."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from satloss_gpu.matching import _reduced as reduced
from satloss_gpu.matching._reduced import (
    pred_to_target,
    reduced_match_dense,
    reduced_match_points,
    reduced_match_torch,
)

ATOL = 1e-9


# ----------------------------------------------------------------------------- helpers


def emd2_totals(cost, diag_pred, diag_target, n, m) -> np.ndarray:
    """Optimal totals of the (n+1) x (m+1) problems from ot.emd2, built independently."""
    totals = []
    for q in range(cost.shape[0]):
        nq, mq = int(n[q]), int(m[q])
        big = np.zeros((nq + 1, mq + 1))
        big[:nq, :mq] = cost[q, :nq, :mq]
        big[:nq, mq] = diag_pred[q, :nq]
        big[nq, :mq] = diag_target[q, :mq]
        if nq == 0 or mq == 0:
            totals.append(float(big.sum()))
            continue
        a = np.r_[np.ones(nq), float(mq)]
        b = np.r_[np.ones(mq), float(nq)]
        totals.append(float(ot.emd2(a, b, big, numItermax=10**7)))
    return np.array(totals)


def matching_value(pred_of_target, cost, diag_pred, diag_target, n, m) -> np.ndarray:
    """Total cost of the returned matchings (checks they are matchings on the way)."""
    values = []
    for q in range(cost.shape[0]):
        partner = pred_of_target[q, : m[q]]
        used = partner[partner >= 0]
        assert (used < n[q]).all()
        assert len(np.unique(used)) == len(used), "a prediction point is matched twice"
        assert (pred_of_target[q, m[q]:] == -1).all()
        unmatched = np.ones(n[q], dtype=bool)
        unmatched[used] = False
        value = diag_pred[q, : n[q]][unmatched].sum()
        for j, i in enumerate(partner):
            value += cost[q, i, j] if i >= 0 else diag_target[q, j]
        values.append(value)
    return np.array(values)


def point_batch(rng, batch, big_n, big_m, size=32, ties=False, dtype=np.float64):
    """Random diagram points (values, birth pixels) with random true sizes; dense costs."""
    n = rng.integers(0, big_n + 1, batch)
    m = rng.integers(0, big_m + 1, batch)
    n[0], m[0] = big_n, big_m
    birth = rng.random((batch, big_n))
    death = birth + rng.exponential(0.2, (batch, big_n))
    target_birth = 0.2 * rng.random((batch, big_m))
    target_death = 1.0 - 0.2 * rng.random((batch, big_m))
    if ties:
        birth, death = np.round(4 * birth) / 4, np.round(4 * death) / 4
        target_birth, target_death = np.zeros((batch, big_m)), np.ones((batch, big_m))
    pixels = rng.integers(0, size // (4 if ties else 1), (batch, big_n, 2))
    target_pixels = rng.integers(0, size // (4 if ties else 1), (batch, big_m, 2))
    points = [birth.astype(dtype), death.astype(dtype), pixels, target_birth.astype(dtype),
              target_death.astype(dtype), target_pixels]
    return points, n, m


def dense_costs(points, image_shape, spatial=True, clamp=(0.05, 1.0)):
    """Dense costs and diagonal costs of a point batch, in NumPy float64."""
    pb, pd, pp, tb, td, tp = points
    pb, pd, tb, td = (np.asarray(x, dtype=np.float64) for x in (pb, pd, tb, td))
    distance = np.hypot(pb[:, :, None] - tb[:, None], pd[:, :, None] - td[:, None])
    offset = (pp[:, :, None, :] - tp[:, None, :, :]).astype(np.float64)
    factor = np.hypot(offset[..., 0] / image_shape[0], offset[..., 1] / image_shape[1])
    cost = np.clip(factor, *clamp) * distance if spatial else distance
    return cost, np.abs(pd - pb) / math.sqrt(2), np.abs(td - tb) / math.sqrt(2)


def dense_batch(rng, batch, big_n, big_m, kind, dtype=np.float64, n=None, m=None):
    """Dense padded problems; padding holds NaN and inf (it must never be read)."""
    if n is None:
        n = rng.integers(0, big_n + 1, batch)
        m = rng.integers(0, big_m + 1, batch)
        n[0], m[0] = big_n, big_m
    n, m = np.asarray(n), np.asarray(m)
    if kind == "ties":
        cost = rng.integers(0, 4, (batch, big_n, big_m)) / 4
        dp = rng.integers(0, 4, (batch, big_n)) / 4
        dt = rng.integers(0, 4, (batch, big_m)) / 4
    elif kind == "all_negative":  # every reduced cost < 0: no pair is cut by the sign test
        cost = rng.random((batch, big_n, big_m))
        dp = 2 + rng.random((batch, big_n))
        dt = 2 + rng.random((batch, big_m))
    elif kind == "equal":  # every cost equal: everything ties
        cost = np.full((batch, big_n, big_m), 0.5)
        dp = np.full((batch, big_n), 0.5)
        dt = np.full((batch, big_m), 0.5)
    else:
        cost = rng.random((batch, big_n, big_m))
        dp = 0.5 * rng.random((batch, big_n))
        dt = 0.5 * rng.random((batch, big_m))
    cost, dp, dt = (x.astype(dtype) for x in (cost, dp, dt))
    for q in range(batch):
        cost[q, n[q]:] = np.nan
        cost[q, :, m[q]:] = np.inf
        dp[q, n[q]:] = np.nan
        dt[q, m[q]:] = -np.inf
    return cost, dp, dt, n, m


def check_dense(result, cost, dp, dt, n, m):
    clean = [np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
             for x in (cost, dp, dt)]
    expected = emd2_totals(*clean, n, m)
    np.testing.assert_allclose(result.total, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(matching_value(result.pred_of_target, *clean, n, m), expected,
                               rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- dense form


@pytest.mark.parametrize("kind", ["float", "ties", "all_negative", "equal"])
@pytest.mark.parametrize("shape", [(12, 5), (4, 9), (1, 6), (7, 1), (30, 30)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_lists_match_emd2(kind, shape, dtype):
    rng = np.random.default_rng([len(kind), *shape, np.dtype(dtype).itemsize])
    cost, dp, dt, n, m = dense_batch(rng, 6, *shape, kind, dtype)
    check_dense(reduced_match_dense(cost, dp, dt, n, m), cost, dp, dt, n, m)


def test_empty_sides_and_empty_batch():
    rng = np.random.default_rng(3)
    cost, dp, dt, n, m = dense_batch(rng, 4, 5, 3, "float", n=[0, 5, 0, 2], m=[3, 0, 0, 3])
    result = reduced_match_dense(cost, dp, dt, n, m)
    check_dense(result, cost, dp, dt, n, m)
    assert result.total[2] == 0.0
    empty = reduced_match_dense(np.zeros((0, 1, 1)), np.zeros((0, 1)), np.zeros((0, 1)),
                                np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert empty.total.shape == (0,) and empty.pred_of_target.shape == (0, 1)


def test_more_targets_than_predictions():
    rng = np.random.default_rng(4)
    cost, dp, dt, n, m = dense_batch(rng, 8, 3, 20, "all_negative", n=[3] * 8, m=[20] * 8)
    result = reduced_match_dense(cost, dp, dt, n, m)
    check_dense(result, cost, dp, dt, n, m)
    assert ((result.pred_of_target >= 0).sum(1) == 3).all()  # every prediction point used


def test_first_pricing_gives_the_cheapest_negative_reduced_costs():
    """With u = diag_target, v = 0, tol = 0 the pricing keeps, per target point, the K
    cheapest pairs of negative reduced cost (the first lists)."""
    from satloss_gpu.kernels.cpu.reduced_matching import list_blocks, merge_lists, price_dense

    rng = np.random.default_rng(5)
    cost, dp, dt, n, m = dense_batch(rng, 3, 40, 6, "float", n=[40] * 3, m=[6] * 3)
    n, m = n.astype(np.int64), m.astype(np.int64)
    new = reduced._new_pairs(3, 6, 4)
    lists = reduced._new_pairs(3, 6, 4)
    blocks = list_blocks(m, block=4)
    price_dense(cost, dp, dt, n, m, blocks, dt.astype(np.float64), np.zeros((3, 40)),
                np.zeros(3), *new, 0, len(blocks))
    merge_lists(*lists, new[0], new[2], new[3], dp, m, np.arange(3), np.zeros(3, np.int64), 0, 3)
    cand_pred, cand_key, cand_cost, cand_len = lists
    for q in range(3):
        for j in range(6):
            reduced_cost = cost[q, :, j] - dp[q] - dt[q, j]
            negative = np.nonzero(reduced_cost < 0)[0]
            expected = negative[np.lexsort((negative, reduced_cost[negative]))][:4]
            got = cand_pred[q, j, : cand_len[q, j]]
            np.testing.assert_array_equal(np.sort(got), np.sort(expected))
            np.testing.assert_allclose(cand_cost[q, j, : cand_len[q, j]], cost[q, got, j])
            np.testing.assert_allclose(cand_key[q, j, : cand_len[q, j]], cost[q, got, j] - dp[q, got])
            assert (np.diff(cand_key[q, j, : cand_len[q, j]]) >= 0).all()


def test_failed_certificate_falls_back_to_pot(monkeypatch):
    rng = np.random.default_rng(6)
    cost, dp, dt, n, m = dense_batch(rng, 5, 15, 6, "ties")
    monkeypatch.setattr(reduced, "CERTIFICATE_RTOL", -1.0)
    with pytest.warns(RuntimeWarning, match="re-solved with ot.emd"):
        result = reduced_match_dense(cost, dp, dt, n, m)
    check_dense(result, cost, dp, dt, n, m)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_give_the_same_matching(threads):
    from satloss_gpu import _threads

    rng = np.random.default_rng(7)
    cost, dp, dt, n, m = dense_batch(rng, 9, 50, 40, "float")
    expected = reduced_match_dense(cost, dp, dt, n, m)
    original = _threads.thread_count
    try:
        _threads.thread_count = lambda: threads
        result = reduced_match_dense(cost, dp, dt, n, m)
    finally:
        _threads.thread_count = original
    np.testing.assert_array_equal(result.total, expected.total)
    np.testing.assert_array_equal(result.pred_of_target, expected.pred_of_target)


def test_pred_to_target_inverts_the_matching():
    pred_of_target = np.array([[2, -1, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(pred_to_target(pred_of_target, 4),
                                  [[2, -1, 0, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(pred_to_target(torch.as_tensor(pred_of_target), 4).numpy(),
                                  [[2, -1, 0, -1], [-1, -1, -1, -1]])


# ----------------------------------------------------------------------------- point form


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_points_match_emd2(ties, spatial, dtype):
    rng = np.random.default_rng([int(ties), int(spatial), np.dtype(dtype).itemsize])
    points, n, m = point_batch(rng, 6, 60, 9, ties=ties, dtype=dtype)
    result = reduced_match_points(*points, n, m, (32, 40), spatial)
    cost, dp, dt = dense_costs(points, (32, 40), spatial)
    expected = emd2_totals(cost, dp, dt, n, m)
    np.testing.assert_allclose(result.total, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(matching_value(result.pred_of_target, cost, dp, dt, n, m),
                               expected, rtol=0, atol=ATOL)


def _real_problems(size=40, seed=0):
    """H0 and H1 problems of a blurred noisy mask against the mask (SATLoss inputs)."""
    from scipy.ndimage import gaussian_filter

    from satloss_gpu import cubical_persistence

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(size, size)), 3.0)
    target = (field > 0.2 * field.std()).astype(np.float64)
    pred = np.clip(gaussian_filter(target + 0.3 * rng.normal(size=target.shape), 1.0), 0, 1)
    images = 1.0 - np.pad(np.stack([pred, target]), ((0, 0), (1, 1), (1, 1)),
                          constant_values=1.0)
    diagrams = cubical_persistence(images, backend="cpu")
    sides = {}
    for image in (0, 1):
        for dim in (0, 1):
            keep = (diagrams.image == image) & (diagrams.dim == dim)
            death = np.where(np.isinf(diagrams.death[keep]), images[image].max(),
                             diagrams.death[keep])
            sides[image, dim] = (diagrams.birth[keep], death, diagrams.birth_pixel[keep])
    n = np.array([len(sides[0, d][0]) for d in (0, 1)])
    m = np.array([len(sides[1, d][0]) for d in (0, 1)])

    def padded(image, field_index, width, fill_shape=()):
        out = np.zeros((2, width) + fill_shape, dtype=np.int64 if fill_shape else np.float64)
        for d in (0, 1):
            values = sides[image, d][field_index]
            out[d, : len(values)] = values
        return out

    points = [padded(0, 0, n.max()), padded(0, 1, n.max()), padded(0, 2, n.max(), (2,)),
              padded(1, 0, m.max()), padded(1, 1, m.max()), padded(1, 2, m.max(), (2,))]
    return points, n, m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_satloss_problems_match_emd2(seed):
    points, n, m = _real_problems(seed=seed)
    cost, dp, dt = dense_costs(points, (40, 40))
    expected = emd2_totals(cost, dp, dt, n, m)
    for result in (reduced_match_points(*points, n, m, (40, 40)),
                   reduced_match_dense(cost, dp, dt, n, m)):
        np.testing.assert_allclose(result.total, expected, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- torch form


def _torch_problem(points, n, m, image_shape):
    """(pair_cost, diag_pred, diag_target, n, m) of a point batch for the torch path."""
    from satloss_gpu.losses.costs import pair_costs

    pb, pd, pp, tb, td, tp = (torch.as_tensor(x) for x in points)

    def pair_cost(index):
        pixel = torch.gather(pp, 1, index[:, :, None].expand(-1, -1, 2))
        return pair_costs(pb.gather(1, index)[:, :, None], pd.gather(1, index)[:, :, None],
                          pixel[:, :, None, :], tb[:, None, :], td[:, None, :],
                          tp[:, None, :, :], image_shape)

    return (pair_cost, (pd - pb).abs() / math.sqrt(2), (td - tb).abs() / math.sqrt(2),
            torch.as_tensor(n), torch.as_tensor(m))


@pytest.mark.parametrize("solver", ["emd", "cuda"])
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_torch_lists_match_emd2(solver, chunk):
    rng = np.random.default_rng([3, chunk or 0])
    points, n, m = point_batch(rng, 4, 24, 6, ties=chunk == 7)
    result = reduced_match_torch(*_torch_problem(points, n, m, (32, 32)), solver=solver,
                                 chunk=chunk)
    cost, dp, dt = dense_costs(points, (32, 32))
    expected = emd2_totals(cost, dp, dt, n, m)
    assert result.total.dtype == torch.float64
    np.testing.assert_allclose(result.total.numpy(), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(matching_value(result.pred_of_target.numpy(), cost, dp, dt, n, m),
                               expected, rtol=0, atol=ATOL)


def test_torch_lists_real_problems_and_empty_sides():
    points, n, m = _real_problems(size=24, seed=4)
    result = reduced_match_torch(*_torch_problem(points, n, m, (24, 24)), solver="emd", chunk=5)
    cost, dp, dt = dense_costs(points, (24, 24))
    np.testing.assert_allclose(result.total.numpy(), emd2_totals(cost, dp, dt, n, m), atol=ATOL)
    pair_cost, diag_pred, diag_target, _, m_t = _torch_problem(points, n, m, (24, 24))
    empty = reduced_match_torch(pair_cost, diag_pred[:, :0], diag_target,
                                torch.zeros(2, dtype=torch.int64), m_t)
    np.testing.assert_allclose(empty.total.numpy(), dt.sum(1), atol=ATOL)
    assert (empty.pred_of_target == -1).all()


def test_torch_dense_costs_match_emd2():
    rng = np.random.default_rng(11)
    cost, dp, dt, n, m = dense_batch(rng, 5, 30, 7, "float", n=[30, 0, 12, 30, 5],
                                     m=[7, 3, 0, 7, 6])
    clean = [np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) for x in (cost, dp, dt)]
    cost_t = torch.as_tensor(clean[0])

    def pair_cost(index):
        return torch.gather(cost_t, 1, index[:, :, None].expand(-1, -1, cost_t.shape[2]))

    result = reduced_match_torch(pair_cost, torch.as_tensor(dp), torch.as_tensor(dt),
                                 torch.as_tensor(n), torch.as_tensor(m), solver="cuda", chunk=4)
    np.testing.assert_allclose(result.total.numpy(), emd2_totals(*clean, n, m), atol=ATOL)
