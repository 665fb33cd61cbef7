"""The reference backend: gudhi's cubical complexes, one image (volume) at a time, on the CPU.

gudhi breaks ties between equal values by its internal cell order, which no pixel rule
reproduces. To follow the tie rule of :func:`satloss_gpu.cubical_persistence`, every image is
replaced by the rank of each pixel in the strict (value, C-order index) order before it is
handed to gudhi: persistence pairs depend on the order of the values only, so this is gudhi
run on the index-perturbed image, with the values read back unperturbed by the caller.
Volumes (D, H, W) are handled the same way, with H2 (voids) as well.

Coefficients are in Z/2, as in the other backends (and cripser, Betti-Matching-3D). gudhi's
default field, Z/11, gives other H1 pairs on some volumes: a loop that winds twice around a
tunnel of a later sublevel set dies there with Z/2 coefficients only (2D images are not
affected).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._base import PairIndices, PersistenceBackend

__all__ = ["GudhiBackend", "strict_ranks", "gudhi_to_c_order", "BYTES_PER_CELL"]

#: Host bytes per cell of gudhi's cubical complex while computing persistence with critical
#: cells (about 600 bytes per voxel, i.e. 75 per cell, measured on 128^3 volumes), with margin.
BYTES_PER_CELL = 100


def strict_ranks(image: np.ndarray) -> np.ndarray:
    """Rank of every pixel (voxel) in the (value, C-order flat index) order.

    Parameters
    ----------
    image : (H, W) or (D, H, W) float ndarray

    Returns
    -------
    float64 ndarray of the shape of ``image``
        Distinct ranks 0 .. image.size - 1, as floats for gudhi.
    """
    order = np.argsort(image.ravel(), kind="stable")
    ranks = np.empty(order.size, dtype=np.float64)
    ranks[order] = np.arange(order.size, dtype=np.float64)
    return ranks.reshape(image.shape)


def gudhi_to_c_order(flat_f: Any, shape: tuple[int, ...]) -> np.ndarray:
    """C-order flat indices of the cells that gudhi names by ``flat_f``.

    gudhi numbers the top-dimensional cells (T) and the vertices (V) of an array of ``shape``
    with the first axis varying fastest (Fortran order); the API uses C order.

    Parameters
    ----------
    flat_f : (N,) integer array_like
        Indices as returned by ``cofaces_of_persistence_pairs`` or
        ``vertices_of_persistence_pairs``.
    shape : tuple of int
        (H, W) or (D, H, W).

    Returns
    -------
    (N,) int64 ndarray
    """
    coords = np.unravel_index(np.asarray(flat_f, dtype=np.int64).ravel(), shape, order="F")
    return np.ravel_multi_index(coords, shape).astype(np.int64)


class GudhiBackend(PersistenceBackend):
    """gudhi ``CubicalComplex`` on rank images (volumes); T: ``top_dimensional_cells`` and
    ``cofaces_of_persistence_pairs``, V: ``vertices`` and ``vertices_of_persistence_pairs``."""

    name = "gudhi"
    supports_volumes = True

    @classmethod
    def is_available(cls) -> bool:
        try:
            import gudhi  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        return "gudhi is not installed (pip install gudhi)"

    def check_size(self, shape: tuple[int, ...]) -> None:
        """Refuse an image (volume) whose cubical complex would not fit in host memory.

        gudhi stores every cell ((2n + 1) per axis) and sorts them; the estimate is
        :data:`BYTES_PER_CELL` per cell of one image, which it handles at a time.

        Raises
        ------
        MemoryError
            When the estimate exceeds the memory available now.
        """
        from ..._validation import _require

        cells = int(np.prod([2 * int(s) + 1 for s in shape[1:]]))
        _require(cells * BYTES_PER_CELL,
                 f"`images` of shape {tuple(shape)} on the 'gudhi' backend",
                 "use backend='cpu', or smaller images")

    def asarray(self, images: Any) -> np.ndarray:
        from ..._validation import as_numpy_batch

        return as_numpy_batch(images)

    def pairs(self, images: np.ndarray, construction: str, dims: tuple[int, ...]) -> PairIndices:
        parts = [self._image_pairs(image, construction, dims) for image in images]
        columns = []
        for i, (dim, birth, death, _) in enumerate(parts):
            columns.append((np.full(dim.size, i, dtype=np.int64), dim, birth, death))
        image, dim, birth, death = (np.concatenate(c) for c in zip(*columns))
        last = np.array([part[3] for part in parts], dtype=np.int64)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death,
                           last_index=last)

    @staticmethod
    def _image_pairs(image: np.ndarray, construction: str, dims: tuple[int, ...]):
        """(dim, birth_index, death_index, last_index) of one image (H, W) or volume (D, H, W)."""
        import gudhi

        ranks = strict_ranks(image)
        if construction == "T":
            complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
        else:
            complex_ = gudhi.CubicalComplex(vertices=ranks)
        complex_.compute_persistence(homology_coeff_field=2, min_persistence=0)
        if construction == "T":
            regular, essential = complex_.cofaces_of_persistence_pairs()
        else:
            regular, essential = complex_.vertices_of_persistence_pairs()

        dim_col, birth_col, death_col = [], [], []
        for d in dims:
            if d < len(regular) and len(regular[d]):
                cells = np.asarray(regular[d]).reshape(-1, 2)
                births = gudhi_to_c_order(cells[:, 0], image.shape)
                deaths = gudhi_to_c_order(cells[:, 1], image.shape)
                dim_col.append(np.full(births.size, d, dtype=np.int64))
                birth_col.append(births)
                death_col.append(deaths)
            if d < len(essential) and len(essential[d]):
                births = gudhi_to_c_order(essential[d], image.shape)
                dim_col.append(np.full(births.size, d, dtype=np.int64))
                birth_col.append(births)
                death_col.append(np.full(births.size, -1, dtype=np.int64))
        last = int(np.argmax(ranks))  # the last pixel of the strict order: the largest rank
        if not dim_col:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, last
        return (np.concatenate(dim_col), np.concatenate(birth_col), np.concatenate(death_col),
                last)
