"""The interface every persistence backend implements, and the pairs it returns."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

__all__ = ["PairIndices", "PersistenceBackend"]


@dataclass(frozen=True)
class PairIndices:
    """Persistence pairs of a batch as flat pixel indices, in a backend's array library.

    Attributes
    ----------
    image : (K,) int64
        Image of each pair; pairs are grouped by image, then by dimension.
    dim : (K,) int64
        Homology dimension, 0 or 1.
    birth_index : (K,) int64
        C-order flat index (row * W + col) of the pixel whose value is the birth.
    death_index : (K,) int64
        Flat index of the pixel whose value is the death; -1 for the essential class.
    last_index : (B,) int64 or None
        Flat index of the last pixel of each image in the (value, index) order, where the
        filtration ends (the loss lets the essential class die there); None when the backend
        does not report it.
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
    C-contiguous float32 or float64 batch of shape (B, H, W) with finite values.
    """

    #: Name used by ``backend=`` arguments.
    name: str = ""

    @classmethod
    def is_available(cls) -> bool:
        """Whether the backend can run on this machine."""
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`is_available` is false, for error messages."""
        return "its dependencies are not installed"

    @abc.abstractmethod
    def asarray(self, images: Any) -> Any:
        """Return ``images`` (B, H, W), detached, C-contiguous, in this backend's array type."""

    @abc.abstractmethod
    def pairs(self, images: Any, construction: str, dims: tuple[int, ...]) -> PairIndices:
        """Persistence pairs of the sublevel filtrations of ``images``.

        Parameters
        ----------
        images : (B, H, W) float32 or float64
            As returned by :meth:`asarray`.
        construction : {"T", "V"}
            Pixels as top-dimensional cells ("T") or as vertices ("V").
        dims : tuple of int
            Homology dimensions to compute, a non-empty subset of (0, 1).

        Returns
        -------
        PairIndices
            Pairs with birth value strictly below the death value in the (value, index)
            order. Pairs whose two values are equal may be included; the caller drops them.
        """
