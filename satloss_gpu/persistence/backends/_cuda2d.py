"""The 2D pipeline of the GPU backend: one call's buffers, launches and read-back, in order.

Shared by :mod:`.cuda` (which runs it on batches of images) and :mod:`._cuda3d` (whose volume
pipeline extends it); see :mod:`.cuda` for the stages.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._base import PairIndices, PersistenceBackend

__all__ = ["_Pipeline", "_levels", "SIM_THREADS", "SIM_BLOCKS"]

#: Threads per block and most blocks per launch under the Numba CUDA simulator.
SIM_THREADS = 16
SIM_BLOCKS = 3


class _Pipeline:
    """One call of the backend: buffers, launches and the one size read-back, in order."""

    def __init__(self, glue: Any, images: Any, construction: str, dims: tuple[int, ...],
                 backend: PersistenceBackend) -> None:
        from ...kernels.cuda import local_pairing

        self.lp = local_pairing
        self.glue = glue
        self.images = images
        self.batch, self.height, self.width = (int(s) for s in images.shape)
        self.n = self.height * self.width
        limit = local_pairing.MAX_PIXELS
        if self.n > limit:
            raise ValueError(f"`images` must have at most {limit} pixels per image for "
                             f"the cuda backend; got {self.height}x{self.width}")
        self.n_corners = (self.height + 1) * (self.width + 1) + 1
        self.n_squares = self.n + 1
        if self.batch * max(self.n_corners, 4 * self.n) >= 2 ** 31:
            raise ValueError("the batch is too large for one call of the cuda backend "
                             f"({self.batch} images of {self.n} pixels); split it")
        self.flip = 1 if construction == "V" else 0
        self.want = (int(0 in dims), int(1 in dims))
        # The corner pass is always run (its leftover edges feed the square pass); the square
        # pass gives the T-construction's dimension 1 and the V-construction's dimension 0.
        self.square_pass = bool(self.want[0] if self.flip else self.want[1])
        self.backend = backend
        self.threads = backend.threads or (SIM_THREADS if glue.simulated else 256)
        self.max_blocks = SIM_BLOCKS if glue.simulated else glue.sm_count() * 32
        self.hook = backend.stage_hook
        #: Bits of a sort key (image number, order word, position); tests lower it.
        self.key_bits = 64

    # -- helpers -----------------------------------------------------------------------------
    def _launch(self, kernel: Any, size: int, *args: Any) -> None:
        blocks = max(1, min(-(-int(size) // self.threads), self.max_blocks))
        self.glue.launcher(kernel, blocks, self.threads)(*args)

    def _stage(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)

    def _buffer(self, kind: str, size: int, fill: Optional[int] = None):
        """(library buffer, kernel view), both of exactly ``size`` elements (at least one)."""
        array = self.glue.alloc(kind, size) if fill is None else self.glue.full(kind, size, fill)
        array = array[:max(int(size), 1)]
        return array, self.glue.view(array, kind)

    # -- stages ------------------------------------------------------------------------------
    def run(self) -> PairIndices:
        self._stage("start")
        self._order_words()
        self._stage("order")
        self._count()
        self._stage("count")
        self._emit()
        self._stage("emit")
        self._jump()
        self._stage("jump")
        self._sort()
        self._stage("sort")
        self._corner_pass()
        self._stage("corner pass")
        self._square_pass()
        self._stage("square pass")
        result = self._assemble()
        self._stage("assemble")
        sizes = self.edge_counts
        self.backend.last_stats = {
            "images": self.batch,
            "critical_edges": int(sizes.sum()),
            "critical_edges_per_pixel": float(sizes.sum()) / max(self.batch * self.n, 1),
            "longest_list": int(sizes.max(initial=0)),
            "halving_levels": self.levels,
            "square_pass_edges": self.total_leftover,
            "square_pass_levels": _levels(self.leftover_counts),
        }
        return result

    def _order_words(self) -> None:
        glue, n = self.glue, self.n
        words, self.words = self._buffer("u32", self.batch * n)
        if str(self.images.dtype).endswith("float32"):
            bits = glue.view(glue.float32_bits(self.images), "u32")
            self._launch(self.lp.float32_order_kernel, self.batch * n, bits, self.flip, self.words)
        else:
            ranks = glue.argsort_rows(self.images, self.batch, n)
            ranks_k = glue.view(ranks.reshape(self.batch, n), "i64")
            self._launch(self.lp.rank_order_kernel, self.batch * n, ranks_k, n, self.flip,
                         self.words)

    def _pixel_kernel(self, emit: int, *buffers: Any) -> None:
        self._launch(self.lp.pixel_kernel, self.batch * self.n, self.words, self.table, self.height,
                     self.width, self.flip, emit, *buffers)

    def _count(self) -> None:
        """Critical edges and critical corners of every image; the one size read-back."""
        glue, batch, n = self.glue, self.batch, self.n
        from ...kernels.common.local_pairing import RULE_TABLE

        self.table = glue.view(glue.from_host("i32", RULE_TABLE.astype(np.int32)), "i32")
        counts, counts_k = self._buffer("i32", batch * n)
        self.lowest = self._buffer("u64", batch, fill=-1)[1]
        self.highest = self._buffer("u64", batch, fill=0)[1]
        corners, corners_k = self._buffer("i32", batch, fill=0)
        dummy_i32 = self._buffer("i32", 1)[1]
        dummy_u32 = self._buffer("u32", 1)[1]
        dummy_i64 = self._buffer("i64", 1)[1]
        self._pixel_kernel(0, dummy_i64, counts_k, self.lowest, self.highest, corners_k,
                           dummy_i32, dummy_i32, dummy_u32, dummy_i32, dummy_i32)
        self.ends = glue.cumsum(counts)
        totals = self.ends[n - 1::n]
        host = glue.to_host(glue.stack_i64(totals, corners))
        ends_host = host[:batch]
        self.critical_corners = host[batch:]
        self.edge_counts = np.diff(ends_host, prepend=0)
        self.total = int(ends_host[-1])
        if 3 * self.total >= 2 ** 31:
            # Slots and fresh nodes of the pairing are int32.
            raise ValueError("the batch is too large for one call of the cuda backend "
                             f"({self.total} critical edges, at most {(2 ** 31 - 1) // 3}); "
                             "split it")
        self.image_start_host = np.concatenate([[0], ends_host]).astype(np.int64)
        self.image_start = glue.view(glue.from_host("i64", self.image_start_host), "i64")
        # Every critical edge pairs once (Euler characteristic): the corner pass merges all
        # critical corners into one component (T) or into the exterior corner (V); the other
        # edges are left over for the square pass. So every output size is known now.
        self.corner_merges = self.critical_corners - (0 if self.flip else 1)
        self.leftover_counts = self.edge_counts - self.corner_merges
        self.total_leftover = int(self.leftover_counts.sum())
        leftover_start = np.concatenate([[0], np.cumsum(self.leftover_counts)]).astype(np.int64)
        self.leftover_start = glue.view(glue.from_host("i64", leftover_start), "i64")

    def _emit(self) -> None:
        total = self.total
        self.edges = self._buffer("i32", total)[1]
        self.edge_image = self._buffer("i32", total)[1]
        self.edge_word = self._buffer("u32", total)[1]
        self.corner_parent = self._buffer("i32", self.batch * self.n_corners)
        self.square_parent = self._buffer("i32", self.batch * self.n_squares)
        self._pixel_kernel(1, self.glue.view(self.ends, "i64"), self._buffer("i32", 1)[1],
                           self.lowest, self.highest, self._buffer("i32", 1)[1], self.edges,
                           self.edge_image, self.edge_word, self.corner_parent[1],
                           self.square_parent[1])

    def _jump(self) -> None:
        for _, parent in (self.corner_parent, self.square_parent):
            self._launch(self.lp.jump_kernel, parent.size, parent)

    def _sort(self) -> None:
        """One sort of the keys of every critical edge of the batch (in chunks of images
        only if the image number, the order word and the position do not fit 64 bits)."""
        glue, total = self.glue, self.total
        longest = int(self.edge_counts.max(initial=0))
        self.pos_bits = max(int(longest - 1).bit_length(), 1)
        self.levels = _levels(self.edge_counts)
        self.sort_chunk = 0
        if total == 0:
            self.keys = self._buffer("u64", 1)[1]
            return
        image_bits = self.key_bits - 32 - self.pos_bits
        chunk = 1 << min(image_bits, max(int(self.batch - 1).bit_length(), 0))
        self.sort_chunk = chunk
        keys, self.keys = self._buffer("u64", total)
        self._launch(self.lp.edge_key_kernel, total, self.edge_word, self.edge_image,
                     self.image_start, chunk - 1, self.pos_bits, self.flip, self.keys)
        for first in range(0, self.batch, chunk):
            last = min(first + chunk, self.batch)
            glue.sort_u64(keys, int(self.image_start_host[first]),
                          int(self.image_start_host[last]))

    def _corner_pass(self) -> None:
        """H0 of the sorted edges on corners: per edge the birth key it kills, or NO_MERGE."""
        glue, total, lp = self.glue, self.total, self.lp
        corner_result, self.corner_result = self._buffer("u64", total, fill=-1)
        self.corner_rank = glue.alloc("i64", 1)
        if total == 0:
            return
        nodes = self.batch * self.n_corners
        ends_a, ends_b = (self._buffer("i32", total)[1] for _ in range(2))
        node_key = self._buffer("u64", nodes)[1]
        self._launch(lp.corner_ends_kernel, total, self.keys, self.edge_image,
                     self.image_start, self.edges, self.pos_bits, self.words, self.height,
                     self.width, self.flip, self.corner_parent[1], ends_a, ends_b, node_key)
        self._elder_rule(ends_a, ends_b, self.edge_image, self.image_start, node_key, nodes,
                         self.levels, self.corner_result)
        self.corner_rank = glue.cumsum(glue.merged_flags(corner_result, total))

    def _square_pass(self) -> None:
        """H1 by duality: the left-over edges, in reverse order, on squares."""
        glue, total, lp = self.glue, self.total_leftover, self.lp
        square_result, self.square_result = self._buffer("u64", total, fill=-1)
        self.square_rank = glue.alloc("i64", 1)
        if total == 0 or not self.square_pass:
            return
        nodes = self.batch * self.n_squares
        ends_a, ends_b = (self._buffer("i32", total)[1] for _ in range(2))
        leftover_image = self._buffer("i32", total)[1]
        node_key = self._buffer("u64", nodes)[1]
        self._launch(lp.square_ends_kernel, self.total, self.keys, self.edge_image,
                     self.image_start, self.edges, self.pos_bits, self.words, self.height,
                     self.width, self.flip, self.square_parent[1], self.corner_result,
                     glue.view(self.corner_rank, "i64"), self.leftover_start, leftover_image,
                     ends_a, ends_b, node_key)
        self._elder_rule(ends_a, ends_b, leftover_image, self.leftover_start, node_key, nodes,
                         _levels(self.leftover_counts), self.square_result)
        self.square_rank = glue.cumsum(glue.merged_flags(square_result, total))

    def _elder_rule(self, ends_a: Any, ends_b: Any, image_of: Any, image_start: Any,
                    node_key: Any, nodes: int, levels: int, result: Any) -> None:
        """Kruskal with the elder rule on every image's sorted edge list at once.

        ``ends_a``/``ends_b`` (M,) int32 are global node ids, ``node_key`` their birth keys;
        ``result`` (M,) uint64 receives the birth each edge kills, or NO_MERGE.
        """
        lp, total = self.lp, int(ends_a.size)
        if self.backend.pairing == "sequential":
            self._launch(lp.sequential_pass_kernel, self.batch, ends_a, ends_b, image_start,
                         node_key, self._buffer("i32", nodes)[1], result)
            return
        slot_of = self._buffer("i32", nodes, fill=2 ** 31 - 1)[1]
        parent, heaviest = (self._buffer("i32", 3 * total)[1] for _ in range(2))
        node_birth, component_birth = (self._buffer("u64", 3 * total)[1] for _ in range(2))
        self._launch(lp.halving_slots_kernel, total, ends_a, ends_b, slot_of)
        self._launch(lp.halving_rename_kernel, total, ends_a, ends_b, slot_of, node_key,
                     node_birth)
        level_args = (ends_a, ends_b, image_of, image_start)
        components = (parent, heaviest, node_birth, component_birth)
        base_bits = self.backend.base_edges.bit_length() - 1
        for level in range(levels - base_bits):
            bit = 1 << (levels - 1 - level)
            self._launch(lp.halving_reset_kernel, total, *level_args, bit, *components)
            self._launch(lp.halving_union_kernel, total, *level_args, bit, parent)
            self._launch(lp.halving_collect_kernel, total, *level_args, bit, *components)
            self._launch(lp.halving_contract_kernel, total, *level_args, bit, *components,
                         2 * total)
        self._launch(lp.halving_base_kernel, total, *level_args,
                     1 << min(base_bits, levels), node_birth, parent, result)

    def _assemble(self) -> PairIndices:
        glue, total, batch = self.glue, self.total, self.batch
        square_merges = self.leftover_counts
        if self.flip:
            dim0, dim1 = square_merges + 1, self.corner_merges
        else:
            dim0, dim1 = self.corner_merges + 1, square_merges
        per_image = dim0 * self.want[0] + dim1 * self.want[1]
        out_start = np.concatenate([[0], np.cumsum(per_image)]).astype(np.int64)
        size = int(out_start[-1])
        columns = [self._buffer("i64", size) for _ in range(4)]
        last, last_k = self._buffer("i64", batch)
        # In the V-construction the pass order is reversed: its last pixel is the first.
        first_key, last_key = ((self.highest, self.lowest) if self.flip
                               else (self.lowest, self.highest))
        self._launch(self.lp.assemble_kernel, total + batch, total, self.keys, self.edge_image,
                     self.image_start, self.edges, self.pos_bits, self.flip,
                     self.corner_result, glue.view(self.corner_rank, "i64"), self.square_result,
                     glue.view(self.square_rank, "i64"), self.leftover_start,
                     glue.view(glue.from_host("i64", out_start), "i64"),
                     glue.view(glue.from_host("i64", dim0), "i64"), first_key, last_key,
                     self.want[0], self.want[1], *(view for _, view in columns), last_k)
        image, dim, birth, death = (array[:size] for array, _ in columns)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death,
                           last_index=last)


def _levels(sizes: np.ndarray) -> int:
    """Levels of recursive halving for edge lists of these sizes: ceil(log2(longest))."""
    longest = int(np.max(sizes, initial=0))
    return int(longest - 1).bit_length() if longest > 1 else 0
