"""The container of a batch of persistence diagrams with critical pixels (voxels)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np

from .._arraylib import array_library, to_numpy
from .._validation import _dtype_kind, check_int

__all__ = ["PersistenceDiagrams"]


@dataclass(frozen=True)
class PersistenceDiagrams:
    """All persistence pairs of a batch of images (or volumes), packed, with their critical
    pixels (voxels).

    Every field is an array of length K (the number of pairs in the whole batch), in the
    library and on the device of the images they were computed from. Pairs are grouped by
    image, then by dimension. ``ndim`` below is the number of spatial dimensions: 2 for
    images (H, W), 3 for volumes (D, H, W) (see :attr:`spatial_dims`).

    Attributes
    ----------
    image : (K,) int64
        Index of the image in the batch that the pair belongs to.
    dim : (K,) int64
        Homology dimension (0: connected components, 1: loops (tunnels), 2: voids).
    birth, death : (K,) float32 or float64
        Filtration values, in the input's dtype. Essential classes die at ``+inf``
        (``-inf`` for a superlevel filtration). When the images carry gradients (torch),
        these are differentiable functions of the pixel values.
    birth_pixel, death_pixel : (K, ndim) int64
        (row, col) of the critical pixels ((z, y, x) of the critical voxels) whose values
        are the birth and the death; ``-1`` in every column as the death pixel of an
        essential class. Also available as :attr:`birth_voxel`, :attr:`death_voxel`.
    batch_size : int
        Number of images B (images without pairs count too).
    image_shape : tuple of int
        The spatial shape: (H, W) of the images or (D, H, W) of the volumes.
    superlevel : bool
        Whether the filtration was the superlevel one (births above deaths).
    last_pixel : (B, ndim) int64 or None
        Coordinates of the last pixel (voxel) of each image in the filtration's strict
        order (the largest value, ties to the largest flat index; for a superlevel
        filtration the smallest value, ties to the largest index): where the essential class
        would die if the filtration stopped at the image's last value. Per image, so
        :meth:`select` keeps it whole. Also available as :attr:`last_voxel`.

    Examples
    --------
    >>> import numpy as np
    >>> from satloss_gpu import cubical_persistence
    >>> dg = cubical_persistence(np.array([[0.0, 1.0, 0.0]]))
    >>> len(dg), dg.birth.tolist(), dg.death.tolist()
    (2, [0.0, 0.0], [inf, 1.0])

    The same values as a volume of depth 1: the same pairs, with (z, y, x) voxels.

    >>> dv = cubical_persistence(np.array([[[0.0, 1.0, 0.0]]]), spatial_dims=3)
    >>> dv.spatial_dims, dv.image_shape, dv.counts().tolist()
    (3, (1, 1, 3), [[2, 0, 0]])
    >>> dv.birth_voxel.tolist(), dv.death_voxel.tolist()
    ([[0, 0, 0], [0, 0, 2]], [[-1, -1, -1], [0, 0, 1]])
    """

    image: Any
    dim: Any
    birth: Any
    death: Any
    birth_pixel: Any
    death_pixel: Any
    batch_size: int
    image_shape: tuple
    superlevel: bool = False
    last_pixel: Any = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def library(self) -> str:
        """Array library of the fields: ``"numpy"``, ``"torch"`` or ``"cupy"``."""
        return array_library(self.birth)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions: 2 (images) or 3 (volumes)."""
        return len(self.image_shape)

    @property
    def birth_voxel(self) -> Any:
        """(K, ndim) int64: :attr:`birth_pixel` (the same array), named for volumes."""
        return self.birth_pixel

    @property
    def death_voxel(self) -> Any:
        """(K, ndim) int64: :attr:`death_pixel` (the same array), named for volumes."""
        return self.death_pixel

    @property
    def last_voxel(self) -> Any:
        """(B, ndim) int64 or None: :attr:`last_pixel` (the same array), named for volumes."""
        return self.last_pixel

    @property
    def persistence(self) -> Any:
        """(K,) absolute lifetime ``|death - birth|`` (inf for essential classes)."""
        return abs(self.death - self.birth)

    @property
    def birth_index(self) -> Any:
        """(K,) int64 flat C-order index of the birth pixel (voxel) inside its image."""
        return self._flat(self.birth_pixel)

    @property
    def death_index(self) -> Any:
        """(K,) int64 flat index of the death pixel (voxel), -1 for essential classes."""
        flat = self._flat(self.death_pixel)
        return flat - (flat + 1) * (self.death_pixel[:, 0] < 0)

    def _flat(self, pixels: Any) -> Any:
        """(K,) C-order flat indices of (K, ndim) coordinates in :attr:`image_shape`."""
        flat = pixels[:, 0]
        for axis in range(1, self.spatial_dims):
            flat = flat * self.image_shape[axis] + pixels[:, axis]
        return flat

    def select(self, mask: Any) -> "PersistenceDiagrams":
        """The pairs where the boolean (K,) ``mask`` is true, in the same container.

        Parameters
        ----------
        mask : (K,) bool array
            In the container's library and on its device (e.g. ``dg.dim == 1``).

        Raises
        ------
        TypeError
            ``mask`` not an array of bools.
        ValueError
            ``mask`` not of shape (K,).
        """
        if not hasattr(mask, "shape") or _dtype_kind(mask)[0] != "b":
            kind = _dtype_kind(mask)[1] if hasattr(mask, "shape") else type(mask).__name__
            raise TypeError(f"`mask` must be an array of bools, one per pair; got {kind}")
        if tuple(mask.shape) != (len(self),):
            raise ValueError(f"`mask` must have shape ({len(self)},), one bool per pair; got "
                             f"{tuple(mask.shape)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("image", "dim", "birth", "death", "birth_pixel", "death_pixel"):
            values[name] = values[name][mask]
        return PersistenceDiagrams(**values)

    def for_image(self, i: int, dim: Optional[int] = None) -> "PersistenceDiagrams":
        """The pairs of image ``i`` (and of dimension ``dim`` if given).

        Parameters
        ----------
        i : int
            Image index, ``-batch_size <= i < batch_size``.
        dim : int, optional
            Homology dimension to keep, 0 or 1 for 2D images, 0, 1 or 2 for volumes; all if
            None.

        Returns
        -------
        PersistenceDiagrams
            Same fields and batch size; ``image`` still holds the original index ``i``.

        Raises
        ------
        TypeError
            ``i`` or ``dim`` not an int (floats and bools are refused).
        IndexError
            ``i`` out of range.
        ValueError
            ``dim`` not a homology dimension of images of this rank.
        """
        i = check_int("i", i)
        if not -self.batch_size <= i < self.batch_size:
            raise IndexError(f"`i` must be in [-{self.batch_size}, {self.batch_size}); got {i}")
        mask = self.image == (i % self.batch_size)
        if dim is not None:
            dims = tuple(range(len(self.image_shape)))
            dim = check_int("dim", dim)
            if dim not in dims:
                raise ValueError(f"`dim` must be one of {dims} (or None) for "
                                 f"{len(self.image_shape)}D images; got {dim}")
            mask = mask & (self.dim == dim)
        return self.select(mask)

    def to_numpy(self) -> "PersistenceDiagrams":
        """A copy with every field as a NumPy array on the host (gradients dropped)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("image", "dim", "birth", "death", "birth_pixel", "death_pixel"):
            values[name] = to_numpy(values[name])
        if self.last_pixel is not None:
            values["last_pixel"] = to_numpy(self.last_pixel)
        return PersistenceDiagrams(**values)

    def counts(self) -> np.ndarray:
        """(B, ndim) int64 number of pairs per image and dimension (H0, H1; H0, H1, H2 for
        volumes), on the host."""
        image = to_numpy(self.image)
        dim = to_numpy(self.dim)
        out = np.zeros((self.batch_size, self.spatial_dims), dtype=np.int64)
        np.add.at(out, (image, np.clip(dim, 0, self.spatial_dims - 1)), 1)
        return out

    def __repr__(self) -> str:
        totals = self.counts().sum(axis=0)
        shape = ", ".join(str(int(s)) for s in self.image_shape)
        per_dim = ", ".join(f"H{d}: {int(n)}" for d, n in enumerate(totals))
        device = ""
        if self.library == "torch":
            device = f", device={self.birth.device}"
        filtration = "superlevel" if self.superlevel else "sublevel"
        return (
            f"PersistenceDiagrams(batch_size={self.batch_size}, image_shape=({shape}), "
            f"pairs={len(self)} ({per_dim}), "
            f"{filtration}, library={self.library}{device}, dtype={self.birth.dtype})"
        )

