"""Segmentation and topology metrics for binary masks: NumPy in, Python floats out.

Every function takes a prediction and a target of the same shape (H, W). Predictions may
be binary or probabilities (thresholded at ``threshold``, default 0.5); targets must be
binary (bool, or values in {0, 1}).

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
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES", "binarize", "accuracy", "precision", "recall", "f1_score", "dice",
    "cldice", "betti_numbers", "betti_errors", "adapted_rand_error", "variation_of_information",
    "segmentation_metrics", "summarize",
]

METRIC_NAMES = ("accuracy", "dice", "cldice", "precision", "recall", "f1",
                "betti0_error", "betti1_error", "are", "voi")


def binarize(mask: Any, threshold: float = 0.5, name: str = "pred") -> np.ndarray:
    """A 2D boolean mask from a binary or probability array (``> threshold`` for floats).

    Parameters
    ----------
    mask : array_like, shape (H, W)
        bool, integer in {0, 1}, or float.
    threshold : float, default 0.5
        Foreground is ``mask > threshold`` for float input.
    name : str
        Argument name for error messages.

    Returns
    -------
    (H, W) bool ndarray
    """
    from ._arraylib import to_numpy

    array = to_numpy(mask)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (H, W); got {array.shape}")
    if array.dtype == bool:
        return array
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(f"`{name}` must be binary (values 0 and 1) when it holds integers; "
                             f"got values in [{array.min()}, {array.max()}]")
        return array.astype(bool)
    if array.dtype.kind == "f":
        return array > threshold
    raise TypeError(f"`{name}` must be a bool, integer or float array; got dtype {array.dtype}")


def _pair(pred: Any, target: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    p = binarize(pred, threshold, "pred")
    t = binarize(target, 0.5, "target")
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
        b0, b1 = betti_errors(p, t, pad=pad)
        row.update(betti0_error=float(b0), betti1_error=float(b1),
                   are=adapted_rand_error(p, t), voi=variation_of_information(p, t))
    else:
        row.update(betti0_error=nan, betti1_error=nan, are=nan, voi=nan)
    return row


def summarize(rows: Iterable[Dict[str, float]], names: Sequence[str] = METRIC_NAMES) -> Dict[str, float]:
    """Mean of every metric over ``rows`` (NaNs ignored), plus ``"n_images"``."""
    rows = list(rows)
    out: Dict[str, float] = {}
    for name in names:
        values = np.array([r[name] for r in rows if name in r], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    out["n_images"] = float(len(rows))
    return out

