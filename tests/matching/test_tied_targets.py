"""Targets of many tied components (issue 20, defect 9): exact, short lists, interruptible.

A target of one-pixel dots has every point at (0, 1): its points tie, and with the clamped
spatial factor so do its costs. The candidate lists used to hold ``min(m, ...)`` entries per
target point (``m^2`` in all) and the solve was cubic in ``m``; now they stay short and a dual
certificate on all pairs keeps the result exact.
"""
from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest
import torch

from satloss_gpu.matching import _reduced as reduced
from satloss_gpu.matching._reduced import reduced_match_dense, reduced_match_points
from test_reduced import dense_costs, emd2_totals, matching_value


def _dot_points(rng, side, spacing, extra):
    """One problem: ``side**2`` target dots at (0, 1) on a grid, a strong prediction point
    near each of them and ``extra`` weak ones."""
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
    target_pixel = (1 + spacing * grid.reshape(-1, 2))[None]
    m = target_pixel.shape[1]
    image = spacing * side + 2
    strong_birth = 0.3 * rng.random(m)
    strong_death = 0.7 + 0.3 * rng.random(m)
    weak_birth = 0.7 + 0.3 * rng.random(extra)
    weak_death = np.minimum(1.0, weak_birth + rng.exponential(0.05, extra))
    pred_pixel = np.concatenate([target_pixel[0], rng.integers(0, image, (extra, 2))])[None]
    points = [np.r_[strong_birth, weak_birth][None], np.r_[strong_death, weak_death][None],
              pred_pixel, np.zeros((1, m)), np.ones((1, m)), target_pixel]
    return points, np.array([m + extra]), np.array([m]), (image, image)


def _assert_optimal(result, points, n, m, shape):
    """Total and matching value of ``result`` equal ``ot.emd2`` on the dense problem (which
    is returned as (cost, diag_pred, diag_target))."""
    cost, dp, dt = dense_costs(points, shape)
    expected = emd2_totals(cost, dp, dt, n, m)
    np.testing.assert_allclose(result.total, expected, rtol=1e-9)
    np.testing.assert_allclose(matching_value(result.pred_of_target, cost, dp, dt, n, m),
                               expected, rtol=1e-9)
    return cost, dp, dt


def _recorded_capacities(monkeypatch) -> list:
    """The list capacity after every growth of the lists, appended as the matching runs."""
    capacities = []
    room = reduced._room

    def recording_room(lists, new_len):
        grown = room(lists, new_len)
        capacities.append(grown[0].shape[2])
        return grown

    monkeypatch.setattr(reduced, "_room", recording_room)
    return capacities


def test_tied_targets_are_exact_with_short_lists(monkeypatch):
    monkeypatch.setattr(reduced, "FULL_LISTS_UP_TO", 0)  # short lists also for m = 144
    rng = np.random.default_rng(0)
    points, n, m, shape = _dot_points(rng, 12, 3, 300)
    capacities = _recorded_capacities(monkeypatch)
    result = reduced_match_points(*points, n, m, shape)
    cost, dp, dt = _assert_optimal(result, points, n, m, shape)
    # The lists used to hold min(m, n) = 144 entries per target point.
    assert max(capacities) <= int(m[0]) // 2
    dense = reduced_match_dense(cost, dp, dt, n, m)
    np.testing.assert_allclose(dense.total, result.total, rtol=1e-9)  # = ot.emd2's


@pytest.mark.parametrize("seed", [1, 2])
def test_random_and_equal_costs_match_emd2(seed):
    rng = np.random.default_rng(seed)
    cost = np.round(4 * rng.random((3, 80, 50))) / 4
    dp = np.round(4 * rng.random((3, 80))) / 4 + 0.5
    dt = np.round(4 * rng.random((3, 50))) / 4 + 0.5
    n, m = np.array([80, 60, 7]), np.array([50, 50, 40])
    result = reduced_match_dense(cost, dp, dt, n, m)
    expected = emd2_totals(cost, dp, dt, n, m)
    np.testing.assert_allclose(result.total, expected, rtol=1e-9)


def test_keyboard_interrupt_stops_the_matching_quickly(monkeypatch):
    """Ctrl-C during a long matching: the compiled passes return to Python between slices."""
    side = 64
    target = torch.zeros(1, 1, 256, 256)
    target[:, :, 1:1 + 4 * side:4, 1:1 + 4 * side:4] = 1
    pred = 0.7 * target + 0.3 * torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    from satloss_gpu import SATLoss

    loss = SATLoss()
    loss(pred[..., :24, :24], target[..., :24, :24])  # compile first
    # Without the same-pixel partners the matching takes seconds: long enough to interrupt.
    monkeypatch.setattr(reduced, "_same_pixel_partner",
                        lambda pred_pixel, target_pixel, *rest: np.full(
                            target_pixel.shape[:2], -1, dtype=np.int64))
    sent = []

    def interrupt():
        sent.append(time.perf_counter())
        _thread.interrupt_main()

    timer = threading.Timer(1.0, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loss(pred, target)
            time.sleep(5)  # finished before the timer: let the interrupt arrive here
    finally:
        timer.cancel()
    assert sent and time.perf_counter() - sent[0] < 1.0


@pytest.mark.parametrize("seed", [3, 4])
def test_warm_started_rounds_match_emd2(monkeypatch, seed):
    """Many pricing rounds (one pair per round), each solve warm-started from the previous
    matching and duals: rows freed, freed columns raised to 0 and re-augmented; still exact."""
    monkeypatch.setattr(reduced, "LIST_STEP", 1)
    monkeypatch.setattr(reduced, "PRICE_STEP", 1)
    monkeypatch.setattr(reduced, "FULL_LISTS_UP_TO", 0)
    rounds = []
    from satloss_gpu.kernels.cpu import reduced_matching as kernels

    solve = kernels.solve_lists

    def counting_solve(*args):
        rounds.append(args[9])  # warm
        return solve(*args)

    monkeypatch.setattr(kernels, "solve_lists", counting_solve)
    rng = np.random.default_rng(seed)
    cost = np.round(8 * rng.random((3, 60, 40))) / 8
    dp = np.round(4 * rng.random((3, 60))) / 4 + 0.5
    dt = np.round(4 * rng.random((3, 40))) / 4 + 0.5
    n, m = np.array([60, 45, 9]), np.array([40, 40, 30])
    result = reduced_match_dense(cost, dp, dt, n, m)
    expected = emd2_totals(cost, dp, dt, n, m)
    assert any(rounds)  # later rounds were warm-started
    np.testing.assert_allclose(result.total, expected, rtol=1e-9)
    np.testing.assert_allclose(matching_value(result.pred_of_target, cost, dp, dt, n, m),
                               expected, rtol=1e-9)


def _counting_solves(monkeypatch) -> list:
    """Record the ``warm`` flag of every call of the list solve (one per pricing round)."""
    from satloss_gpu.kernels.cpu import reduced_matching as kernels

    calls = []
    solve = kernels.solve_lists

    def counting_solve(*args):
        calls.append(args[9])
        return solve(*args)

    monkeypatch.setattr(kernels, "solve_lists", counting_solve)
    return calls


def test_tied_dots_are_certified_in_few_rounds(monkeypatch):
    """Each dot's same-pixel prediction point joins its first list and the row duals are
    raised to a common level: far fewer pricing rounds (each one frees rows and grows the
    lists by 2 pairs), the matching still exact."""
    rng = np.random.default_rng(5)
    points, n, m, shape = _dot_points(rng, 24, 4, 800)
    calls = _counting_solves(monkeypatch)
    result = reduced_match_points(*points, n, m, shape)
    cost, dp, dt = _assert_optimal(result, points, n, m, shape)
    assert len(calls) <= 12  # 17 rounds when the row duals were not raised


def test_raised_row_duals_stay_feasible_and_optimal(monkeypatch):
    """Dense random problems with ties: raising the row duals keeps the certificate on the
    lists (no POT fallback warning) and the totals exact, over warm-started rounds."""
    monkeypatch.setattr(reduced, "LIST_STEP", 2)
    monkeypatch.setattr(reduced, "PRICE_STEP", 1)
    monkeypatch.setattr(reduced, "FULL_LISTS_UP_TO", 0)
    rng = np.random.default_rng(6)
    cost = np.round(8 * rng.random((4, 70, 45))) / 8
    dp = np.round(4 * rng.random((4, 70))) / 4 + 0.25
    dt = np.round(4 * rng.random((4, 45))) / 4 + 0.25
    n, m = np.array([70, 50, 12, 45]), np.array([45, 45, 30, 1])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = reduced_match_dense(cost, dp, dt, n, m)
    expected = emd2_totals(cost, dp, dt, n, m)
    np.testing.assert_allclose(result.total, expected, rtol=1e-9)
    np.testing.assert_allclose(matching_value(result.pred_of_target, cost, dp, dt, n, m),
                               expected, rtol=1e-9)


def test_same_pixel_partner():
    """The prediction point born at each target point's pixel, per problem; -1 when none,
    pixels outside the image ignored, padding left at -1."""
    pred_pixel = np.array([[[0, 0], [2, 3], [1, 1], [9, 9]],
                           [[1, 1], [0, 0], [0, 0], [0, 0]]])
    target_pixel = np.array([[[1, 1], [2, 3], [3, 3]],
                             [[1, 1], [0, 0], [2, 2]]])
    n, m = np.array([4, 1]), np.array([3, 2])
    partner = reduced._same_pixel_partner(pred_pixel, target_pixel, n, m, (4, 4))
    np.testing.assert_array_equal(partner, [[2, 1, -1], [0, -1, -1]])


def test_small_problems_start_from_the_exact_lists(monkeypatch):
    """Up to FULL_LISTS_UP_TO padded target points, the first lists hold every target point's
    min(m, #negative) cheapest pairs (the reduction's exact lists): no list grows later."""
    rng = np.random.default_rng(7)
    points, n, m, shape = _dot_points(rng, 6, 3, 80)
    capacities = _recorded_capacities(monkeypatch)
    result = reduced_match_points(*points, n, m, shape)
    cost, dp, dt = dense_costs(points, shape)
    np.testing.assert_allclose(result.total, emd2_totals(cost, dp, dt, n, m), rtol=1e-9)
    assert reduced._first_list_length(int(m[0])) == int(m[0]) == 36
    assert capacities and capacities[0] >= 36
    assert reduced._first_list_length(reduced.FULL_LISTS_UP_TO + 1) == reduced.LIST_STEP
