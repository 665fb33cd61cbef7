"""The CPU persistence backend: validated NumPy batches into the Numba kernels of
:mod:`satloss_gpu.kernels.cpu.local_pairing` (images) and
:mod:`satloss_gpu.kernels.cpu.local_pairing3d` (volumes, imported on first use)."""
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
    supports_volumes = True

    def check_size(self, shape: tuple[int, ...]) -> None:
        if len(shape) == 4:
            from ...kernels.cpu.local_pairing3d import MAX_VOXELS

            _check_count(int(np.prod(shape[1:])), MAX_VOXELS, "voxels per volume")
        else:
            _check_count(int(np.prod(shape[1:])), MAX_PIXELS, "pixels per image")

    def asarray(self, images: Any) -> np.ndarray:
        from ..._validation import as_numpy_batch

        return as_numpy_batch(images)

    def pairs(self, images: np.ndarray, construction: str, dims: tuple[int, ...]) -> PairIndices:
        self.check_size(tuple(images.shape))
        if images.ndim == 4:
            from ...kernels.cpu.local_pairing3d import batch_pairs3d

            image, dim, birth, death, last = batch_pairs3d(images, construction == "V", dims)
        else:
            h0_neighbors = 8 if construction == "T" else 4
            image, dim, birth, death, last = batch_pairs(images, h0_neighbors, 0 in dims,
                                                         1 in dims)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death,
                           last_index=last)


def _check_count(count: int, limit: int, what: str) -> None:
    """Raise ``ValueError`` naming ``images`` if ``count`` exceeds ``limit``."""
    if count > limit:
        raise ValueError(f"`images` must have at most {limit} {what} on the 'cpu' backend; "
                         f"got {count}")
