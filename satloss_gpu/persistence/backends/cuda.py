"""The GPU backend: the whole batch on the device, with parallelism inside every image.

Local pairing (kernels in ``satloss_gpu.kernels.cuda.local_pairing``; the per-pixel rule is
shared with the CPU backend). Every stage is one launch, or a fixed sequence of launches, for
all images of the batch, H0 and H1 together:

1. order words: order-preserving bits of float32 values, or per-image ranks from a stable
   batched sort for float64 (exact: float64 values never go through float32);
2. the per-pixel rule, one thread per pixel: critical edges counted, scanned and compacted,
   gradient parents of corners and squares written;
3. pointer jumping along the gradient paths;
4. ONE sort of the 64-bit keys of every critical edge of the batch (CuPy on the device, on
   torch tensors through DLPack without copies; NumPy on the host under the simulator);
5. the elder rule on the sorted edges: a corner pass (Kruskal), then a square pass in
   reversed order on the edges that merged nothing (duality), each by recursive halving over
   all images at once, or by the sequential one-thread-per-image baseline;
6. packed output written on the device: pairs grouped by image, then dimension, and each
   image's last pixel.

One read-back per call (the critical-edge and critical-corner counts of every image, after
step 2) sizes every buffer: each critical edge gives exactly one pair (Euler characteristic),
so the output size is known before the pairing runs, and nothing is ever truncated. All
launches go to the caller's current stream (torch's or CuPy's).

Batches of volumes (B, D, H, W) run the same stages with 3D kernels (per-voxel rule, one sort
of critical edges and faces, both elder-rule passes in the same launches); their H1 pairs are
computed on the host by the CPU core, overlapped with the device stages (see ``_cuda3d``).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from ._base import PairIndices, PersistenceBackend
from ._cuda2d import _levels, _Pipeline  # noqa: F401 (the 2D pipeline; tests patch it here)

__all__ = ["CUDABackend", "PAIRING_METHODS", "H1_METHODS"]

PAIRING_METHODS = ("halving", "sequential")
H1_METHODS = ("host", "device")


def _simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


class CUDABackend(PersistenceBackend):
    """Numba-CUDA kernels on torch CUDA tensors or CuPy arrays (NumPy under the simulator).

    Parameters
    ----------
    pairing : {"halving", "sequential"}, default "halving"
        Elder-rule pairing of the sorted critical edges: recursive halving, every level one
        launch sequence over all edges of the batch, or the sequential one-thread-per-image
        baseline (for benchmarks).
    threads : int, optional
        Threads per block of every kernel (default 256; 16 under the simulator).
    base_edges : int, default 32
        The halving stops at runs of this many consecutive edges of an image (a power of
        two), each then paired by one thread: fewer levels (launches over all edges) for
        more sequential work per thread. 1 runs every level in parallel.
    h1 : {"host", "device"}, default "host"
        H1 of volumes: the CPU core on a host thread, overlapped with the device stages;
        or the Morse boundaries of the columns on the device and their reduction on the
        host (``satloss_gpu.kernels.cuda.morse_h1``). Images are not affected.
    """

    name = "cuda"
    #: Batches of volumes (B, D, H, W) run the 3D pipeline of ``_cuda3d``.
    supports_volumes = True

    def __init__(self, pairing: str = "halving", threads: Optional[int] = None,
                 base_edges: int = 32, h1: str = "host") -> None:
        from ..._validation import check_choice

        self.pairing = check_choice("pairing", pairing, PAIRING_METHODS)
        self.h1 = check_choice("h1", h1, H1_METHODS)
        if (isinstance(base_edges, bool) or not isinstance(base_edges, (int, np.integer))
                or base_edges < 1 or base_edges & (base_edges - 1)):
            raise ValueError(f"`base_edges` must be a power of two (1, 2, 4, ...); "
                             f"got {base_edges!r}")
        self.base_edges = int(base_edges)
        self.threads = threads
        #: Called with a stage name after each stage's launches (benchmarks record events).
        self.stage_hook: Optional[Callable[[str], None]] = None
        #: Sizes of the last call: critical edges (in all, per pixel, longest image list),
        #: halving levels.
        self.last_stats: dict = {}

    @classmethod
    def is_available(cls) -> bool:
        if _simulator():
            return True
        try:
            from numba import cuda

            return bool(cuda.is_available())
        except Exception:  # numba-cuda missing or no driver
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        return ("no CUDA GPU is visible to numba.cuda (set NUMBA_ENABLE_CUDASIM=1 to run the "
                "kernels in the simulator)")

    def asarray(self, images: Any) -> Any:
        """(B, H, W) float batch as a contiguous device array (NumPy under the simulator).

        torch CUDA tensors and CuPy arrays are used in place (detached); under the simulator
        NumPy and CPU torch input become NumPy. On a real GPU, host input goes to torch CUDA.
        """
        from ..._arraylib import array_library, is_cuda_array, to_numpy

        library = array_library(images)
        if _simulator():
            return np.ascontiguousarray(to_numpy(images))
        if library == "torch" and images.is_cuda:
            return images.detach().contiguous()
        if library == "cupy":
            import cupy

            return cupy.ascontiguousarray(images)
        if not is_cuda_array(images):
            import torch

            return torch.as_tensor(np.ascontiguousarray(to_numpy(images)), device="cuda")
        raise TypeError(f"`images` of type {type(images).__name__} cannot go to the GPU")

    def check_size(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming ``images`` for volume batches beyond the index widths."""
        if len(shape) == 4:
            from ._cuda3d import check_volume_shape

            check_volume_shape(tuple(shape))

    def pairs(self, images: Any, construction: str, dims: tuple[int, ...]) -> PairIndices:
        from ..._arraylib import array_library
        from ...kernels.cuda._glue import glue_for

        glue = glue_for(images, array_library(images))
        pipeline = _Pipeline
        if len(images.shape) == 4:
            from ._cuda3d import Pipeline3D as pipeline
        if glue.library == "torch":
            # Numba launches in the thread's current CUDA context: make it the input's device.
            import torch

            with torch.cuda.device(images.device):
                return pipeline(glue, images, construction, tuple(dims), self).run()
        return pipeline(glue, images, construction, tuple(dims), self).run()
