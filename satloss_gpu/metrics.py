"""Segmentation and topology metrics for binary masks: NumPy in, Python floats out.

Every function takes a prediction and a target of the same shape (H, W), or, with
``spatial_dims=3``, two volumes (D, H, W) (see Volumes below). Predictions may
be binary or probabilities in [0, 1] (thresholded at ``threshold``, default 0.5); targets
must be binary (bool, or values in {0, 1}). Anything else raises a ``ValueError`` that
names the argument: NaN or inf values, floats outside [0, 1], a non-binary target, an empty
mask, a tensor without data (``meta`` device).

Conventions
-----------
- Ratios whose denominator is zero (an empty prediction and an empty target, say) are 1.0:
  there was nothing to find and nothing was wrongly found.
- Connectivity follows the loss (T-construction on ``1 - mask``): the foreground is
  8-connected, the background 4-connected.
- Betti numbers are computed with this package's own persistence,
  :func:`satloss_gpu.cubical_persistence`, on ``1 - mask``: ``beta0`` is the number of H0
  classes born at 0 (foreground components, the essential class included), ``beta1`` the
  number of H1 classes born at 0 (holes: background components enclosed by foreground).
  By default the mask is NOT padded, so a background region touching the image border is
  not a hole: these are the Betti numbers of the mask itself. ``pad=True`` adds the
  one-pixel foreground frame the loss adds, which joins every foreground component that
  touches the border to the frame and turns every background region into a hole.
- ``are`` is the adapted Rand error and ``voi`` the variation of information (sum of the
  two conditional entropies, in nats) between the connected-component labelings, with
  scikit-image's ``adapted_rand_error`` (target background ignored) and
  ``variation_of_information``. Both are 0 for a perfect result, lower is better.
- ``betti{0,1}_signed`` is ``beta_k(pred) - beta_k(target)`` (unpadded): negative for
  missing features, positive for extra ones. ``betti{0,1}_error_framed`` are the absolute
  Betti errors with the loss's frame (``pad=True``), which joins border-touching components.
- ``betti_matching_error`` is the Betti matching error of :func:`betti_matching_error`
  (H0 + H1, unpadded): features must correspond in location, not only in number.

Volumes
-------
Every function takes ``spatial_dims`` (default 2; 3 for volumes (D, H, W), batches
(B, D, H, W) for :func:`betti_numbers`), with the same conventions one dimension up:

- the foreground is 26-connected and the background 6-connected (the T-construction: voxels
  are closed unit cubes); ``beta0`` counts foreground components, ``beta1`` tunnels (loops,
  handles) and ``beta2`` voids (background components enclosed by foreground; unpadded, a
  background region touching a face of the volume is no void). ``pad=True`` adds the
  one-voxel foreground frame on all six faces.
- Betti numbers of volumes are computed without persistence: ``beta0`` and ``beta2`` by
  labelling (:func:`scipy.ndimage.label`), ``beta1 = beta0 + beta2 - chi`` from the Euler
  characteristic ``chi`` of the cubical complex (its cells counted directly).
- :func:`segmentation_metrics` adds ``betti2_error``, ``betti2_signed`` and
  ``betti2_error_framed`` (:data:`METRIC_NAMES_3D`); clDice uses 3D skeletons
  (:func:`skimage.morphology.skeletonize`), ARE and VOI the 26-connected components.
- :func:`betti_matching_error` counts H0 and H2 as H0 and H1 in 2D; H1 (tunnels) is
  described there.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Iterable, Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES", "METRIC_NAMES_3D", "metric_names", "binarize", "accuracy", "precision",
    "recall", "f1_score", "dice",
    "cldice", "betti_numbers", "betti_errors", "signed_betti_differences",
    "betti_matching_error", "adapted_rand_error", "variation_of_information",
    "segmentation_metrics", "summarize",
]

METRIC_NAMES = ("accuracy", "dice", "cldice", "precision", "recall", "f1",
                "betti0_error", "betti1_error", "betti0_signed", "betti1_signed",
                "betti0_error_framed", "betti1_error_framed", "betti_matching_error",
                "are", "voi")
#: The metrics of :func:`segmentation_metrics` for volumes (``spatial_dims=3``).
METRIC_NAMES_3D = ("accuracy", "dice", "cldice", "precision", "recall", "f1",
                   "betti0_error", "betti1_error", "betti2_error",
                   "betti0_signed", "betti1_signed", "betti2_signed",
                   "betti0_error_framed", "betti1_error_framed", "betti2_error_framed",
                   "betti_matching_error", "are", "voi")
_SHAPES = {2: "(H, W)", 3: "(D, H, W)"}


def metric_names(spatial_dims: int = 2) -> tuple:
    """:data:`METRIC_NAMES` for images (2), :data:`METRIC_NAMES_3D` for volumes (3)."""
    return METRIC_NAMES_3D if _check_spatial_dims(spatial_dims) == 3 else METRIC_NAMES


def _check_spatial_dims(spatial_dims: Any) -> int:
    """``spatial_dims`` as 2 or 3, else ``TypeError``/``ValueError`` naming it."""
    from ._validation import describe

    if isinstance(spatial_dims, (bool, np.bool_)) or not isinstance(spatial_dims, numbers.Integral):
        raise TypeError(f"`spatial_dims` must be 2 or 3; got {describe(spatial_dims)}")
    if int(spatial_dims) not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3; got {spatial_dims!r}")
    return int(spatial_dims)


def binarize(mask: Any, threshold: float = 0.5, name: str = "pred",
             binary: bool = False, spatial_dims: int = 2) -> np.ndarray:
    """A boolean mask from a binary or probability array (``> threshold`` for floats).

    Parameters
    ----------
    mask : array_like, shape (H, W), or (D, H, W) with ``spatial_dims=3``
        bool, integer in {0, 1}, or float: probabilities in [0, 1] (or, with ``binary``,
        values in {0, 1}). NumPy, torch (CPU or CUDA) or CuPy.
    threshold : float, default 0.5
        Foreground is ``mask > threshold`` for float input; a finite number in [0, 1].
    name : str
        Argument name for error messages.
    binary : bool, default False
        Float input must hold 0 and 1 only (a target), not probabilities.
    spatial_dims : {2, 3}, default 2

    Returns
    -------
    (H, W) or (D, H, W) bool ndarray

    Raises
    ------
    TypeError
        A dtype other than bool, integer or float; a threshold that is not a number.
    ValueError
        A shape other than (H, W) (or (D, H, W)), an empty mask, NaN or inf, integers other
        than 0 and 1,
        floats outside [0, 1] (or, with ``binary``, other than 0 and 1), a threshold
        outside [0, 1].
    """
    from ._arraylib import to_numpy
    from ._validation import check_device, check_finite, check_rank

    threshold = check_threshold(threshold)
    spatial_dims = _check_spatial_dims(spatial_dims)
    check_device(mask, name)
    array = to_numpy(mask)
    check_rank(array, name, (spatial_dims,), _SHAPES[spatial_dims])
    if array.dtype == bool:
        return array
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"`{name}` must be binary (values 0 and 1) when it holds integers; "
                             f"got values in [{array.min()}, {array.max()}]")
        return array.astype(bool)
    if array.dtype.kind == "f":
        check_finite(array, name)
        return _threshold_floats(array, threshold, name, binary)
    raise TypeError(f"`{name}` must be a bool, integer or float array; got dtype {array.dtype}")


def _threshold_floats(array: np.ndarray, threshold: float, name: str,
                      binary: bool) -> np.ndarray:
    """``array > threshold`` for finite floats, after checking their range."""
    if binary:
        odd = (array != 0) & (array != 1)
        if odd.any():
            raise ValueError(f"`{name}` must be binary (values 0 and 1, or bool); found other "
                             f"values {np.unique(array[odd])[:5].tolist()}")
        return array > threshold
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"`{name}` must hold probabilities in [0, 1] when it holds floats; "
                         f"found values in [{low!r}, {high!r}] (for logits apply a sigmoid "
                         f"first)")
    return array > threshold


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float in [0, 1], else ``TypeError``/``ValueError`` naming it."""
    from ._validation import describe

    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"`threshold` must be a number in [0, 1]; got {describe(threshold)}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must be a number in [0, 1]; got {threshold!r}")
    return float(threshold)


def _pair(pred: Any, target: Any, threshold: float,
          spatial_dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p = binarize(pred, threshold, "pred", spatial_dims=spatial_dims)
    t = binarize(target, 0.5, "target", binary=True, spatial_dims=spatial_dims)
    if p.shape != t.shape:
        raise ValueError(f"`pred` and `target` must have the same shape; got {p.shape} and {t.shape}")
    return p, t


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def _counts(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def accuracy(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """Fraction of pixels (voxels) classified correctly."""
    p, t = _pair(pred, target, threshold, spatial_dims)
    return float(np.count_nonzero(p == t)) / max(p.size, 1)


def precision(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """TP / (TP + FP); 1.0 for an empty prediction."""
    tp, fp, _, _ = _counts(*_pair(pred, target, threshold, spatial_dims))
    return _ratio(tp, tp + fp)


def recall(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """TP / (TP + FN); 1.0 for an empty target."""
    tp, _, fn, _ = _counts(*_pair(pred, target, threshold, spatial_dims))
    return _ratio(tp, tp + fn)


def f1_score(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """Harmonic mean of precision and recall (equal to Dice on binary masks)."""
    p = precision(pred, target, threshold, spatial_dims)
    r = recall(pred, target, threshold, spatial_dims)
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def dice(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """2 TP / (2 TP + FP + FN); 1.0 when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))
    0.6666666666666666
    """
    tp, fp, fn, _ = _counts(*_pair(pred, target, threshold, spatial_dims))
    return _ratio(2 * tp, 2 * tp + fp + fn)


def cldice(pred: Any, target: Any, threshold: float = 0.5, spatial_dims: int = 2) -> float:
    """Centerline Dice: harmonic mean of topology precision and topology sensitivity.

    Topology precision is the fraction of the skeleton of the prediction lying inside the
    target; topology sensitivity the fraction of the skeleton of the target lying inside
    the prediction (skeletons by :func:`skimage.morphology.skeletonize`, which thins
    volumes in 3D with ``spatial_dims=3``).

    Examples
    --------
    >>> import numpy as np
    >>> line = np.zeros((5, 9), bool); line[1:4, 1:8] = True
    >>> cldice(line, line)
    1.0
    """
    from skimage.morphology import skeletonize

    p, t = _pair(pred, target, threshold, spatial_dims)
    skel_p = skeletonize(p)
    skel_t = skeletonize(t)
    t_prec = _ratio(np.count_nonzero(skel_p & t), np.count_nonzero(skel_p))
    t_sens = _ratio(np.count_nonzero(skel_t & p), np.count_nonzero(skel_t))
    return 0.0 if t_prec + t_sens == 0 else 2.0 * t_prec * t_sens / (t_prec + t_sens)


def _persistence_any(images: np.ndarray, superlevel: bool = False, construction: str = "T"):
    """Diagrams of (H, W) or (B, H, W) with the default backend, or gudhi where it is missing."""
    from .persistence import cubical_persistence

    try:
        return cubical_persistence(images, construction=construction, superlevel=superlevel)
    except ImportError:
        return cubical_persistence(images, construction=construction, superlevel=superlevel,
                                   backend="gudhi")


def betti_numbers(masks: Any, threshold: float = 0.5, pad: bool = False,
                  spatial_dims: int = 2) -> np.ndarray:
    """Betti numbers (beta0, beta1) of binary masks, (beta0, beta1, beta2) of volumes.

    Parameters
    ----------
    masks : array_like, shape (H, W) or (B, H, W); (D, H, W) or (B, D, H, W) for volumes
        Binary masks or probabilities (``> threshold`` is foreground).
    threshold : float, default 0.5
    pad : bool, default False
        Add the one-pixel (voxel) foreground frame that the loss adds before computing (see
        the module notes).
    spatial_dims : {2, 3}, default 2
        2: images, from their persistence diagrams; 3: volumes, by labelling and the Euler
        characteristic (see the module notes).

    Returns
    -------
    (2,) or (B, 2) int64 ndarray; (3,) or (B, 3) for volumes
        (beta0, beta1): foreground components (8-connected) and holes (4-connected
        background components enclosed by foreground). Volumes: (beta0, beta1, beta2),
        components (26-connected), tunnels and voids (6-connected background components
        enclosed by foreground).

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.ones((5, 5), bool); ring[2, 2] = False
    >>> betti_numbers(ring).tolist()
    [1, 1]
    >>> torus = np.zeros((3, 5, 5), bool); torus[1, 1:4, 1:4] = True; torus[1, 2, 2] = False
    >>> betti_numbers(torus, spatial_dims=3).tolist()
    [1, 1, 0]
    """
    from ._arraylib import to_numpy
    from ._validation import check_bool, check_device

    check_bool("pad", pad)
    spatial_dims = _check_spatial_dims(spatial_dims)
    check_device(masks, "masks")
    array = to_numpy(masks)
    single = array.ndim == spatial_dims
    if array.ndim not in (spatial_dims, spatial_dims + 1):
        shape = _SHAPES[spatial_dims]
        raise ValueError(f"`masks` must have shape {shape} or (B, {shape[1:]}; got {array.shape}")
    batch = array[None] if single else array
    binary = np.stack([binarize(m, threshold, "masks", spatial_dims=spatial_dims)
                       for m in batch]) if len(batch) else batch
    if spatial_dims == 3:
        out = _betti_numbers_3d(binary.astype(bool), pad)
        return out[0] if single else out
    if pad:
        binary = np.pad(binary, ((0, 0), (1, 1), (1, 1)), constant_values=True)
    x = 1.0 - binary.astype(np.float64)
    out = np.zeros((len(batch), 2), dtype=np.int64)
    if len(batch):
        dg = _persistence_any(np.ascontiguousarray(x)).to_numpy()
        born = dg.birth == 0.0
        np.add.at(out, (dg.image[born], dg.dim[born]), 1)
    return out[0] if single else out


def betti_errors(pred: Any, target: Any, threshold: float = 0.5, pad: bool = False,
                 spatial_dims: int = 2) -> tuple[int, ...]:
    """Absolute differences ``|beta_k(pred) - beta_k(target)|`` for k = 0, 1 (and 2 for
    volumes)."""
    p, t = _pair(pred, target, threshold, spatial_dims)
    betti = betti_numbers(np.stack([p, t]), pad=pad, spatial_dims=spatial_dims)
    return tuple(int(d) for d in np.abs(betti[0] - betti[1]))


def signed_betti_differences(pred: Any, target: Any, threshold: float = 0.5,
                             pad: bool = False, spatial_dims: int = 2) -> tuple[int, ...]:
    """``beta_k(pred) - beta_k(target)`` for k = 0, 1 (and 2 for volumes): < 0 missing
    features, > 0 extra ones."""
    p, t = _pair(pred, target, threshold, spatial_dims)
    betti = betti_numbers(np.stack([p, t]), pad=pad, spatial_dims=spatial_dims)
    return tuple(int(d) for d in betti[0] - betti[1])


def _euler_characteristic(mask: np.ndarray) -> int:
    """Euler characteristic of the union of the closed unit cubes of a (D, H, W) mask.

    Every cell of the cubical complex spans some axes (where it is as long as a voxel) and
    is a lattice point along the others; it belongs to the union when one of the voxels
    around it does: 1 voxel along a spanned axis, 2 along the others. The characteristic is
    the alternating sum of the cell counts over the 8 kinds of cells.
    """
    from itertools import product

    framed = np.pad(mask, 1)
    chi = 0
    for spans in product((False, True), repeat=3):
        present = framed
        for axis, spanned in enumerate(spans):
            n = present.shape[axis]
            if spanned:  # the voxel itself
                present = present.take(np.arange(1, n - 1), axis=axis)
            else:        # the two voxels on either side of the lattice plane
                present = present.take(np.arange(n - 1), axis=axis) | \
                    present.take(np.arange(1, n), axis=axis)
        chi += (-1) ** sum(spans) * int(np.count_nonzero(present))
    return chi


def _betti_numbers_3d(batch: np.ndarray, pad: bool) -> np.ndarray:
    """(beta0, beta1, beta2) of each bool volume of (B, D, H, W)."""
    out = np.zeros((len(batch), 3), dtype=np.int64)
    for k, volume in enumerate(batch):
        if pad:
            volume = np.pad(volume, 1, constant_values=True)
        b0 = _components(volume, 3)[1]
        b2 = _holes(volume)[1]
        out[k] = b0, b0 + b2 - _euler_characteristic(volume), b2
    return out


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Labels (0: outside ``mask``) and number of the components of ``mask``
    (``connectivity`` as in :func:`scipy.ndimage.generate_binary_structure`)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def _faces(labels: np.ndarray) -> np.ndarray:
    """The values of ``labels`` on the border of the image (the faces of the volume)."""
    return np.concatenate([np.moveaxis(labels, axis, 0)[index].ravel()
                           for axis in range(labels.ndim) for index in (0, -1)])


def _holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels 1..n of the holes of ``mask`` (4-connected background components that do not
    touch the image border; for volumes the voids, 6-connected), 0 elsewhere."""
    labels, n = _components(~mask, 1)
    border = np.unique(_faces(labels))
    keep = np.ones(n + 1, dtype=bool)
    keep[border] = False
    keep[0] = False
    renumber = np.zeros(n + 1, dtype=np.int64)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[labels], int(keep.sum())


def _matched_components(p: np.ndarray, t: np.ndarray) -> int:
    """H0 pairs of the induced matching: components of ``p | t`` meeting both masks."""
    union, _ = _components(p | t, p.ndim)
    return int(np.intersect1d(np.unique(union[p]), np.unique(union[t])).size)


def _largest_inside(outer: np.ndarray, n_outer: int, inner: np.ndarray) -> np.ndarray:
    """For each label 1..n_outer of ``outer``: the largest ``inner`` label inside it (ties:
    the smallest label), or 0 when it holds none."""
    chosen = np.zeros(n_outer + 1, dtype=np.int64)
    both = (outer > 0) & (inner > 0)
    if not both.any():
        return chosen
    pairs, sizes = np.unique(np.stack([outer[both], inner[both]]), axis=1, return_counts=True)
    areas = np.bincount(inner.ravel())
    order = np.lexsort((pairs[1], -areas[pairs[1]], pairs[0]))
    first = np.unique(pairs[0][order], return_index=True)[1]
    chosen[pairs[0][order][first]] = pairs[1][order][first]
    return chosen


def _matched_holes(p: np.ndarray, t: np.ndarray) -> int:
    """H1 pairs of the induced matching through the holes of ``p | t`` (see
    :func:`betti_matching_error`)."""
    union_holes, n_union = _holes(p | t)
    p_holes, n_p = _holes(p)
    t_holes, n_t = _holes(t)
    if n_union == 0 or n_p == 0 or n_t == 0:
        return 0
    from_p = _largest_inside(p_holes, n_p, union_holes)[1:]
    from_t = _largest_inside(t_holes, n_t, union_holes)[1:]
    return int(np.intersect1d(from_p[from_p > 0], from_t[from_t > 0]).size)


def _closure_labels(labels: np.ndarray) -> np.ndarray:
    """Labels of a (D, H, W) voxel labelling carried to every cell of the cubical complex:
    an array (2D + 1, 2H + 1, 2W + 1) whose cell (a, b, c) holds the label of the voxels it
    bounds (voxel (i, j, k) is cell (2i + 1, 2j + 1, 2k + 1)); 0 outside the union.
    26-connected components have disjoint closures, so a cell has at most one label."""
    from scipy import ndimage

    cells = np.zeros(tuple(2 * n + 1 for n in labels.shape), dtype=labels.dtype)
    cells[1::2, 1::2, 1::2] = labels
    return ndimage.maximum_filter(cells, size=3, mode="constant")


def _mayer_vietoris_rank(p: np.ndarray, t: np.ndarray) -> int:
    """Rank of the connecting map H1(P u T) -> H0(P n T) of the Mayer-Vietoris sequence, for
    the unions P, T of closed voxels: the dimension of the kernel of
    H0(P n T) -> H0(P) + H0(T).

    A component of P n T (a subcomplex: cells in both closures, 6-connected on the cell
    grid) maps to the component of P and the one of T holding it; the map's rank is that of
    the incidence matrix of the graph with those components as vertices and the components
    of P n T as edges: (vertices touched) - (connected components among them).
    """
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cells_p = _closure_labels(_components(p, 3)[0])
    cells_t = _closure_labels(_components(t, 3)[0])
    shared = (cells_p > 0) & (cells_t > 0)
    pieces, n_pieces = ndimage.label(shared, structure=ndimage.generate_binary_structure(3, 1))
    if n_pieces == 0:
        return 0
    _, first = np.unique(pieces[shared], return_index=True)
    ends_p = cells_p[shared][first].astype(np.int64)
    ends_t = cells_t[shared][first].astype(np.int64) + int(cells_p.max())
    nodes, index = np.unique(np.concatenate([ends_p, ends_t]), return_inverse=True)
    edges = coo_matrix((np.ones(n_pieces), (index[:n_pieces], index[n_pieces:])),
                       shape=(len(nodes), len(nodes)))
    n_graph = connected_components(edges, directed=False)[0]
    return n_pieces - (len(nodes) - n_graph)


def _persistent_tunnels(inner: np.ndarray, outer: np.ndarray) -> int:
    """Rank of H1(inner) -> H1(outer) for unions of closed voxels, ``inner`` inside
    ``outer``: the tunnels of ``inner`` still alive in ``outer``, counted as the H1 pairs
    born at 0 and dying after 1 in the filtration 0 on ``inner``, 1 on the rest of
    ``outer``, 2 elsewhere (a persistent Betti number: ties do not change it)."""
    from .persistence import cubical_persistence

    values = np.ascontiguousarray(np.where(inner, 0.0, np.where(outer, 1.0, 2.0)))
    try:  # three values: the reference is fast and needs no compilation
        dg = cubical_persistence(values, spatial_dims=3, dims=(1,), backend="gudhi")
    except ImportError:
        dg = cubical_persistence(values, spatial_dims=3, dims=(1,))
    dg = dg.to_numpy()
    return int(np.count_nonzero((dg.dim == 1) & (dg.birth == 0.0) & (dg.death > 1.0)))


def _matched_tunnels(p: np.ndarray, t: np.ndarray) -> int:
    """H1 pairs of volumes: dim(im H1(P) n im H1(T)) in H1(C), C = P u T (see
    :func:`betti_matching_error`)."""
    union = p | t
    if not (p.any() and t.any()):
        return 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(union))
    p, t, union = p[box], t[box], union[box]
    alive_p, alive_t = _persistent_tunnels(p, union), _persistent_tunnels(t, union)
    if alive_p == 0 or alive_t == 0:
        return 0
    b1_union = int(_betti_numbers_3d(union[None], False)[0, 1])
    return alive_p + alive_t - (b1_union - _mayer_vietoris_rank(p, t))


def betti_matching_error(pred: Any, target: Any, threshold: float = 0.5,
                         per_dimension: bool = False,
                         spatial_dims: int = 2) -> float | tuple[int, ...]:
    """Betti matching error of binary masks: features unmatched in location, H0 + H1.

    The Betti matching of Stucki et al. (ICML 2023) pairs a feature of the prediction with
    one of the target only if both are matched, by the matchings the inclusions induce, to
    the same feature of the comparison image: here, for binary masks, the union
    ``C = pred | target`` (the sublevel filtration of ``1 - mask`` at 0). Every feature is
    born at 0 and never dies within the mask, so a matched pair costs nothing and an
    unmatched feature costs 1; the error is the number of unmatched features of both masks:

    - H0 (8-connected foreground components): the inclusion of a mask into ``C`` sends each
      component to the component of ``C`` containing it, and the induced matching pairs
      each component of ``C`` with one of the components inside it. A component of ``C``
      that meets both masks therefore gives exactly one matched pair, whatever the tie
      order: ``matched0`` = number of components of ``C`` meeting both masks, and
      ``error0 = beta0(pred) + beta0(target) - 2 * matched0``.
    - H1 (holes: 4-connected background components not touching the image border): by
      Alexander duality a hole of ``C`` lies in one background component of each mask; the
      induced matching pairs each hole of a mask with one hole of ``C`` inside it. All births
      being equal, that choice is a tie; it is broken here by the largest area (then the
      smallest label). A hole of ``pred`` and one of ``target`` are matched when they chose
      the same hole of ``C``; ``error1 = beta1(pred) + beta1(target) - 2 * matched1``.

    The masks are not padded (background touching the border is no hole). A gap that splits
    one target line into two predicted pieces counts 1 (one piece unmatched); a predicted
    component far from every target component counts 2 (it and the missed one), where the
    plain Betti error counts 0.

    Volumes (``spatial_dims=3``): H0 (26-connected components) as in 2D, H2 (voids,
    6-connected background components not touching a face) as the 2D holes, and H1
    (tunnels): the inclusions send the tunnels of each mask to subspaces ``im_P`` and
    ``im_T`` of H1(C); a pair is matched when both are sent to the same class, and the
    number of matched pairs is ``matched1 = dim(im_P n im_T)``, the number of independent
    tunnels of C that both masks carry (every tunnel is born at 0, so no order of ties is
    involved). It is computed exactly as ``rank_P + rank_T - dim(im_P + im_T)``: the ranks of
    H1(P) -> H1(C) and H1(T) -> H1(C) are persistent Betti numbers
    (:func:`satloss_gpu.cubical_persistence` of a filtration 0 on the mask, 1 on the rest of
    C, with the gudhi backend when gudhi is installed), and by the Mayer-Vietoris sequence of
    C = P u T, ``dim(im_P + im_T) = beta1(C) - rank(H1(C) -> H0(P n T))``, the last rank
    counted on the components of P n T. ``error1 = beta1(pred) + beta1(target) - 2 *
    matched1``. For H0 the same count gives the 2D rule; H2 follows the 2D holes.

    Parameters
    ----------
    pred, target : array_like, shape (H, W), or (D, H, W) with ``spatial_dims=3``
        Binary masks or probabilities (``> threshold``); ``target`` binary.
    threshold : float, default 0.5
    per_dimension : bool, default False
        Return ``(error0, error1)`` (volumes: ``(error0, error1, error2)``) instead of their
        sum.
    spatial_dims : {2, 3}, default 2

    Returns
    -------
    float, or tuple of int with ``per_dimension``

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.zeros((3, 6, 6), bool); ring[1, 1:5, 1:5] = True; ring[1, 2:4, 2:4] = False
    >>> shifted = np.roll(ring, 1, axis=2)
    >>> betti_matching_error(shifted, ring, spatial_dims=3, per_dimension=True)
    (0, 0, 0)
    """
    from ._validation import check_bool

    check_bool("per_dimension", per_dimension)
    p, t = _pair(pred, target, threshold, spatial_dims)
    n0 = _components(p, p.ndim)[1] + _components(t, t.ndim)[1]
    n_holes = _holes(p)[1] + _holes(t)[1]
    error0 = n0 - 2 * _matched_components(p, t)
    error_holes = n_holes - 2 * _matched_holes(p, t)
    if p.ndim == 3:
        b1 = _betti_numbers_3d(np.stack([p, t]), False)[:, 1]
        error1 = int(b1.sum()) - 2 * _matched_tunnels(p, t)
        errors: tuple = (int(error0), int(error1), int(error_holes))
    else:
        errors = (int(error0), int(error_holes))
    if per_dimension:
        return errors
    return float(sum(errors))


def _labels(mask: np.ndarray) -> np.ndarray:
    """Components, 8-connected (26-connected for volumes)."""
    from skimage.measure import label

    return label(mask, connectivity=mask.ndim)


def adapted_rand_error(pred: Any, target: Any, threshold: float = 0.5,
                       spatial_dims: int = 2) -> float:
    """Adapted Rand error between the 8-connected (volumes: 26-connected) component
    labelings (0 is perfect)."""
    from skimage.metrics import adapted_rand_error as _are

    p, t = _pair(pred, target, threshold, spatial_dims)
    if not t.any() or np.count_nonzero(t) == 1:
        return 0.0 if np.array_equal(p, t) else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(_are(_labels(t), _labels(p))[0])
    return error if np.isfinite(error) else 1.0


def variation_of_information(pred: Any, target: Any, threshold: float = 0.5,
                             spatial_dims: int = 2) -> float:
    """Variation of information between the component labelings, background included."""
    from skimage.metrics import variation_of_information as _voi

    p, t = _pair(pred, target, threshold, spatial_dims)
    return float(np.sum(_voi(_labels(t), _labels(p))))


def segmentation_metrics(pred: Any, target: Any, threshold: float = 0.5, pad: bool = False,
                         topology: bool = True, spatial_dims: int = 2) -> Dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one image (:data:`METRIC_NAMES_3D` for a
    volume).

    Parameters
    ----------
    pred : array_like, shape (H, W), or (D, H, W) with ``spatial_dims=3``
        Binary prediction or probabilities.
    target : array_like, shape (H, W), or (D, H, W) with ``spatial_dims=3``
        Binary target.
    threshold : float, default 0.5
    pad : bool, default False
        Passed to :func:`betti_numbers`.
    topology : bool, default True
        Compute the Betti errors, ARI and VOI (slower); NaN otherwise.
    spatial_dims : {2, 3}, default 2

    Returns
    -------
    dict of str to float
        Keys in the order of :func:`metric_names`.
    """
    from ._validation import check_bool

    check_bool("pad", pad)
    check_bool("topology", topology)
    names = metric_names(spatial_dims)
    p, t = _pair(pred, target, threshold, spatial_dims)
    tp, fp, fn, _ = _counts(p, t)
    prec, rec = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    row = {
        "accuracy": accuracy(p, t, spatial_dims=spatial_dims),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "cldice": cldice(p, t, spatial_dims=spatial_dims),
        "precision": prec,
        "recall": rec,
        "f1": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec),
    }
    if not topology:
        row.update({k: float("nan") for k in names[6:]})
        return row
    betti = betti_numbers(np.stack([p, t]), pad=pad, spatial_dims=spatial_dims)
    framed = betti_numbers(np.stack([p, t]), pad=True, spatial_dims=spatial_dims)
    signed = betti[0] - betti[1]
    dims = range(betti.shape[1])
    row.update({f"betti{k}_error": float(abs(signed[k])) for k in dims})
    row.update({f"betti{k}_signed": float(signed[k]) for k in dims})
    row.update({f"betti{k}_error_framed": float(abs(framed[0, k] - framed[1, k])) for k in dims})
    row.update(betti_matching_error=betti_matching_error(p, t, spatial_dims=spatial_dims),
               are=adapted_rand_error(p, t, spatial_dims=spatial_dims),
               voi=variation_of_information(p, t, spatial_dims=spatial_dims))
    return row


def summarize(rows: Iterable[Dict[str, float]], names: Sequence[str] = METRIC_NAMES) -> Dict[str, float]:
    """Mean of every metric over ``rows`` (NaNs ignored), plus ``"n_images"``.

    Parameters
    ----------
    rows : iterable of dict
        One dict of metric values (real numbers) per image, e.g. from
        :func:`segmentation_metrics`.
    names : sequence of str
        The metrics to average; a name missing from every row gives NaN.

    Raises
    ------
    TypeError
        If a row is not a dict, or one of its ``names`` values is not a real number.
    """
    if isinstance(rows, (dict, str, bytes)):
        raise TypeError(f"`rows` must be an iterable of dicts (one per image); got "
                        f"{type(rows).__name__}")
    rows = list(rows)
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"`rows[{k}]` must be a dict of metric values; got "
                            f"{type(row).__name__}")
    out: Dict[str, float] = {}
    for name in names:
        values = np.array([_metric_value(r[name], k, name) for k, r in enumerate(rows)
                           if name in r], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    out["n_images"] = float(len(rows))
    return out


def _metric_value(value: object, row: int, name: str) -> float:
    """``value`` as a float, or a TypeError naming the row and the metric."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`rows[{row}][{name!r}]` must be a real number; got "
                        f"{type(value).__name__} {value!r}")
    return float(value)
