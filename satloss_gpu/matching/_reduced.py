"""Exact reduced matching of persistence diagrams: candidate lists, then a small exact problem.

A SATLoss matching problem has ``n`` prediction points and ``m`` target points with ``m``
usually much smaller than ``n`` (a few target points, thousands to millions of prediction
points). With the reduced cost ``r(i, j) = cost(i, j) - diag_pred(i) - diag_target(j)``, every
target point ``j`` keeps only its ``min(m, #{i : r(i, j) < 0})`` prediction points of least
``r(i, j)``; the problem restricted to those pairs (at most ``m^2`` prediction points, each of
which may also go to the diagonal, every other prediction point to the diagonal) has the same
optimum as the full problem.

Proof. Take an optimal matching with the fewest pairs outside the lists and suppose ``j`` is
matched with ``i`` outside its list. If ``r(i, j) >= 0``, sending both to the diagonal does not
raise the cost and removes that pair. Otherwise the list of ``j`` is full: it holds ``m``
prediction points, every one with ``r(i', j) <= r(i, j)``. The other ``m - 1`` target points
are matched with at most ``m - 1`` of them, so some ``i'`` of the list goes to the diagonal;
matching ``j`` with ``i'`` and sending ``i`` to the diagonal changes the cost by
``r(i', j) - r(i, j) <= 0`` and removes a pair outside the lists. Either way the number of such
pairs drops, a contradiction; so an optimal matching uses list pairs only. Ties between equal
reduced costs may be broken in any way.

Paths
-----
* NumPy / CPU tensors: short lists and a dual certificate on all pairs instead of the
  ``min(m, ...)`` lists above (which hold up to ``m^2`` entries and made the solve cubic in
  ``m`` on targets with thousands of components). Up to ``FULL_LISTS_UP_TO`` padded target
  points the first lists are those exact lists and one solve suffices; above, each target
  point starts with its ``LIST_STEP`` cheapest pairs of negative reduced cost (and, for points, the prediction
  point born at its birth pixel); the problems restricted to the lists
  are solved exactly by shortest augmenting paths (the row duals then raised as far as the
  matching allows), and a pricing pass checks the duals against
  *every* pair (costs computed on the fly from the points, or read from a dense matrix, pruned
  by a lower bound of each prediction point's costs): each target point receives its
  ``PRICE_STEP`` most violating pairs and the problem is solved again (warm-started from the
  previous matching and duals), until no pair violates them. The duals are then feasible
  for the full problem and the matching is optimal
  (:mod:`satloss_gpu.kernels.cpu.reduced_matching`). A problem failing the certificate on its
  lists (rounding) is solved again with POT's ``ot.emd`` on its union of lists. Memory is
  ``O(n + m L)`` for lists of final length ``L``. The compiled passes return to Python between
  slices of work, so a ``KeyboardInterrupt`` (Ctrl-C) is honoured quickly.
* CUDA tensors: the lists are a running ``torch.topk`` over chunks of prediction points (the
  chunk bounds the memory), the union of each problem's lists is gathered into a small dense
  problem and solved by the CUDA kernel of :mod:`satloss_gpu.matching`.

On the GPU memory is ``O(n + m^2)`` per problem (``O(chunk * m)`` more), never ``O(n m)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .._threads import run_ranges, thread_count

__all__ = ["ReducedResult", "reduced_match_points", "reduced_match_dense", "lists_torch",
           "CERTIFICATE_RTOL"]

#: Problems whose certificate violation exceeds ``CERTIFICATE_RTOL * scale`` are re-solved.
CERTIFICATE_RTOL = 1e-11
#: Pairs of least reduced cost in each target point's first candidate list.
LIST_STEP = 8
#: Padded target points per batch up to which the first lists hold every target point's
#: ``min(m, #{r < 0})`` cheapest pairs, the reduction's exact lists, so one round usually
#: certifies: on problems of tens to a few hundred target points (``bench/matching.py --kind
#: real``, m 29-177) short lists grown by pricing took 2.6 times as long. Above it, short
#: lists: lists of ``m`` entries hold ``m^2`` pairs and the solve grows with ``m^3``.
FULL_LISTS_UP_TO = 256
#: Most violating pairs priced into each target point's list per later round (measured on
#: tied targets, warm-started solves: the lists' length costs more than the rounds; steps of
#: 1, 2, 4, 8 took 3.5, 4.1, 5.5, 7.6 s of CPU on 4096 dots).
PRICE_STEP = 2
#: Work items per thread of a compiled pass between two returns to Python (Ctrl-C).
ITEMS_PER_THREAD = 32
#: Bytes of one chunk of reduced costs in the GPU list pass.
CHUNK_BYTES = 1 << 27


@dataclass(frozen=True)
class ReducedResult:
    """Optimal matchings of a batch, from the target points' side.

    Attributes
    ----------
    total : numpy.ndarray or torch.Tensor, float64, shape (Q,)
        Optimal total cost of every problem.
    pred_of_target : numpy.ndarray or torch.Tensor, int64, shape (Q, M)
        Prediction point matched with each target point; -1 for the diagonal (and padding).
    """

    total: Any
    pred_of_target: Any

    def assignment(self, big_n: int) -> Any:
        """``MatchResult.assignment`` form: (Q, N) target of each prediction point or -1."""
        return pred_to_target(self.pred_of_target, big_n)


def pred_to_target(pred_of_target: Any, big_n: int) -> Any:
    """Invert (Q, M) ``pred_of_target`` into (Q, N) target of each prediction point (-1)."""
    if not isinstance(pred_of_target, np.ndarray):
        import torch

        batch, big_m = pred_of_target.shape
        out = torch.full((batch, big_n + 1), -1, dtype=torch.int64,
                         device=pred_of_target.device)
        index = torch.where(pred_of_target >= 0, pred_of_target,
                            torch.full_like(pred_of_target, big_n))
        source = torch.arange(big_m, device=pred_of_target.device).expand(batch, big_m)
        out.scatter_(1, index, source.contiguous())
        return out[:, :big_n]
    out = np.full((pred_of_target.shape[0], big_n), -1, dtype=np.int64)
    q_idx, j_idx = np.nonzero(pred_of_target >= 0)
    out[q_idx, pred_of_target[q_idx, j_idx]] = j_idx
    return out


def target_to_pred(assignment: Any, big_m: int) -> Any:
    """Invert (Q, N) ``assignment`` (target of each prediction point, -1) into (Q, M)
    ``pred_of_target`` (prediction point of each target point, -1); torch tensors."""
    import torch

    batch, big_n = assignment.shape
    out = torch.full((batch, big_m + 1), -1, dtype=torch.int64, device=assignment.device)
    index = torch.where(assignment >= 0, assignment, torch.full_like(assignment, big_m))
    source = torch.arange(big_n, device=assignment.device).expand(batch, big_n)
    out.scatter_(1, index, source.contiguous())
    return out[:, :big_m]


# ----------------------------------------------------------------------------- CPU path


def _in_slices(work: Callable[[int, int], None], count: int,
               per_slice: Optional[int] = None) -> None:
    """``run_ranges(work, count)`` one slice of items at a time.

    Python runs between two slices, so a ``KeyboardInterrupt`` (Ctrl-C) stops the matching
    once the slice in flight ends instead of after the whole pass.
    """
    per_slice = per_slice or ITEMS_PER_THREAD * thread_count()
    for start in range(0, count, per_slice):
        stop = min(count, start + per_slice)
        run_ranges(lambda first, end, offset=start: work(offset + first, offset + end),
                   stop - start)


def _first_list_length(big_m: int) -> int:
    """Pairs per target point in the first lists of a batch padded to ``big_m`` target
    points: all that can matter (``big_m``) up to :data:`FULL_LISTS_UP_TO`, else
    :data:`LIST_STEP`."""
    return max(LIST_STEP, big_m) if big_m <= FULL_LISTS_UP_TO else LIST_STEP


def _new_pairs(batch: int, big_m: int, step: int):
    """Empty (new_pred, new_rc, new_cost, new_len) for ``step`` pairs per target point."""
    return tuple(np.zeros((batch, big_m, step), dtype) for dtype in (np.int64, float, float)) + (
        np.zeros((batch, big_m), np.int64),)


def _room(lists, new_len: np.ndarray):
    """``lists`` with room for ``new_len`` more entries per row (grown by doubling)."""
    cand_len = lists[3]
    need = int((cand_len + new_len).max(initial=0))
    capacity = lists[0].shape[2]
    if need <= capacity:
        return lists
    extra = max(need, 2 * capacity) - capacity
    pad = ((0, 0), (0, 0), (0, extra))
    return tuple(np.pad(a, pad) for a in lists[:3]) + (cand_len,)


def _certified_match(price: Callable, diag_pred: np.ndarray, diag_target: np.ndarray,
                     n: np.ndarray, m: np.ndarray,
                     add_partners: Optional[Callable] = None) -> ReducedResult:
    """Rounds of pricing, merging and solving on the lists until the duals are certified.

    ``price(blocks, u, v, tol, new_pred, new_rc, new_cost, new_len, first, stop)`` runs the
    pricing kernel on the work items ``blocks[first:stop]``. The first solve starts from
    scratch, the later ones from the previous matching and duals (warm start). A problem
    leaves the rounds when its pricing adds no pair; problems failing the certificate
    (rounding) are solved again with POT's ``ot.emd`` on their lists.
    ``add_partners(lists)``, when given, adds a likely partner of every target point to the
    first lists (returning them, grown if needed).
    """
    from ..kernels.cpu.reduced_matching import list_blocks, merge_lists, solve_lists

    batch, big_m = diag_target.shape
    cols = np.arange(big_m)[None, :] < m[:, None]
    u = np.where(cols, diag_target, 0.0).astype(np.float64)
    v = np.zeros(diag_pred.shape, dtype=np.float64)
    tol = np.zeros(batch)
    first_length = _first_list_length(big_m)
    # Lists of every target point's min(m, #{r < 0}) cheapest pairs hold an optimal matching
    # (module docstring): no pricing round is needed after the first solve.
    exact_lists = first_length >= big_m
    lists = _new_pairs(batch, big_m, first_length)
    pred_of_target = np.full((batch, big_m), -1, dtype=np.int64)
    total, violation, scale = np.zeros(batch), np.zeros(batch), np.zeros(batch)
    added = np.zeros(batch, dtype=np.int64)
    every_block = list_blocks(m)
    every_block = every_block[np.argsort(-n[every_block[:, 0]], kind="stable")]
    active = np.argsort(-m, kind="stable").astype(np.int64)  # largest first: balance
    first_round = True
    new = _new_pairs(batch, big_m, first_length)
    while active.size:
        blocks = np.ascontiguousarray(every_block[np.isin(every_block[:, 0], active)])
        _in_slices(lambda first, stop: price(blocks, u, v, tol, *new, first, stop), len(blocks))
        lists = _room(lists, new[3])
        _in_slices(lambda first, stop: merge_lists(*lists, new[0], new[2], new[3], diag_pred, m,
                                                   active, added, first, stop), len(active))
        if first_round and add_partners is not None and not exact_lists:
            lists = add_partners(lists)
        if not first_round:
            active = np.ascontiguousarray(active[added[active] > 0])
        warm = not first_round
        _in_slices(lambda first, stop: solve_lists(
            *lists, diag_pred, diag_target, n, m, active, warm, tol, pred_of_target, total,
            violation, scale, u, v, first, stop), len(active), per_slice=thread_count())
        tol[active] = CERTIFICATE_RTOL * scale[active]
        if exact_lists:
            break  # the reduction's lists: the restricted optimum is the full one
        if first_round:
            new = _new_pairs(batch, big_m, PRICE_STEP)
        first_round = False
    bad = np.nonzero(~(violation <= CERTIFICATE_RTOL * scale))[0]  # NaN fails too
    if bad.size:
        import warnings

        warnings.warn(
            f"{bad.size} matching problem(s) failed the optimality certificate (rounding); "
            "re-solved with ot.emd", RuntimeWarning, stacklevel=3)
        _emd_on_lists(bad, lists, diag_pred, diag_target, n, m, total, pred_of_target)
    return ReducedResult(total=total, pred_of_target=pred_of_target)


def _emd_on_lists(problems, lists, diag_pred, diag_target, n, m, total, pred_of_target) -> None:
    """Solve ``problems`` with ``ot.emd`` on their union of lists (in place)."""
    from ._pot import emd_one

    cand_pred, _, cand_cost, cand_len = lists
    for q in problems:
        rows, n_pred = int(m[q]), int(n[q])
        dp = diag_pred[q, :n_pred].astype(np.float64)
        dt = diag_target[q, :rows].astype(np.float64)
        in_list = np.arange(cand_pred.shape[2])[None, :] < cand_len[q, :rows, None]
        row_of = np.nonzero(in_list)[0]
        members = cand_pred[q, :rows][in_list]
        cols = np.unique(members)
        # Pairs outside the lists get a positive reduced cost: never in an optimal matching.
        outer = dp[cols][:, None] + dt[None, :]
        cost = outer + 1.0 + np.abs(outer)
        cost[np.searchsorted(cols, members), row_of] = cand_cost[q, :rows][in_list]
        value, assignment = emd_one(cost, dp[cols], dt)
        outside = np.ones(n_pred, dtype=bool)
        outside[cols] = False
        total[q] = value + dp[outside].sum()
        pred_of_target[q] = -1
        matched = np.nonzero(assignment >= 0)[0]
        pred_of_target[q, assignment[matched]] = cols[matched]


def reduced_match_points(
    pred_birth: np.ndarray, pred_death: np.ndarray, pred_pixel: np.ndarray,
    target_birth: np.ndarray, target_death: np.ndarray, target_pixel: np.ndarray,
    n: np.ndarray, m: np.ndarray, image_shape: tuple[int, ...], spatial: bool = True,
    spatial_clamp: tuple[float, float] = (0.05, 1.0),
) -> ReducedResult:
    """Exact SATLoss matchings of a padded batch, costs computed only inside compiled code.

    Parameters
    ----------
    pred_birth, pred_death : numpy.ndarray, float32 or float64, shape (Q, N)
        Prediction points (padding past ``n[q]`` ignored).
    pred_pixel : numpy.ndarray, int64, shape (Q, N, 2) or (Q, N, 3)
        (row, col) of their birth pixels; (z, row, col) of their birth voxels for volumes.
    target_birth, target_death : numpy.ndarray, float, shape (Q, M)
    target_pixel : numpy.ndarray, int64, shape (Q, M, 2) or (Q, M, 3)
    n, m : numpy.ndarray, int64, shape (Q,)
        True numbers of points.
    image_shape : (int, int) or (int, int, int)
        (H, W) the pixel offsets are divided by; (D, H, W) for volumes (one entry per
        column of the pixel arrays).
    spatial : bool
        Multiply by the clamped spatial distance (False: plain distance of the points).
    spatial_clamp : (float, float)
        Bounds of the spatial factor.

    Returns
    -------
    ReducedResult
        NumPy float64 totals (Q,) and int64 ``pred_of_target`` (Q, M).
    """
    from ..kernels.cpu.reduced_matching import add_partners, price_points

    n = np.ascontiguousarray(n, dtype=np.int64)
    m = np.ascontiguousarray(m, dtype=np.int64)
    sizes = (1,) * (3 - len(image_shape)) + tuple(image_shape)  # images: depth 1
    depth, height, width = (float(s) for s in sizes)
    low, high = (float(s) for s in spatial_clamp)
    sqrt2 = math.sqrt(2.0)
    diag_pred = np.abs(pred_death.astype(np.float64) - pred_birth) / sqrt2
    diag_target = np.abs(target_death.astype(np.float64) - target_birth) / sqrt2
    visit, lower = _visit_order(pred_birth, pred_death, diag_pred, target_birth, target_death,
                                n, m, low if spatial else 1.0)

    def price(blocks, u, v, tol, *new_and_range):
        price_points(pred_birth, pred_death, pred_pixel, target_birth, target_death,
                     target_pixel, n, m, blocks, depth, height, width, bool(spatial), low, high,
                     visit, lower, u, v, tol, *new_and_range)

    def with_partners(lists):
        # called only for short first lists (more than FULL_LISTS_UP_TO target points)
        partner = _same_pixel_partner(pred_pixel, target_pixel, n, m, image_shape)
        lists = _room(lists, (partner >= 0).astype(np.int64))
        add_partners(pred_birth, pred_death, pred_pixel, target_birth, target_death,
                     target_pixel, m, depth, height, width, bool(spatial), low, high, partner,
                     diag_pred, diag_target, *lists)
        return lists

    return _certified_match(price, diag_pred, diag_target, n, m, with_partners)


def _same_pixel_partner(pred_pixel: np.ndarray, target_pixel: np.ndarray, n: np.ndarray,
                        m: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The prediction point born at each target point's birth pixel, int64 (Q, M), or -1.

    One pass per problem over a map of the prediction birth pixels (voxels) of the image
    (pixels outside the image are ignored; of two points born at one pixel the later one is
    kept). For components that the prediction reproduces (a dot, a cell), this is the
    natural partner.
    """
    shape = tuple(int(s) for s in image_shape)
    partner = np.full(target_pixel.shape[:2], -1, dtype=np.int64)
    where = np.full(math.prod(shape), -1, dtype=np.int64)
    for q in range(len(n)):
        points, flat = _flat_pixels(pred_pixel[q, :n[q]], shape)
        where[flat] = points
        targets, target_flat = _flat_pixels(target_pixel[q, :m[q]], shape)
        partner[q, targets] = where[target_flat]
        where[flat] = -1
    return partner


def _flat_pixels(pixel: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, C-order flat indices) of the pixels (P, ndim) that lie inside ``shape``."""
    inside = np.all((pixel >= 0) & (pixel < np.asarray(shape)), axis=1)
    positions = np.nonzero(inside)[0]
    flat = np.zeros(len(positions), dtype=np.int64)
    for axis, size in enumerate(shape):
        flat = flat * size + pixel[positions, axis]
    return positions, flat


def _visit_order(pred_birth, pred_death, diag_pred, target_birth, target_death, n, m,
                 low: float) -> tuple[np.ndarray, np.ndarray]:
    """Visit order of the prediction points of the list pass and its lower bounds.

    ``cost(i, j) >= low * ||(b_i, d_i) - (b_j, d_j)||`` and the distance to target point ``j``
    is at least the distance to the bounding box of the problem's target points, so
    ``low * distance(i, box) - diag_pred(i)`` bounds every key of point ``i``. For a binary
    target (every target point at (0, 1)) the box is a point and the bound is tight up to the
    spatial factor: the strong prediction points come first and the weak ones are never read.
    """
    batch, big_n = pred_birth.shape
    big_m = target_birth.shape[1]
    cols = np.arange(big_m)[None, :] < m[:, None]
    if big_m:
        box = [np.where(cols, values, fill).min(1) if fill > 0 else
               np.where(cols, values, fill).max(1)
               for values in (target_birth, target_death) for fill in (np.inf, -np.inf)]
    else:
        box = [np.zeros(batch)] * 4
    birth_low, birth_high, death_low, death_high = (np.asarray(b, dtype=np.float64)[:, None]
                                                    for b in box)
    gap_birth = np.maximum(0.0, np.maximum(birth_low - pred_birth, pred_birth - birth_high))
    gap_death = np.maximum(0.0, np.maximum(death_low - pred_death, pred_death - death_high))
    lower = low * np.hypot(gap_birth, gap_death) * (1.0 - 1e-12) - diag_pred * (1.0 + 1e-12)
    # padding slots (past n[q]) come last, in index order, as a stable sort of inf puts them;
    # only each row's points are sorted
    visit = np.empty((batch, big_n), dtype=np.int64)
    visit[:] = np.arange(big_n)
    sorted_lower = np.full((batch, big_n), np.inf)
    for q in range(batch):
        count = int(n[q])
        order = np.argsort(lower[q, :count], kind="stable")
        visit[q, :count] = order
        sorted_lower[q, :count] = lower[q, order]
    return visit, sorted_lower


def reduced_match_dense(cost: np.ndarray, diag_pred: np.ndarray, diag_target: np.ndarray,
                        n: np.ndarray, m: np.ndarray) -> ReducedResult:
    """Exact matchings of a dense padded batch (the :func:`match_batch` problem form).

    Parameters
    ----------
    cost : numpy.ndarray, float, shape (Q, N, M)
    diag_pred : numpy.ndarray, float, shape (Q, N)
    diag_target : numpy.ndarray, float, shape (Q, M)
    n, m : numpy.ndarray, int64, shape (Q,)

    Returns
    -------
    ReducedResult
        NumPy float64 totals (Q,) and int64 ``pred_of_target`` (Q, M).
    """
    from ..kernels.cpu.reduced_matching import price_dense

    n = np.ascontiguousarray(n, dtype=np.int64)
    m = np.ascontiguousarray(m, dtype=np.int64)

    def price(blocks, u, v, tol, *new_and_range):
        price_dense(cost, diag_pred, diag_target, n, m, blocks, u, v, tol, *new_and_range)

    return _certified_match(price, diag_pred, diag_target, n, m)


# ----------------------------------------------------------------------------- torch path


def lists_torch(key_chunk, diag_target, n, m, big_n: int, width: int,
                chunk: Optional[int] = None):
    """Candidate lists by a running top-k over chunks of prediction points (torch, any device).

    Parameters
    ----------
    key_chunk : callable
        ``key_chunk(start, stop)`` returns the (Q, stop - start, M) tensor of
        ``cost - diag_pred`` for prediction points ``start:stop`` (padding entries any value).
    diag_target : torch.Tensor, float, shape (Q, M)
    n, m : torch.Tensor, int64, shape (Q,), on the device
    big_n : int
        Padded number of prediction points N.
    width : int
        List length K (at least ``max min(n, m)``).
    chunk : int, optional
        Prediction points per chunk; by default sized to ``CHUNK_BYTES``.

    Returns
    -------
    (index, key) : torch.Tensor, shapes (Q, K, M)
        Prediction index and key of each list entry; entries with ``key = inf`` are empty.
    """
    import torch

    batch, big_m = diag_target.shape
    device = diag_target.device
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (8 * max(1, batch * big_m)))
    best_key = torch.full((batch, 0, big_m), math.inf, dtype=torch.float64, device=device)
    best_index = torch.zeros((batch, 0, big_m), dtype=torch.int64, device=device)
    cols_valid = torch.arange(big_m, device=device)[None, :] < m[:, None]
    limit = torch.where(cols_valid, diag_target.to(torch.float64),
                        torch.full_like(diag_target, -math.inf, dtype=torch.float64))
    for start in range(0, big_n, chunk):
        stop = min(big_n, start + chunk)
        key = key_chunk(start, stop).to(torch.float64)
        rows = torch.arange(start, stop, device=device)
        useful = (rows[None, :, None] < n[:, None, None]) & (key < limit[:, None, :])
        key = torch.where(useful, key, torch.full_like(key, math.inf))
        keys = torch.cat([best_key, key], dim=1)
        index = torch.cat([best_index, rows[None, :, None].expand(batch, -1, big_m)], dim=1)
        k = min(width, keys.shape[1])
        best_key, pos = torch.topk(keys, k, dim=1, largest=False, sorted=False)
        best_index = torch.gather(index, 1, pos)
    return best_index, best_key


def union_of_lists(index, key, big_n: int):
    """Distinct prediction points of each problem's lists, padded (torch).

    Parameters
    ----------
    index, key : torch.Tensor, shape (Q, K, M)
        From :func:`lists_torch`.
    big_n : int

    Returns
    -------
    (points, size) : torch.Tensor int64 (Q, U) and (Q,)
        Sorted distinct prediction indices (padding ``big_n``) and their number.
    """
    import torch

    batch = index.shape[0]
    flat = torch.where(torch.isfinite(key), index, torch.full_like(index, big_n))
    flat = torch.sort(flat.reshape(batch, -1), dim=1).values
    repeated = torch.zeros_like(flat, dtype=torch.bool)
    repeated[:, 1:] = flat[:, 1:] == flat[:, :-1]
    flat = torch.where(repeated, torch.full_like(flat, big_n), flat)
    flat = torch.sort(flat, dim=1).values
    size = (flat < big_n).sum(1)
    width = max(1, int(size.max()) if batch else 1)
    return flat[:, :width].contiguous(), size


def reduced_match_torch(pair_cost: Callable[[Any], Any], diag_pred, diag_target, n, m,
                        solver: str = "cuda", chunk: Optional[int] = None) -> ReducedResult:
    """Exact matchings of a padded batch of torch tensors, the lists built on their device.

    Parameters
    ----------
    pair_cost : callable
        ``pair_cost(index)`` with ``index`` an int64 tensor (Q, R) of prediction slots
        (``0 <= index < N``) returns the (Q, R, M) tensor of their costs with every target
        point (padding entries may hold any value). It is called on chunks of prediction
        points, then once on the union of the lists.
    diag_pred : torch.Tensor, float, shape (Q, N)
    diag_target : torch.Tensor, float, shape (Q, M)
    n, m : torch.Tensor, int64, shape (Q,), on the device of the diagonal costs
    solver : {"cuda", "emd"}
        Solver of the small dense problems on the union of the lists: the CUDA kernel (on
        CUDA tensors in place; NumPy copies in the simulator) or POT.
    chunk : int, optional
        Prediction points per chunk of the top-k pass (default: ``CHUNK_BYTES`` of keys).

    Returns
    -------
    ReducedResult
        float64 totals (Q,) and int64 ``pred_of_target`` (Q, M), on the device of the inputs.

    Notes
    -----
    Reads a few integers back from the device (the widest union, the sizes for the solver);
    cost entries are computed ``chunk x M`` at a time, then ``U x M`` for the union of
    ``U <= M^2`` points.
    """
    import torch

    batch, big_n = diag_pred.shape
    big_m = diag_target.shape[1]
    device = diag_pred.device
    f64 = torch.float64
    zero = torch.zeros((), dtype=f64, device=device)
    rows_valid = torch.arange(big_n, device=device)[None, :] < n[:, None]
    cols_valid = torch.arange(big_m, device=device)[None, :] < m[:, None]
    diag_pred = torch.where(rows_valid, diag_pred.detach().to(f64), zero)
    diag_target = torch.where(cols_valid, diag_target.detach().to(f64), zero)
    base = diag_pred.sum(1)
    pred_of_target = torch.full((batch, big_m), -1, dtype=torch.int64, device=device)
    if batch == 0 or big_m == 0 or big_n == 0:
        return ReducedResult(total=base + diag_target.sum(1), pred_of_target=pred_of_target)

    def key_chunk(start, stop):
        index = torch.arange(start, stop, device=device).expand(batch, -1)
        return pair_cost(index).to(f64) - diag_pred[:, start:stop, None]

    index, key = lists_torch(key_chunk, diag_target, n, m, big_n, min(big_n, big_m), chunk)
    points, size = union_of_lists(index, key, big_n)
    safe = points.clamp(max=big_n - 1)
    cost_u = pair_cost(safe).to(f64)
    diag_u = torch.where(points < big_n, diag_pred.gather(1, safe), zero)
    total, assignment = _solve_union(cost_u.contiguous(), diag_u, diag_target, size, m, solver)
    total = total.to(device=device, dtype=f64) + base - diag_u.sum(1)
    assignment = torch.as_tensor(assignment, device=device)
    matched = assignment >= 0
    spill = torch.where(matched, assignment, torch.full_like(assignment, big_m))
    out = torch.full((batch, big_m + 1), -1, dtype=torch.int64, device=device)
    out.scatter_(1, spill, torch.where(matched, points, torch.full_like(points, -1)))
    return ReducedResult(total=total, pred_of_target=out[:, :big_m])


def _solve_union(cost, diag_pred, diag_target, size, m, solver: str):
    """Solve the dense union problems with the CUDA kernel or POT; (total, assignment)."""
    import torch

    from ._cuda import match_cuda_host, match_cuda_torch
    from ._pot import match_emd

    n_host = size.cpu().numpy().astype(np.int64)
    m_host = m.cpu().numpy().astype(np.int64)
    if solver == "cuda" and cost.is_cuda:
        return match_cuda_torch(cost, diag_pred, diag_target, n_host, m_host)
    arrays = [x.cpu().numpy() for x in (cost, diag_pred, diag_target)]
    run = match_cuda_host if solver == "cuda" else match_emd
    total, assignment = run(*arrays, n_host, m_host)
    return torch.as_tensor(total), torch.as_tensor(assignment)
