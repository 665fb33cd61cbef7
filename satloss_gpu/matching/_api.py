"""Exact batched matching of persistence diagrams (partial rectangular assignment).

One problem per image and homology dimension: ``n`` prediction points, ``m`` target points,
``cost[i, j]`` for matching prediction point ``i`` with target point ``j``, ``diag_pred[i]`` and
``diag_target[j]`` for sending a point to the diagonal. The optimal total is the value of the
``(n + 1) x (m + 1)`` optimal-transport problem whose extra row and column are the diagonal
(masses ``m`` and ``n``, every other mass 1, diagonal-to-diagonal cost 0), equivalently

    sum(diag_pred) + sum(diag_target) + min over partial matchings of
    sum over matched (i, j) of (cost[i, j] - diag_pred[i] - diag_target[j]).

Solvers
-------
``"emd"``
    POT's network simplex (``ot.emd``) on the augmented problem, one call per problem. The
    reference. ``ot.emd`` holds the GIL while it solves (``bench/RESULTS.md``), so the
    problems run one after another unless ``SATLOSS_EMD_THREADS`` asks for a thread pool.
``"cpu"``
    Shortest augmenting paths (a rectangular Jonker-Volgenant / Hungarian method) compiled
    with Numba, parallel over the problems of the batch, over sparse per-row candidate lists
    (the cheapest columns of each row, lengthened until a bound test and the dual certificate
    on the full problem pass). Exact.
``"cuda"``
    The same algorithm as a Numba-CUDA kernel, one thread block per problem (threads sized to
    the problem width, up to 1024; per-problem state in shared memory when it fits), the
    whole batch in one launch. Exact. CUDA torch tensors are used in place; host inputs are copied to the
    device (under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs in the simulator).
``"reduced"``
    The exact reduction of :mod:`satloss_gpu.matching._reduced`: every target point keeps its
    ``min(m, #negative reduced costs)`` cheapest prediction points, and the problem restricted
    to those pairs (at most ``m^2`` prediction points) is solved exactly: compiled candidate
    lists and augmenting paths on the CPU, a batched ``torch.topk`` and the CUDA kernel for
    CUDA tensors. Fastest when ``m`` is much smaller than ``n``, as in SATLoss problems.
``"auto"``
    ``"cuda"`` for CUDA tensors, ``"reduced"`` otherwise: by the measurements of
    ``bench/matching.py`` (``bench/RESULTS.md``) it is the fastest exact solver on the CPU for
    diagram-like and real SATLoss problems.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._arraylib import array_library, is_cuda_array, like, to_numpy
from .._validation import check_choice, check_matching_problem
from ._cpu import K_START, match_cpu
from ._cuda import check_cuda_available, match_cuda_host, match_cuda_torch
from ._pot import match_emd
from ._reduced import reduced_match_dense, reduced_match_torch

__all__ = ["MatchResult", "match_batch", "assignment_cost", "MATCHING_SOLVERS"]

MATCHING_SOLVERS = ("auto", "emd", "cpu", "cuda", "reduced")


@dataclass(frozen=True)
class MatchResult:
    """Optimal matchings of a batch of persistence-diagram matching problems.

    Attributes
    ----------
    total : array, shape (B,), dtype of ``cost``
        Optimal cost of every problem, in the library and on the device of ``cost``.
        Plain data (no gradient): use :func:`assignment_cost` to differentiate.
    assignment : array, shape (B, N), int64
        ``assignment[b, i]`` is the target point matched with prediction point ``i`` of problem
        ``b``, or ``-1`` when it goes to the diagonal (also for padding entries ``i >= n[b]``).
        Target points that appear nowhere go to the diagonal.
    """

    total: Any
    assignment: Any


def match_batch(
    cost: Any,
    diag_pred: Any,
    diag_target: Any,
    n: Any,
    m: Any,
    solver: str = "auto",
) -> MatchResult:
    """Solve a batch of persistence-diagram matching problems exactly.

    Parameters
    ----------
    cost : torch.Tensor or numpy.ndarray, shape (B, N, M), float
        ``cost[b, i, j]``: cost of matching prediction point ``i`` with target point ``j``.
        Entries with ``i >= n[b]`` or ``j >= m[b]`` are padding and are ignored (any value).
    diag_pred : torch.Tensor or numpy.ndarray, shape (B, N), float
        Cost of sending each prediction point to the diagonal.
    diag_target : torch.Tensor or numpy.ndarray, shape (B, M), float
        Cost of sending each target point to the diagonal.
    n, m : array_like, shape (B,), int
        True numbers of prediction and target points of every problem.
    solver : {"auto", "emd", "cpu", "cuda", "reduced"}
        See the module docstring. Every solver is exact; they differ in speed and may pick
        different optimal matchings when several exist.

    Returns
    -------
    MatchResult
        ``total`` (B,) in the dtype, library and device of ``cost`` and ``assignment`` (B, N)
        int64 on the same device. Integer inputs give float64 totals.

    Raises
    ------
    TypeError
        Non-numeric arrays, non-integer sizes, arrays from different libraries.
    ValueError
        Wrong ranks or shapes, sizes negative or above the padded sizes, NaN or infinite
        values in the valid region, values of magnitude above ``float64 max / (8 (N + M +
        2))`` there (their sums could overflow), unknown ``solver``; ``solver="cuda"``
        without a CUDA GPU (outside Numba's CUDA simulator).

    Notes
    -----
    All solvers compute in float64. ``"emd"`` and ``"cpu"`` copy CUDA inputs to the host
    and the results back; ``"cuda"`` reads CUDA tensors in place and synchronises once.

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[[0.25, 5.0], [5.0, 0.5], [5.0, 5.0]]])
    >>> res = match_batch(cost, np.array([[1.0, 1.0, 0.25]]), np.array([[1.0, 1.0]]), [3], [2])
    >>> float(res.total[0]), res.assignment.tolist()
    (1.0, [[0, 1, -1]])
    """
    solver = check_choice("solver", solver, MATCHING_SOLVERS)
    cost, diag_pred, diag_target, n_host, m_host = check_matching_problem(
        cost, diag_pred, diag_target, n, m)
    if solver == "auto":
        # By measurement (bench/matching.py): the CUDA kernel for CUDA tensors; on the CPU the
        # exact reduction beats POT's network simplex and the plain augmenting paths on
        # diagram-like and real SATLoss problems.
        solver = "cuda" if is_cuda_array(cost) else "reduced"
    if solver == "cuda":
        check_cuda_available()
    if solver == "cuda" and array_library(cost) == "torch" and cost.is_cuda:
        total, assignment = match_cuda_torch(cost, diag_pred, diag_target, n_host, m_host)
        return MatchResult(total=total, assignment=assignment)
    if solver == "reduced" and array_library(cost) == "torch" and cost.is_cuda:
        return _reduced_on_device(cost, diag_pred, diag_target, n_host, m_host)
    c64 = to_numpy(cost).astype(np.float64, copy=False)
    dp64 = to_numpy(diag_pred).astype(np.float64, copy=False)
    dt64 = to_numpy(diag_target).astype(np.float64, copy=False)
    if solver == "emd":
        total, assignment = match_emd(c64, dp64, dt64, n_host, m_host)
    elif solver == "cuda":
        total, assignment = match_cuda_host(c64, dp64, dt64, n_host, m_host)
    elif solver == "reduced":
        result = reduced_match_dense(c64, dp64, dt64, n_host, m_host)
        total, assignment = result.total, result.assignment(c64.shape[1])
    else:
        total, assignment = match_cpu(c64, dp64, dt64, n_host, m_host, k_start=K_START)
    return MatchResult(
        total=like(total.astype(_numpy_dtype(cost)), cost), assignment=like(assignment, cost)
    )


def _reduced_on_device(cost, diag_pred, diag_target, n_host, m_host) -> MatchResult:
    """The ``"reduced"`` solver on CUDA tensors: top-k lists on the device, the CUDA kernel."""
    import torch

    device = cost.device

    def pair_cost(index):
        return torch.gather(cost, 1, index[:, :, None].expand(-1, -1, cost.shape[2]))

    result = reduced_match_torch(pair_cost, diag_pred, diag_target,
                                 torch.as_tensor(n_host, device=device),
                                 torch.as_tensor(m_host, device=device), solver="cuda")
    return MatchResult(total=result.total.to(cost.dtype),
                       assignment=result.assignment(cost.shape[1]))


def _numpy_dtype(array: Any) -> np.dtype:
    """NumPy equivalent of the float dtype of ``array``."""
    if array_library(array) == "torch":
        return np.dtype(str(array.dtype).replace("torch.", ""))
    return array.dtype


def assignment_cost(
    cost: Any, diag_pred: Any, diag_target: Any, n: Any, m: Any, assignment: Any
) -> Any:
    """Total cost of given matchings, differentiable with respect to the costs.

    Parameters
    ----------
    cost : torch.Tensor or numpy.ndarray, shape (B, N, M), float
    diag_pred : torch.Tensor or numpy.ndarray, shape (B, N), float
    diag_target : torch.Tensor or numpy.ndarray, shape (B, M), float
    n, m : array_like, shape (B,), int
        As in :func:`match_batch`.
    assignment : array_like or torch.Tensor, shape (B, N), int
        ``MatchResult.assignment`` (or any partial matching in the same form): for ``i < n[b]``
        a target index in ``[0, m[b])`` or -1 (the diagonal), each target index at most once
        per problem; -1 for the padding entries ``i >= n[b]``.

    Returns
    -------
    array, shape (B,)
        ``sum`` of matched costs plus the diagonal costs of the unmatched points, in the
        library, dtype and device of ``cost``. With torch inputs this is built from
        differentiable indexing: the gradient with respect to the costs is the optimal plan
        when ``assignment`` is optimal (the matching itself is held fixed).

    Raises
    ------
    TypeError, ValueError
        The arguments of :func:`match_batch` as there; an ``assignment`` that is not an
        integer array of shape (B, N), holds an index out of range, a non-(-1) padding entry
        or a target point matched twice (the message names the problem and the entries).

    Notes
    -----
    The check reads ``assignment`` on the host (one device synchronisation for CUDA tensors).
    """
    checked = check_matching_problem(cost, diag_pred, diag_target, n, m)
    cost, diag_pred, diag_target = (_differentiable(original, converted) for original, converted
                                    in zip((cost, diag_pred, diag_target), checked[:3]))
    n_host, m_host = checked[3:]
    host = _check_assignment(assignment, n_host, m_host, cost.shape[1])
    b_idx, i_idx = np.nonzero(host >= 0)
    j_idx = host[b_idx, i_idx]
    batch, big_n, big_m = cost.shape
    rows = np.arange(big_n)[None, :] < n_host[:, None]
    cols = np.arange(big_m)[None, :] < m_host[:, None]
    free_pred = rows & (host < 0)
    free_target = cols.copy()
    free_target[b_idx, j_idx] = False
    if array_library(cost) == "torch":
        import torch

        def index(array):
            return torch.as_tensor(array, device=cost.device)

        zero = torch.zeros((), dtype=cost.dtype, device=cost.device)
        pairs = zero.expand(batch).index_add(0, index(b_idx),
                                             cost[index(b_idx), index(i_idx), index(j_idx)])
        return (pairs + torch.where(index(free_pred), diag_pred, zero).sum(1)
                + torch.where(index(free_target), diag_target, zero).sum(1))
    pairs = np.zeros(batch, dtype=cost.dtype)
    np.add.at(pairs, b_idx, cost[b_idx, i_idx, j_idx])
    zero = cost.dtype.type(0)
    return (pairs + np.where(free_pred, diag_pred, zero).sum(1)
            + np.where(free_target, diag_target, zero).sum(1))


def _differentiable(original: Any, converted: Any) -> Any:
    """``original`` when it is a float torch tensor (its autograd graph kept), else the
    validated ``converted`` array."""
    if array_library(original) == "torch" and original.dtype == converted.dtype:
        return original
    return converted


def _check_assignment(assignment: Any, n: np.ndarray, m: np.ndarray, big_n: int) -> np.ndarray:
    """Validate a matching in ``MatchResult.assignment`` form; return it as int64 NumPy (B, N)."""
    host = np.asarray(to_numpy(assignment)) if array_library(assignment) == "torch" else \
        np.asarray(assignment)
    if host.dtype.kind not in "iu" and not (host.size == 0 and host.dtype.kind == "f"):
        raise TypeError(f"`assignment` must hold integers (target indices, -1 for the "
                        f"diagonal); got dtype {host.dtype}")
    expected = (n.shape[0], big_n)
    if host.shape != expected:
        raise ValueError(f"`assignment` must have shape (B, N) = {expected}; got {host.shape}")
    host = host.astype(np.int64)
    rows = np.arange(big_n)[None, :] < n[:, None]
    bad = rows & ((host < -1) | (host >= m[:, None]))
    if bad.any():
        b, i = (int(k[0]) for k in np.nonzero(bad))
        raise ValueError(
            f"`assignment` must hold -1 or a target index in [0, m[b]) for the prediction "
            f"points i < n[b]; got {int(host[b, i])} at [{b}, {i}] (m[{b}] = {int(m[b])})")
    padding = ~rows & (host != -1)
    if padding.any():
        b, i = (int(k[0]) for k in np.nonzero(padding))
        raise ValueError(
            f"`assignment` must be -1 at the padding entries i >= n[b]; got {int(host[b, i])} "
            f"at [{b}, {i}] (n[{b}] = {int(n[b])})")
    b_idx, i_idx = np.nonzero(host >= 0)
    key = b_idx * (int(m.max(initial=0)) + 1) + host[b_idx, i_idx]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.nonzero(counts > 1)[0][0])
        b, j = int(b_idx[first[k]]), int(host[b_idx[first[k]], i_idx[first[k]]])
        twice = np.nonzero(host[b] == j)[0][:2].tolist()
        raise ValueError(
            f"`assignment` matches target point {j} of problem {b} with prediction points "
            f"{twice[0]} and {twice[1]}; a matching uses each target point at most once")
    return host
