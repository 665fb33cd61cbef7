"""The one place where a library's CUDA stream becomes a Numba stream."""
from __future__ import annotations

from typing import Any

__all__ = ["numba_stream"]


def numba_stream(handle: int) -> Any:
    """The Numba stream for a raw CUDA stream ``handle`` (torch's or CuPy's current stream).

    Handle 0 is the legacy default stream, which is not Numba's default stream under
    ``NUMBA_CUDA_PER_THREAD_DEFAULT_STREAM=1``, so it is named explicitly.
    """
    from numba import cuda

    return cuda.external_stream(handle) if handle else cuda.legacy_default_stream()
