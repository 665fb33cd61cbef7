"""Approximate batched diagram matching with POT's log-domain Sinkhorn, rounded to a matching.

Every problem of the batch (``n`` prediction points, ``m`` target points, the diagonal as an
extra point on each side) is written as one balanced transport problem of the common padded
size ``(N + 1) x (M + 1)``: padding rows and columns become extra copies of the diagonal
(cost 0 to the diagonal and to each other, a large cost to real points), the diagonal row
and column get masses ``M`` and ``N``, so all problems share one shape and total mass
``N + M`` and :func:`ot.batch.solve_batch` solves them together on the device of the costs.

The entropic plan is then rounded to a valid partial matching: prediction point ``i`` and
target point ``j`` are matched when the plan moves more than half of their unit mass
between them (at most one such ``j`` per ``i`` and ``i`` per ``j``, so this is always a
matching) and matching them is cheaper than sending both to the diagonal. Every other point
goes to the diagonal. The result is a feasible matching, so its total is an upper bound of
the exact optimum.

Its accuracy against the exact solver and its cost are measured by ``bench/loss.py
--sinkhorn`` (numbers in ``bench/RESULTS.md``): close to exact on large batches, further off on
single small problems, and dominated by ``max_iter`` log-sum-exp passes over the padded
(Q, N+1, M+1) array, so it is meant for the GPU.
This solver is never a default; pass ``solver="sinkhorn"`` explicitly.
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import torch

__all__ = ["SinkhornMatching", "sinkhorn_match_batch", "SINKHORN_OPTIONS",
           "check_sinkhorn_options"]

#: The keyword arguments of :func:`sinkhorn_match_batch` (a loss's ``solver_options``), each
#: with what it must be.
SINKHORN_OPTIONS = {
    "reg": "positive and finite (a float)",
    "max_iter": "a positive int",
    "tol": "non-negative and finite (a float)",
}


def check_sinkhorn_options(options: Mapping[str, Any]) -> dict:
    """Validate the options of the ``"sinkhorn"`` solver; return them as a new dict.

    Parameters
    ----------
    options : mapping
        Any of ``reg``, ``max_iter`` and ``tol`` (see :func:`sinkhorn_match_batch`).

    Returns
    -------
    dict
        ``reg`` and ``tol`` as float, ``max_iter`` as int.

    Raises
    ------
    TypeError
        An unknown name (with the closest known one), or a value of the wrong type.
    ValueError
        A value out of range (``reg <= 0``, ``max_iter < 1``, ``tol < 0``, not finite).

    Examples
    --------
    >>> check_sinkhorn_options({"reg": 1e-2})
    {'reg': 0.01}
    """
    checked = {}
    for name, value in options.items():
        if name not in SINKHORN_OPTIONS:
            close = difflib.get_close_matches(str(name), SINKHORN_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"`solver_options` of solver='sinkhorn' accept "
                            f"{', '.join(SINKHORN_OPTIONS)}; got unknown {name!r}{hint}")
        checked[name] = _check_option(name, value)
    return checked


def _check_option(name: str, value: Any) -> Any:
    """``value`` of option ``name`` converted, or the TypeError/ValueError that says why not."""
    wanted = SINKHORN_OPTIONS[name]
    integral = name == "max_iter"
    kinds = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"`{name}` must be {wanted} (an option of solver='sinkhorn'); got "
                        f"{type(value).__name__} {value!r}")
    converted = int(value) if integral else float(value)
    valid = {"reg": lambda v: math.isfinite(v) and v > 0, "max_iter": lambda v: v >= 1,
             "tol": lambda v: math.isfinite(v) and v >= 0}[name]
    if not valid(converted):
        raise ValueError(f"`{name}` must be {wanted} (an option of solver='sinkhorn'); got "
                         f"{value!r}")
    return converted


@dataclass(frozen=True)
class SinkhornMatching:
    """Rounded matchings of a batch of problems.

    Attributes
    ----------
    total : (Q,) float tensor
        Cost of the rounded matching of every problem (an upper bound of the optimum).
    assignment : (Q, N) int64 tensor
        Target index matched with each prediction point, -1 for the diagonal.
    n_iter : int
        Sinkhorn iterations performed.
    """

    total: torch.Tensor
    assignment: torch.Tensor
    n_iter: int


def _augmented(cost: torch.Tensor, diag_pred: torch.Tensor, diag_target: torch.Tensor,
               n: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Balanced (Q, N+1, M+1) problems with the padding folded into the diagonal."""
    q, rows, cols = cost.shape
    device = cost.device
    real_row = torch.arange(rows, device=device)[None, :] < n[:, None]
    real_col = torch.arange(cols, device=device)[None, :] < m[:, None]
    scale = torch.maximum(cost.amax(dim=(1, 2)), torch.maximum(
        diag_pred.amax(dim=1), diag_target.amax(dim=1)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    big = 10.0
    ext = cost.new_zeros((q, rows + 1, cols + 1))
    real = real_row[:, :, None] & real_col[:, None, :]
    mixed = real_row[:, :, None] ^ real_col[:, None, :]
    inner = torch.where(real, cost / scale[:, None, None], torch.zeros_like(cost))
    ext[:, :rows, :cols] = torch.where(mixed, torch.full_like(cost, big), inner)
    ext[:, :rows, cols] = torch.where(real_row, diag_pred / scale[:, None], 0.0)
    ext[:, rows, :cols] = torch.where(real_col, diag_target / scale[:, None], 0.0)
    total = float(rows + cols)
    a = cost.new_ones((q, rows + 1))
    a[:, rows] = cols
    b = cost.new_ones((q, cols + 1))
    b[:, cols] = rows
    return ext, a / total, b / total


def sinkhorn_match_batch(
    cost: torch.Tensor,
    diag_pred: torch.Tensor,
    diag_target: torch.Tensor,
    n: Any,
    m: Any,
    *,
    reg: float = 3e-3,
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> SinkhornMatching:
    """Approximate matchings of a batch of diagram-matching problems, on their device.

    Parameters
    ----------
    cost : (Q, N, M) float tensor
        Matching costs; entries outside ``i < n[q]``, ``j < m[q]`` are ignored.
    diag_pred : (Q, N) float tensor
        Costs of sending prediction points to the diagonal.
    diag_target : (Q, M) float tensor
        Costs of sending target points to the diagonal.
    n, m : (Q,) int tensor or array_like
        Numbers of points.
    reg : float, default 3e-3
        Entropic regularisation, relative to the largest cost of each problem (costs are
        divided by it before solving).
    max_iter : int, default 1000
        Sinkhorn iterations at most.
    tol : float, default 1e-7
        Stopping tolerance on the dual variables.

    Returns
    -------
    SinkhornMatching
        Rounded matchings and their costs, on the device of ``cost``.

    Raises
    ------
    TypeError, ValueError
        Options as :func:`check_sinkhorn_options` refuses them.
    """
    from ot.batch import solve_batch

    options = check_sinkhorn_options({"reg": reg, "max_iter": max_iter, "tol": tol})
    reg, max_iter, tol = options["reg"], options["max_iter"], options["tol"]
    device = cost.device
    n = torch.as_tensor(n, device=device).long()
    m = torch.as_tensor(m, device=device).long()
    with torch.no_grad():
        ext, a, b = _augmented(cost.detach(), diag_pred.detach(), diag_target.detach(), n, m)
        result = solve_batch(ext, reg=reg, a=a, b=b, max_iter=max_iter, tol=tol,
                             method="log_sinkhorn", grad="detach")
        plan = result.plan * (cost.shape[1] + cost.shape[2])
        assignment = _round(plan, cost, diag_pred, diag_target, n, m)
        total = _assignment_total(assignment, cost, diag_pred, diag_target, n, m)
    return SinkhornMatching(total=total, assignment=assignment,
                            n_iter=int(result.log.get("n_iter", 0)))


def _round(plan: torch.Tensor, cost: torch.Tensor, diag_pred: torch.Tensor,
           diag_target: torch.Tensor, n: torch.Tensor, m: torch.Tensor,
           rounds: int = 8) -> torch.Tensor:
    """Matching from an (N+1, M+1) plan by rounds of mutual best choices.

    In each round every free prediction point picks the free target point that receives
    most of its mass, and every free target point the free prediction point that sends it
    most; pairs that pick each other, and are cheaper matched than both sent to the
    diagonal, are matched and leave. Points left after ``rounds`` go to the diagonal.
    (Letting the diagonal compete in the choices was measured to round worse: it collects
    mass from every point.)
    """
    q, rows, cols = cost.shape
    device = cost.device
    real_row = torch.arange(rows, device=device)[None, :] < n[:, None]
    real_col = torch.arange(cols, device=device)[None, :] < m[:, None]
    worth = cost < diag_pred[:, :, None] + diag_target[:, None, :]
    allowed = worth & real_row[:, :, None] & real_col[:, None, :]
    assignment = torch.full((q, rows), -1, dtype=torch.int64, device=device)
    free_row, free_col = real_row.clone(), real_col.clone()
    row_ids = torch.arange(rows, device=device)[None, :]
    neg = torch.full((), -1.0, dtype=plan.dtype, device=device)
    for _ in range(rounds):
        inner = torch.where(free_row[:, :, None] & free_col[:, None, :], plan[:, :rows, :cols], neg)
        partner = inner.argmax(dim=2)
        col_best = inner.argmax(dim=1)
        mutual = free_row & torch.gather(free_col, 1, partner)
        mutual &= torch.gather(col_best, 1, partner) == row_ids
        mutual &= torch.gather(allowed, 2, partner[:, :, None])[:, :, 0]
        if not bool(mutual.any()):
            break
        assignment = torch.where(mutual, partner, assignment)
        free_row &= ~mutual
        hits = torch.zeros_like(free_col, dtype=torch.int64)
        free_col &= hits.scatter_add_(1, partner, mutual.long()) == 0
    return assignment


def _assignment_total(assignment: torch.Tensor, cost: torch.Tensor, diag_pred: torch.Tensor,
                      diag_target: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    rows, cols = cost.shape[1], cost.shape[2]
    real_row = torch.arange(rows, device=cost.device)[None, :] < n[:, None]
    real_col = torch.arange(cols, device=cost.device)[None, :] < m[:, None]
    matched = real_row & (assignment >= 0)
    partner = torch.where(matched, assignment, torch.zeros_like(assignment))
    picked = torch.gather(cost, 2, partner[:, :, None])[:, :, 0]
    zero = torch.zeros((), dtype=cost.dtype, device=cost.device)
    hits = torch.zeros(real_col.shape, dtype=torch.int64, device=cost.device)
    used = hits.scatter_add_(1, partner, matched.long()) > 0
    pred_part = torch.where(matched, picked, torch.where(real_row, diag_pred, zero)).sum(1)
    return pred_part + torch.where(real_col & ~used, diag_target, zero).sum(1)
