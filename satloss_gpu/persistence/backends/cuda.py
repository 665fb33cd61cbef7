"""The GPU backend: the whole batch on the device, with parallelism inside every image.

Pipeline (kernels in ``satloss_gpu.kernels``). H0 and H1 of every image are
*problems* of one batch (H1 is H0 of the reversed order with a frame, by duality), so every
stage is one launch for all of them:

1. order words: order-preserving bits of float32 values, or per-image ranks from a stable
   batched sort for float64 (exact: float64 keys never go through float32);
2. steepest descent + pointer jumping: every pixel gets its basin (one thread per pixel);
3. basin-graph edges: per weight pixel one edge to each other basin among its earlier
   neighbours (count, scan, emit);
4. Boruvka rounds with atomic min on unique 64-bit edge keys: the minimum spanning forest of
   every basin graph in O(log n) rounds; only its edges can pair anything;
5. per-problem sort of the forest edges, then elder-rule pairing by recursive halving, one
   thread block per problem (or the sequential one-thread-per-problem baseline);
6. packed output written on the device: pairs grouped by image, then dimension.

Only sizes are read back to the host (edge totals, live edges per Boruvka round, the longest
forest, the number of pairs). Buffers are sized by exact bounds: a pixel has at most 7 basin
edges, a forest fewer edges than nodes, and an image at most one pair per forest edge plus
its essential class, so nothing is ever truncated.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np

from ._base import PairIndices, PersistenceBackend

__all__ = ["CUDABackend", "PAIRING_METHODS"]

PAIRING_METHODS = ("halving", "sequential")
_MAX_BORUVKA_ROUNDS = 64
_SIM_THREADS = 16
_SIM_BLOCKS = 3
_SIM_PAIRING_THREADS = 8


def _simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


class CUDABackend(PersistenceBackend):
    """Numba-CUDA kernels on torch CUDA tensors or CuPy arrays (NumPy under the simulator).

    Parameters
    ----------
    pairing : {"halving", "sequential"}, default "halving"
        Elder-rule pairing of the spanning-forest edges: recursive halving with a thread block
        per problem, or the sequential one-thread-per-problem baseline (for benchmarks).
    threads : int, optional
        Threads per block of the pixel and edge kernels (default 256; 16 under the simulator).
    """

    name = "cuda"

    def __init__(self, pairing: str = "halving", threads: Optional[int] = None) -> None:
        from ..._validation import check_choice

        self.pairing = check_choice("pairing", pairing, PAIRING_METHODS)
        self.threads = threads
        #: Called with a stage name after each stage's launches (benchmarks record events).
        self.stage_hook: Optional[Callable[[str], None]] = None
        #: Sizes of the last call: edges, Boruvka rounds, longest forest, halving levels.
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

    def pairs(self, images: Any, construction: str, dims: tuple[int, ...]) -> PairIndices:
        from ..._arraylib import array_library
        from ...kernels.cuda._glue import glue_for

        glue = glue_for(images, array_library(images))
        if glue.library == "torch":
            # Numba launches in the thread's current CUDA context: make it the input's device.
            import torch

            with torch.cuda.device(images.device):
                return _Pipeline(glue, images, construction, tuple(dims), self).run()
        return _Pipeline(glue, images, construction, tuple(dims), self).run()


class _Pipeline:
    """One call of the backend: buffers, launches and size read-backs, in order."""

    def __init__(self, glue: Any, images: Any, construction: str, dims: tuple[int, ...],
                 backend: CUDABackend) -> None:
        from ...kernels.common.persistence_common import MAX_PIXELS

        self.glue = glue
        self.images = images
        self.batch, self.height, self.width = (int(s) for s in images.shape)
        self.n = self.height * self.width
        if self.n > MAX_PIXELS:
            raise ValueError(f"`images` must have at most {MAX_PIXELS} pixels per image for "
                             f"the cuda backend; got {self.height}x{self.width}")
        self.dims = dims
        self.n_dims = len(dims)
        self.problems = self.batch * self.n_dims
        if self.problems * (self.n + 1) >= 2 ** 31:
            raise ValueError("the batch is too large for one call of the cuda backend "
                             f"({self.problems} problems of {self.n} pixels); split it")
        self.connectivity = 8 if construction == "T" else 4
        self.backend = backend
        self.threads = backend.threads or (_SIM_THREADS if glue.simulated else 256)
        self.max_blocks = _SIM_BLOCKS if glue.simulated else glue.sm_count() * 16
        self.hook = backend.stage_hook

    # -- helpers -----------------------------------------------------------------------------
    def _launch(self, kernel: Any, size: int, *args: Any) -> None:
        blocks = max(1, min(-(-int(size) // self.threads), self.max_blocks))
        self.glue.launcher(kernel, blocks, self.threads)(*args)

    def _stage(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _buffer(self, kind: str, size: int, fill: Optional[int] = None):
        """(library buffer, kernel view)."""
        array = self.glue.alloc(kind, size) if fill is None else self.glue.full(kind, size, fill)
        return array, self.glue.view(array, kind)

    # -- stages ------------------------------------------------------------------------------
    def run(self) -> PairIndices:
        self._stage("start")
        order = self._order_words()
        self._stage("order")
        label, first_key = self._basins(order)
        self._stage("basins")
        edges = self._basin_edges(order, label)
        self._stage("edges")
        forest, forest_count = self._spanning_forest(edges)
        self._stage("forest")
        result = self._pairs(order, label, first_key, forest, forest_count)
        self._stage("assemble")
        self.backend.last_stats = {
            "problems": self.problems,
            "basin_edges": edges[0],
            "boruvka_rounds": self.boruvka_rounds,
            "longest_forest": self.forest_width,
            "halving_levels": max(self.forest_width - 1, 0).bit_length(),
        }
        return result

    def _order_words(self):
        from ...kernels.cuda import persistence_basins as kb

        glue, n = self.glue, self.n
        order, order_k = self._buffer("u32", self.batch * n)
        if str(self.images.dtype).endswith("float32"):
            bits = glue.view(glue.float32_bits(self.images), "u32")
            self._launch(kb.float32_order_kernel, self.batch * n, bits, order_k)
        else:
            ranks = glue.argsort_rows(self.images, self.batch, n)
            ranks_k = glue.view(ranks.reshape(self.batch, n), "i64")
            self._launch(kb.rank_order_kernel, self.batch * n, ranks_k, n, order_k)
        return order_k

    def _basins(self, order):
        from ...kernels.cuda import persistence_basins as kb

        glue, n = self.glue, self.n
        flags = np.tile(np.array([1 if d == 1 else 0 for d in self.dims], dtype=np.int32),
                        self.batch)
        self.dual_flags = glue.view(glue.from_host("i32", flags), "i32")
        self.flags = flags
        label, label_k = self._buffer("i32", self.problems * (n + 1))
        first_k = self._buffer("u64", self.problems, fill=-1)[1]
        self._launch(kb.descent_kernel, self.problems * n, order, self.dual_flags, self.n_dims,
                     self.height, self.width, self.connectivity, label_k, first_k)
        self._launch(kb.jump_kernel, self.problems * (n + 1), label_k)
        return label_k, first_k

    def _basin_edges(self, order, label):
        from ...kernels.cuda import persistence_basins as kb

        glue, n = self.glue, self.n
        counts, counts_k = self._buffer("i64", self.problems * n)
        dummy_key, dummy_key_k = self._buffer("u64", 1)
        dummy_end, dummy_end_k = self._buffer("i32", 1)
        args = (order, label, self.dual_flags, self.n_dims, self.height, self.width,
                self.connectivity)
        self._launch(kb.basin_edges_kernel, self.problems * n, *args, 0, counts_k,
                     dummy_key_k, dummy_end_k, dummy_end_k)
        ends = glue.cumsum(counts)
        total = glue.item(ends, self.problems * n - 1)
        if total >= 2 ** 31:
            # Edge ends, list counts and compaction offsets are int32 in the kernels.
            raise ValueError("the batch is too large for one call of the cuda backend "
                             f"({total} basin-graph edges, at most {2 ** 31 - 1}); split it")
        ends_k = glue.view(ends, "i64")
        key, key_k = self._buffer("u64", total)
        end_a, end_a_k = self._buffer("i32", total)
        end_b, end_b_k = self._buffer("i32", total)
        self._launch(kb.basin_edges_kernel, self.problems * n, *args, 1, ends_k, key_k,
                     end_a_k, end_b_k)
        return total, (key_k, end_a_k, end_b_k)

    def _spanning_forest(self, edges):
        from ...kernels.cuda import persistence_forest as kf

        glue, nodes = self.glue, self.n + 1
        total, first_list = edges
        first_count = glue.from_host("i32", np.array([total]))
        second_count = glue.alloc("i32", 1)
        lists = [
            (first_list + (glue.view(first_count, "i32"),), first_count),
            (tuple(self._buffer(kind, total)[1] for kind in ("u64", "i32", "i32"))
             + (glue.view(second_count, "i32"),), second_count),
        ]
        parent = glue.arange("i32", self.problems * nodes)
        parent_k = glue.view(parent, "i32")
        best = [self._buffer("u64", self.problems * nodes, fill=-1)[1] for _ in range(2)]
        forest = self._buffer("u64", self.problems * nodes)
        forest_count = self._buffer("i32", self.problems, fill=0)
        remaining = total
        round_ = 0
        for round_ in range(_MAX_BORUVKA_ROUNDS):
            if remaining == 0:
                break
            src, _ = lists[round_ % 2]
            dst, dst_count = lists[(round_ + 1) % 2]
            glue.fill(dst_count, 0)
            self._launch(kf.boruvka_min_kernel, remaining, *src, parent_k,
                         best[(round_ + 1) % 2], best[round_ % 2], *dst)
            remaining = glue.item(dst_count, 0)
            if remaining:
                self._launch(kf.boruvka_hook_kernel, remaining, *dst, best[round_ % 2],
                             parent_k, nodes, forest[1], forest_count[1])
        else:
            raise RuntimeError("Boruvka rounds did not converge (internal error)")
        self.boruvka_rounds = round_
        self.scratch = (parent, parent_k)
        return forest, forest_count

    def _pairs(self, order, label, first_key, forest, forest_count):
        from ...kernels.cuda import persistence_pairing as kp
        from ...kernels.common.persistence_common import NO_EDGE

        glue, n, problems = self.glue, self.n, self.problems
        count, count_k = forest_count
        width = max(glue.max_item(count), 1)
        self.forest_width = width
        sorted_keys = glue.sort_rows_u64(forest[0], problems, n + 1, width, count, NO_EDGE)
        self._stage("sort")
        sorted_k = glue.view(sorted_keys, "u64")
        out_birth = self._buffer("i64", problems * width)[1]
        out_death = self._buffer("i64", problems * width)[1]
        common = (sorted_k, width, count_k, label, order, self.dual_flags, self.n_dims,
                  self.height, self.width)
        scratch, scratch_k = self.scratch
        if self.backend.pairing == "sequential":
            self._launch(kp.pairing_sequential_kernel, problems, *common, scratch_k,
                         out_birth, out_death)
        else:
            glue.fill(scratch, 2 ** 31 - 1)
            size = problems * 3 * width
            work = [self._buffer(kind, problems * width)[1] for kind in ("i32", "i32")]
            work += [self._buffer(kind, size)[1] for kind in ("i32", "i32", "u64", "u64")]
            threads = _SIM_PAIRING_THREADS if glue.simulated else 256
            glue.launcher(kp.pairing_halving_kernel, problems, threads)(
                *common, scratch_k, *work, out_birth, out_death)
        self._stage("pair")
        return self._assemble(count, count_k, first_key, out_birth, out_death, width)

    def _assemble(self, count, count_k, first_key, out_birth, out_death, width):
        from ...kernels.cuda import persistence_pairing as kp

        glue, problems = self.glue, self.problems
        primal = glue.from_host("i32", 1 - self.flags)
        ends = glue.cumsum(count + primal)
        total = glue.item(ends, problems - 1)
        columns = [self._buffer("i64", total) for _ in range(4)]
        self._launch(kp.assemble_kernel, problems * (width + 1), glue.view(ends, "i64"),
                     count_k, first_key, self.dual_flags, self.n_dims, width, out_birth,
                     out_death, *(view for _, view in columns))
        image, dim, birth, death = (array[:total] for array, _ in columns)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death)
