"""Benchmark: cost per pixel of the CPU persistence core as images grow, stage by stage.

For 256 x 256 to 2048 x 2048 float32 images (uniform noise, and noise blurred with sigma 4),
T- and V-construction, H0 and H1, one thread: the CPU time of every stage of the local-pairing
core and of the whole core, in ns per pixel, medians over repeats, side by side with gudhi's
fast 2D path (T only: it has none for vertices) and cripser, the methods taking turns within
every repeat. ``--reference FILE`` adds another version of the core module (for instance an
earlier commit's, ``git show COMMIT:kernels/cpu/local_pairing.py > FILE``), timed whole and
interleaved with the others; its results are checked equal to the current core's.

    python bench/persistence_scaling.py                      # the full table (~10 minutes)
    python bench/persistence_scaling.py --sizes 256 512 --repeats 3
    python bench/persistence_scaling.py --reference before.py --no-cripser

Results: a table on stdout and JSON in bench/results/persistence_scaling_cpu2.json (``--out``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "persistence_scaling_cpu2.json"
STAGES = ("extremes", "raster pass", "numbering", "resolve", "sort", "H0 pass", "H1 pass")


def make_image(kind: str, size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` float32 image: ``noise`` (uniform) or ``smooth`` (sigma 4)."""
    from scipy.ndimage import gaussian_filter

    image = np.random.default_rng(seed).random((size, size))
    if kind == "smooth":
        image = gaussian_filter(image, 4)
    return np.ascontiguousarray(image, dtype=np.float32)


def core_stages(core, flat: np.ndarray, height: int, width: int, vertex: bool) -> List[float]:
    """CPU seconds of each stage of ``core`` (the module) on one image, in :data:`STAGES` order.

    Runs the steps of the core's ``_image_pairs`` one by one, with its work arrays: the
    numbered passes when the image has at least ``core._NUMBERED_FROM`` critical edges, the
    plain passes otherwise (numbering and resolve then take no time).
    """
    clock = time.process_time
    n = height * width
    (corner_parent, square_parent, edge_keys, edge_payload, records, records_tmp, sort_keys,
     sort_keys_tmp, birth, death, corner_pixel, square_pixel) = core._scratch(flat, height,
                                                                              width)
    table = core._RULE_TABLE_V if vertex else core.RULE_TABLE
    key_bits = 8 * flat.itemsize
    marks = [clock()]
    core._extremes(flat, height, width)
    marks.append(clock())
    keys, payload = core._decode_into(flat, height, width, table, corner_parent, square_parent,
                                      edge_keys, edge_payload)
    marks.append(clock())
    if payload.size >= core._NUMBERED_FROM:
        n_corners = core._number_critical(corner_parent, n, False, corner_pixel)
        n_squares = core._number_critical(square_parent, n, True, square_pixel)
        marks.append(clock())
        records, keys, corner_pixel, corner_nodes, square_pixel, square_nodes = (
            core._resolve_ends(flat, height, width, keys, payload, corner_parent, square_parent,
                               corner_pixel[:n_corners], square_pixel[:n_squares], records,
                               sort_keys))
        marks.append(clock())
        records = core._radix_sort_records(keys, records, sort_keys_tmp, records_tmp, key_bits)
        marks.append(clock())
        _, n_left = core._h0_pass_records(records, corner_nodes, corner_pixel, vertex, True,
                                          birth, death, np.int64(0))
        marks.append(clock())
        core._h1_pass_records(records, n_left, square_nodes, square_pixel, vertex, birth, death,
                              np.int64(0))
    else:
        corner_parent[-1] = -(n + 1)
        square_parent[n] = n
        marks += [clock(), clock()]
        edges = core._radix_sort(keys, payload, key_bits)
        marks.append(clock())
        _, n_left = core._h0_pass(flat, height, width, edges, corner_parent, vertex, True, birth,
                                  death, np.int64(0))
        marks.append(clock())
        core._h1_pass(flat, height, width, edges, n_left, square_parent, vertex, birth, death,
                      np.int64(0))
    marks.append(clock())
    return list(np.diff(marks))


def load_reference(path: str):
    """The core module in ``path``, imported beside the installed one (its relative imports
    resolve in the same package)."""
    name = "satloss_gpu.kernels.cpu._reference_local_pairing"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # compiled functions' cache entries look their module up
    spec.loader.exec_module(module)
    return module


def whole_runs(core, reference, image: np.ndarray, vertex: bool,
               cripser_on: bool) -> Dict[str, Callable[[], object]]:
    """The whole-image runs to interleave: the core, the reference, gudhi, cripser."""
    flat = image.ravel()
    height, width = image.shape
    runs = {"core": lambda: core.image_pairs(flat, height, width, vertex, True, True)}
    if reference is not None:
        runs["reference"] = lambda: reference.image_pairs(flat, height, width, vertex, True,
                                                          True)
    if not vertex:
        from gudhi._pers_cub_low_dim_ext import _persistence_on_rectangle_from_top_cells

        runs["gudhi fast 2D path"] = lambda: _persistence_on_rectangle_from_top_cells(image, 0.0)
    if cripser_on:
        import cripser

        image64 = image.astype(np.float64)
        compute = cripser.computePH if vertex else cripser.computePH_T
        runs["cripser"] = lambda: compute(image64, maxdim=1)
    return runs


def check_reference(core, reference, image: np.ndarray, vertex: bool) -> None:
    """Raise if the reference core's pairs differ from the core's."""
    flat = image.ravel()
    ours = core.image_pairs(flat, *image.shape, vertex, True, True)
    theirs = reference.image_pairs(flat, *image.shape, vertex, True, True)
    for a, b in zip(ours[2:], theirs[2:]):
        if a != b:
            raise RuntimeError("the reference core gives other counts or extremes")
    for a, b in zip(ours[:2], theirs[:2]):
        n_h0, n_h1 = ours[2], ours[3]
        if not (np.array_equal(a[:n_h0], b[:n_h0])
                and np.array_equal(a[a.size - n_h1:], b[b.size - n_h1:])):
            raise RuntimeError("the reference core gives other pairs")


def measure(kind: str, size: int, vertex: bool, repeats: int, core, reference,
            cripser_on: bool) -> dict:
    """One row: ns per pixel of every stage and of every whole run (medians)."""
    image = make_image(kind, size)
    flat = image.ravel()
    pixels = image.size
    if reference is not None:
        check_reference(core, reference, image, vertex)
    runs = whole_runs(core, reference, image, vertex, cripser_on and size <= 2048)
    stage_times: List[List[float]] = []
    whole: Dict[str, List[float]] = {name: [] for name in runs}
    core_stages(core, flat, size, size, vertex)  # warm-up (compilation)
    for run in runs.values():
        run()
    for _ in range(repeats):
        stage_times.append(core_stages(core, flat, size, size, vertex))
        for name, run in runs.items():
            start = time.process_time()
            run()
            whole[name].append(time.process_time() - start)
        # Whatever runs right after cripser (seconds, and much memory on large images) was
        # measured up to 2x slower: one untimed run settles the machine first.
        runs["core"]()
    stages = np.median(np.array(stage_times), axis=0) * 1e9 / pixels
    edges = core.image_pairs(flat, size, size, vertex, True, True)
    return {
        "image": kind, "size": size, "construction": "V" if vertex else "T",
        "repeats": repeats,
        "pairs_per_pixel": (edges[2] + edges[3]) / pixels,
        "stages_ns_per_pixel": {name: float(t) for name, t in zip(STAGES, stages)},
        "whole_ns_per_pixel": {name: float(np.median(t) * 1e9 / pixels)
                               for name, t in whole.items()},
    }


def print_row(row: dict) -> None:
    """One line of the table."""
    stages = " ".join(f"{v:7.1f}" for v in row["stages_ns_per_pixel"].values())
    whole = "  ".join(f"{k} {v:6.1f}" for k, v in row["whole_ns_per_pixel"].items())
    print(f"{row['image']:6s} {row['size']:5d} {row['construction']}  {stages}  | {whole}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--kinds", nargs="+", default=["noise", "smooth"])
    parser.add_argument("--constructions", nargs="+", default=["T", "V"])
    parser.add_argument("--repeats", type=int, default=0,
                        help="repeats per row (default: 15 at 256 down to 3 at 2048)")
    parser.add_argument("--reference", default=None, help="another core module file to time")
    parser.add_argument("--no-cripser", action="store_true")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    import numba

    from satloss_gpu.kernels.cpu import local_pairing as core

    numba.set_num_threads(1)
    reference = load_reference(args.reference) if args.reference else None
    print("ns per pixel (CPU time, one thread, medians); stages:", ", ".join(STAGES))
    rows = []
    for size in args.sizes:
        repeats = args.repeats or max(3, min(15, (15 * 256 * 256) // (size * size) + 2))
        for kind in args.kinds:
            for construction in args.constructions:
                row = measure(kind, size, construction == "V", repeats, core, reference,
                              not args.no_cripser)
                print_row(row)
                rows.append(row)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "numba": numba.__version__},
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
