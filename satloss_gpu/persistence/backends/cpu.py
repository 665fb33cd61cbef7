"""The CPU persistence backend: validated NumPy batches into the Numba kernels of
:mod:`satloss_gpu.kernels.cpu.local_pairing`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...kernels.cpu.local_pairing import MAX_PIXELS, batch_pairs
from ._base import PairIndices, PersistenceBackend

__all__ = ["CPUBackend"]


class CPUBackend(PersistenceBackend):
    """Numba CPU backend (local pairing); threads over the batch (``numba.set_num_threads``
    sets how many, see :mod:`satloss_gpu.kernels.cpu.local_pairing`)."""

    name = "cpu"

    def asarray(self, images: Any) -> np.ndarray:
        from ..._validation import as_numpy_batch

        return as_numpy_batch(images)

    def pairs(self, images: np.ndarray, construction: str, dims: tuple[int, ...]) -> PairIndices:
        n_pixels = images.shape[1] * images.shape[2]
        if n_pixels > MAX_PIXELS:
            raise ValueError(
                f"`images` must have at most {MAX_PIXELS} pixels per image; got {n_pixels}"
            )
        h0_neighbors = 8 if construction == "T" else 4
        image, dim, birth, death, last = batch_pairs(images, h0_neighbors, 0 in dims, 1 in dims)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death,
                           last_index=last)
