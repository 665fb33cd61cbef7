"""Segmentation and topology metrics for binary masks: NumPy in, Python floats out.

Every function takes a prediction and a target of the same shape (H, W). Predictions may
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
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Iterable, Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES", "binarize", "accuracy", "precision", "recall", "f1_score", "dice",
    "cldice", "betti_numbers", "betti_errors", "signed_betti_differences",
    "betti_matching_error", "adapted_rand_error", "variation_of_information",
    "segmentation_metrics", "summarize",
]

METRIC_NAMES = ("accuracy", "dice", "cldice", "precision", "recall", "f1",
                "betti0_error", "betti1_error", "betti0_signed", "betti1_signed",
                "betti0_error_framed", "betti1_error_framed", "betti_matching_error",
                "are", "voi")


def binarize(mask: Any, threshold: float = 0.5, name: str = "pred",
             binary: bool = False) -> np.ndarray:
    """A 2D boolean mask from a binary or probability array (``> threshold`` for floats).

    Parameters
    ----------
    mask : array_like, shape (H, W)
        bool, integer in {0, 1}, or float: probabilities in [0, 1] (or, with ``binary``,
        values in {0, 1}). NumPy, torch (CPU or CUDA) or CuPy.
    threshold : float, default 0.5
        Foreground is ``mask > threshold`` for float input; a finite number in [0, 1].
    name : str
        Argument name for error messages.
    binary : bool, default False
        Float input must hold 0 and 1 only (a target), not probabilities.

    Returns
    -------
    (H, W) bool ndarray

    Raises
    ------
    TypeError
        A dtype other than bool, integer or float; a threshold that is not a number.
    ValueError
        A shape other than (H, W), an empty mask, NaN or inf, integers other than 0 and 1,
        floats outside [0, 1] (or, with ``binary``, other than 0 and 1), a threshold
        outside [0, 1].
    """
    from ._arraylib import to_numpy
    from ._validation import check_device, check_finite, check_rank

    threshold = check_threshold(threshold)
    check_device(mask, name)
    array = to_numpy(mask)
    check_rank(array, name, (2,), "(H, W)")
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


def _pair(pred: Any, target: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    p = binarize(pred, threshold, "pred")
    t = binarize(target, 0.5, "target", binary=True)
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


def accuracy(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Fraction of pixels classified correctly."""
    p, t = _pair(pred, target, threshold)
    return float(np.count_nonzero(p == t)) / max(p.size, 1)


def precision(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """TP / (TP + FP); 1.0 for an empty prediction."""
    tp, fp, _, _ = _counts(*_pair(pred, target, threshold))
    return _ratio(tp, tp + fp)


def recall(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """TP / (TP + FN); 1.0 for an empty target."""
    tp, _, fn, _ = _counts(*_pair(pred, target, threshold))
    return _ratio(tp, tp + fn)


def f1_score(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Harmonic mean of precision and recall (equal to Dice on binary masks)."""
    p, r = precision(pred, target, threshold), recall(pred, target, threshold)
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def dice(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """2 TP / (2 TP + FP + FN); 1.0 when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))
    0.6666666666666666
    """
    tp, fp, fn, _ = _counts(*_pair(pred, target, threshold))
    return _ratio(2 * tp, 2 * tp + fp + fn)


def cldice(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Centerline Dice: harmonic mean of topology precision and topology sensitivity.

    Topology precision is the fraction of the skeleton of the prediction lying inside the
    target; topology sensitivity the fraction of the skeleton of the target lying inside
    the prediction (skeletons by :func:`skimage.morphology.skeletonize`).

    Examples
    --------
    >>> import numpy as np
    >>> line = np.zeros((5, 9), bool); line[1:4, 1:8] = True
    >>> cldice(line, line)
    1.0
    """
    from skimage.morphology import skeletonize

    p, t = _pair(pred, target, threshold)
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


def betti_numbers(masks: Any, threshold: float = 0.5, pad: bool = False) -> np.ndarray:
    """Betti numbers (beta0, beta1) of binary masks, from their persistence diagrams.

    Parameters
    ----------
    masks : array_like, shape (H, W) or (B, H, W)
        Binary masks or probabilities (``> threshold`` is foreground).
    threshold : float, default 0.5
    pad : bool, default False
        Add the one-pixel foreground frame that the loss adds before computing (see the
        module notes).

    Returns
    -------
    (2,) or (B, 2) int64 ndarray
        (beta0, beta1): foreground components (8-connected) and holes (4-connected
        background components enclosed by foreground).

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.ones((5, 5), bool); ring[2, 2] = False
    >>> betti_numbers(ring).tolist()
    [1, 1]
    """
    from ._arraylib import to_numpy
    from ._validation import check_bool, check_device

    check_bool("pad", pad)
    check_device(masks, "masks")
    array = to_numpy(masks)
    single = array.ndim == 2
    if array.ndim not in (2, 3):
        raise ValueError(f"`masks` must have shape (H, W) or (B, H, W); got {array.shape}")
    batch = array[None] if single else array
    binary = np.stack([binarize(m, threshold, "masks") for m in batch]) if len(batch) else batch
    if pad:
        binary = np.pad(binary, ((0, 0), (1, 1), (1, 1)), constant_values=True)
    x = 1.0 - binary.astype(np.float64)
    out = np.zeros((len(batch), 2), dtype=np.int64)
    if len(batch):
        dg = _persistence_any(np.ascontiguousarray(x)).to_numpy()
        born = dg.birth == 0.0
        np.add.at(out, (dg.image[born], dg.dim[born]), 1)
    return out[0] if single else out


def betti_errors(pred: Any, target: Any, threshold: float = 0.5, pad: bool = False) -> tuple[int, int]:
    """Absolute differences ``|beta_k(pred) - beta_k(target)|`` for k = 0, 1."""
    p, t = _pair(pred, target, threshold)
    betti = betti_numbers(np.stack([p, t]), pad=pad)
    diff = np.abs(betti[0] - betti[1])
    return int(diff[0]), int(diff[1])


def signed_betti_differences(pred: Any, target: Any, threshold: float = 0.5,
                             pad: bool = False) -> tuple[int, int]:
    """``beta_k(pred) - beta_k(target)`` for k = 0, 1: < 0 missing features, > 0 extra ones."""
    p, t = _pair(pred, target, threshold)
    betti = betti_numbers(np.stack([p, t]), pad=pad)
    diff = betti[0] - betti[1]
    return int(diff[0]), int(diff[1])


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Labels (0: outside ``mask``) and number of the components of ``mask``."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def _holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels 1..n of the holes of ``mask`` (4-connected background components that do not
    touch the image border), 0 elsewhere."""
    labels, n = _components(~mask, 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.ones(n + 1, dtype=bool)
    keep[border] = False
    keep[0] = False
    renumber = np.zeros(n + 1, dtype=np.int64)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[labels], int(keep.sum())


def _matched_components(p: np.ndarray, t: np.ndarray) -> int:
    """H0 pairs of the induced matching: components of ``p | t`` meeting both masks."""
    union, _ = _components(p | t, 2)
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


def betti_matching_error(pred: Any, target: Any, threshold: float = 0.5,
                         per_dimension: bool = False) -> float | tuple[int, int]:
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

    Parameters
    ----------
    pred, target : array_like, shape (H, W)
        Binary masks or probabilities (``> threshold``); ``target`` binary.
    threshold : float, default 0.5
    per_dimension : bool, default False
        Return ``(error0, error1)`` instead of their sum.

    Returns
    -------
    float, or (int, int) with ``per_dimension``
    """
    from ._validation import check_bool

    check_bool("per_dimension", per_dimension)
    p, t = _pair(pred, target, threshold)
    n0 = _components(p, 2)[1] + _components(t, 2)[1]
    n1 = _holes(p)[1] + _holes(t)[1]
    error0 = n0 - 2 * _matched_components(p, t)
    error1 = n1 - 2 * _matched_holes(p, t)
    if per_dimension:
        return int(error0), int(error1)
    return float(error0 + error1)


def _labels(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    return label(mask, connectivity=2)


def adapted_rand_error(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Adapted Rand error between the 8-connected component labelings (0 is perfect)."""
    from skimage.metrics import adapted_rand_error as _are

    p, t = _pair(pred, target, threshold)
    if not t.any() or np.count_nonzero(t) == 1:
        return 0.0 if np.array_equal(p, t) else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        error = float(_are(_labels(t), _labels(p))[0])
    return error if np.isfinite(error) else 1.0


def variation_of_information(pred: Any, target: Any, threshold: float = 0.5) -> float:
    """Variation of information between the component labelings, background included."""
    from skimage.metrics import variation_of_information as _voi

    p, t = _pair(pred, target, threshold)
    return float(np.sum(_voi(_labels(t), _labels(p))))


def segmentation_metrics(pred: Any, target: Any, threshold: float = 0.5, pad: bool = False,
                         topology: bool = True) -> Dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one image.

    Parameters
    ----------
    pred : array_like, shape (H, W)
        Binary prediction or probabilities.
    target : array_like, shape (H, W)
        Binary target.
    threshold : float, default 0.5
    pad : bool, default False
        Passed to :func:`betti_numbers`.
    topology : bool, default True
        Compute the Betti errors, ARI and VOI (slower); NaN otherwise.

    Returns
    -------
    dict of str to float
    """
    from ._validation import check_bool

    check_bool("pad", pad)
    check_bool("topology", topology)
    p, t = _pair(pred, target, threshold)
    tp, fp, fn, _ = _counts(p, t)
    prec, rec = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    row = {
        "accuracy": accuracy(p, t),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "cldice": cldice(p, t),
        "precision": prec,
        "recall": rec,
        "f1": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec),
    }
    nan = float("nan")
    if topology:
        betti = betti_numbers(np.stack([p, t]), pad=pad)
        framed = betti_numbers(np.stack([p, t]), pad=True)
        signed = betti[0] - betti[1]
        row.update(betti0_error=float(abs(signed[0])), betti1_error=float(abs(signed[1])),
                   betti0_signed=float(signed[0]), betti1_signed=float(signed[1]),
                   betti0_error_framed=float(abs(framed[0, 0] - framed[1, 0])),
                   betti1_error_framed=float(abs(framed[0, 1] - framed[1, 1])),
                   betti_matching_error=betti_matching_error(p, t),
                   are=adapted_rand_error(p, t), voi=variation_of_information(p, t))
    else:
        row.update({k: nan for k in METRIC_NAMES[6:]})
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
