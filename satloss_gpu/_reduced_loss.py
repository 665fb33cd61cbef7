"""The lean pipeline of the topological losses: persistence, reduced matching, loss.

For a batch of P = B * C images and Q = P * len(dims) matching problems:

1. the user's inputs are checked once, in one pass each (:func:`check_inputs`);
2. persistence of both sides (one call per side); every pair becomes a row of a flat table
   (image, dimension, birth pixel index, death pixel index); the essential class of dimension
   0 dies at the last pixel of the filtration (:func:`essential_death_index`);
3. the exact reduced matching (:mod:`satloss_gpu._reduced_matching`): on the CPU one
   compiled pass computes the cost entries of candidate pairs only; on a GPU a running top-k
   over chunks; no ``n x m`` cost matrix is ever built;
4. the loss from the fixed matching: the prediction's values are gathered once (one
   differentiable ``take`` of the birth and death pixels of every pair), the gradient reaches
   the prediction through that gather only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["check_inputs", "essential_death_index", "PairTable", "pair_table",
           "match_tables", "problem_losses", "estimate_bytes"]

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- inputs


def check_inputs(pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``pred`` and ``target`` in one pass each; return both as (B, C, H, W).

    ``pred`` must be a floating tensor of probabilities (finite, in [0, 1]); ``target`` a
    tensor or array of the same shape holding only 0 and 1 (or bool). The checks read each
    array once (``aminmax`` of ``pred``; one comparison of ``target``); a failing check reads
    it again only to write the error message.
    """
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"`pred` must be a torch.Tensor; got {type(pred).__name__}")
    if not pred.dtype.is_floating_point:
        raise TypeError(
            f"`pred` must be a floating-point tensor of probabilities; got dtype {pred.dtype}")
    if pred.ndim not in (3, 4):
        raise ValueError(
            f"`pred` must have shape (B, C, H, W) or (B, H, W); got {tuple(pred.shape)}")
    if any(int(s) == 0 for s in pred.shape):
        raise ValueError(f"`pred` must not be empty; got shape {tuple(pred.shape)}")
    if not isinstance(target, torch.Tensor):
        try:
            target = torch.as_tensor(np.asarray(target))
        except (TypeError, ValueError):
            raise TypeError(f"`target` must be a tensor or an array; got {type(target).__name__}")
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(f"`target` must have the shape of `pred` {tuple(pred.shape)}; "
                         f"got {tuple(target.shape)}")
    if target.dtype.is_complex:
        raise TypeError(f"`target` must hold real numbers; got dtype {target.dtype}")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()
    low, high = (float(v) for v in torch.aminmax(pred.detach()))
    if not (0.0 <= low and high <= 1.0):  # NaN fails too
        _raise_pred_error(pred.detach())
    target = target.detach().to(device=pred.device, dtype=pred.dtype)
    if not bool(((target == 0) | (target == 1)).all()):
        _raise_target_error(target)
    if pred.ndim == 3:
        pred, target = pred[:, None], target[:, None]
    return pred, target


def _raise_pred_error(pred: torch.Tensor) -> None:
    finite = torch.isfinite(pred)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(pred).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(f"`pred` must be finite; found {n_nan} NaN and {n_inf} inf values")
    low, high = float(pred.min()), float(pred.max())
    raise ValueError(f"`pred` must hold probabilities in [0, 1]; found values in "
                     f"[{low:g}, {high:g}] (apply torch.sigmoid to logits first)")


def _raise_target_error(target: torch.Tensor) -> None:
    finite = torch.isfinite(target)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(target).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(f"`target` must be finite; found {n_nan} NaN and {n_inf} inf values")
    other = (target != 0) & (target != 1)
    found = torch.unique(target[other])[:5].tolist()
    raise ValueError(f"`target` must be binary (0/1 or bool); found other values {found}")


def pad_invert(images: torch.Tensor, pad: bool) -> torch.Tensor:
    """``1 - images`` with an optional frame of 1 added around ``images`` first."""
    if pad:
        images = F.pad(images, (1, 1, 1, 1), mode="constant", value=1.0)
    return 1.0 - images


# ----------------------------------------------------------------------------- pairs


def essential_death_index(flat: torch.Tensor) -> torch.Tensor:
    """(P,) flat index of the last pixel of each image in the (value, index) order.

    The death pixel of the essential class of dimension 0: the largest value, ties to the
    largest flat index. ``flat`` is (P, H * W), detached.
    """
    if flat.device.type == "cpu":
        from satloss_gpu.kernels.cpu.loss_glue import last_in_order

        out = np.empty(flat.shape[0], dtype=np.int64)
        last_in_order(flat.contiguous().numpy(), out)
        return torch.from_numpy(out)
    top = flat.max(dim=1, keepdim=True).values
    index = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
    return torch.where(flat == top, index, torch.full_like(index, -1)).max(dim=1).values


@dataclass(frozen=True)
class PairTable:
    """Persistence pairs of P images with nonzero persistence, grouped by problem.

    Attributes
    ----------
    problem : (K,) int64 tensor
        Problem ``image * len(dims) + position of the dimension``, non-decreasing.
    birth_index, death_index : (K,) int64 tensor
        Flat index of the critical pixels in the (padded) images.
    values : (2, K) float tensor
        Birth and death values, gathered from the images in one ``take`` (differentiable
        when the images are).
    count : (Q,) int64 tensor
        Pairs of each problem.
    """

    problem: torch.Tensor
    birth_index: torch.Tensor
    death_index: torch.Tensor
    values: torch.Tensor
    count: torch.Tensor


def pair_table(images: torch.Tensor, dims: tuple[int, ...], construction: str,
               backend: str) -> PairTable:
    """Pairs of the sublevel filtrations of (P, H, W) ``images``, one persistence call."""
    from .persistence import cubical_persistence

    n_images, height, width = (int(s) for s in images.shape)
    detached = images.detach()
    host = detached.numpy() if detached.device.type == "cpu" else detached
    diagrams = cubical_persistence(host, construction=construction, dims=dims, backend=backend)
    device = images.device
    image, dim, birth_pixel, death_pixel = (torch.as_tensor(a, device=device) for a in (
        diagrams.image, diagrams.dim, diagrams.birth_pixel, diagrams.death_pixel))
    flat = images.reshape(n_images, height * width)
    last = essential_death_index(flat.detach()).to(device)
    birth_index = birth_pixel[:, 0] * width + birth_pixel[:, 1]
    death_index = torch.where(death_pixel[:, 0] < 0, last[image],
                              death_pixel[:, 0] * width + death_pixel[:, 1])
    offset = image * (height * width)
    values = flat.reshape(-1).take(torch.stack([birth_index + offset, death_index + offset]))
    keep = values[0].detach() != values[1].detach()
    position = torch.zeros(2, dtype=torch.int64, device=device)
    position[list(dims)] = torch.arange(len(dims), device=device)
    problem = (image * len(dims) + position[dim])[keep]
    count = torch.bincount(problem, minlength=n_images * len(dims))
    return PairTable(problem, birth_index[keep], death_index[keep], values[:, keep], count)


# ----------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Padded:
    """Detached padded points of one side: values (2, Q, N), pixels (Q, N, 2), source (Q, N)."""

    birth: torch.Tensor
    death: torch.Tensor
    pixel: torch.Tensor
    source: torch.Tensor
    size: torch.Tensor


def _padded(table: PairTable, n_problems: int, width: int) -> _Padded:
    """Scatter a table (grouped by problem) into padded rows, without gradients."""
    device = table.problem.device
    start = torch.cumsum(table.count, 0) - table.count
    slot = torch.arange(table.problem.shape[0], device=device) - start[table.problem]
    big = max(1, int(table.count.max()) if n_problems else 1)
    values = table.values.detach()
    birth = values.new_zeros((n_problems, big))
    death = values.new_zeros((n_problems, big))
    pixel = torch.zeros((n_problems, big, 2), dtype=torch.int64, device=device)
    source = torch.full((n_problems, big), -1, dtype=torch.int64, device=device)
    birth[table.problem, slot] = values[0]
    death[table.problem, slot] = values[1]
    pixel[table.problem, slot, 0] = table.birth_index // width
    pixel[table.problem, slot, 1] = table.birth_index % width
    source[table.problem, slot] = torch.arange(table.problem.shape[0], device=device)
    return _Padded(birth, death, pixel, source, table.count)


def match_tables(pred: PairTable, target: PairTable, n_problems: int, width: int,
                 image_shape: tuple[int, int], spatial: bool,
                 spatial_clamp: tuple[float, float], solver: str) -> tuple[torch.Tensor, _Padded]:
    """Exact matchings of every problem: (Q, M) pair index of the prediction matched with
    each target point (-1: diagonal), and the target's padded points."""
    from ._reduced_matching import reduced_match_points, reduced_match_torch

    p = _padded(pred, n_problems, width)
    t = _padded(target, n_problems, width)
    on_host = solver == "cpu" or (solver == "auto" and p.birth.device.type == "cpu")
    if on_host:
        arrays = [x.cpu().numpy() for x in (p.birth, p.death, p.pixel, t.birth, t.death,
                                            t.pixel, p.size, t.size)]
        result = reduced_match_points(*arrays, image_shape, spatial, spatial_clamp)
        partner = torch.as_tensor(result.pred_of_target, device=p.birth.device)
    else:
        result = reduced_match_torch(p.birth, p.death, p.pixel, t.birth, t.death, t.pixel,
                                     p.size, t.size, image_shape, spatial, spatial_clamp,
                                     solver="emd" if solver == "emd" else "cuda")
        partner = result.pred_of_target
    matched = partner >= 0
    pair = torch.gather(p.source, 1, torch.where(matched, partner, torch.zeros_like(partner)))
    return torch.where(matched, pair, torch.full_like(pair, -1)), t


# ----------------------------------------------------------------------------- the loss


def problem_losses(pred: PairTable, target_points: _Padded, partner: torch.Tensor,
                   width: int, image_shape: tuple[int, int], spatial: bool,
                   spatial_clamp: tuple[float, float]) -> torch.Tensor:
    """(Q,) loss of every problem from the fixed matching, differentiable in the prediction.

    ``partner`` (Q, M) holds the prediction pair index matched with each target point (-1 for
    the diagonal); unmatched prediction points pay their diagonal cost.
    """
    from .costs import pair_costs

    values = pred.values
    diagonal = (values[1] - values[0]).abs() / SQRT2
    matched = partner >= 0
    safe = torch.where(matched, partner, torch.zeros_like(partner))
    taken = torch.zeros(values.shape[1] + 1, dtype=torch.bool, device=values.device)
    taken[torch.where(matched, partner, torch.full_like(partner, values.shape[1]))] = True
    free = torch.where(taken[:-1], torch.zeros_like(diagonal), diagonal)
    n_problems = partner.shape[0]
    loss = free.new_zeros(n_problems).index_add(0, pred.problem, free)
    if values.shape[1]:
        birth, death = values[0][safe], values[1][safe]
        index = pred.birth_index[safe]
        pixel = torch.stack([index // width, index % width], dim=-1)
        tb = target_points.birth.to(values.dtype)
        td = target_points.death.to(values.dtype)
        cost = pair_costs(birth, death, pixel, tb, td, target_points.pixel, image_shape, spatial,
                          spatial_clamp)
    else:
        cost = free.new_zeros(partner.shape)
    target_valid = (torch.arange(partner.shape[1], device=partner.device)[None, :]
                    < target_points.size[:, None])
    target_diagonal = (target_points.death - target_points.birth).abs().to(values.dtype) / SQRT2
    zero = free.new_zeros(())
    per_target = torch.where(matched, cost, torch.where(target_valid, target_diagonal, zero))
    return loss + per_target.sum(1)


# ----------------------------------------------------------------------------- memory


def estimate_bytes(batch: int, channels: int, height: int, width: int, itemsize: int,
                   pad: bool) -> int:
    """Upper estimate of the peak host memory of one loss call on the CPU (bytes)."""
    pixels = batch * channels * (height + 2 * pad) * (width + 2 * pad)
    # Images, their gradient and the persistence working arrays: about 48 bytes a pixel
    # measured; the pair tables hold at most one pair per pixel and side, ~100 bytes a pair.
    return pixels * (4 * itemsize + 48) + 2 * pixels * 100
