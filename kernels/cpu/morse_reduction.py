"""Stage B of the two-stage H1 of volumes: the reduction of short Morse columns.

Stage A (a full expansion of every H1 column's Morse boundary down to critical edges, the
CPU core's in :mod:`satloss_gpu.kernels.cpu.local_pairing3d`, the device's in
:mod:`satloss_gpu.kernels.cuda.morse_h1`) leaves each column a short list of terms sorted
youngest first. Stage B is the standard column reduction of those lists in filtration order:
a column's lowest term (its youngest edge) is looked up in a pivot map, and the reduced
column that owns it is added by merging two sorted lists (Z/2: equal terms cancel).

:func:`reduce_ranked` takes the terms as ranks of the critical edges in the filtration
(int32, the CPU core); :func:`reduce_columns` takes them as 64-bit filtration keys with a
separate slot per edge (the device's output).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["reduce_ranked", "reduce_columns"]

_LOW_MASK = (1 << 32) - 1


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the cache to load ``array[index]`` (LLVM ``prefetch``, read, high locality)."""
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]],
                                           wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3)
        function = cgutils.get_or_insert_function(builder.module, function_type,
                                                  "llvm.prefetch.p0i8")
        builder.call(function, [builder.bitcast(pointer, byte_pointer),
                                ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3),
                                ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return signature, codegen


#: Columns ahead whose data :func:`reduce_ranked` asks the cache for.
_AHEAD = 8


@njit(cache=True, nogil=True)
def _merge_ranked(a, a_len, b, b_start, b_len, out):
    """Symmetric difference of two int32 lists sorted by decreasing rank; returns its length."""
    i = 0
    k = 0
    m = 0
    while i < a_len and k < b_len:
        x = a[i]
        y = b[b_start + k]
        if x > y:
            out[m] = x
            i += 1
            m += 1
        elif y > x:
            out[m] = y
            k += 1
            m += 1
        else:
            i += 1
            k += 1
    while i < a_len:
        out[m] = a[i]
        i += 1
        m += 1
    while k < b_len:
        out[m] = b[b_start + k]
        k += 1
        m += 1
    return m


@njit(cache=True, nogil=True)
def reduce_ranked(term_start, terms, row_of, n_ranks, pivot):
    """Reduce Morse columns given as ranks; ``pivot[c]`` = the lowest rank of reduced column
    ``c``.

    Parameters
    ----------
    term_start : (R + 1,) int64
        Terms of row ``r`` are ``terms[term_start[r] : term_start[r + 1]]``.
    terms : (T,) int32
        Filtration ranks of critical edges (``0 <= rank < n_ranks``), each row sorted by
        decreasing rank without repeats.
    row_of : (C,) int64
        The row holding column ``c``; columns are reduced in the order ``c = 0, 1, ...``.
    n_ranks : int
        Number of ranks (critical edges).
    pivot : (C,) int32
        Output.

    Returns
    -------
    int
        C, or ``-1 - c`` if column ``c`` reduced to zero (impossible for the H1 columns of a
        box, which has no essential H1).
    """
    n_cols = row_of.size
    pivot_of = np.full(max(n_ranks, 1), -1, dtype=np.int32)
    # Stored columns: the rows as given (a column added unreduced is never copied), reduced
    # columns appended after them.
    n_store = terms.size
    store = np.empty(max(16, 2 * n_store), dtype=np.int32)
    store[:n_store] = terms
    store_start = np.empty(n_cols, dtype=np.int64)
    store_len = np.empty(n_cols, dtype=np.int64)
    work = np.empty(64, dtype=np.int32)
    spare = np.empty(64, dtype=np.int32)
    for c in range(n_cols):
        # Rows are read out of order: ask for the data of columns ahead, one level at a time
        # (row bounds, first term, pivot map).
        if c + 3 * _AHEAD < n_cols:
            _prefetch(term_start, row_of[c + 3 * _AHEAD])
        if c + 2 * _AHEAD < n_cols:
            _prefetch(terms, term_start[row_of[c + 2 * _AHEAD]])
        if c + _AHEAD < n_cols:
            ahead = term_start[row_of[c + _AHEAD]]
            if ahead < terms.size:
                _prefetch(pivot_of, terms[ahead])
        row = row_of[c]
        first = term_start[row]
        length = term_start[row + 1] - first
        if length == 0:
            return -1 - c
        owner = pivot_of[terms[first]]
        if owner < 0:
            pivot_of[terms[first]] = c
            pivot[c] = terms[first]
            store_start[c] = first
            store_len[c] = length
            continue
        if length > work.size:
            work = np.empty(2 * length, dtype=np.int32)
        for i in range(length):
            work[i] = terms[first + i]
        while True:
            other = store_len[owner]
            if length + other > spare.size:
                spare = np.empty(2 * (length + other), dtype=np.int32)
            length = _merge_ranked(work, length, store, store_start[owner], other, spare)
            work, spare = spare, work
            if length == 0:
                return -1 - c
            owner = pivot_of[work[0]]
            if owner < 0:
                break
        pivot_of[work[0]] = c
        pivot[c] = work[0]
        if n_store + length > store.size:
            grown = np.empty(2 * (n_store + length), dtype=np.int32)
            grown[:n_store] = store[:n_store]
            store = grown
        store[n_store : n_store + length] = work[:length]
        store_start[c] = n_store
        store_len[c] = length
        n_store += length
    return n_cols


@njit(cache=True, nogil=True)
def _merge(a_key, a_slot, a_len, b_key, b_slot, b_start, b_len, out_key, out_slot):
    """Symmetric difference of two lists sorted by decreasing key; returns its length."""
    i = 0
    k = 0
    m = 0
    while i < a_len or k < b_len:
        if k >= b_len or (i < a_len and a_key[i] > b_key[b_start + k]):
            out_key[m] = a_key[i]
            out_slot[m] = a_slot[i]
            i += 1
            m += 1
        elif i >= a_len or b_key[b_start + k] > a_key[i]:
            out_key[m] = b_key[b_start + k]
            out_slot[m] = b_slot[b_start + k]
            k += 1
            m += 1
        else:
            i += 1
            k += 1
    return m


@njit(cache=True, nogil=True)
def reduce_columns(column_start, term_key, term_slot, n_slots, n, flip, edge_voxel):
    """Reduce the device's Morse columns in order; ``edge_voxel[c]`` = the voxel of column
    ``c``'s pivot (its youngest remaining edge).

    Parameters
    ----------
    column_start : (C + 1,) int64
        Terms of column ``c`` are ``column_start[c] .. column_start[c + 1] - 1``, sorted by
        decreasing key (columns of a volume in filtration order; volumes one after another).
    term_key : (T,) uint64
        ``(order word << 32) | (order position * 32 + sequence)`` of each term's edge.
    term_slot : (T,) int64
        Emission slot of each term's critical edge (unique per edge of the batch).
    n_slots : int
        Number of critical edges of the batch.
    n : int
        Voxels per volume.
    flip : int
        1 for the reversed order (order positions count from the last voxel).
    edge_voxel : (C,) int64
        Output.

    Returns
    -------
    int
        C, or ``-1 - c`` if column ``c`` reduced to zero (impossible for a box).
    """
    n_cols = column_start.size - 1
    pivot_of = np.full(max(n_slots, 1), -1, dtype=np.int64)
    store_start = np.zeros(n_cols + 1, dtype=np.int64)
    store_key = np.empty(max(16, 2 * term_key.size), dtype=np.uint64)
    store_slot = np.empty(store_key.size, dtype=np.int64)
    n_store = 0
    work_key = np.empty(64, dtype=np.uint64)
    work_slot = np.empty(64, dtype=np.int64)
    next_key = np.empty(64, dtype=np.uint64)
    next_slot = np.empty(64, dtype=np.int64)
    for c in range(n_cols):
        length = column_start[c + 1] - column_start[c]
        if length > work_key.size:
            work_key = np.empty(2 * length, dtype=np.uint64)
            work_slot = np.empty(2 * length, dtype=np.int64)
        for i in range(length):
            work_key[i] = term_key[column_start[c] + i]
            work_slot[i] = term_slot[column_start[c] + i]
        while True:
            if length == 0:
                return -1 - c
            owner = pivot_of[work_slot[0]]
            if owner < 0:
                break
            other = store_start[owner + 1] - store_start[owner]
            if length + other > next_key.size:
                next_key = np.empty(2 * (length + other), dtype=np.uint64)
                next_slot = np.empty(next_key.size, dtype=np.int64)
            length = _merge(work_key, work_slot, length, store_key, store_slot,
                            store_start[owner], other, next_key, next_slot)
            work_key, next_key = next_key, work_key
            work_slot, next_slot = next_slot, work_slot
        pivot_of[work_slot[0]] = c
        order = np.int64(work_key[0] & np.uint64(_LOW_MASK)) >> 5
        edge_voxel[c] = n - 1 - order if flip else order
        while n_store + length > store_key.size:
            grown_key = np.empty(2 * store_key.size, dtype=np.uint64)
            grown_slot = np.empty(grown_key.size, dtype=np.int64)
            grown_key[:n_store] = store_key[:n_store]
            grown_slot[:n_store] = store_slot[:n_store]
            store_key, store_slot = grown_key, grown_slot
        store_start[c] = n_store
        for i in range(length):
            store_key[n_store + i] = work_key[i]
            store_slot[n_store + i] = work_slot[i]
        n_store += length
        store_start[c + 1] = n_store
    return n_cols
