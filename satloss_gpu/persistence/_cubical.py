"""Batched cubical persistence of 2D images and 3D volumes with critical pixels (voxels): the
public entry point."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
from numba import njit

from .._arraylib import array_library, get_namespace
from .._validation import (HOMOLOGY_DIMS, check_choice, check_dims, check_image_shape,
                           check_spatial_dims, float_batch)
from .backends import PairIndices, get_backend
from ._diagrams import PersistenceDiagrams

__all__ = ["cubical_persistence", "CONSTRUCTIONS"]

CONSTRUCTIONS = ("T", "V")


def cubical_persistence(
    images: Any,
    *,
    spatial_dims: int = 2,
    construction: str = "T",
    superlevel: bool = False,
    dims: Optional[Iterable[int]] = None,
    backend: str = "auto",
) -> PersistenceDiagrams:
    """Persistence diagrams of a batch of 2D images or 3D volumes, with the critical pixel
    (voxel) of every value.

    Parameters
    ----------
    images : array_like, shape (H, W) or (B, H, W); (D, H, W) or (B, D, H, W) for volumes
        NumPy array, torch tensor (CPU or CUDA) or CuPy array of finite values; float32 or
        float64 (integers and bool are converted). Results are returned in the input's
        library, dtype and device; torch inputs that require grad give differentiable
        ``birth`` and ``death`` values.
    spatial_dims : {2, 3}, default 2
        2: images (the last two axes are (H, W)); 3: volumes (the last three axes are
        (D, H, W)). A 4-D array with ``spatial_dims=2`` is refused.
    construction : {"T", "V"}, default "T"
        "T": pixels (voxels) are the top-dimensional cells (gudhi ``top_dimensional_cells``):
        components are 8-connected (26 in 3D), holes (voids) 4-connected (6 in 3D). "V":
        pixels (voxels) are the vertices (gudhi ``vertices``): components 4-connected (6),
        holes 8-connected (voids 26-connected).
    superlevel : bool, default False
        Filter by decreasing values. Values stay in the input's terms: births lie above
        deaths, and the essential class dies at ``-inf``.
    dims : iterable of int, optional
        Homology dimensions to compute: a non-empty subset of (0, 1) for images (the
        default), of (0, 1, 2) for volumes (default (0, 1, 2): components, tunnels, voids).
    backend : {"auto", "cpu", "cuda", "gudhi"}, default "auto"
        "cpu": Numba, parallel over the batch. "cuda": GPU kernels (CUDA inputs; NumPy input
        under the Numba CUDA simulator). "gudhi": the reference implementation. "auto":
        "cuda" for CUDA inputs when available (and able to compute volumes, for
        ``spatial_dims=3``), else "cpu".

    Returns
    -------
    PersistenceDiagrams
        Every pair of the batch, packed, with birth and death values and pixels ((K, 2)
        (row, col); (K, 3) (z, y, x) for volumes), and the last pixel (voxel) of every image
        in the filtration order (``last_pixel``, (B, 2) or (B, 3)).

    Raises
    ------
    TypeError
        Non-numeric ``images``; ``spatial_dims``, ``superlevel`` or ``dims`` of the wrong
        type.
    ValueError
        A shape that does not fit ``spatial_dims``, an empty axis, NaN or inf values, an
        unknown ``construction`` or ``backend``, ``dims`` outside the allowed set, a backend
        that does not compute volumes, or a size beyond the backend's limits (checked before
        any work).

    Notes
    -----
    Ties are broken as if every pixel's filtration value (``f`` for sublevel, ``-f`` for
    superlevel) were raised by an infinitesimal times its C-order flat index. The diagrams
    and critical pixels are then unique, identical for every backend, and equal to gudhi's
    on the so perturbed image. Zero-persistence pairs are dropped. Each image (volume) has
    one essential class, in dimension 0, whose death pixel is (-1, -1) ((-1, -1, -1) for
    volumes).

    For CUDA inputs the computation stays on the device; only array sizes are read back.

    Examples
    --------
    >>> import numpy as np
    >>> from satloss_gpu import cubical_persistence

    A ring of low values around a high pixel: one component and one loop. The loop is born
    when the last pixel of the ring enters (ties: the largest index) and dies at the centre.

    >>> ring = np.array([[0.0, 0.0, 0.0],
    ...                  [0.0, 1.0, 0.0],
    ...                  [0.0, 0.0, 0.0]])
    >>> dg = cubical_persistence(ring)
    >>> dg.dim.tolist(), dg.birth.tolist(), dg.death.tolist()
    ([0, 1], [0.0, 0.0], [inf, 1.0])
    >>> dg.birth_pixel.tolist(), dg.death_pixel.tolist()
    ([[0, 0], [2, 1]], [[-1, -1], [1, 1]])
    >>> dg.last_pixel.tolist()
    [[1, 1]]

    A hollow cube: 26 low voxels around a high centre voxel, one component and one void
    that dies at the centre. With "T" (voids 6-connected) the void is closed by the last of
    the centre's 6 face neighbours, (2, 1, 1); with "V" (voids 26-connected) only by the
    last shell voxel, (2, 2, 2).

    >>> shell = np.zeros((3, 3, 3))
    >>> shell[1, 1, 1] = 1.0
    >>> dg = cubical_persistence(shell, spatial_dims=3)
    >>> dg.dim.tolist(), dg.birth.tolist(), dg.death.tolist()
    ([0, 2], [0.0, 0.0], [inf, 1.0])
    >>> dg.birth_voxel.tolist(), dg.death_voxel.tolist()
    ([[0, 0, 0], [2, 1, 1]], [[-1, -1, -1], [1, 1, 1]])
    >>> cubical_persistence(shell, spatial_dims=3, construction="V").birth_voxel.tolist()
    [[0, 0, 0], [2, 2, 2]]
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    images = check_image_shape(images, "images", spatial_dims)
    check_choice("construction", construction, CONSTRUCTIONS)
    allowed = HOMOLOGY_DIMS[spatial_dims]
    dims = allowed if dims is None else check_dims(dims, allowed, _dims_context(spatial_dims))
    if not isinstance(superlevel, (bool, np.bool_)):
        raise TypeError(f"`superlevel` must be a bool; got {type(superlevel).__name__}")
    impl = get_backend(backend, images, spatial_dims)
    shape = tuple(int(s) for s in images.shape)
    impl.check_size(shape if len(shape) > spatial_dims else (1,) + shape)
    batch, _ = float_batch(images, "images", spatial_dims)
    work = impl.asarray(batch)
    if superlevel:
        work = -work
    indices = impl.pairs(work, construction, dims)
    return _assemble(batch, indices, bool(superlevel))


def _dims_context(spatial_dims: int) -> str:
    """How the allowed homology dimensions depend on ``spatial_dims``, for messages."""
    if spatial_dims == 2:
        return " for images (spatial_dims=2; dimension 2 needs volumes, spatial_dims=3)"
    return " for volumes (spatial_dims=3)"


def _assemble(batch: Any, indices: PairIndices, superlevel: bool) -> PersistenceDiagrams:
    """Gather values at the critical pixels (voxels), drop zero-persistence pairs, pack the
    result."""
    n_images = int(batch.shape[0])
    shape = tuple(int(s) for s in batch.shape[1:])
    size = int(np.prod(shape))
    if array_library(batch) == "numpy" and array_library(indices.image) == "numpy":
        fields = _assemble_numpy(batch.reshape(n_images, size), indices.image, indices.dim,
                                 indices.birth_index, indices.death_index,
                                 np.array(shape, dtype=np.int64), superlevel)
        return PersistenceDiagrams(*fields, batch_size=n_images, image_shape=shape,
                                   superlevel=superlevel,
                                   last_pixel=_last_pixel(indices.last_index, shape, batch))
    image, dim, birth_index, death_index = (
        get_namespace(batch).convert(a, batch) for a in (indices.image, indices.dim,
                                                         indices.birth_index, indices.death_index)
    )
    flat = batch.reshape(n_images, size)
    essential = death_index < 0
    birth = flat[image, birth_index]
    death_gathered = flat[image, death_index * ~essential]
    infinity = -np.inf if superlevel else np.inf
    death = get_namespace(death_gathered).where_scalar(essential, infinity, death_gathered)
    keep = birth != death
    image, dim, birth_index, death_index = image[keep], dim[keep], birth_index[keep], death_index[keep]
    birth, death, essential = birth[keep], death[keep], essential[keep]
    return PersistenceDiagrams(
        image=image,
        dim=dim,
        birth=birth,
        death=death,
        birth_pixel=_stack_pixels(birth_index, shape, None),
        death_pixel=_stack_pixels(death_index, shape, essential),
        batch_size=n_images,
        image_shape=shape,
        superlevel=superlevel,
        last_pixel=_last_pixel(indices.last_index, shape, batch),
    )


def _last_pixel(last_index: Any, shape: tuple[int, ...], batch: Any) -> Any:
    """(B, ndim) coordinates of each image's last pixel (voxel) in the library of ``batch``;
    None if the backend gave none."""
    if last_index is None:
        return None
    last_index = get_namespace(batch).convert(last_index, batch)
    return _stack_pixels(last_index, shape, None)


@njit(cache=True)
def _assemble_numpy(flat, image, dim, birth_index, death_index, shape, superlevel):
    """:func:`_assemble` for NumPy inputs in one compiled pass: the same fields.

    ``shape`` is the (ndim,) int64 spatial shape; pixels come out as (count, ndim).
    """
    total = image.size
    ndim = shape.size
    keep = np.empty(total, dtype=np.bool_)
    infinity = -np.inf if superlevel else np.inf
    for k in range(total):
        death_index_k = death_index[k]
        death = infinity if death_index_k < 0 else flat[image[k], death_index_k]
        keep[k] = flat[image[k], birth_index[k]] != death
    count = keep.sum()
    out_image = np.empty(count, dtype=np.int64)
    out_dim = np.empty(count, dtype=np.int64)
    birth = np.empty(count, dtype=flat.dtype)
    death = np.empty(count, dtype=flat.dtype)
    birth_pixel = np.empty((count, ndim), dtype=np.int64)
    death_pixel = np.empty((count, ndim), dtype=np.int64)
    j = 0
    for k in range(total):
        if not keep[k]:
            continue
        b = image[k]
        out_image[j] = b
        out_dim[j] = dim[k]
        birth[j] = flat[b, birth_index[k]]
        _unravel(birth_index[k], shape, birth_pixel[j])
        if death_index[k] < 0:
            death[j] = infinity
            death_pixel[j, :] = -1
        else:
            death[j] = flat[b, death_index[k]]
            _unravel(death_index[k], shape, death_pixel[j])
        j += 1
    return out_image, out_dim, birth, death, birth_pixel, death_pixel


@njit(cache=True)
def _unravel(index, shape, out):
    """Write the C-order coordinates of the flat ``index`` in ``shape`` into ``out``."""
    for axis in range(shape.size - 1, -1, -1):
        out[axis] = index % shape[axis]
        index //= shape[axis]


def _stack_pixels(flat_index: Any, shape: tuple[int, ...], essential: Any) -> Any:
    """(K, ndim) C-order coordinates ((row, col) or (z, y, x)) from flat indices; -1 in every
    column where ``essential``."""
    columns = []
    rest = flat_index
    for extent in shape[:0:-1]:
        columns.append(rest % extent)
        rest = rest // extent
    columns.append(rest)
    pixels = get_namespace(flat_index).stack_columns(columns[::-1])
    if essential is not None:
        pixels[essential] = -1
    return pixels
