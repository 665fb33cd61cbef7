"""The local-pairing core: the per-pixel rule, and the CPU core against gudhi and the old core."""
import numpy as np
import pytest

from satloss_gpu.kernels.common import local_pairing as rule

# Cells of a pixel: corner c = ("corner", c), side s = ("side", s).
CORNER_SIDES = {0: (0, 1), 1: (0, 2), 2: (3, 1), 3: (3, 2)}  # (horizontal side, vertical side)
SIDE_ENDS = {0: (0, 1), 1: (0, 2), 2: (1, 3), 3: (2, 3)}
SIDE_NEIGHBOUR_BIT = {0: 1, 1: 3, 2: 4, 3: 6}
CORNER_NEIGHBOUR_BITS = {0: (0, 1, 3), 1: (1, 2, 4), 2: (3, 5, 6), 3: (4, 6, 7)}
RING = [("corner", 0), ("side", 0), ("corner", 1), ("side", 2),
        ("corner", 3), ("side", 3), ("corner", 2), ("side", 1)]


def owned_cells(mask: int) -> set:
    """Owned cells of a pixel, straight from the definition (the earliest square owns)."""
    cells = set()
    for side, bit in SIDE_NEIGHBOUR_BIT.items():
        if not (mask >> bit) & 1:
            cells.add(("side", side))
    for corner, bits in CORNER_NEIGHBOUR_BITS.items():
        if not any((mask >> b) & 1 for b in bits):
            cells.add(("corner", corner))
    return cells


def not_owned_arcs(owned: set) -> int:
    """Number of connected arcs of the not-owned part of the pixel's boundary cycle."""
    flags = [cell not in owned for cell in RING]
    if all(flags):
        return 1
    return sum(1 for p in range(8) if flags[p] and not flags[p - 1])


@pytest.mark.parametrize("mask", range(256))
def test_rule_pairs_every_owned_cell_once_and_leaves_the_homology_critical(mask):
    code = int(rule.RULE_TABLE[mask])
    assert code < 1 << 15
    owned = owned_cells(mask)
    used = {}

    def use(cell, how):
        assert cell in owned, (cell, how)
        assert cell not in used, (cell, used[cell], how)
        used[cell] = how

    parent = {}
    for corner in range(4):
        kind = rule.corner_kind(code, corner)
        if kind == rule.CORNER_NOT_OWNED:
            assert ("corner", corner) not in owned
            continue
        use(("corner", corner), "corner")
        if kind == rule.CORNER_CRITICAL:
            continue
        side = CORNER_SIDES[corner][0 if kind == rule.CORNER_ALONG_ROW else 1]
        use(("side", side), "paired with corner")
        a, b = SIDE_ENDS[side]
        parent[corner] = b if a == corner else a
    for side in range(4):
        if rule.side_is_critical(code, side):
            use(("side", side), "critical")
    square = rule.square_kind(code)
    if square != rule.SQUARE_CRITICAL:
        assert 0 <= square < 4
        use(("side", square), "paired with square")
    assert set(used) == owned
    # Gradient paths inside the pixel end (no cycle), at a critical or a not-owned corner.
    for corner in parent:
        seen = set()
        while corner in parent:
            assert corner not in seen
            seen.add(corner)
            corner = parent[corner]
    # Critical cells: the relative homology of (closed square, not-owned boundary).
    n_critical_corners = sum(rule.corner_kind(code, c) == rule.CORNER_CRITICAL for c in range(4))
    n_critical_sides = rule.critical_side_count(code)
    assert n_critical_sides == sum(rule.side_is_critical(code, s) for s in range(4))
    if len(owned) == 8:
        assert (n_critical_corners, n_critical_sides, square != 4) == (1, 0, True)
    elif not any(cell[0] == "side" for cell in owned):
        assert (n_critical_corners, n_critical_sides, square) == (0, 0, rule.SQUARE_CRITICAL)
    else:
        arcs = not_owned_arcs(owned)
        assert (n_critical_corners, n_critical_sides, square != 4) == (0, arcs - 1, True)


def test_neighbour_mask_follows_the_tie_rule_and_the_outside_sentinel():
    vals = np.array([[1.0, 2.0, 2.0],
                     [0.0, 2.0, 3.0],
                     [2.0, 5.0, 2.0]]).ravel()
    # Centre (1, 1) = 2.0 at index 4: earlier are 1.0, 2.0 at 1, 2.0 at 2, 0.0 (indices 0..3).
    assert rule.neighbour_mask(vals, 1, False, 1, 1, 3, 3) == 0b00001111
    # Reversed order (vals negated, sign -1): earlier are -2 at 6, 8, -3 at 5, -5 at 7.
    assert rule.neighbour_mask(-vals, -1, False, 1, 1, 3, 3) == 0b11110000
    # Corner pixel (0, 0): the 5 outside neighbours follow the sentinel.
    outside = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
    assert rule.neighbour_mask(vals, 1, True, 0, 0, 3, 3) == outside | (1 << 6)
    assert rule.neighbour_mask(vals, 1, False, 0, 0, 3, 3) == 1 << 6


def test_geometry_helpers():
    width = 5
    assert rule.corner_id(2, 3, 0, width) == 2 * 6 + 3
    assert rule.corner_id(2, 3, 3, width) == 3 * 6 + 4
    assert rule.side_corners(2, 3, 0, width) == (15, 16)
    assert rule.side_corners(2, 3, 1, width) == (15, 21)
    assert rule.side_corners(2, 3, 2, width) == (16, 22)
    assert rule.side_corners(2, 3, 3, width) == (21, 22)
    assert rule.side_neighbour(0, 3, 0, 4, width) == -1
    assert rule.side_neighbour(2, 3, 0, 4, width) == 8
    assert rule.side_neighbour(2, 4, 2, 4, width) == -1
    assert rule.side_neighbour(3, 0, 3, 4, width) == -1
    for corner in range(4):
        for kind, side_slot in ((rule.CORNER_ALONG_ROW, 0), (rule.CORNER_ALONG_COLUMN, 1)):
            side = CORNER_SIDES[corner][side_slot]
            ends = rule.side_corners(2, 3, side, width)
            here = rule.corner_id(2, 3, corner, width)
            target = here + rule.corner_parent_offset(kind, corner, width)
            assert sorted(ends) == sorted((here, target))
        assert rule.corner_parent_offset(rule.CORNER_CRITICAL, corner, width) == 0
