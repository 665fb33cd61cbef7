"""Array-library glue of the GPU persistence pipeline: allocation, scans, sorts, launches.

The pipeline allocates its buffers in the array library of its input (torch or CuPy on a
GPU, NumPy under the Numba CUDA simulator) and hands the kernels zero-copy views. The few
whole-array steps (inclusive scan, the sort of the batch's 64-bit keys, stable per-row
argsort, reading sizes back) are written once here for the three libraries. The key sort is
CuPy's on the device (torch tensors reach it through DLPack, without a copy, on torch's
current stream) and NumPy's on the host under the simulator.

Buffers are tagged with a *kind*: ``"u64"``, ``"u32"``, ``"i32"`` or ``"i64"``. torch has no
general unsigned 64/32-bit arithmetic, so there unsigned buffers are stored as signed ones of
the same width and reinterpreted by the kernel views; every glue operation on them respects
that (unsigned row sort flips the sign bit around a signed sort).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._launch import quiet
from .streams import numba_stream

__all__ = ["Glue", "KernelView", "glue_for"]

_NUMPY_KIND = {"u64": np.uint64, "u32": np.uint32, "i32": np.int32, "i64": np.int64}
_SIGN_BIT = -(1 << 63)
_ALL_ONES = (1 << 64) - 1


class KernelView(np.ndarray):
    """A buffer as handed to a simulated kernel: the NumPy glue's whole-array steps refuse it.

    On a GPU a kernel view is a Numba device array, which the array library's operations
    (scans, sorts, comparisons) do not accept; under the simulator both would be the same
    NumPy array. Marking the views keeps that mistake from passing unseen in the simulator.
    """


def _library_array(array: Any) -> Any:
    """``array`` if it is a library buffer; TypeError for a kernel view."""
    if isinstance(array, KernelView):
        raise TypeError("a kernel view was passed to an array-library operation; pass the "
                        "library buffer it was made from")
    return array


class Glue:
    """Operations of one array library; subclasses for NumPy, torch and CuPy."""

    library = "numpy"
    simulated = True

    def alloc(self, kind: str, size: int) -> Any:
        """Uninitialised 1D buffer of ``size`` elements of ``kind``."""
        return np.empty(max(int(size), 1), dtype=_NUMPY_KIND[kind])

    def full(self, kind: str, size: int, value: int) -> Any:
        """1D buffer of ``kind`` filled with ``value`` (all-ones for value -1 when unsigned)."""
        out = self.alloc(kind, size)
        self.fill(out, value)
        return out

    def fill(self, array: Any, value: int) -> None:
        """Fill in place; ``-1`` means all bits set for unsigned kinds."""
        if value < 0 and array.dtype.kind == "u":
            value = int(np.iinfo(array.dtype).max)
        array.fill(value)

    def arange(self, kind: str, size: int) -> Any:
        return np.arange(max(int(size), 1), dtype=_NUMPY_KIND[kind])

    def from_host(self, kind: str, values: np.ndarray) -> Any:
        return np.ascontiguousarray(values, dtype=_NUMPY_KIND[kind])

    def cumsum(self, array: Any) -> Any:
        """Inclusive scan as int64."""
        return np.cumsum(_library_array(array), dtype=np.int64)

    def item(self, array: Any, index: int) -> int:
        """Read one element back to the host (the only device-to-host transfers)."""
        return int(_library_array(array)[index])

    def max_item(self, array: Any) -> int:
        return int(_library_array(array).max())

    def to_host(self, array: Any) -> np.ndarray:
        """Copy a small buffer back to a NumPy array (a synchronising read-back)."""
        return np.array(_library_array(array))

    def stack_i64(self, *arrays: Any) -> Any:
        """The arrays end to end as one int64 buffer (so that one read-back fetches them)."""
        return np.concatenate([np.asarray(_library_array(a), dtype=np.int64)
                               for a in arrays])

    def merged_flags(self, result: Any, size: int) -> Any:
        """int32 flags: 1 where a u64 pass result is not the all-ones "no merge" word."""
        return (_library_array(result)[:size] != np.uint64(_ALL_ONES)).astype(np.int32)

    def sort_u64(self, array: Any, start: int, stop: int) -> None:
        """Sort ``array[start:stop]`` of a u64 buffer in place (on the host in the simulator)."""
        _library_array(array)[start:stop].sort()

    def sort_rows_u64(self, array: Any, rows: int, stride: int, width: int,
                      counts: Any, pad: int) -> Any:
        """Sort the first ``counts[r]`` entries of each row of a (rows, stride) u64 buffer.

        Returns a contiguous (rows * width) buffer; entries past ``counts[r]`` hold ``pad``.
        """
        view = _library_array(array)[: rows * stride].reshape(rows, stride)[:, :width]
        valid = np.arange(width)[None, :] < counts.astype(np.int64)[:, None]
        padded = np.where(valid, view, np.uint64(pad))
        return np.ascontiguousarray(np.sort(padded, axis=1)).reshape(-1)

    def argsort_rows(self, images: Any, rows: int, width: int) -> Any:
        """Stable argsort of each row of ``images`` viewed as (rows, width); int64."""
        return np.argsort(_library_array(images).reshape(rows, width), axis=1, kind="stable").astype(np.int64)

    def float32_bits(self, images: Any) -> Any:
        """The raw bits of a float32 batch as a flat u32 kernel array."""
        return images.reshape(-1).view(np.uint32)

    def view(self, array: Any, kind: str) -> Any:
        """Kernel-ready view of a buffer (marked, so that library steps refuse it)."""
        return _library_array(array).view(KernelView)

    def launcher(self, kernel: Any, blocks: int, threads: int) -> Any:
        """``kernel[blocks, threads]`` on the library's current stream (no occupancy warning)."""
        return quiet(kernel[blocks, threads])

    def sm_count(self) -> int:
        return 1


class TorchGlue(Glue):
    """torch CUDA tensors; unsigned kinds stored as signed tensors of the same width."""

    library = "torch"
    simulated = False

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.dtypes = {"u64": torch.int64, "u32": torch.int32, "i32": torch.int32,
                       "i64": torch.int64}

    def alloc(self, kind: str, size: int) -> Any:
        return self.torch.empty(max(int(size), 1), dtype=self.dtypes[kind], device=self.device)

    def fill(self, array: Any, value: int) -> None:
        array.fill_(value)

    def arange(self, kind: str, size: int) -> Any:
        return self.torch.arange(max(int(size), 1), dtype=self.dtypes[kind], device=self.device)

    def from_host(self, kind: str, values: np.ndarray) -> Any:
        host = np.ascontiguousarray(values, dtype=_NUMPY_KIND[kind])
        signed = host.view(np.int64 if host.itemsize == 8 else np.int32)
        return self.torch.from_numpy(signed.copy()).to(self.device)

    def cumsum(self, array: Any) -> Any:
        return self.torch.cumsum(array, 0, dtype=self.torch.int64)

    def max_item(self, array: Any) -> int:
        return int(array.max())

    def to_host(self, array: Any) -> np.ndarray:
        return array.cpu().numpy()

    def stack_i64(self, *arrays: Any) -> Any:
        return self.torch.cat([a.to(self.torch.int64) for a in arrays])

    def merged_flags(self, result: Any, size: int) -> Any:
        return (result[:size] != -1).to(self.torch.int32)

    def sort_u64(self, array: Any, start: int, stop: int) -> None:
        """Sort a slice of a u64 buffer in place with CuPy, on torch's current stream.

        The tensor reaches CuPy through DLPack (no copy). Without CuPy, torch sorts the
        sign-flipped signed words instead.
        """
        if stop - start < 2:
            return
        piece = array[start:stop]
        try:
            import cupy
        except ImportError:
            piece.copy_(self.torch.sort(piece ^ _SIGN_BIT).values ^ _SIGN_BIT)
            return
        handle = self.torch.cuda.current_stream(self.device).cuda_stream
        stream = cupy.cuda.ExternalStream(handle) if handle else cupy.cuda.Stream.null
        with cupy.cuda.Device(piece.device.index), stream:
            cupy.from_dlpack(piece).view(cupy.uint64).sort()

    def sort_rows_u64(self, array, rows, stride, width, counts, pad):
        torch = self.torch
        view = array[: rows * stride].view(rows, stride)[:, :width]
        valid = torch.arange(width, device=self.device)[None, :] < counts.long()[:, None]
        pad_signed = int(np.array(pad, dtype=np.uint64).view(np.int64))
        padded = torch.where(valid, view, torch.full_like(view, pad_signed))
        flipped = torch.sort(padded ^ _SIGN_BIT, dim=1).values ^ _SIGN_BIT
        return flipped.contiguous().view(-1)

    def argsort_rows(self, images, rows, width):
        return self.torch.sort(images.reshape(rows, width), dim=1, stable=True).indices

    def float32_bits(self, images):
        return images.reshape(-1).view(self.torch.int32)

    def view(self, array: Any, kind: str) -> Any:
        from numba import cuda

        dev = cuda.as_cuda_array(array, sync=False)
        if kind in ("u64", "u32"):
            dev = dev.view(_NUMPY_KIND[kind])
        return dev

    def launcher(self, kernel, blocks, threads):
        if getattr(self, "_stream", None) is None:
            # Launch on torch's current stream.
            self._stream = numba_stream(self.torch.cuda.current_stream(self.device).cuda_stream)
        return quiet(kernel[blocks, threads, self._stream])

    def sm_count(self) -> int:
        return int(self.torch.cuda.get_device_properties(self.device).multi_processor_count)


class CupyGlue(Glue):
    """CuPy arrays (native unsigned dtypes)."""

    library = "cupy"
    simulated = False

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy

    def alloc(self, kind, size):
        return self.cupy.empty(max(int(size), 1), dtype=_NUMPY_KIND[kind])

    def fill(self, array, value):
        if value < 0 and array.dtype.kind == "u":
            value = int(np.iinfo(array.dtype).max)
        array.fill(value)

    def arange(self, kind, size):
        return self.cupy.arange(max(int(size), 1), dtype=_NUMPY_KIND[kind])

    def from_host(self, kind, values):
        return self.cupy.asarray(np.ascontiguousarray(values, dtype=_NUMPY_KIND[kind]))

    def cumsum(self, array):
        return self.cupy.cumsum(array, dtype=self.cupy.int64)

    def max_item(self, array):
        return int(array.max())

    def to_host(self, array):
        return self.cupy.asnumpy(array)

    def stack_i64(self, *arrays):
        return self.cupy.concatenate([a.astype(self.cupy.int64) for a in arrays])

    def merged_flags(self, result, size):
        return (result[:size] != self.cupy.uint64(_ALL_ONES)).astype(self.cupy.int32)

    def sort_u64(self, array, start, stop):
        array[start:stop].sort()

    def sort_rows_u64(self, array, rows, stride, width, counts, pad):
        cupy = self.cupy
        view = array[: rows * stride].reshape(rows, stride)[:, :width]
        valid = cupy.arange(width)[None, :] < counts.astype(cupy.int64)[:, None]
        padded = cupy.where(valid, view, cupy.uint64(pad))
        return cupy.ascontiguousarray(cupy.sort(padded, axis=1)).reshape(-1)

    def argsort_rows(self, images, rows, width):
        # cupy.argsort is a stable radix/merge sort on the device.
        return self.cupy.argsort(images.reshape(rows, width), axis=1).astype(self.cupy.int64)

    def float32_bits(self, images):
        return images.reshape(-1).view(self.cupy.uint32)

    def view(self, array, kind):
        from numba import cuda

        return cuda.as_cuda_array(array, sync=False)

    def launcher(self, kernel, blocks, threads):
        if getattr(self, "_stream", None) is None:
            self._stream = numba_stream(self.cupy.cuda.get_current_stream().ptr)
        return quiet(kernel[blocks, threads, self._stream])

    def sm_count(self):
        return int(self.cupy.cuda.Device().attributes["MultiProcessorCount"])


def glue_for(images: Any, library: str) -> Glue:
    """The glue for ``images`` of array library ``library`` ("numpy" means the simulator)."""
    if library == "torch":
        return TorchGlue(images.device)
    if library == "cupy":
        return CupyGlue()
    return Glue()
