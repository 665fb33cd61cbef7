"""Batched cubical persistence of 2D images with critical pixels: the public entry point."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from numba import njit

from .._arraylib import array_library, get_namespace
from .._validation import check_choice, check_dims, check_images
from .backends import PairIndices, get_backend
from ._diagrams import PersistenceDiagrams

__all__ = ["cubical_persistence", "CONSTRUCTIONS"]

CONSTRUCTIONS = ("T", "V")


def cubical_persistence(
    images: Any,
    *,
    construction: str = "T",
    superlevel: bool = False,
    dims: Iterable[int] = (0, 1),
    backend: str = "auto",
) -> PersistenceDiagrams:
    """Persistence diagrams of a batch of 2D images, with the critical pixel of every value.

    Parameters
    ----------
    images : array_like, shape (H, W) or (B, H, W)
        NumPy array, torch tensor (CPU or CUDA) or CuPy array of finite values; float32 or
        float64 (integers and bool are converted). Results are returned in the input's
        library, dtype and device; torch inputs that require grad give differentiable
        ``birth`` and ``death`` values.
    construction : {"T", "V"}, default "T"
        "T": pixels are the top-dimensional squares (gudhi ``top_dimensional_cells``):
        components are 8-connected, holes 4-connected. "V": pixels are the vertices (gudhi
        ``vertices``): components 4-connected, holes 8-connected.
    superlevel : bool, default False
        Filter by decreasing values. Values stay in the input's terms: births lie above
        deaths, and the essential class dies at ``-inf``.
    dims : iterable of int, default (0, 1)
        Homology dimensions to compute.
    backend : {"auto", "cpu", "cuda", "gudhi"}, default "auto"
        "cpu": Numba, parallel over the batch. "cuda": GPU kernels (CUDA inputs; NumPy input
        under the Numba CUDA simulator). "gudhi": the reference implementation. "auto":
        "cuda" for CUDA inputs when available, else "cpu".

    Returns
    -------
    PersistenceDiagrams
        Every pair of the batch, packed, with birth and death values and pixels, and the
        last pixel of every image in the filtration order (``last_pixel``, (B, 2)).

    Notes
    -----
    Ties are broken as if every pixel's filtration value (``f`` for sublevel, ``-f`` for
    superlevel) were raised by an infinitesimal times its C-order flat index. The diagrams
    and critical pixels are then unique, identical for every backend, and equal to gudhi's
    on the so perturbed image. Zero-persistence pairs are dropped. Each image has one
    essential class, in dimension 0, whose death pixel is (-1, -1).

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
    """
    batch, single = check_images(images, "images")
    check_choice("construction", construction, CONSTRUCTIONS)
    dims = check_dims(dims)
    if not isinstance(superlevel, (bool, np.bool_)):
        raise TypeError(f"`superlevel` must be a bool; got {type(superlevel).__name__}")
    impl = get_backend(backend, batch)
    work = impl.asarray(batch)
    if superlevel:
        work = -work
    indices = impl.pairs(work, construction, dims)
    return _assemble(batch, indices, bool(superlevel))


def _assemble(batch: Any, indices: PairIndices, superlevel: bool) -> PersistenceDiagrams:
    """Gather values at the critical pixels, drop zero-persistence pairs, pack the result."""
    n_images, height, width = (int(s) for s in batch.shape)
    if array_library(batch) == "numpy" and array_library(indices.image) == "numpy":
        fields = _assemble_numpy(batch.reshape(n_images, height * width), indices.image,
                                 indices.dim, indices.birth_index, indices.death_index, width,
                                 superlevel)
        return PersistenceDiagrams(*fields, batch_size=n_images, image_shape=(height, width),
                                   superlevel=superlevel,
                                   last_pixel=_last_pixel(indices.last_index, width, batch))
    image, dim, birth_index, death_index = (
        get_namespace(batch).convert(a, batch) for a in (indices.image, indices.dim,
                                                         indices.birth_index, indices.death_index)
    )
    flat = batch.reshape(n_images, height * width)
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
        birth_pixel=_stack_pixels(birth_index, width, None),
        death_pixel=_stack_pixels(death_index, width, essential),
        batch_size=n_images,
        image_shape=(height, width),
        superlevel=superlevel,
        last_pixel=_last_pixel(indices.last_index, width, batch),
    )


def _last_pixel(last_index: Any, width: int, batch: Any) -> Any:
    """(B, 2) (row, col) of each image's last pixel in the library of ``batch``; None if the
    backend gave none."""
    if last_index is None:
        return None
    last_index = get_namespace(batch).convert(last_index, batch)
    return _stack_pixels(last_index, width, None)


@njit(cache=True)
def _assemble_numpy(flat, image, dim, birth_index, death_index, width, superlevel):
    """:func:`_assemble` for NumPy inputs in one compiled pass: the same fields."""
    total = image.size
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
    birth_pixel = np.empty((count, 2), dtype=np.int64)
    death_pixel = np.empty((count, 2), dtype=np.int64)
    j = 0
    for k in range(total):
        if not keep[k]:
            continue
        b = image[k]
        out_image[j] = b
        out_dim[j] = dim[k]
        birth[j] = flat[b, birth_index[k]]
        birth_pixel[j, 0] = birth_index[k] // width
        birth_pixel[j, 1] = birth_index[k] % width
        if death_index[k] < 0:
            death[j] = infinity
            death_pixel[j, 0] = -1
            death_pixel[j, 1] = -1
        else:
            death[j] = flat[b, death_index[k]]
            death_pixel[j, 0] = death_index[k] // width
            death_pixel[j, 1] = death_index[k] % width
        j += 1
    return out_image, out_dim, birth, death, birth_pixel, death_pixel


def _stack_pixels(flat_index: Any, width: int, essential: Any) -> Any:
    """(K, 2) (row, col) from flat indices; (-1, -1) where ``essential``."""
    rows = flat_index // width
    cols = flat_index % width
    pixels = get_namespace(flat_index).stack_columns([rows, cols])
    if essential is not None:
        pixels[essential] = -1
    return pixels
