"""Checks of user input, shared by every public function.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the argument,
says what was expected and what was found. Checks never use ``assert``.
"""
from __future__ import annotations

import collections.abc
import math
import numbers
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ._arraylib import array_library, get_namespace, to_numpy

__all__ = [
    "check_choice", "check_rank", "check_images", "check_image_shape", "float_batch",
    "check_spatial_dims", "HOMOLOGY_DIMS",
    "check_dims", "check_finite", "check_finite_valid",
    "check_matching_problem", "check_pred_target", "check_clamp", "check_channel_weights",
    "check_memory_for_images", "check_memory_for_lists", "available_memory",
    "check_bool", "check_reduction", "REDUCTIONS", "as_float_array", "as_numpy_batch",
    "check_input_options", "check_channel_weight_values", "check_loss_pred", "check_label_map",
    "check_target_like", "check_mask", "check_channels", "check_device", "check_int", "check_nonnegative",
    "SPATIAL_CLAMP_MAX",
]

_FLOAT_KINDS = "f"
_CONVERTIBLE_KINDS = "biuf"


def describe(value: Any, limit: int = 60) -> str:
    """One line describing ``value`` in an error message: the type and shape of an array
    (never its elements), else the type and the repr, cut to ``limit`` characters.

    Examples
    --------
    >>> describe(np.zeros((8, 8)))
    'ndarray of shape (8, 8)'
    >>> describe(1.5)
    'float 1.5'
    """
    if getattr(value, "shape", None) is not None and not isinstance(value, np.generic):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    text = " ".join(repr(value).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        found = repr(value) if isinstance(value, str) else describe(value)
        raise ValueError(f"`{name}` must be one of {options}; got {found}")
    return value


#: How per-image losses are combined (the ``reduction=`` of every loss).
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: Any) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise ``ValueError``."""
    return check_choice("reduction", reduction, REDUCTIONS)


def check_dims(dims: Iterable[int], allowed: Sequence[int] = (0, 1),
               context: str = "") -> tuple[int, ...]:
    """Normalise the homology dimensions ``dims`` to a sorted tuple of distinct ints.

    ``dims`` must be an iterable of ints (not a string; no floats or bools). ``context`` is
    appended to the message of a ``ValueError`` (e.g. which ``spatial_dims`` allows what).
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, collections.abc.Iterable):
        raise TypeError(f"`dims` must be a sequence of ints from {tuple(allowed)}; got "
                        f"{describe(dims)}")
    values = tuple(dims)
    for d in values:
        if not _is_integer(d):
            raise TypeError(f"`dims` must hold ints from {tuple(allowed)}; got "
                            f"{describe(d)} in {describe(dims)}")
    values = tuple(sorted({int(d) for d in values}))
    if not values or any(d not in allowed for d in values):
        raise ValueError(f"`dims` must be a non-empty subset of {tuple(allowed)}{context}; got "
                         f"{dims!r}")
    return values


def _is_integer(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (bools are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, minimum: Optional[int] = None) -> int:
    """``value`` as an int (>= ``minimum``), else ``TypeError``/``ValueError`` naming ``name``
    (floats and bools refused)."""
    if not _is_integer(value):
        raise TypeError(f"`{name}` must be an int; got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value}")
    return int(value)


def check_nonnegative(name: str, value: Any) -> float:
    """``value`` as a finite float >= 0, else ``TypeError``/``ValueError`` naming ``name``."""
    if not _is_real(value):
        raise TypeError(f"`{name}` must be a number; got {describe(value)}")
    if not 0.0 <= float(value) < math.inf:
        raise ValueError(f"`{name}` must be finite and >= 0; got {value!r}")
    return float(value)


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy real number (bools are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_device(array: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``array`` lives on the CPU or a CUDA device."""
    device = get_namespace(array).device_type(array)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"`{name}` must be on the CPU or a CUDA device; got a tensor on "
                         f"device {device!r}" + (" (a meta tensor holds no values)"
                                                 if device == "meta" else ""))


def check_rank(array: Any, name: str, ranks: Sequence[int], shapes: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``array`` has one of ``ranks`` and no empty axis.

    ``shapes`` is the expected shape as the message says it, e.g. ``"(H, W) or (B, H, W)"``.
    """
    if array.ndim not in ranks:
        raise ValueError(f"`{name}` must have shape {shapes}; got shape {tuple(array.shape)}")
    if any(int(s) == 0 for s in array.shape):
        raise ValueError(f"`{name}` must not be empty; got shape {tuple(array.shape)}")


def _dtype_kind(array: Any) -> tuple[str, str]:
    """(kind letter, dtype name) of an array of any supported library."""
    return get_namespace(array).dtype_kind(array)


#: Homology dimensions per number of spatial dimensions.
HOMOLOGY_DIMS = {2: (0, 1), 3: (0, 1, 2)}
_SHAPES = {2: "(H, W) or (B, H, W)", 3: "(D, H, W) or (B, D, H, W)"}


def check_spatial_dims(spatial_dims: Any) -> int:
    """Return ``spatial_dims`` (2: images, 3: volumes) as an int, else raise naming it.

    Raises
    ------
    TypeError
        Not an int (bools and floats are refused).
    ValueError
        Not 2 or 3.
    """
    if not _is_integer(spatial_dims):
        raise TypeError(f"`spatial_dims` must be the int 2 (images) or 3 (volumes); got "
                        f"{describe(spatial_dims)}")
    if int(spatial_dims) not in HOMOLOGY_DIMS:
        raise ValueError(f"`spatial_dims` must be 2 (images) or 3 (volumes); got {spatial_dims}")
    return int(spatial_dims)


def check_images(images: Any, name: str = "images", spatial_dims: int = 2) -> tuple[Any, bool]:
    """Validate a single image or volume, or a batch of them, and return it as a float batch.

    Parameters
    ----------
    images : array_like, shape (H, W) or (B, H, W); (D, H, W) or (B, D, H, W) for volumes
        NumPy array (or sequence), torch tensor or CuPy array. Integer and bool arrays are
        converted to float64 (NumPy, CuPy) or float32 (torch); float16/bfloat16 to float32.
    name : str
        The argument name used in error messages.
    spatial_dims : {2, 3}, default 2
        2: images (H, W); 3: volumes (D, H, W).

    Returns
    -------
    batch : array, shape (B, H, W) or (B, D, H, W), float32 or float64
        In the input's library and on its device (a view where no conversion was needed).
    single : bool
        Whether the input was a single image (volume).

    Raises
    ------
    TypeError
        For complex or non-numeric dtypes.
    ValueError
        For a rank other than ``spatial_dims`` or ``spatial_dims + 1`` (a 4-D array with
        ``spatial_dims=2`` is named as a likely batch of volumes), a zero-sized dimension, or
        NaN/inf values.
    """
    return float_batch(check_image_shape(images, name, spatial_dims), name, spatial_dims)


def check_image_shape(images: Any, name: str = "images", spatial_dims: int = 2) -> Any:
    """The dtype and shape checks of :func:`check_images`, without converting or reading the
    values: ``images`` as an array of its library (NumPy for sequences)."""
    library = array_library(images)
    if library == "numpy":
        images = np.asarray(images)
    check_device(images, name)
    kind, dtype_name = _dtype_kind(images)
    if kind not in _CONVERTIBLE_KINDS:
        raise TypeError(
            f"`{name}` must hold real numbers (float, int or bool); got dtype {dtype_name}"
        )
    if spatial_dims == 2 and images.ndim == 4:
        raise ValueError(f"`{name}` must have shape {_SHAPES[2]}; got shape "
                         f"{tuple(images.shape)}, which looks like a batch of volumes; pass "
                         f"spatial_dims=3")
    if spatial_dims == 3 and images.ndim == 2:
        raise ValueError(f"`{name}` must have shape {_SHAPES[3]} for spatial_dims=3; got shape "
                         f"{tuple(images.shape)}, an image; pass spatial_dims=2 (or add an "
                         f"axis of length 1: a volume of depth 1)")
    check_rank(images, name, (spatial_dims, spatial_dims + 1), _SHAPES[spatial_dims])
    return images


def float_batch(images: Any, name: str, spatial_dims: int) -> tuple[Any, bool]:
    """The rest of :func:`check_images` on the output of :func:`check_image_shape`: convert to
    float, check finiteness, add the batch axis of a single image."""
    images = get_namespace(images).as_float(images)
    check_finite(images, name)
    single = images.ndim == spatial_dims
    return (images[None] if single else images), single


def check_finite(array: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``array`` holds NaN or infinite values."""
    n_nan, n_inf = get_namespace(array).count_nonfinite(array)
    if n_nan or n_inf:
        raise ValueError(f"`{name}` must be finite; found {n_nan} NaN and {n_inf} inf values")


def as_numpy_batch(images: Any) -> np.ndarray:
    """C-contiguous NumPy copy (or view) of a validated float batch."""
    return np.ascontiguousarray(to_numpy(images))


# ----------------------------------------------------------------------------- matching


def as_float_array(array: Any, name: str) -> Any:
    """Return ``array`` as a float32/float64 NumPy array or torch tensor (TypeError otherwise)."""
    library = array_library(array)
    if library == "cupy":
        raise TypeError(f"`{name}` must be a torch tensor or a NumPy array; got a CuPy array")
    if library == "numpy":
        array = np.asarray(array)
    check_device(array, name)
    kind = _dtype_kind(array)[0]
    if kind not in "biuf":
        raise TypeError(f"`{name}` must hold real numbers; got dtype {array.dtype}")
    if library == "torch":
        import torch

        if array.dtype not in (torch.float32, torch.float64):
            array = array.to(torch.float64 if kind != "f" else torch.float32)
        return array.detach()
    if kind != "f":
        return array.astype(np.float64)
    if array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return array


def check_sizes(sizes: Any, name: str, batch: int, limit: int) -> np.ndarray:
    """Validate the true sizes ``sizes`` (B,) and return them as an int64 NumPy array."""
    if array_library(sizes) == "numpy":
        sizes = np.asarray(sizes)
        if sizes.size == 0:
            sizes = sizes.astype(np.int64)
    if _dtype_kind(sizes)[0] not in "iu":
        raise TypeError(f"`{name}` must hold integers; got dtype {sizes.dtype}")
    host = to_numpy(sizes).astype(np.int64)
    if host.shape != (batch,):
        raise ValueError(f"`{name}` must have shape ({batch},); got {tuple(host.shape)}")
    if batch and host.min() < 0:
        raise ValueError(f"`{name}` must be non-negative; got minimum {int(host.min())}")
    if batch and host.max() > limit:
        raise ValueError(
            f"`{name}` must be at most {limit} (the padded size); got maximum {int(host.max())}"
        )
    return host


def check_finite_valid(array: Any, name: str, sizes: tuple[np.ndarray, ...],
                       limit: Optional[float] = None) -> None:
    """Raise ValueError if ``array`` holds NaN/inf inside the valid (unpadded) region.

    With ``limit``, finite values of magnitude above ``limit`` are rejected too (one pass; a
    limit beyond the dtype's range, float32 and float64's bound for example, tests nothing).
    """
    library = array_library(array)
    if library == "torch":
        import torch

        xp, device = torch, array.device
        mask = torch.ones(array.shape, dtype=torch.bool, device=device)
        for axis, size in enumerate(sizes, start=1):
            idx = torch.arange(array.shape[axis], device=device)
            lim = torch.as_tensor(size, device=device)
            shape = [1] * array.ndim
            shape[0], shape[axis] = array.shape[0], array.shape[axis]
            mask &= (idx[None, :] < lim[:, None]).reshape(shape)
        ok = torch.isfinite(array)
        if limit is not None and limit < torch.finfo(array.dtype).max:
            ok &= array.abs() <= limit
        bad = mask & ~ok
        nbad = int(bad.sum())
    else:
        xp = np
        mask = np.ones(array.shape, dtype=bool)
        for axis, size in enumerate(sizes, start=1):
            shape = [1] * array.ndim
            shape[0], shape[axis] = array.shape[0], array.shape[axis]
            mask &= (np.arange(array.shape[axis])[None, :] < size[:, None]).reshape(shape)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(array)
            if limit is not None and limit < float(np.finfo(array.dtype).max):
                ok &= np.abs(array) <= limit
            bad = mask & ~ok
        nbad = int(bad.sum())
    if nbad:
        n_nan = int((bad & xp.isnan(array)).sum())
        n_inf = int((bad & xp.isinf(array)).sum())
        if limit is not None and n_nan + n_inf < nbad:
            raise ValueError(
                f"`{name}` values must have magnitude at most {limit!r} inside its valid region "
                f"(larger values make sums of the matching overflow float64); found "
                f"{nbad - n_nan - n_inf} larger finite, {n_nan} NaN and {n_inf} inf values"
            )
        raise ValueError(
            f"`{name}` must be finite inside its valid region; found {n_nan} NaN and "
            f"{nbad - n_nan} inf values"
        )


def matching_magnitude_limit(big_n: int, big_m: int) -> float:
    """Largest magnitude of a matching input whose sums cannot overflow float64.

    The solvers add inputs into distances and duals (float64) along augmenting paths of at
    most N + M columns; bounding every input by ``max / (8 (N + M + 2))`` leaves that margin
    over float64's range. Beyond it, the CUDA kernel's searches stop on a non-finite
    distance (the certificate fails) instead of looping.
    """
    return float(np.finfo(np.float64).max) / (8.0 * (big_n + big_m + 2))


def check_matching_problem(cost, diag_pred, diag_target, n, m):
    """Check the arguments of :func:`satloss_gpu.matching.match_batch`; return them normalised."""
    cost = as_float_array(cost, "cost")
    diag_pred = as_float_array(diag_pred, "diag_pred")
    diag_target = as_float_array(diag_target, "diag_target")
    libs = {array_library(a) for a in (cost, diag_pred, diag_target)}
    if len(libs) > 1:
        raise TypeError(
            "`cost`, `diag_pred` and `diag_target` must come from one array library; got "
            + ", ".join(sorted(libs))
        )
    if libs == {"torch"}:
        devices = {str(a.device) for a in (cost, diag_pred, diag_target)}
        if len(devices) > 1:
            raise ValueError(
                "`cost`, `diag_pred` and `diag_target` must be on one device; got "
                + ", ".join(sorted(devices))
            )
    if cost.ndim != 3:
        raise ValueError(f"`cost` must have shape (B, N, M); got shape {tuple(cost.shape)}")
    batch, big_n, big_m = (int(s) for s in cost.shape)
    if tuple(diag_pred.shape) != (batch, big_n):
        raise ValueError(
            f"`diag_pred` must have shape (B, N) = ({batch}, {big_n}); got {tuple(diag_pred.shape)}"
        )
    if tuple(diag_target.shape) != (batch, big_m):
        raise ValueError(
            f"`diag_target` must have shape (B, M) = ({batch}, {big_m}); got "
            f"{tuple(diag_target.shape)}"
        )
    n_host = check_sizes(n, "n", batch, big_n)
    m_host = check_sizes(m, "m", batch, big_m)
    limit = matching_magnitude_limit(big_n, big_m)
    check_finite_valid(cost, "cost", (n_host, m_host), limit)
    check_finite_valid(diag_pred, "diag_pred", (n_host,), limit)
    check_finite_valid(diag_target, "diag_target", (m_host,), limit)
    return cost, diag_pred, diag_target, n_host, m_host


# ----------------------------------------------------------------------------- losses


#: Ranks of the losses' ``pred``: (B, H, W) and (B, C, H, W) images, (B, C, D, H, W) volumes.
LOSS_RANKS = (3, 4, 5)
LOSS_SHAPES = "(B, C, H, W), (B, H, W) or (B, C, D, H, W) (volumes)"


def check_pred_target(pred: Any, target: Any,
                      logits_hint: str = "for logits pass sigmoid=True or softmax=True"
                      ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Validate ``pred`` and ``target``; return both as (B, C, H, W) (images) or
    (B, C, D, H, W) (volumes) in the compute dtype.

    ``logits_hint`` ends the message of a ``pred`` outside [0, 1].
    """
    import torch

    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"`pred` must be a torch.Tensor; got {type(pred).__name__}")
    check_device(pred, "pred")
    if not pred.dtype.is_floating_point:
        raise TypeError(
            f"`pred` must be a floating-point tensor of probabilities; got dtype {pred.dtype}"
        )
    check_rank(pred, "pred", LOSS_RANKS, LOSS_SHAPES)
    if not isinstance(target, torch.Tensor):
        try:
            target = torch.as_tensor(np.asarray(target))
        except (TypeError, ValueError):
            raise TypeError(f"`target` must be a tensor or an array; got {type(target).__name__}")
    if tuple(target.shape) != tuple(pred.shape):
        raise ValueError(
            f"`target` must have the shape of `pred` {tuple(pred.shape)}; "
            f"got {tuple(target.shape)}{_label_map_hint(pred.shape, target.shape)}"
        )
    if target.dtype.is_complex:
        raise TypeError(f"`target` must hold real numbers; got dtype {target.dtype}")
    check_device(target, "target")
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()
    # One pass over each array: aminmax of `pred` (NaN fails the range test), one comparison
    # of `target`; a failing check reads the array again only to word its message.
    low, high = (float(v) for v in torch.aminmax(pred.detach()))
    if not (0.0 <= low and high <= 1.0):
        _raise_pred_error(pred.detach(), logits_hint)
    target = target.detach().to(device=pred.device, dtype=pred.dtype)
    if not bool(((target == 0) | (target == 1)).all()):
        _raise_target_error(target)
    if pred.ndim == 3:
        pred, target = pred[:, None], target[:, None]
    return pred, target


def _raise_pred_error(pred: "torch.Tensor", logits_hint: str) -> None:
    """Raise the ValueError that says what is wrong with ``pred`` (not finite, or range)."""
    check_finite(pred, "pred")
    low, high = float(pred.min()), float(pred.max())
    raise ValueError(
        f"`pred` must hold probabilities in [0, 1]; found values in [{low!r}, {high!r}] "
        f"({logits_hint})"
    )


def _raise_target_error(target: "torch.Tensor") -> None:
    """Raise the ValueError that says what is wrong with ``target`` (not finite, not 0/1)."""
    import torch

    check_finite(target, "target")
    non_binary = (target != 0) & (target != 1)
    raise ValueError(f"`target` must be binary (0/1 or bool); found other values "
                     f"{_describe_values(target[non_binary])}")


def _describe_values(values: "torch.Tensor", limit: int = 5) -> str:
    """``values`` (1-D, the offending ones) in words: up to ``limit`` distinct finite values
    at full precision, then the NaN and inf values counted (not listed one by one)."""
    import torch

    finite = torch.isfinite(values)
    distinct = torch.unique(values[finite])
    shown = ", ".join(repr(v) for v in distinct[:limit].tolist())
    more = f" and {len(distinct) - limit} more" if len(distinct) > limit else ""
    parts = [f"[{shown}]{more}"] if len(distinct) else []
    n_nan = int(torch.isnan(values).sum())
    n_inf = int((~finite).sum()) - n_nan
    parts += [f"{n} {what} values" for n, what in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    return " and ".join(parts)


#: Largest bound of the spatial factor: the factor is a distance in units of the image size
#: (at most about 1.5); far larger values make the float32 costs overflow.
SPATIAL_CLAMP_MAX = 1e6


def check_clamp(spatial_clamp: Any) -> tuple[float, float]:
    """Return ``spatial_clamp`` as a pair of floats ``0 <= low <= high <= SPATIAL_CLAMP_MAX``."""
    if isinstance(spatial_clamp, (str, bytes)) or not isinstance(spatial_clamp, collections.abc.Iterable):
        raise TypeError(f"`spatial_clamp` must be a pair of numbers (low, high); got "
                        f"{type(spatial_clamp).__name__} {spatial_clamp!r}")
    values = [v.item() if getattr(v, "ndim", None) == 0 else v for v in spatial_clamp]
    if len(values) != 2 or not all(_is_real(v) for v in values):
        raise TypeError(f"`spatial_clamp` must be a pair of numbers (low, high), not bools or "
                        f"strings; got {spatial_clamp!r}")
    low, high = (float(v) for v in values)
    if not 0.0 <= low <= high <= SPATIAL_CLAMP_MAX:
        raise ValueError(f"`spatial_clamp` must satisfy 0 <= low <= high <= "
                         f"{SPATIAL_CLAMP_MAX:.0e} (finite); got ({low!r}, {high!r})")
    return low, high


def check_channel_weights(
    weights: Any, channels: int, like: "torch.Tensor"
) -> Optional["torch.Tensor"]:
    """``weights`` (see :func:`check_channel_weight_values`) as a (C,) tensor in the dtype and
    on the device of ``like``, or None; a tensor that requires grad stays differentiable."""
    values = check_channel_weight_values(weights, channels, allow_grad=True)
    return None if values is None else values.to(dtype=like.dtype, device=like.device)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; got {type(value).__name__}")
    return bool(value)


# ----------------------------------------------------------------------------- memory

#: Peak host bytes per pixel of one loss call on the CPU (images, their gradient, the
#: persistence work arrays and pair tables), measured in ``bench/loss.py`` (``--large``) with
#: margin; per list entry of the reduced matching (three lists and the solver's copies).
BYTES_PER_PIXEL = {4: 120, 8: 160}
BYTES_PER_LIST_ENTRY = 64
#: The same per voxel of a volume (the frame included), measured in ``bench/loss3d.py
#: --memory`` (float32: 139 B per voxel on 4 x 64^3 and 121 B on 2 x 128^3 noise, 25 B on
#: smooth predictions), with margin.
BYTES_PER_VOXEL = {4: 200, 8: 260}


def available_memory() -> Optional[int]:
    """Bytes of host memory available now (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _require(needed: int, what: str, hint: str) -> None:
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(
            f"{what} needs about {needed / 2**30:.1f} GiB of host memory, more than the "
            f"{available / 2**30:.1f} GiB available; {hint}")


def check_memory_for_images(pred: "torch.Tensor") -> None:
    """Raise ``MemoryError`` before the loss allocates, if a CPU batch cannot fit in memory.

    ``pred`` is the validated (B, C, H, W) or (B, C, D, H, W) prediction; CUDA tensors are
    not checked here.
    """
    if pred.device.type != "cpu":
        return
    batch, channels, *spatial = (int(s) for s in pred.shape)
    pixels = batch * channels * math.prod(size + 2 for size in spatial)
    per_pixel = BYTES_PER_VOXEL if len(spatial) == 3 else BYTES_PER_PIXEL
    needed = pixels * per_pixel[pred.element_size()]
    _require(needed, f"the loss of a {tuple(pred.shape)} batch",
             "use smaller images or batches (the loss of images is the sum of its parts)")


def check_memory_for_lists(n: "torch.Tensor", m: "torch.Tensor", big_n: int, big_m: int) -> None:
    """Raise ``MemoryError`` before the reduced matching allocates its candidate lists."""
    width = min(big_n, big_m)
    needed = int(m.shape[0]) * big_m * width * BYTES_PER_LIST_ENTRY
    _require(needed, f"the matching of {int(m.shape[0])} problems with up to {big_m} target "
             "points", "the lists grow with the square of the number of target points: use "
             "smaller images")


# ----------------------------------------------------------------------------- loss inputs
# The input side of the losses: logits, label maps, masks (see satloss_gpu.losses._inputs).


def check_input_options(sigmoid: Any, softmax: Any, num_classes: Any,
                        include_background: Any) -> tuple[bool, bool, Optional[int], bool]:
    """Validate how a loss reads its inputs; return ``(sigmoid, softmax, num_classes,
    include_background)`` normalised (bools, an int >= 2 or None)."""
    sigmoid = check_bool("sigmoid", sigmoid)
    softmax = check_bool("softmax", softmax)
    include_background = check_bool("include_background", include_background)
    if sigmoid and softmax:
        raise ValueError("`sigmoid` and `softmax` are exclusive: pass at most one of them as True")
    if num_classes is not None:
        if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes,
                                                                        (int, np.integer)):
            raise TypeError(f"`num_classes` must be an int >= 2 or None; got "
                            f"{type(num_classes).__name__} {num_classes!r}")
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2 (a label map of one class has no "
                             f"foreground); got {num_classes}")
    return sigmoid, softmax, num_classes, include_background


def check_channel_weight_values(weights: Any, channels: Optional[int],
                                allow_grad: bool = False) -> Optional["torch.Tensor"]:
    """``weights`` as a (C,) tensor of finite values >= 0, or None.

    Parameters
    ----------
    weights : array_like or torch.Tensor, shape (C,), real numbers, or None
        Not a string, not bools. A tensor keeps its device (and float64 dtype); anything
        else becomes float32.
    channels : int or None
        The number of weights required, when the settings fix it.
    allow_grad : bool
        Whether a tensor that requires grad is accepted (the functional loss: the weights
        then get gradients) or refused (a Module's weights are a fixed buffer).
    """
    import torch

    if weights is None:
        return None
    values = _weights_tensor(weights)
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"`channel_weights` must have shape (C,), one weight per channel; got "
                         f"shape {tuple(values.shape)}")
    if channels is not None and values.numel() != channels:
        raise ValueError(f"`channel_weights` must have one weight per channel ({channels}); "
                         f"got {values.numel()}")
    if values.requires_grad and not allow_grad:
        raise TypeError("`channel_weights` must not require grad: the loss keeps them as a "
                        "fixed buffer (pass weights.detach(), or use the functional sat_loss "
                        "for learnable weights)")
    detached = values.detach()
    if not bool(torch.isfinite(detached).all()) or bool((detached < 0).any()):
        raise ValueError(f"`channel_weights` must be finite and non-negative; got "
                         f"{detached.tolist()}")
    return values


def _weights_tensor(weights: Any) -> "torch.Tensor":
    """``weights`` as a float tensor, refusing strings, bools and non-numbers (TypeError)."""
    import torch

    if isinstance(weights, torch.Tensor):
        check_device(weights, "channel_weights")
        if weights.dtype == torch.bool or weights.dtype.is_complex:
            raise TypeError(f"`channel_weights` must hold real numbers; got dtype {weights.dtype}")
        return weights if weights.dtype in (torch.float32, torch.float64) else weights.float()
    if isinstance(weights, (str, bytes)):
        raise TypeError(f"`channel_weights` must be a sequence of numbers; got a string "
                        f"{weights!r}")
    array = np.asarray(weights) if array_library(weights) == "numpy" else to_numpy(weights)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"`channel_weights` must be a sequence of real numbers (not bools or "
                        f"strings); got {weights!r}")
    return torch.as_tensor(array.astype(np.float32))


def check_loss_pred(pred: Any, logits: bool) -> "torch.Tensor":
    """``pred`` as a float32/float64 (B, C, H, W) or (B, C, D, H, W) tensor; logits must be
    finite."""
    import torch

    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"`pred` must be a torch.Tensor; got {type(pred).__name__}")
    check_device(pred, "pred")
    if not pred.dtype.is_floating_point:
        kind = "logits" if logits else "probabilities"
        raise TypeError(f"`pred` must be a floating-point tensor of {kind}; got dtype {pred.dtype}")
    check_rank(pred, "pred", LOSS_RANKS, LOSS_SHAPES)
    if pred.dtype not in (torch.float32, torch.float64):
        pred = pred.float()  # float16, bfloat16 (autocast): computed in float32
    if logits:
        bad = ~torch.isfinite(pred.detach())
        if bool(bad.any()):
            n_nan = int(torch.isnan(pred.detach()).sum())
            raise ValueError(f"`pred` (logits) must be finite; found {n_nan} NaN and "
                             f"{int(bad.sum()) - n_nan} inf values")
    return pred[:, None] if pred.ndim == 3 else pred


def check_channels(pred: "torch.Tensor", softmax: bool, num_classes: Optional[int],
                   include_background: bool) -> None:
    """The channels of a (B, C, H, W) or (B, C, D, H, W) ``pred`` against the input options."""
    channels = int(pred.shape[1])
    if softmax and channels < 2:
        raise ValueError(f"`softmax=True` needs at least 2 channels in `pred`; got shape "
                         f"{tuple(pred.shape)} (use sigmoid=True for one channel)")
    if num_classes is not None and channels != num_classes:
        raise ValueError(f"`pred` must have num_classes={num_classes} channels; got shape "
                         f"{tuple(pred.shape)}")
    if not include_background and channels < 2:
        raise ValueError(f"`include_background=False` needs at least 2 channels in `pred`; got "
                         f"shape {tuple(pred.shape)}")


def _label_map_hint(pred_shape: Sequence[int], target_shape: Sequence[int]) -> str:
    """A hint for a label map given where a target of the shape of ``pred`` was expected."""
    if len(pred_shape) not in (4, 5) or int(pred_shape[1]) < 2:
        return ""
    batch, channels, *spatial = (int(s) for s in pred_shape)
    if tuple(target_shape) in {(batch, *spatial), (batch, 1, *spatial)}:
        return f" (for an integer label map pass num_classes={channels})"
    return ""


def _as_tensor(value: Any, name: str) -> "torch.Tensor":
    import torch

    if isinstance(value, torch.Tensor):
        check_device(value, name)
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"`{name}` must be a tensor or an array; got {type(value).__name__}")


def check_label_map(labels: Any, pred: "torch.Tensor", num_classes: int) -> "torch.Tensor":
    """An integer label map for (B, C, H, W) ``pred`` as a (B, H, W) int64 tensor on its
    device; for (B, C, D, H, W) ``pred``, a (B, D, H, W) one."""
    import torch

    labels = _as_tensor(labels, "target")
    batch, _, *spatial = (int(s) for s in pred.shape)
    if tuple(labels.shape) not in {(batch, *spatial), (batch, 1, *spatial)}:
        axes = "D, H, W" if len(spatial) == 3 else "H, W"
        raise ValueError(
            f"`target` must be a label map of shape (B, {axes}) = {(batch, *spatial)} or "
            f"(B, 1, {axes}) with num_classes={num_classes}; got {tuple(labels.shape)}"
        )
    if labels.dtype.is_complex:
        raise TypeError(f"`target` must hold class indices; got dtype {labels.dtype}")
    labels = labels.detach().to(pred.device).reshape(batch, *spatial)
    if labels.dtype.is_floating_point:
        odd = ~torch.isfinite(labels) | (labels != labels.round())
        if bool(odd.any()):
            raise ValueError(f"`target` must hold integer class indices in [0, {num_classes}); "
                             f"found {_describe_values(labels[odd])}")
    labels = labels.long()
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        raise ValueError(f"`target` must hold class indices in [0, {num_classes}); found "
                         f"{_describe_values(labels[outside])}")
    return labels


def check_target_like(target: Any, pred: "torch.Tensor", squeezed: bool) -> "torch.Tensor":
    """A binary or one-hot ``target`` of the shape of ``pred`` (given as (B, H, W) when
    ``squeezed``), as (B, C, H, W) in the dtype and on the device of ``pred``."""
    target = _as_tensor(target, "target")
    batch, spatial = int(pred.shape[0]), tuple(int(s) for s in pred.shape[2:])
    expected = (batch, *spatial) if squeezed else tuple(int(s) for s in pred.shape)
    if tuple(target.shape) != expected:
        raise ValueError(f"`target` must have the shape of `pred` {expected}; got "
                         f"{tuple(target.shape)}{_label_map_hint(pred.shape, target.shape)}")
    if target.dtype.is_complex:
        raise TypeError(f"`target` must hold real numbers; got dtype {target.dtype}")
    target = target.detach().to(device=pred.device, dtype=pred.dtype)
    return target[:, None] if squeezed else target


def check_mask(mask: Any, shape: tuple[int, ...], like: "torch.Tensor") -> "torch.Tensor":
    """``mask`` as a 0/1 tensor like ``like``, of shape (B, 1, H, W) or (B, C, H, W) for
    (B, C, H, W) ``shape``; given as (B, H, W), (B, 1, H, W) or (B, C, H, W), bool or 0/1.
    For volumes, (B, C, D, H, W) ``shape``, the same with (D, H, W) for (H, W)."""
    import torch

    mask = _as_tensor(mask, "mask")
    batch, channels, *spatial = shape
    allowed = list(dict.fromkeys([(batch, *spatial), (batch, 1, *spatial),
                                  (batch, channels, *spatial)]))
    if tuple(mask.shape) not in allowed:
        shapes = ", ".join(str(a) for a in allowed[:-1]) + f" or {allowed[-1]}"
        raise ValueError(f"`mask` must have shape {shapes}; got {tuple(mask.shape)}")
    if mask.dtype.is_complex:
        raise TypeError(f"`mask` must be bool or hold 0/1 values; got dtype {mask.dtype}")
    mask = mask.detach().to(device=like.device)
    if mask.dtype != torch.bool:
        odd = (mask != 0) & (mask != 1)
        if bool(odd.any()):
            raise ValueError(f"`mask` must be bool or hold 0/1 values; found "
                             f"{_describe_values(mask[odd])}")
    mask = mask.to(like.dtype)
    return mask[:, None] if mask.ndim == len(shape) - 1 else mask
