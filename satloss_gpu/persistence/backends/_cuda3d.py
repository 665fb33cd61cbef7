"""The GPU backend on volumes: H0 and H2 on the device, H1 on the host or split with it.

Kernels in ``satloss_gpu.kernels.cuda.local_pairing3d`` (the per-voxel rule is shared with the
CPU backend); the order words, pointer jumping, key sort and recursive-halving elder rule are
the 2D pipeline's, unchanged. Per call, for all volumes of the batch at once:

1. order words (float32 bits, or per-volume ranks for float64);
2. the per-voxel rule, one thread per voxel: critical edges and faces counted (one read-back
   of the per-volume totals, which sizes every buffer and the output), scanned, compacted;
   gradient parents of corners and voxels written;
3. pointer jumping along the gradient paths;
4. ONE sort of the 64-bit keys of all critical edges and faces (``2B`` segments);
5. the elder rule on both passes at once, as separate segments of the same launches: the
   edges in ascending order on corners (H0 of the T-construction, H2 of the V-construction),
   the faces in descending order on voxels and the outside (H2 of T, H0 of V);
6. H1 (see below);
7. packed output written on the device: pairs grouped by volume, then dimension (the H1
   pairs uploaded in the same single upload as the output offsets).

H1. Each critical edge and face gives exactly one pair (the Euler characteristic), so all
output sizes, H1 included, are known after step 2: H1 has as many pairs per volume as
critical edges the corner pass leaves over. The pairs themselves need the reduction of the
Morse boundary matrix of the faces the voxel pass leaves over (columns) over the edges the
corner pass leaves over (rows). Two ways (``CUDABackend(h1=...)``):

* ``"host"`` (default): the volumes are copied to the host after step 2 and the CPU core
  (``satloss_gpu.kernels.cpu.local_pairing3d``, lazy Morse reduction) computes their H1 pairs
  on a host thread (compiled code, without the GIL) while this thread launches steps 3-5 and
  the device runs them.
* ``"device"``: the design study's stages (section 6.4), in
  ``satloss_gpu.kernels.cuda.morse_h1``: stage A on the device, one thread per column, its
  Morse boundary (youngest-first expansion through the gradient, compressed by the corner
  pass), counted, then emitted at scanned offsets (two read-backs: the term counts, the
  terms); stage B on the host, the column reduction of those short sorted columns (on 14^3
  noise 2.8 terms per column, about 1/80 of the CPU core's H1 time). A column whose boundary
  overflows its thread-local heap sends the whole call's H1 to the host path: nothing is
  ever truncated.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from ._base import PairIndices
from ._cuda2d import _levels, _Pipeline

__all__ = ["Pipeline3D", "check_volume_shape"]


def check_volume_shape(shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` naming ``images`` if a (B, D, H, W) batch is beyond the index
    widths of the 3D kernels.

    Parameters
    ----------
    shape : tuple of int
        (B, D, H, W).
    """
    from ...kernels.cuda.local_pairing3d import MAX_VOXELS

    batch, depth, height, width = (int(s) for s in shape)
    n = depth * height * width
    if n > MAX_VOXELS:
        raise ValueError(f"`images` must have at most {MAX_VOXELS} voxels per volume for "
                         f"the cuda backend; got {depth}x{height}x{width}")
    nodes = (depth + 1) * (height + 1) * (width + 1) + 1 + n + 1
    # Node ids of the elder rule are int32; the packed scan holds edge counts in 32 bits.
    if batch * nodes >= 2 ** 31 or batch * n * 12 >= 2 ** 32:
        raise ValueError("the batch is too large for one call of the cuda backend "
                         f"({batch} volumes of {n} voxels); split it")


class Pipeline3D(_Pipeline):
    """One call of the backend on a (B, D, H, W) batch: buffers, launches, read-backs."""

    def __init__(self, glue: Any, images: Any, construction: str, dims: tuple[int, ...],
                 backend: Any) -> None:
        from ...kernels.cuda import local_pairing, local_pairing3d

        check_volume_shape(tuple(int(s) for s in images.shape))
        self.lp = local_pairing
        self.lp3 = local_pairing3d
        self.glue = glue
        self.images = images
        self.batch, self.depth, self.height, self.width = (int(s) for s in images.shape)
        self.n = self.depth * self.height * self.width
        self.n_corners = (self.depth + 1) * (self.height + 1) * (self.width + 1) + 1
        self.n_voxels = self.n + 1
        self.construction = construction
        self.flip = 1 if construction == "V" else 0
        self.dims = tuple(dims)
        self.want = tuple(int(d in self.dims) for d in range(3))
        self.backend = backend
        self.threads = backend.threads or (16 if glue.simulated else 256)
        self.max_blocks = 3 if glue.simulated else glue.sm_count() * 32
        self.hook = backend.stage_hook
        #: Bits of a sort key (segment number, order word, position); tests lower it.
        self.key_bits = 64

    # -- stages ------------------------------------------------------------------------------
    def run(self) -> PairIndices:
        self._stage("start")
        self._order_words()
        self._stage("order")
        self._count()
        self._stage("count")
        self._emit()
        self._stage("emit")
        on_device = self.backend.h1 == "device" and self.want[1]
        self.h1_where, self.h1_terms = ("device" if on_device else "host"), 0
        h1_pending = None if on_device else self._start_h1()
        self._jump()
        self._stage("jump")
        self._sort()
        self._stage("sort")
        self._passes()
        self._stage("passes")
        if on_device:
            h1 = self._h1_device()
            if h1 is None:  # a column's heap overflowed: the host computes H1
                self.h1_where = "host"
                h1 = self._start_h1().result()
        else:
            h1 = h1_pending.result()
        self._stage("h1")
        result = self._assemble(h1)
        self._stage("assemble")
        items = self.edge_counts + self.face_counts
        self.backend.last_stats = {
            "images": self.batch,
            "critical_edges": int(self.edge_counts.sum()),
            "critical_faces": int(self.face_counts.sum()),
            "critical_items_per_voxel": float(items.sum()) / max(self.batch * self.n, 1),
            "longest_list": int(max(self.edge_counts.max(initial=0),
                                    self.face_counts.max(initial=0))),
            "halving_levels": self.levels,
            "h1_pairs": int(self.h1_counts.sum()),
            # "device" or "host": where H1 was computed ("host" after a heap overflow too).
            "h1": self.h1_where,
            "h1_terms": self.h1_terms,
        }
        return result

    def _count(self) -> None:
        """Critical edges, faces, corners and cubes of every volume; the one size read-back."""
        glue, batch, n = self.glue, self.batch, self.n
        counts, counts_k = self._buffer("i64", batch * n)
        self.lowest = self._buffer("u64", batch, fill=-1)[1]
        self.highest = self._buffer("u64", batch, fill=0)[1]
        cells, cells_k = self._buffer("i32", 2 * batch, fill=0)
        dummy = {kind: self._buffer(kind, 1)[1] for kind in ("i32", "u32", "i64")}
        self._voxel_kernel(0, dummy["i64"], counts_k, cells_k, 0, dummy["i32"], dummy["i32"],
                           dummy["u32"], dummy["i32"], dummy["i32"])
        self.counts = counts
        self.ends = glue.cumsum(counts)
        totals = self.ends[n - 1::n]
        host = glue.to_host(glue.stack_i64(totals, cells)).astype(np.int64)
        packed = host[:batch]
        edge_ends = packed & 0xFFFFFFFF
        face_ends = packed >> 32
        self.edge_counts = np.diff(edge_ends, prepend=0)
        self.face_counts = np.diff(face_ends, prepend=0)
        self.critical_corners = host[batch:2 * batch]
        self.critical_cubes = host[2 * batch:]
        self.edge_total = int(edge_ends[-1])
        self.total = self.edge_total + int(face_ends[-1])
        if 3 * self.total >= 2 ** 31:
            # Slots and fresh nodes of the pairing are int32.
            raise ValueError("the batch is too large for one call of the cuda backend "
                             f"({self.total} critical edges and faces, at most "
                             f"{(2 ** 31 - 1) // 3}); split it")
        sizes = np.concatenate([self.edge_counts, self.face_counts])
        self.seg_start_host = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.seg_start = glue.view(glue.from_host("i64", self.seg_start_host), "i64")
        # Every critical item pairs once (Euler characteristic). The corner pass merges all
        # critical corners into one component (T) or into the exterior corner (V); the voxel
        # pass all critical cubes into the outside (T) or into one component (V). The edges
        # and faces they leave over pair with each other in H1.
        self.corner_merges = self.critical_corners - (0 if self.flip else 1)
        self.voxel_merges = self.critical_cubes - (1 if self.flip else 0)
        self.h1_counts = self.edge_counts - self.corner_merges

    def _voxel_kernel(self, emit: int, ends: Any, counts: Any, cells: Any, edge_total: int,
                      *buffers: Any) -> None:
        self._launch(self.lp3.voxel_kernel, self.batch * self.n, self.words, self.depth,
                     self.height, self.width, self.flip, emit, ends, counts, self.lowest,
                     self.highest, cells, edge_total, *buffers)

    def _emit(self) -> None:
        glue, total = self.glue, self.total
        self.names = self._buffer("i32", total)[1]
        self.item_seg = self._buffer("i32", total)[1]
        self.item_word = self._buffer("u32", total)[1]
        self.corner_parent = self._buffer("i32", self.batch * self.n_corners)
        self.voxel_parent = self._buffer("i32", self.batch * self.n_voxels)
        self._voxel_kernel(1, glue.view(self.ends, "i64"), glue.view(self.counts, "i64"),
                           self._buffer("i32", 1)[1], self.edge_total, self.names,
                           self.item_seg, self.item_word, self.corner_parent[1],
                           self.voxel_parent[1])

    def _jump(self) -> None:
        for _, parent in (self.corner_parent, self.voxel_parent):
            self._launch(self.lp.jump_kernel, parent.size, parent)

    def _sort(self) -> None:
        """One sort of the keys of every critical edge and face of the batch (in chunks of
        segments only if segment number, order word and position do not fit 64 bits)."""
        glue, total = self.glue, self.total
        sizes = np.diff(self.seg_start_host)
        longest = int(sizes.max(initial=0))
        self.pos_bits = max(int(longest - 1).bit_length(), 1)
        self.levels = _levels(sizes)
        self.sort_chunk = 0
        keys, self.keys = self._buffer("u64", total)
        if total == 0:
            return
        segments = 2 * self.batch
        seg_bits = self.key_bits - 32 - self.pos_bits
        chunk = 1 << min(seg_bits, max(int(segments - 1).bit_length(), 0))
        self.sort_chunk = chunk
        self._launch(self.lp.edge_key_kernel, total, self.item_word, self.item_seg,
                     self.seg_start, chunk - 1, self.pos_bits, self.flip, self.keys)
        for first in range(0, segments, chunk):
            last = min(first + chunk, segments)
            glue.sort_u64(keys, int(self.seg_start_host[first]),
                          int(self.seg_start_host[last]))

    def _passes(self) -> None:
        """Both elder-rule passes at once: per slot the birth key it kills, or NO_MERGE."""
        glue, total = self.glue, self.total
        result, self.result = self._buffer("u64", total, fill=-1)
        self.rank = self._buffer("i64", 1)[1]
        if total == 0:
            return
        nodes = self.batch * (self.n_corners + self.n_voxels)
        ends_a, ends_b = (self._buffer("i32", total)[1] for _ in range(2))
        node_key = self._buffer("u64", nodes)[1]
        self._launch(self.lp3.item_ends_kernel, total, self.keys, self.item_seg,
                     self.seg_start, self.names, self.pos_bits, self.flip, self.words,
                     self.depth, self.height, self.width, self.corner_parent[1],
                     self.voxel_parent[1], ends_a, ends_b, node_key)
        self._elder_rule(ends_a, ends_b, self.item_seg, self.seg_start, node_key, nodes,
                         self.levels, self.result)
        self.rank = glue.view(glue.cumsum(glue.merged_flags(result, total)), "i64")

    def _start_h1(self) -> Future:
        """Copy the volumes to the host and start their H1 reduction on a host thread.

        The reduction (compiled, without the GIL) runs while this thread launches the device
        stages and the device runs them. The future gives (volume, birth voxel, death voxel)
        int64 arrays grouped by volume (empty when H1 is not wanted).
        """
        if not self.want[1]:
            done: Future = Future()
            empty = np.zeros(0, dtype=np.int64)
            done.set_result((empty, empty, empty))
            return done
        volumes = np.ascontiguousarray(self.glue.to_host(self.images))
        return _h1_executor().submit(host_h1_pairs, volumes, self.flip == 1)

    def _h1_device(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """H1 pairs by stage A on the device (Morse boundaries of the columns) and stage B on
        the host (their reduction); None if a column's boundary overflowed its heap."""
        from ...kernels.cuda import morse_h1

        glue, batch = self.glue, self.batch
        n_cols = int(self.h1_counts.sum())
        empty = np.zeros(0, dtype=np.int64)
        if n_cols == 0:
            return empty, empty, empty
        edges, faces = self.edge_total, self.total - self.edge_total
        negative = self._buffer("i32", edges)[1]
        self._launch(morse_h1.negative_kernel, edges, self.keys, self.item_seg, self.seg_start,
                     self.pos_bits, self.flip, self.result, edges, negative)
        column_base = np.concatenate([[0], np.cumsum(self.h1_counts)[:-1]]).astype(np.int64)
        counts, counts_k = self._buffer("i64", n_cols)
        voxels, voxels_k = self._buffer("i64", n_cols)
        overflow, overflow_k = self._buffer("i32", 1, fill=0)
        common = (self.keys, self.item_seg, self.seg_start, self.names, self.pos_bits,
                  self.flip, self.words, self.depth, self.height, self.width, self.result,
                  self.rank, glue.view(self.ends, "i64"), glue.view(self.counts, "i64"),
                  negative, glue.view(glue.from_host("i64", column_base), "i64"))
        dummy_u64, dummy_i64 = self._buffer("u64", 1)[1], self._buffer("i64", 1)[1]
        self._launch(morse_h1.column_kernel, faces, *common, 0, counts_k, voxels_k, dummy_i64,
                     dummy_u64, dummy_i64, overflow_k)
        host = glue.to_host(glue.stack_i64(counts, overflow)).astype(np.int64)
        if host[n_cols] != 0:
            return None
        column_start = np.concatenate([[0], np.cumsum(host[:n_cols])]).astype(np.int64)
        n_terms = int(column_start[-1])
        self.h1_terms = n_terms
        term_key, term_key_k = self._buffer("u64", n_terms)
        term_slot, term_slot_k = self._buffer("i64", n_terms)
        self._launch(morse_h1.column_kernel, faces, *common, 1, counts_k, voxels_k,
                     glue.view(glue.from_host("i64", column_start), "i64"), term_key_k,
                     term_slot_k, overflow_k)
        keys = np.ascontiguousarray(glue.to_host(term_key)[:n_terms]).view(np.uint64)
        slots = np.ascontiguousarray(glue.to_host(term_slot)[:n_terms], dtype=np.int64)
        face_voxel = np.asarray(glue.to_host(voxels), dtype=np.int64)[:n_cols]
        edge_voxel = np.empty(n_cols, dtype=np.int64)
        status = morse_h1.reduce_columns(column_start, keys, slots, edges, self.n, self.flip,
                                         edge_voxel)
        if status < 0:
            raise RuntimeError(f"internal error: H1 column {-1 - status} reduced to zero")
        image = np.repeat(np.arange(batch, dtype=np.int64), self.h1_counts)
        if self.flip:
            return image, face_voxel, edge_voxel
        return image, edge_voxel, face_voxel

    def _assemble(self, h1: tuple[np.ndarray, np.ndarray, np.ndarray]) -> PairIndices:
        glue, batch = self.glue, self.batch
        h1_image, h1_birth, h1_death = h1
        h1_sizes = np.bincount(h1_image, minlength=batch)
        if self.want[1] and not np.array_equal(h1_sizes, self.h1_counts):
            # One H1 pair per critical edge the corner pass leaves over (Euler characteristic).
            raise RuntimeError("internal error: the host H1 reduction gave "
                               f"{h1_sizes.tolist()} pairs per volume, the device's critical "
                               f"cells call for {self.h1_counts.tolist()}")
        h1_start = np.concatenate([[0], np.cumsum(h1_sizes)])
        dim0 = (self.voxel_merges if self.flip else self.corner_merges) + 1
        dim2 = self.corner_merges if self.flip else self.voxel_merges
        blocks = np.stack([dim0 * self.want[0], h1_sizes * self.want[1],
                           dim2 * self.want[2]], axis=1).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(blocks.ravel())])[:-1].reshape(batch, 3)
        size = int(blocks.sum())
        columns = [self._buffer("i64", size) for _ in range(4)]
        last, last_k = self._buffer("i64", batch)
        first_key, last_key = ((self.highest, self.lowest) if self.flip
                               else (self.lowest, self.highest))
        # One upload: the block starts, the wanted dimensions and the host's H1 pairs.
        # (Each part at least one element: no zero-size device views.)
        parts = tuple(part if part.size else np.zeros(1, dtype=np.int64) for part in
                      (*starts.T, np.array(self.want), h1_image, h1_birth, h1_death, h1_start))
        bounds = np.concatenate([[0], np.cumsum([part.size for part in parts])])
        packed = glue.from_host("i64", np.concatenate(parts).astype(np.int64))
        out0, out1, out2, want, h1_image_k, h1_birth_k, h1_death_k, h1_start_k = (
            glue.view(packed[int(bounds[i]):int(bounds[i + 1])], "i64")
            for i in range(len(parts)))
        n_h1 = int(h1_image.size)
        self._launch(self.lp3.assemble3d_kernel, self.total + batch + n_h1, self.keys,
                     self.item_seg, self.seg_start, self.names, self.pos_bits, self.flip,
                     self.result, self.rank, out0, out1, out2, first_key, last_key, want,
                     h1_image_k, h1_birth_k, h1_death_k, h1_start_k, n_h1,
                     *(view for _, view in columns), last_k)
        image, dim, birth, death = (array[:size] for array, _ in columns)
        return PairIndices(image=image, dim=dim, birth_index=birth, death_index=death,
                           last_index=last)


_EXECUTOR: Optional[ThreadPoolExecutor] = None
_EXECUTOR_LOCK = threading.Lock()


def _h1_executor() -> ThreadPoolExecutor:
    """The one host thread that runs H1 reductions beside the device work (created once)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="satloss-h1")
        return _EXECUTOR


def host_h1_pairs(volumes: np.ndarray, vertex: bool) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """H1 pairs of a (B, D, H, W) batch by the CPU core, grouped by volume in its order.

    Returns
    -------
    image, birth_index, death_index : (K,) int64 ndarrays
    """
    from ...kernels.cpu.local_pairing3d import batch_pairs3d

    image, dim, birth, death, _ = batch_pairs3d(volumes, vertex, (1,))
    keep = np.asarray(dim) == 1
    return (np.asarray(image, dtype=np.int64)[keep], np.asarray(birth, dtype=np.int64)[keep],
            np.asarray(death, dtype=np.int64)[keep])
