"""Numba kernels of the CPU persistence backend: parallel over the batch, one H0 routine for both
dimensions.

Per image:

1. One stable LSD radix sort of the order-preserving bits of the values gives the strict
   (value, index) order and every pixel's rank in it. The dual pass for H1 reuses it reversed.
2. Steepest descent: every pixel points at its lowest earlier neighbour (minima at
   themselves); labelling pixels in rank order gives each pixel its basin minimum.
3. Kruskal on the basin graph: pixels are visited in rank order, and only those with an
   earlier neighbour in another basin (found by one raster pass) touch the union-find.
   The elder rule pairs the younger minimum with the pixel where the two meet.
4. H1 by Alexander duality: the same routine on the reversed order, with the complementary
   connectivity and a frame around the image that precedes every pixel.

Smooth images have few basins and few basin boundaries, so steps 3 and 4 cost far less
than the sort of a plain union-find over all pixels.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common.scalar import find_root, neighbor_offset, precedes

__all__ = ["batch_pairs", "dimension_pairs"]

_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS
_MAX_PIXELS = 2**31 - 2
_EDGE_CACHE = 1 << 12
_CACHE_MIN_BASIN_SIZE = 24  # mean pixels per basin above which the edge cache pays


@njit(cache=True)
def _ordered_keys(flat: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned keys of a float32 or float64 vector (``-0.0`` as ``0.0``)."""
    n = flat.size
    keys = np.empty(n, dtype=np.uint64)
    if flat.itemsize == 4:
        bits32 = (flat + np.float32(0.0)).view(np.uint32)
        for i in range(n):
            b = np.uint64(bits32[i])
            keys[i] = (b ^ np.uint64(0xFFFFFFFF)) if b >> np.uint64(31) else (b | np.uint64(0x80000000))
    else:
        bits64 = (flat + 0.0).view(np.uint64)
        top = np.uint64(1) << np.uint64(63)
        for i in range(n):
            b = bits64[i]
            keys[i] = ~b if b & top else b | top
    return keys


@njit(cache=True)
def _radix_sort_payload(keys: np.ndarray, payload: np.ndarray, key_bits: int) -> np.ndarray:
    """``payload`` reordered by a stable LSD radix sort of the unsigned ``keys``.

    Ties keep their input order. Digit passes in which every key has the same digit are
    skipped. ``keys`` is used as scratch space.
    """
    n = keys.size
    n_passes = (key_bits + _RADIX_BITS - 1) // _RADIX_BITS
    counts = np.zeros((n_passes, _RADIX), dtype=np.int64)
    mask = np.uint64(_RADIX - 1)
    for i in range(n):
        k = keys[i]
        for p in range(n_passes):
            counts[p, (k >> np.uint64(p * _RADIX_BITS)) & mask] += 1
    keys_tmp = np.empty(n, dtype=np.uint64)
    payload = payload.copy()
    payload_tmp = np.empty(n, dtype=np.uint64)
    offsets = np.empty(_RADIX, dtype=np.int64)
    for p in range(n_passes):
        shift = np.uint64(p * _RADIX_BITS)
        if counts[p].max() == n:
            continue
        running = 0
        for d in range(_RADIX):
            offsets[d] = running
            running += counts[p, d]
        for i in range(n):
            k = keys[i]
            d = (k >> shift) & mask
            j = offsets[d]
            offsets[d] = j + 1
            keys_tmp[j] = k
            payload_tmp[j] = payload[i]
        keys, keys_tmp = keys_tmp, keys
        payload, payload_tmp = payload_tmp, payload
    return payload


@njit(cache=True)
def _neighbor_tables(width: int, n_neighbors: int):
    """Row offsets, column offsets and flat offsets of the first ``n_neighbors`` neighbours."""
    d_row = np.empty(n_neighbors, dtype=np.int64)
    d_col = np.empty(n_neighbors, dtype=np.int64)
    d_flat = np.empty(n_neighbors, dtype=np.int64)
    for k in range(n_neighbors):
        dr, dc = neighbor_offset(k)
        d_row[k] = dr
        d_col[k] = dc
        d_flat[k] = dr * width + dc
    return d_row, d_col, d_flat


@njit(cache=True)
def _descent_pixel(vals, sign, height, width, n_neighbors, framed, d_row, d_col, d_flat,
                   row, col):
    """Descent pointer and earlier-neighbour mask of one pixel, with bounds checks."""
    v = row * width + col
    value_v = vals[v]
    key_v = sign * v
    best = v
    best_value = value_v
    best_key = key_v
    mask = 0
    for k in range(n_neighbors):
        rr = row + d_row[k]
        cc = col + d_col[k]
        if 0 <= rr < height and 0 <= cc < width:
            u = v + d_flat[k]
            value_u = vals[u]
            key_u = sign * u
            mask |= np.int64(precedes(value_u, key_u, value_v, key_v)) << k
            better = precedes(value_u, key_u, best_value, best_key)
            best = u if better else best
            best_value = value_u if better else best_value
            best_key = key_u if better else best_key
        elif framed:
            best = -1
            best_value = -np.inf
    if best < 0:
        best = height * width
    return best, mask


@njit(cache=True)
def _descent_inner_row(vals, sign, width, n_neighbors, d_flat, row, best_value, best_offset,
                       masks, desc, earlier):
    """Descent of the pixels of row ``row`` that have all their neighbours in the image.

    Loops run direction by direction over slices of the row, indexed by ``range``
    variables and without branches, so that they vectorise.
    """
    start = row * width + 1
    inner = width - 2
    center = vals[start : start + inner]
    best_value[:inner] = center
    best_offset[:inner] = 0
    masks[:inner] = 0
    for k in range(n_neighbors):
        d = d_flat[k]
        signed_d = sign * d
        tie_wins = signed_d < 0
        bit = np.uint8(1 << k)
        neighbor = vals[start + d : start + d + inner]
        for c in range(inner):
            value_u = neighbor[c]
            value_v = center[c]
            earlier_u = (value_u < value_v) | (tie_wins & (value_u == value_v))
            masks[c] |= bit if earlier_u else np.uint8(0)
            current = best_value[c]
            better = (value_u < current) | ((value_u == current) & (signed_d < sign * best_offset[c]))
            best_value[c] = value_u if better else current
            best_offset[c] = d if better else best_offset[c]
    desc_row = desc[start : start + inner]
    for c in range(inner):
        desc_row[c] = start + c + best_offset[c]
    earlier[start : start + inner] = masks[:inner]


@njit(cache=True)
def _descent(vals, sign, height, width, n_neighbors, framed, desc, earlier, labels):
    """Steepest-descent pointers, masks of earlier neighbours and ids of the minima.

    Pixel ``u`` precedes ``v`` when ``(vals[u], sign*u) < (vals[v], sign*v)``. ``desc[v]``
    is the earliest neighbour preceding ``v`` (``v`` itself for a minimum, ``n`` for the
    frame, which precedes every pixel when ``framed``). Bit ``k`` of ``earlier[v]`` says
    that in-bounds neighbour ``k`` precedes ``v``. Minima get ids in raster order in
    ``labels`` (from 1 when framed: id 0 is the frame); other pixels get -1.

    Returns
    -------
    n_ids : int
    """
    n = height * width
    d_row, d_col, d_flat = _neighbor_tables(width, n_neighbors)
    best_value = np.empty(width, dtype=vals.dtype)
    best_offset = np.zeros(width, dtype=np.int64)
    masks = np.zeros(width, dtype=np.uint8)
    for row in range(height):
        inner_row = 0 < row < height - 1
        if inner_row and width > 2:
            _descent_inner_row(vals, sign, width, n_neighbors, d_flat, row, best_value,
                               best_offset, masks, desc, earlier)
            border_cols = (0, width - 1)
            for col in border_cols:
                best, mask = _descent_pixel(vals, sign, height, width, n_neighbors, framed,
                                            d_row, d_col, d_flat, row, col)
                desc[row * width + col] = best
                earlier[row * width + col] = mask
        else:
            for col in range(width):
                best, mask = _descent_pixel(vals, sign, height, width, n_neighbors, framed,
                                            d_row, d_col, d_flat, row, col)
                desc[row * width + col] = best
                earlier[row * width + col] = mask
    n_ids = 1 if framed else 0
    labels[n] = 0
    for v in range(n):
        if desc[v] == v:
            labels[v] = n_ids
            n_ids += 1
        else:
            labels[v] = -1
    return n_ids


@njit(cache=True)
def _resolve_labels(desc, labels, n):
    """Give every pixel the id of the minimum its descent path ends in (path compression)."""
    for v in range(n):
        if labels[v] >= 0:
            continue
        u = v
        while labels[u] < 0:
            u = desc[u]
        label = labels[u]
        u = v
        while labels[u] < 0:
            nxt = desc[u]
            labels[u] = label
            u = nxt


def _set_bit_table() -> np.ndarray:
    """(256, 9) table: for every byte, the number of set bits, then their positions."""
    table = np.zeros((256, 9), dtype=np.int64)
    for byte in range(256):
        positions = [k for k in range(8) if (byte >> k) & 1]
        table[byte, 0] = len(positions)
        table[byte, 1 : 1 + len(positions)] = positions
    return table


_SET_BITS = _set_bit_table()


@njit(cache=True)
def _edge_bits(labels, earlier, height, width, n_neighbors, d_flat):
    """(n,) uint8: bit ``k`` set where neighbour ``k`` is earlier and in another basin.

    Computed direction by direction over row slices (vectorised). Pixels on the image
    border keep all their earlier-neighbour bits: the emitting loop compares their labels.
    """
    edge_bits = earlier.copy()
    if width < 3:
        return edge_bits
    inner = width - 2
    for row in range(1, height - 1):
        start = row * width + 1
        out = edge_bits[start : start + inner]
        center = labels[start : start + inner]
        masks = earlier[start : start + inner]
        out[:] = 0
        for k in range(n_neighbors):
            neighbor = labels[start + d_flat[k] : start + d_flat[k] + inner]
            bit = np.uint8(1 << k)
            for c in range(inner):
                out[c] |= (bit if neighbor[c] != center[c] else np.uint8(0)) & masks[c]
    return edge_bits


@njit(cache=True)
def _basin_edges(vals, sign, height, width, n_neighbors, earlier, labels, use_cache):
    """Edges between basins, as (sort key of the later pixel, payload) in generation order.

    Pixels are visited in increasing ``sign * index``, so a stable sort by value keys gives
    the strict order. The payload packs ``(label of the earlier basin << 32) | pixel``.
    Every edge goes from a pixel to an earlier neighbour, so there are at most
    ``n * n_neighbors / 2`` of them: the buffers are sized from that bound.

    With ``use_cache``, an edge is left out when an edge between the same two basins with an
    earlier pixel was already emitted (remembered in a small direct-mapped cache): it can
    never merge anything. That pays where basins are large and share long boundaries.
    Repeats that are kept are harmless to Kruskal.
    """
    n = height * width
    d_flat = _neighbor_tables(width, n_neighbors)[2]
    capacity = (n * n_neighbors) // 2 + n_neighbors + 1
    keys = np.empty(capacity, dtype=np.uint64)
    payload = np.empty(capacity, dtype=np.uint64)
    ordered = _ordered_keys(vals)
    edge_bits = _edge_bits(labels, earlier, height, width, n_neighbors, d_flat)
    if use_cache:
        n_edges = _emit_edges_cached(sign, n, d_flat, edge_bits, labels, ordered, keys, payload)
    else:
        n_edges = _emit_edges(sign, n, d_flat, edge_bits, labels, ordered, keys, payload)
    return keys[:n_edges], payload[:n_edges]


@njit(cache=True)
def _emit_edges(sign, n, d_flat, edge_bits, labels, ordered, keys, payload):
    """Write every edge marked in ``edge_bits`` (labels checked, branch-free); count them.

    Consecutive repeats of the same neighbouring basin are skipped.
    """
    set_bits = _SET_BITS
    n_edges = 0
    for step in range(n):
        v = step if sign > 0 else n - 1 - step
        mask = edge_bits[v]
        if mask == 0:
            continue
        count = set_bits[mask, 0]
        label_v = labels[v]
        key_v = ordered[v]
        pixel_v = np.uint64(v)
        previous = label_v
        for j in range(count):
            label_u = labels[v + d_flat[set_bits[mask, 1 + j]]]
            keys[n_edges] = key_v
            payload[n_edges] = (np.uint64(label_u) << np.uint64(32)) | pixel_v
            new = (label_u != label_v) & (label_u != previous)
            previous = label_u if new else previous
            n_edges += np.int64(new)
    return n_edges


@njit(cache=True)
def _emit_edges_cached(sign, n, d_flat, edge_bits, labels, ordered, keys, payload):
    """Like :func:`_emit_edges`, leaving out edges dominated by a remembered earlier edge."""
    set_bits = _SET_BITS
    cache_low = np.full(_EDGE_CACHE, -1, dtype=np.int64)
    cache_high = np.full(_EDGE_CACHE, -1, dtype=np.int64)
    cache_key = np.zeros(_EDGE_CACHE, dtype=np.uint64)
    cache_pixel = np.zeros(_EDGE_CACHE, dtype=np.int64)
    n_edges = 0
    for step in range(n):
        v = step if sign > 0 else n - 1 - step
        mask = edge_bits[v]
        if mask == 0:
            continue
        label_v = labels[v]
        key_v = ordered[v]
        previous = label_v
        for j in range(set_bits[mask, 0]):
            label_u = labels[v + d_flat[set_bits[mask, 1 + j]]]
            if label_u == label_v or label_u == previous:
                continue
            previous = label_u
            low = min(label_u, label_v)
            high = max(label_u, label_v)
            slot = ((low * 0x9E3779B1) ^ high) & (_EDGE_CACHE - 1)
            if cache_low[slot] == low and cache_high[slot] == high:
                cached = cache_key[slot]
                if cached < key_v or (cached == key_v and sign * cache_pixel[slot] < sign * v):
                    continue
            cache_low[slot] = low
            cache_high[slot] = high
            cache_key[slot] = key_v
            cache_pixel[slot] = v
            keys[n_edges] = key_v
            payload[n_edges] = (np.uint64(label_u) << np.uint64(32)) | np.uint64(v)
            n_edges += 1
    return n_edges


@njit(cache=True)
def _elder_rule(vals, sign, payload, labels, minima, framed, dual, out_birth, out_death, start):
    """Kruskal with the elder rule over the basin edges sorted by their later pixel.

    ``minima[id]`` is the pixel of basin ``id`` (the frame, id 0 when ``framed``, is older
    than everything). Writes (younger minimum, meeting pixel), reversed when ``dual``.
    """
    n_ids = minima.size
    parent = np.arange(n_ids, dtype=np.int64)
    end = start
    low = np.uint64(0xFFFFFFFF)
    for i in range(payload.size):
        packed = payload[i]
        v = np.int64(packed & low)
        a = find_root(parent, np.int64(packed >> np.uint64(32)))
        b = find_root(parent, np.int64(labels[v]))
        if a == b:
            continue
        if framed and a == 0:
            a_older = True
        elif framed and b == 0:
            a_older = False
        else:
            ma = minima[a]
            mb = minima[b]
            a_older = precedes(vals[ma], sign * ma, vals[mb], sign * mb)
        if a_older:
            parent[b] = a
            younger = minima[b]
        else:
            parent[a] = b
            younger = minima[a]
        if dual:
            out_birth[end] = v
            out_death[end] = younger
        else:
            out_birth[end] = younger
            out_death[end] = v
        end += 1
    return end


@njit(cache=True)
def _pass(vals, sign, height, width, n_neighbors, framed, out_birth, out_death, start):
    """One H0 pass: sublevel (``sign`` 1), or the framed reversed pass for H1 (``sign`` -1).

    Returns the new end of the output and the pixel of the oldest minimum (-1 if framed).
    """
    n = height * width
    desc = np.empty(n, dtype=np.int32)
    earlier = np.empty(n, dtype=np.uint8)
    labels = np.empty(n + 1, dtype=np.int32)
    n_ids = _descent(vals, sign, height, width, n_neighbors, framed, desc, earlier, labels)
    minima = np.empty(n_ids, dtype=np.int64)
    if framed:
        minima[0] = -1
    for v in range(n):
        if desc[v] == v:
            minima[labels[v]] = v
    _resolve_labels(desc, labels, n)
    use_cache = n_ids * _CACHE_MIN_BASIN_SIZE < n
    keys, payload = _basin_edges(vals, sign, height, width, n_neighbors, earlier, labels,
                                 use_cache)
    payload = _radix_sort_payload(keys, payload, 8 * vals.itemsize)
    end = _elder_rule(vals, sign, payload, labels, minima, framed, sign < 0,
                      out_birth, out_death, start)
    oldest = -1
    if not framed:
        oldest = minima[0]
        for i in range(1, n_ids):
            m = minima[i]
            if precedes(vals[m], m, vals[oldest], oldest):
                oldest = m
    return end, oldest


@njit(cache=True)
def dimension_pairs(flat, height, width, h0_neighbors, dim, out_birth, out_death):
    """Persistence pairs of one dimension of one image's sublevel filtration.

    Parameters
    ----------
    flat : (H*W,) float32 or float64
        The image in C order.
    height, width : int
    h0_neighbors : int
        4 or 8: the connectivity of components (H1 uses the other one).
    dim : int
        0 or 1.
    out_birth, out_death : (H*W,) int32
        Output buffers: flat pixel indices of the pairs, from 0. For H0 the essential class
        comes first, with death -1. There are at most H*W pairs.

    Returns
    -------
    int
        Number of pairs written.
    """
    if dim == 0:
        end, oldest = _pass(flat, 1, height, width, h0_neighbors, False, out_birth, out_death, 1)
        out_birth[0] = oldest
        out_death[0] = -1
        return end
    end, _ = _pass(-flat, -1, height, width, 12 - h0_neighbors, True, out_birth, out_death, 0)
    return end


@njit(parallel=True, cache=True)
def batch_pairs(images, h0_neighbors, want_h0, want_h1):
    """Persistence pairs of a batch (B, H, W), packed; parallel over images and dimensions.

    Each (image, dimension) is one task for the threads, so that even a single image keeps
    two threads busy.

    Returns
    -------
    image, dim, birth_index, death_index : (K,) int64
        Grouped by image, then dimension.
    """
    n_images, height, width = images.shape
    n = height * width
    dims = np.array([d for d, wanted in ((0, want_h0), (1, want_h1)) if wanted], dtype=np.int64)
    n_dims = dims.size
    births = np.empty((n_images, n_dims, n), dtype=np.int32)
    deaths = np.empty((n_images, n_dims, n), dtype=np.int32)
    counts = np.zeros((n_images, n_dims), dtype=np.int64)
    for task in prange(n_images * n_dims):
        b = task // n_dims
        j = task - b * n_dims
        counts[b, j] = dimension_pairs(images[b].ravel(), height, width, h0_neighbors, dims[j],
                                       births[b, j], deaths[b, j])
    offsets = np.zeros(n_images * n_dims + 1, dtype=np.int64)
    for task in range(n_images * n_dims):
        offsets[task + 1] = offsets[task] + counts[task // n_dims, task % n_dims]
    total = offsets[-1]
    image = np.empty(total, dtype=np.int64)
    dim = np.empty(total, dtype=np.int64)
    birth_index = np.empty(total, dtype=np.int64)
    death_index = np.empty(total, dtype=np.int64)
    for task in prange(n_images * n_dims):
        b = task // n_dims
        j = task - b * n_dims
        base = offsets[task]
        for k in range(counts[b, j]):
            image[base + k] = b
            dim[base + k] = dims[j]
            birth_index[base + k] = births[b, j, k]
            death_index[base + k] = deaths[b, j, k]
    return image, dim, birth_index, death_index
