"""The interface every persistence backend implements, and the pairs it returns."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

__all__ = ["PairIndices", "PersistenceBackend"]


@dataclass(frozen=True)
class PairIndices:
    """Persistence pairs of a batch as flat pixel (voxel) indices, in a backend's array library.

    Attributes
    ----------
    image : (K,) int64
        Image of each pair; pairs are grouped by image, then by dimension.
    dim : (K,) int64
        Homology dimension: 0 or 1 for images, 0, 1 or 2 for volumes.
    birth_index : (K,) int64
        C-order flat index (``row * W + col``; ``(z * H + y) * W + x`` for volumes) of the
        pixel (voxel) whose value is the birth.
    death_index : (K,) int64
        Flat index of the pixel (voxel) whose value is the death; -1 for the essential class.
    last_index : (B,) int64 or None
        Flat index of the last pixel (voxel) of each image in the (value, index) order, where
        the filtration ends (the loss lets the essential class die there); None when the
        backend does not report it.
    """

    image: Any
    dim: Any
    birth_index: Any
    death_index: Any
    last_index: Any = None


class PersistenceBackend(abc.ABC):
    """Interface of a persistence backend.

    Subclasses implement :meth:`asarray` (move a validated float batch into the array type
    the backend computes on) and :meth:`pairs` (the computation). They may assume a
    C-contiguous float32 or float64 batch of shape (B, H, W) with finite values, or
    (B, D, H, W) when they declare :attr:`supports_volumes`. :meth:`check_size` may refuse
    shapes beyond the backend's limits before any work is done.
    """

    #: Name used by ``backend=`` arguments.
    name: str = ""
    #: Whether :meth:`pairs` accepts batches of volumes (B, D, H, W).
    supports_volumes: bool = False

    @classmethod
    def is_available(cls) -> bool:
        """Whether the backend can run on this machine."""
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`is_available` is false, for error messages."""
        return "its dependencies are not installed"

    def check_size(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming ``images`` if a batch of ``shape`` is beyond this
        backend's limits (index widths, memory); called before :meth:`asarray`.

        Parameters
        ----------
        shape : tuple of int
            (B, H, W) or (B, D, H, W) of the validated batch.
        """

    @abc.abstractmethod
    def asarray(self, images: Any) -> Any:
        """Return ``images`` (B, H, W) or (B, D, H, W), detached, C-contiguous, in this
        backend's array type."""

    @abc.abstractmethod
    def pairs(self, images: Any, construction: str, dims: tuple[int, ...]) -> PairIndices:
        """Persistence pairs of the sublevel filtrations of ``images``.

        Parameters
        ----------
        images : (B, H, W) or (B, D, H, W) float32 or float64
            As returned by :meth:`asarray`; volumes only if :attr:`supports_volumes`.
        construction : {"T", "V"}
            Pixels (voxels) as top-dimensional cells ("T") or as vertices ("V").
        dims : tuple of int
            Homology dimensions to compute, a sorted non-empty subset of (0, 1) for images,
            of (0, 1, 2) for volumes.

        Returns
        -------
        PairIndices
            Pairs with birth value strictly below the death value in the (value, index)
            order. Pairs whose two values are equal may be included; the caller drops them.
        """
