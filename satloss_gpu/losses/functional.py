"""Batched topological losses for segmentation: SATLoss and the Wasserstein topological loss.

The inputs are first brought to probabilities and binary targets of one shape
(:mod:`satloss_gpu.losses._inputs`: logits, softmax, label maps, masks), in float32 or float64
with autocast off. The pipeline, for a batch of predictions ``p`` (probabilities) and binary
targets ``t``:

1. pad both with a one-pixel frame of 1 (foreground) and invert, ``x = 1 - p``, ``y = 1 - t``;
2. persistence of the sublevel filtrations of ``x`` and ``y`` (T-construction by default),
   all images and channels in one :func:`~satloss_gpu.cubical_persistence` call per side;
3. per image, channel and homology dimension, a matching problem solved exactly by the
   reduction of :mod:`satloss_gpu.matching._reduced`: each target point keeps only its
   ``min(m, #negative reduced costs)`` cheapest prediction points, cost entries are computed
   for candidate pairs only (one compiled pass on the CPU, chunked top-k on a GPU), so no
   ``n x m`` cost matrix is built (the approximate Sinkhorn path of
   :mod:`satloss_gpu.matching.sinkhorn` still builds it);
4. the loss recomputed in torch from the fixed matchings: the prediction's values are
   gathered once at the critical pixels, so gradients reach ``p`` through them only.

Threads: the compiled matching passes run in a pool of waiting Python threads
(:mod:`satloss_gpu._threads`), never in spinning OpenMP regions; their number is Numba's
(``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Hashable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import (check_channel_weights, check_memory_for_images,
                           check_memory_for_lists, check_pred_target)
from ._graph import outside_compiled_graph
from ._inputs import needs_preparation, prepare_inputs
from ._cache import TargetCache, as_target_cache, cached_per_sample
from ._options import LossOptions, check_keywords
from .costs import PaddedDiagrams, cost_matrices, diagonal_costs, pack_pairs, pair_costs
from ..persistence import cubical_persistence

__all__ = ["sat_loss", "topo_loss", "sat_matching", "DiagramMatching", "LossOptions"]

#: Sample ids of a batch: hashable ids, or a 1-D integer tensor of indices.
SampleIds = Union[Sequence[Hashable], torch.Tensor, np.ndarray]


# ----------------------------------------------------------------------------- public API

@outside_compiled_graph
def sat_loss(
    pred: torch.Tensor,
    target: Any,
    *,
    mask: Optional[Any] = None,
    sigmoid: bool = False,
    softmax: bool = False,
    num_classes: Optional[int] = None,
    include_background: bool = True,
    dims: Optional[Sequence[int]] = None,
    spatial: bool = True,
    pad: bool = True,
    construction: str = "T",
    spatial_clamp: tuple[float, float] = (0.05, 1.0),
    solver: str = "auto",
    reduction: str = "mean",
    channel_weights: Optional[Any] = None,
    backend: str = "auto",
    keys: Optional[SampleIds] = None,
    cache: Optional[Union[TargetCache, dict]] = None,
    solver_options: Optional[dict] = None,
    target_tiebreak: str = "index",
) -> torch.Tensor:
    """Spatial-Aware Topological Loss (SATLoss) of a batch of predictions.

    Parameters
    ----------
    pred : torch.Tensor, shape (B, C, H, W), (B, H, W) or (B, C, D, H, W), float
        Predicted probabilities in [0, 1], or logits with ``sigmoid=True`` or
        ``softmax=True``. A 5-D tensor is a batch of volumes (3D: voxels, components,
        tunnels and voids); 4-D and 3-D tensors are images. Any device; half precision
        (float16, bfloat16, e.g. from ``torch.autocast``) is computed in float32.
    target : torch.Tensor or array_like
        Binary ground truth (0/1 or bool, 1 is foreground) of the shape of ``pred`` (one-hot
        for several classes), or with ``num_classes`` an integer label map (B, H, W) or
        (B, 1, H, W) ((B, D, H, W) or (B, 1, D, H, W) for volumes). Converted to the dtype
        and device of ``pred``; never differentiated.
    mask : torch.Tensor or array_like, optional
        Shape (B, H, W), (B, 1, H, W) or (B, C, H, W); for volumes (B, D, H, W),
        (B, 1, D, H, W) or (B, C, D, H, W). Region of interest (e.g. a retina's field of
        view, a scanned region), bool or 0/1. Outside it every
        channel of the prediction and of the target is set to 0 (background) before the
        persistence, so nothing there creates a feature or gets a gradient: the loss is that
        of ``p * mask`` and ``t * mask``.
    sigmoid : bool, default False
        ``pred`` holds logits: ``torch.sigmoid`` is applied first (values and gradients are
        those of the explicit composition).
    softmax : bool, default False
        ``pred`` holds logits of C >= 2 classes: ``torch.softmax`` over the channels first.
        Exclusive with ``sigmoid``.
    num_classes : int, optional
        ``target`` is an integer label map with values in ``[0, num_classes)``, one-hot
        encoded to ``num_classes`` channels; ``pred`` must have that many channels. The
        topology is computed per class: each channel against its own binary mask.
    include_background : bool, default True
        False drops channel 0 of prediction and target after the activation and the one-hot
        encoding (MONAI's convention); needs C >= 2.
    dims : sequence of int, optional
        Homology dimensions: 0 (connected components), 1 (loops; tunnels in volumes), 2
        (voids, volumes only). Default: all of them, (0, 1) for images and (0, 1, 2) for
        volumes.
    spatial : bool, default True
        Weight the matching cost of two points by the clamped distance of their birth
        pixels (voxels); False gives the Wasserstein topological loss (see
        :func:`topo_loss`).
    pad : bool, default True
        Add a one-pixel (one-voxel) foreground frame around prediction and target first (on
        the four sides of an image, the six faces of a volume).
    construction : {"T", "V"}, default "T"
        Cubical construction of the persistence (see :func:`~satloss_gpu.cubical_persistence`).
    spatial_clamp : (float, float), default (0.05, 1.0)
        Bounds ``(low, high)`` of the spatial factor, ``0 <= low <= high``.
    solver : {"auto", "emd", "cpu", "cuda", "sinkhorn"}, default "auto"
        Matching solver. "emd", "cpu" and "cuda" are exact: each solves the exact reduction
        of the problem (POT, the compiled CPU path, the CUDA kernel after a device top-k);
        "auto" is the compiled CPU path for host tensors and the CUDA path for CUDA tensors.
        "sinkhorn" is approximate: POT's batched log-domain Sinkhorn on the
        device followed by rounding to a valid matching (see
        :mod:`satloss_gpu.matching.sinkhorn` for its accuracy).
    reduction : {"mean", "sum", "none"}, default "mean"
        Over the images of the batch; "none" returns one value per image.
    channel_weights : array_like or torch.Tensor, shape (C',), optional
        Finite, non-negative weight of each channel the loss is computed on (C' = C, or
        C - 1 with ``include_background=False``). An image's loss is the weighted mean
        ``mean_c(w_c * loss_c)``, MONAI's convention (as in ``monai.losses.DiceLoss``'s
        ``weight``): unit weights give the default, the plain mean over channels. (Until
        0.1.0 the weighted channels were summed, ``sum_c(w_c * loss_c)``; weights ``w`` of
        that meaning are ``C' * w`` now.) A tensor that requires grad gets gradients.
    backend : {"auto", "cpu", "cuda", "gudhi"}, default "auto"
        Persistence backend.
    keys : sequence of hashable, or integer tensor of shape (B,), optional
        Sample ids, one per image (ints, strings, tuples; or the 1-D integer tensor of
        indices a DataLoader collates); floats and bools are refused. With ``cache``, the
        target diagrams of a sample are computed once and reused while its (masked) target
        stays the same: each entry is checked against a fingerprint of the target, so a
        changed target (a random crop, another mask) is computed again, and two images
        with one id each get their own target's diagram.
    cache : TargetCache or dict, optional
        Store of target diagrams, used only with ``keys``: a
        :class:`~satloss_gpu.losses.TargetCache` (least recently used entries forgotten
        beyond its ``max_entries``), or a plain dict used as the storage of one with the
        default bound.
    solver_options : dict, optional
        Keyword arguments of the "sinkhorn" solver (``reg``, ``max_iter``, ``tol``).
    target_tiebreak : {"index", "prediction"}, default "index"
        How the target's critical pixels are chosen among its ties; every value of a binary
        target is a tie. "index" takes the last pixel in index order (as for any image; the
        reference is as arbitrary, through gudhi's order), so a target feature's birth pixel
        can lie far from where the prediction would create it. "prediction" orders the
        target's filtration by (target, prediction): a target loop is born at the
        prediction's weakest pixel of that loop (e.g. the gap in a broken line), a target
        component at the prediction's strongest pixel of it. Diagram values are unchanged;
        the target cache (``keys``, ``cache``) is not used, since the pixels depend on the
        prediction.

    Returns
    -------
    torch.Tensor
        Scalar for "mean" and "sum", shape (B,) for "none"; dtype of the computation
        (float32 or float64), on the device of ``pred``.

    Raises
    ------
    TypeError
        ``pred`` not a floating-point tensor; ``keys`` not a sequence of hashable ids (or
        an integer tensor); ``cache`` neither a TargetCache nor a dict.
    ValueError
        Wrong ranks or shapes, ``pred`` outside [0, 1], NaN or inf, non-binary ``target``,
        invalid options.

    Notes
    -----
    Per image and dimension, with ``n`` prediction points and ``m`` target points, the cost
    is that of the exact optimal transport between the two diagrams with the diagonal as
    an extra point of mass ``m`` (resp. ``n``): matching ``(b1, d1)`` born at pixel
    ``(r1, c1)`` with ``(b2, d2)`` born at ``(r2, c2)`` costs
    ``clamp(||((r1-r2)/H, (c1-c2)/W)||, *spatial_clamp) * ||(b1-b2, d1-d2)||``; sending a
    point to the diagonal costs ``|d - b| / sqrt(2)``. In a volume the birth voxels
    ``(z, r, c)`` give ``||((z1-z2)/D, (r1-r2)/H, (c1-c2)/W)||`` (D, H, W: the unpadded
    size). The essential class of dimension 0 dies at the last pixel (voxel) of the
    filtration (the largest value of the padded image, ties to the largest C-order index),
    and pairs of zero persistence are dropped (also that class, when the image is
    constant). The loss of an image is the sum over dimensions, averaged (or weighted)
    over channels.

    The gradient is that of the loss with the matching held fixed: it flows only through
    the prediction's values at its critical pixels. At a prediction point equal to the
    target point it is matched with, the (non-differentiable) distance gets the
    subgradient 0.

    Host synchronisation: a few scalars (validation, the padded sizes) and whatever the
    solver needs; the CPU path copies the diagrams' points to the host.

    Memory: no ``n x m`` cost matrix is built (except by "sinkhorn"); on the CPU the call
    raises ``MemoryError`` before allocating when its estimate exceeds the available memory.

    Under ``torch.compile`` the loss runs eagerly (``torch.compiler.disable``): a compiled
    step has a graph break around it. Autocast is switched off inside the loss.

    Examples
    --------
    >>> import torch
    >>> from satloss_gpu.functional import sat_loss
    >>> target = torch.zeros(1, 1, 8, 8)
    >>> target[..., 2:6, 2:6] = 1.0
    >>> target[..., 3:5, 3:5] = 0.0
    >>> pred = (0.2 + 0.6 * target).requires_grad_()
    >>> loss = sat_loss(pred, target, backend="gudhi", solver="emd")
    >>> loss.backward()
    >>> round(loss.item(), 4), pred.grad.abs().sum().item() > 0
    (0.0483, True)

    A 5-D input is a batch of volumes: here a hollow cube, with one component and one void
    (dimension 2) on both sides.

    >>> cube = torch.zeros(1, 1, 5, 5, 5)
    >>> cube[..., 1:4, 1:4, 1:4] = 1.0
    >>> cube[..., 2, 2, 2] = 0.0
    >>> pred = 0.2 + 0.6 * cube
    >>> round(sat_loss(pred, cube).item(), 4), round(sat_loss(pred, cube, dims=(2,)).item(), 4)
    (0.0483, 0.0241)
    """
    options = LossOptions(dims=dims, spatial=spatial, pad=pad, construction=construction,
                          spatial_clamp=spatial_clamp, solver=solver, reduction=reduction,
                          backend=backend, solver_options=solver_options, sigmoid=sigmoid,
                          softmax=softmax, num_classes=num_classes,
                          include_background=include_background,
                          target_tiebreak=target_tiebreak)
    return loss_with_options(pred, target, options, channel_weights, keys, cache, mask)


@outside_compiled_graph
def loss_with_options(
    pred: torch.Tensor,
    target: Any,
    options: LossOptions,
    channel_weights: Optional[Any] = None,
    keys: Optional[SampleIds] = None,
    cache: Optional[Union[TargetCache, dict]] = None,
    mask: Optional[Any] = None,
) -> torch.Tensor:
    """:func:`sat_loss` with its settings given as one validated :class:`LossOptions`.

    Shape: ``pred`` (B, C, H, W), (B, H, W) or (B, C, D, H, W), ``target`` of that shape or
    a label map, ``mask`` (B, H, W), (B, 1, H, W) or (B, C, H, W) (for volumes the same with
    (D, H, W)); output scalar, or (B,) for ``options.reduction == "none"``.
    """
    with _autocast_off(pred):
        if needs_preparation(options, mask):
            pred, target = prepare_inputs(pred, target, options, mask)
        return _loss_of_probabilities(pred, target, options, channel_weights, keys, cache)


def _autocast_off(pred: Any) -> torch.autocast:
    """A context in which autocast is off for the device of ``pred`` (inputs in float32).

    Any tensor not on a CUDA device counts as a CPU one here; the input checks refuse the
    devices the loss does not run on (``meta``, ``mps``...) with a clear message.
    """
    on_cuda = isinstance(pred, torch.Tensor) and pred.is_cuda
    return torch.autocast(device_type="cuda" if on_cuda else "cpu", enabled=False)


def _loss_of_probabilities(pred: Any, target: Any, options: LossOptions,
                           channel_weights: Optional[Any], keys: Optional[SampleIds],
                           cache: Optional[Union[TargetCache, dict]]) -> torch.Tensor:
    """The loss of probabilities and binary targets of one shape (the pipeline)."""
    state = _build(pred, target, options, keys, cache)
    weights = check_channel_weights(channel_weights, state.channels, state.pred_padded)
    assignment = _solve(state, options)
    per_problem = _loss_from_assignment(state, assignment)
    per_channel = per_problem.reshape(state.batch, state.channels, len(state.dims)).sum(-1)
    per_image = (per_channel if weights is None else per_channel * weights).mean(-1)
    if options.reduction == "mean":
        return per_image.mean()
    if options.reduction == "sum":
        return per_image.sum()
    return per_image


def topo_loss(pred: torch.Tensor, target: Any, **kwargs: Any) -> torch.Tensor:
    """Wasserstein topological loss (WTLoss): :func:`sat_loss` with ``spatial=False``.

    The matching cost of two diagram points is their Euclidean distance, with no spatial
    factor. Takes every keyword of :func:`sat_loss` except ``spatial`` and
    ``spatial_clamp``.

    Shape: ``pred`` and ``target`` (B, C, H, W), (B, H, W) or (B, C, D, H, W); output
    scalar or (B,).
    """
    check_keywords("topo_loss", kwargs, _TOPO_LOSS_KEYWORDS)
    return sat_loss(pred, target, spatial=False, **kwargs)


#: The keywords of :func:`topo_loss`: those of :func:`sat_loss` but the spatial ones.
_TOPO_LOSS_KEYWORDS = tuple(name for name in inspect.signature(sat_loss).parameters
                            if name not in ("pred", "target", "spatial", "spatial_clamp"))


@dataclass(frozen=True)
class DiagramMatching:
    """The optimal matching of one image, channel and homology dimension, on the host.

    Pixel coordinates are (row, col) in the unpadded image, (z, row, col) in the unpadded
    volume: with ``pad=True`` a critical pixel on the frame has a coordinate -1 or the size
    of its axis.

    Attributes
    ----------
    image, channel, dim : int
        Where the problem comes from.
    pred_birth, pred_death : (n,) float64 ndarray
        The prediction's diagram (of ``x = 1 - p``, sublevel).
    pred_birth_pixel, pred_death_pixel : (n, 2) int64 ndarray
        Its critical pixels ((n, 3) critical voxels for volumes).
    target_birth, target_death : (m,) float64 ndarray
    target_birth_pixel, target_death_pixel : (m, 2) or (m, 3) int64 ndarray
        The target's diagram (of ``y = 1 - t``) and critical pixels.
    matches : (k, 2) int64 ndarray
        Pairs (prediction index, target index) matched with each other.
    match_cost : (k,) float64 ndarray
        Cost of each matched pair.
    pred_to_diagonal, target_to_diagonal : int64 ndarray
        Indices of the points sent to the diagonal.
    cost : float
        Total cost of the problem (its contribution to the loss before channel weighting).
    """

    image: int
    channel: int
    dim: int
    pred_birth: np.ndarray
    pred_death: np.ndarray
    pred_birth_pixel: np.ndarray
    pred_death_pixel: np.ndarray
    target_birth: np.ndarray
    target_death: np.ndarray
    target_birth_pixel: np.ndarray
    target_death_pixel: np.ndarray
    matches: np.ndarray
    match_cost: np.ndarray
    pred_to_diagonal: np.ndarray
    target_to_diagonal: np.ndarray
    cost: float


def sat_matching(pred: torch.Tensor, target: Any, *, mask: Optional[Any] = None,
                 **settings: Any) -> list[DiagramMatching]:
    """The matchings behind :func:`sat_loss`, for inspection and figures.

    Parameters
    ----------
    pred, target, mask : torch.Tensor
        As in :func:`sat_loss`.
    **settings
        The settings of :func:`sat_loss` (the fields of :class:`LossOptions`: ``dims``,
        ``spatial``, ``pad``, ``construction``, ``spatial_clamp``, ``solver``, ``backend``,
        ``solver_options``, ``sigmoid``, ``softmax``, ``num_classes``,
        ``include_background``).

    Returns
    -------
    list of DiagramMatching
        One per image, channel and dimension, in that (C) order.
    """
    return matching_with_options(pred, target, LossOptions.of("sat_matching", settings), mask)


def matching_with_options(pred: torch.Tensor, target: Any, options: LossOptions,
                          mask: Optional[Any] = None) -> list[DiagramMatching]:
    """:func:`sat_matching` with its settings given as one validated :class:`LossOptions`."""
    with torch.no_grad(), _autocast_off(pred):
        if needs_preparation(options, mask):
            pred, target = prepare_inputs(pred, target, options, mask)
        state = _build(pred, target, options, None, None)
        assignment = _solve(state, options)
        per_problem = _loss_from_assignment(state, assignment)
    return _matchings_to_host(state, assignment, per_problem)


# ----------------------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class _PairTable:
    """Flat table of persistence pairs of a batch of P images (on the device)."""

    image: torch.Tensor        # (K,) int64
    dim: torch.Tensor          # (K,) int64
    birth: torch.Tensor        # (K,) float, differentiable for the prediction
    death: torch.Tensor
    birth_index: torch.Tensor  # (K,) int64 flat index in the (padded) image or volume
    death_index: torch.Tensor

    def select(self, mask: torch.Tensor, image_offset: int = 0) -> "_PairTable":
        return _PairTable(self.image[mask] + image_offset, self.dim[mask], self.birth[mask],
                          self.death[mask], self.birth_index[mask], self.death_index[mask])

    def shifted(self, image_offset: int) -> "_PairTable":
        return _PairTable(self.image + image_offset, self.dim, self.birth, self.death,
                          self.birth_index, self.death_index)


def _concat(tables: Sequence[_PairTable]) -> _PairTable:
    return _PairTable(*(torch.cat([getattr(t, f) for t in tables]) for f in
                        ("image", "dim", "birth", "death", "birth_index", "death_index")))


def _diagram_table(images: torch.Tensor, dims: tuple[int, ...], construction: str,
                   backend: str, order: Optional[torch.Tensor] = None) -> _PairTable:
    """Pairs of the sublevel filtrations of (P, H, W) ``images`` or (P, D, H, W) volumes,
    one persistence call.

    The birth and death values are gathered from ``images`` in one differentiable ``take``
    (the only place gradients enter). The essential class dies at the last pixel (voxel) of
    the order (returned by the persistence backend); zero-persistence pairs are dropped.
    ``order`` (shape of ``images``), optional, is a refinement of the order of ``images``
    (equal where ``images`` differ, finer among its ties) whose persistence is computed
    instead: the same diagram values, with the critical pixels chosen by ``order``.
    """
    n_images, *shape = (int(s) for s in images.shape)
    detached = (images if order is None else order).detach()
    on_host = detached.device.type == "cpu"
    diagrams = cubical_persistence(detached.numpy() if on_host else detached,
                                   spatial_dims=len(shape), construction=construction,
                                   dims=dims, backend=backend)
    device = images.device
    image, dim, birth_pixel, death_pixel = (torch.as_tensor(a, device=device) for a in (
        diagrams.image, diagrams.dim, diagrams.birth_pixel, diagrams.death_pixel))
    last = _ravel(torch.as_tensor(diagrams.last_pixel, device=device), shape)
    birth_index = _ravel(birth_pixel, shape)
    death_index = torch.where(death_pixel[:, 0] < 0, last[image], _ravel(death_pixel, shape))
    offset = image * math.prod(shape)
    values = images.reshape(-1).take(torch.stack([birth_index + offset, death_index + offset]))
    keep = values[0].detach() != values[1].detach()
    values = values[:, keep]
    return _PairTable(image[keep], dim[keep], values[0], values[1], birth_index[keep],
                      death_index[keep])


def _ravel(pixels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(K,) C-order flat indices of (K, ndim) int64 coordinates in an image of ``shape``
    (coordinates -1, the essential class's death, give negative indices)."""
    flat = pixels[:, 0].clone()
    for axis in range(1, len(shape)):
        flat = flat * shape[axis] + pixels[:, axis]
    return flat


def _unravel(index: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(..., ndim) int64 coordinates of the C-order flat indices ``index`` in ``shape``."""
    coordinates = []
    for size in reversed(shape[1:]):
        coordinates.append(index % size)
        index = index // size
    coordinates.append(index)
    return torch.stack(coordinates[::-1], dim=-1)


def _target_table(images: torch.Tensor, channels: int, dims: tuple[int, ...], construction: str,
                  backend: str, keys: Optional[list], cache: Optional[TargetCache],
                  settings: tuple) -> _PairTable:
    """The target's pairs, from ``cache`` where it holds a sample's key and target, computed
    (in one batched call for the rest) otherwise."""
    if keys is None or cache is None:
        return _diagram_table(images, dims, construction, backend)
    per_sample = images.reshape(len(keys), channels, *images.shape[1:])

    def compute(missing: list[int]) -> list[_PairTable]:
        fresh = _diagram_table(per_sample[missing].reshape(-1, *images.shape[1:]), dims,
                               construction, backend)
        sample_of = fresh.image // channels
        return [fresh.select(sample_of == i, image_offset=-i * channels)
                for i in range(len(missing))]

    tables = cached_per_sample(cache, [(key, settings) for key in keys], per_sample, compute)
    return _concat([table.shifted(b * channels) for b, table in enumerate(tables)])


@dataclass(frozen=True)
class _ProblemBatch:
    """Everything the solver and the loss need, for Q = B * C * len(dims) problems."""

    batch: int
    channels: int
    dims: tuple[int, ...]
    pad: bool
    image_shape: tuple[int, ...]     # unpadded (H, W), or (D, H, W) for volumes
    padded_shape: tuple[int, ...]    # shape of the images the pixel indices refer to
    spatial: bool
    spatial_clamp: tuple[float, float]
    pred_table: _PairTable           # the prediction's pairs, values differentiable
    problem: torch.Tensor            # (K,) problem of each prediction pair
    pred: PaddedDiagrams             # detached padded points of both sides
    target: PaddedDiagrams
    pred_padded: torch.Tensor        # the (B*C, H', W') or (B*C, D', H', W') prediction x


def _pad_invert(images: torch.Tensor, pad: bool) -> torch.Tensor:
    """``1 - images`` with an optional frame of 1 added first around the spatial axes of
    (B, C, H, W) images or (B, C, D, H, W) volumes (four sides, or six faces)."""
    if pad:
        images = F.pad(images, (1, 1) * (images.ndim - 2), mode="constant", value=1.0)
    return 1.0 - images


def _by_prediction(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The target ``y`` (values 0 and 1) with its ties ordered by the prediction ``x``.

    ``y + x / 2`` for ``x`` in [0, 1]: every pixel of value 0 stays below every pixel of
    value 1, and within each value the prediction's order decides (then the index).
    """
    return y.detach() + 0.5 * x.detach()


def _problem_of(table: _PairTable, dims: tuple[int, ...]) -> torch.Tensor:
    """(K,) problem ``image * len(dims) + position of the dimension`` of every pair."""
    position = torch.zeros(3, dtype=torch.int64, device=table.image.device)
    position[list(dims)] = torch.arange(len(dims), device=table.image.device)
    return table.image * len(dims) + position[table.dim]


def _pack(table: _PairTable, n_channels_images: int, dims: tuple[int, ...],
          shape: tuple[int, ...]) -> PaddedDiagrams:
    """Pack a pair table, detached, into padded problems (for the solvers and inspection);
    pixels as coordinates in images (volumes) of ``shape``."""
    return pack_pairs(_problem_of(table, dims), n_channels_images * len(dims),
                      table.birth.detach(), table.death.detach(),
                      _unravel(table.birth_index, shape), _unravel(table.death_index, shape))


def _sample_ids(keys: Any, batch: int) -> Optional[list]:
    """``keys`` as a list of B hashable sample ids (None stays None).

    Accepted: a sequence of hashable ids (ints, strings, tuples...), or a 1-D integer tensor
    or array (the indices a DataLoader collates). Floats and bools are refused: ``1.0``,
    ``True`` and ``1`` would name one sample.
    """
    if keys is None:
        return None
    if isinstance(keys, (torch.Tensor, np.ndarray)):
        return _ids_of_array(keys, batch)
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise TypeError(f"`keys` must be a sequence of sample ids or a 1-D integer tensor; got "
                        f"{type(keys).__name__}")
    if len(keys) != batch:
        raise ValueError(f"`keys` must hold one id per image ({batch}); got {len(keys)}")
    return [_sample_id(key) for key in keys]


def _ids_of_array(keys: Any, batch: int) -> list[int]:
    """The ids of a 1-D integer tensor or NumPy array of length B."""
    is_integer = (not keys.dtype.is_floating_point and not keys.dtype.is_complex
                  and keys.dtype != torch.bool) if isinstance(keys, torch.Tensor) else (
        keys.dtype.kind in "iu")
    if not is_integer:
        raise TypeError(f"`keys` given as an array must hold integer sample ids; got dtype "
                        f"{keys.dtype}")
    if tuple(keys.shape) != (batch,):
        raise ValueError(f"`keys` must hold one id per image, shape ({batch},); got shape "
                         f"{tuple(keys.shape)}")
    return [int(key) for key in keys.tolist()]


def _sample_id(key: Any) -> Hashable:
    """One sample id: hashable, not a float or a bool; integer scalars become ints."""
    if isinstance(key, (torch.Tensor, np.ndarray, np.generic)) and np.ndim(key) == 0:
        if isinstance(key, torch.Tensor):
            key = _ids_of_array(key.reshape(1), 1)[0]
        elif np.asarray(key).dtype.kind in "iu":
            key = int(key)
    if isinstance(key, (bool, float, np.bool_, np.floating, complex)):
        raise TypeError(f"`keys` must hold sample ids that are not floats or bools (1.0, True "
                        f"and 1 would name one sample); got {type(key).__name__} {key!r}")
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"`keys` must hold hashable sample ids (int, str, tuple...); got "
                        f"{type(key).__name__} {key!r}") from None
    return key


def _build(pred: Any, target: Any, options: LossOptions, keys: Any, cache: Any) -> _ProblemBatch:
    """Validate the inputs and compute both sides' diagrams (no cost matrix)."""
    pad, construction, backend = options.pad, options.construction, options.backend
    pred, target = check_pred_target(pred, target)
    batch, channels, *shape = (int(s) for s in pred.shape)
    dims = options.dims_for(len(shape))
    keys = _sample_ids(keys, batch)
    cache = as_target_cache(cache)
    check_memory_for_images(pred)
    padded_shape = tuple(size + 2 * pad for size in shape)
    x = _pad_invert(pred, pad).reshape(batch * channels, *padded_shape)
    y = _pad_invert(target, pad).reshape(x.shape)
    if options.target_tiebreak == "prediction":
        target_table = _diagram_table(y, dims, construction, backend, _by_prediction(y, x))
    else:
        settings = (construction, pad, dims, tuple(shape), str(x.dtype), str(x.device))
        target_table = _target_table(y, channels, dims, construction, backend, keys, cache,
                                     settings)
    pred_table = _diagram_table(x, dims, construction, backend)
    return _ProblemBatch(
        batch=batch, channels=channels, dims=dims, pad=pad, image_shape=tuple(shape),
        padded_shape=padded_shape, spatial=options.spatial, spatial_clamp=options.spatial_clamp,
        pred_table=pred_table, problem=_problem_of(pred_table, dims),
        pred=_pack(pred_table, batch * channels, dims, padded_shape),
        target=_pack(target_table, batch * channels, dims, padded_shape), pred_padded=x,
    )


def _solve(state: _ProblemBatch, options: LossOptions) -> torch.Tensor:
    """(Q, M) int64: the prediction slot matched with each target point (-1: diagonal).

    The exact solvers all solve the exact reduction (:mod:`satloss_gpu.matching._reduced`):
    ``"auto"`` runs the compiled CPU path for host tensors and the device top-k with the CUDA
    kernel for CUDA tensors; ``"cpu"`` always the compiled path, ``"cuda"`` always the
    kernel, ``"emd"`` POT on the reduced problems. ``"sinkhorn"`` needs the dense costs.
    """
    pred, target = state.pred, state.target
    n, m = pred.size, target.size
    if options.solver == "sinkhorn":
        from ..matching._reduced import target_to_pred
        from ..matching.sinkhorn import sinkhorn_match_batch

        cost = cost_matrices(pred, target, state.image_shape, state.spatial,
                             state.spatial_clamp)
        result = sinkhorn_match_batch(cost, diagonal_costs(pred), diagonal_costs(target), n, m,
                                      **options.solver_options)
        assignment = torch.as_tensor(result.assignment, device=pred.birth.device).long()
        return target_to_pred(assignment, target.width)
    check_memory_for_lists(n, m, pred.width, target.width)
    on_host = options.solver == "cpu" or (options.solver == "auto"
                                          and pred.birth.device.type == "cpu")
    if on_host:
        from ..matching._reduced import reduced_match_points

        arrays = [a.cpu().numpy() for a in (pred.birth, pred.death, pred.birth_pixel,
                                            target.birth, target.death, target.birth_pixel,
                                            n, m)]
        result = reduced_match_points(*arrays, state.image_shape, state.spatial,
                                      state.spatial_clamp)
        return torch.as_tensor(result.pred_of_target, device=pred.birth.device)
    from ..matching._reduced import reduced_match_torch

    def pair_cost(index: torch.Tensor) -> torch.Tensor:
        axes = pred.birth_pixel.shape[2]
        pixel = torch.gather(pred.birth_pixel, 1, index[:, :, None].expand(-1, -1, axes))
        dtype = torch.float64
        return pair_costs(pred.birth.to(dtype).gather(1, index)[:, :, None],
                          pred.death.to(dtype).gather(1, index)[:, :, None],
                          pixel[:, :, None, :], target.birth.to(dtype)[:, None, :],
                          target.death.to(dtype)[:, None, :], target.birth_pixel[:, None, :, :],
                          state.image_shape, state.spatial, state.spatial_clamp)

    result = reduced_match_torch(pair_cost, diagonal_costs(pred), diagonal_costs(target), n, m,
                                 solver="emd" if options.solver == "emd" else "cuda")
    return result.pred_of_target


def _matched_costs(state: _ProblemBatch, birth: torch.Tensor, death: torch.Tensor,
                   pixel: torch.Tensor) -> torch.Tensor:
    """(Q, M) cost of each target point with the prediction point given per target point."""
    target = state.target
    return pair_costs(birth, death, pixel, target.birth.to(birth.dtype),
                      target.death.to(birth.dtype), target.birth_pixel, state.image_shape,
                      state.spatial, state.spatial_clamp)


def _loss_from_assignment(state: _ProblemBatch, pred_of_target: torch.Tensor) -> torch.Tensor:
    """(Q,) loss of every problem from the fixed matching, differentiable in the prediction.

    The prediction's values enter through the pair table only (gathered once): the matched
    pairs' costs and the diagonal costs of the unmatched prediction points.
    """
    table, target = state.pred_table, state.target
    matched = pred_of_target >= 0
    slot = torch.where(matched, pred_of_target, torch.zeros_like(pred_of_target))
    pair = torch.gather(state.pred.source, 1, slot).clamp(min=0)
    n_pairs = table.birth.shape[0]
    taken = torch.zeros(n_pairs + 1, dtype=torch.bool, device=pair.device)
    taken[torch.where(matched, pair, torch.full_like(pair, n_pairs))] = True
    diagonal = (table.death - table.birth).abs() / math.sqrt(2.0)
    free = torch.where(taken[:n_pairs], torch.zeros_like(diagonal), diagonal)
    n_problems = pred_of_target.shape[0]
    loss = free.new_zeros(n_problems).index_add(0, state.problem, free)
    if n_pairs:
        pixel = _unravel(table.birth_index[pair], state.padded_shape)
        cost = _matched_costs(state, table.birth[pair], table.death[pair], pixel)
    else:
        cost = free.new_zeros(pred_of_target.shape)
    target_diagonal = diagonal_costs(target).to(free.dtype)
    per_target = torch.where(matched, cost, target_diagonal)
    return loss + per_target.sum(1)


def _matchings_to_host(state: _ProblemBatch, assignment: torch.Tensor,
                       per_problem: torch.Tensor) -> list[DiagramMatching]:
    """Split the batch's matchings into one :class:`DiagramMatching` per problem."""
    shift = 1 if state.pad else 0
    host = {}
    for side_name, side in (("pred", state.pred), ("target", state.target)):
        for field in ("birth", "death", "birth_pixel", "death_pixel", "size"):
            host[f"{side_name}_{field}"] = getattr(side, field).detach().cpu().numpy()
    from ..matching._reduced import pred_to_target

    pred_of_target = assignment
    slot = torch.where(pred_of_target >= 0, pred_of_target, torch.zeros_like(pred_of_target))
    pred = state.pred
    axes = pred.birth_pixel.shape[2]
    pixel = torch.gather(pred.birth_pixel, 1, slot[:, :, None].expand(-1, -1, axes))
    matched_cost = _matched_costs(state, pred.birth.gather(1, slot),
                                  pred.death.gather(1, slot), pixel).detach().cpu().numpy()
    assignment = pred_to_target(pred_of_target, pred.width).cpu().numpy()
    totals = per_problem.detach().cpu().numpy()
    n_dims = len(state.dims)
    out = []
    for q in range(assignment.shape[0]):
        n, m = int(host["pred_size"][q]), int(host["target_size"][q])
        a = assignment[q, :n]
        matched = np.nonzero(a >= 0)[0]
        matches = np.stack([matched, a[matched]], axis=1).astype(np.int64).reshape(-1, 2)
        image_channel, dim_position = divmod(q, n_dims)
        image, channel = divmod(image_channel, state.channels)
        out.append(DiagramMatching(
            image=image, channel=channel, dim=state.dims[dim_position],
            pred_birth=host["pred_birth"][q, :n].astype(np.float64),
            pred_death=host["pred_death"][q, :n].astype(np.float64),
            pred_birth_pixel=host["pred_birth_pixel"][q, :n] - shift,
            pred_death_pixel=host["pred_death_pixel"][q, :n] - shift,
            target_birth=host["target_birth"][q, :m].astype(np.float64),
            target_death=host["target_death"][q, :m].astype(np.float64),
            target_birth_pixel=host["target_birth_pixel"][q, :m] - shift,
            target_death_pixel=host["target_death_pixel"][q, :m] - shift,
            matches=matches,
            match_cost=matched_cost[q, matches[:, 1]].astype(np.float64),
            pred_to_diagonal=np.nonzero(a < 0)[0].astype(np.int64),
            target_to_diagonal=np.setdiff1d(np.arange(m), matches[:, 1]).astype(np.int64),
            cost=float(totals[q]),
        ))
    return out
