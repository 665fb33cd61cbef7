"""Benchmark: 3D cubical persistence with critical voxels, beside cripser, gudhi and Betti-Matching-3D.

Times H0 + H1 + H2 of one volume on one CPU thread for every method, in one run, on the same
volumes: the methods take turns within every repeat (interleaved), and the table reports the
median and the smallest process CPU time per call, the median wall time and the ratio to
satloss-gpu's CPU backend of the same construction. Imports and a first call on a tiny volume
(compilation) come before any timing. Then each method runs once more in a fresh process, on
the same volume, for the memory it adds: the peak resident memory during the call minus the
resident memory just before it (in bytes per voxel). Last, the stage times of satloss-gpu's
CPU core (``stage_times3d``) and whether every method's diagrams agree with satloss-gpu's.

Methods (``--methods``, comma-separated keys):

* ``ours_T``, ``ours_V``: ``cubical_persistence(volume, spatial_dims=3, backend="cpu")``,
  T- and V-construction, one thread; ``ours_T_threads``, ``ours_V_threads``: the same with
  Numba's default thread count;
* ``cripser_T``, ``cripser_V``: cripser ``computePH_T`` and ``computePH`` (critical voxels
  in every row);
* ``gudhi_T``: gudhi ``CubicalComplex(top_dimensional_cells=...)``, ``compute_persistence``
  and ``cofaces_of_persistence_pairs``; ``gudhi_V``: ``CubicalComplex(vertices=...)`` and
  ``vertices_of_persistence_pairs``; both with coefficients in Z/2
  (``homology_coeff_field=2``), as the other methods. gudhi's default field, Z/11, gives
  other H1 pairs on some volumes: a loop that winds twice around a tunnel of a later
  sublevel set dies there with Z/2 coefficients and lives on with odd-prime ones (found on
  about one in a few hundred random 12^3 and 16^3 volumes and on 64^3 noise, V);
* ``bm3d_V``: Betti-Matching-3D's ``compute_barcode`` (V-construction), the compiled module
  that the ``topolosses`` package ships (loaded from its file, without importing
  ``topolosses`` itself).

A method that cannot be imported or raises gets a row that says why; the run goes on.
Volumes: uniform noise (``numpy.random.default_rng(0).random``) and smooth (that noise
blurred by ``scipy.ndimage.gaussian_filter`` with sigma 4), float32. satloss-gpu takes the
float32 volume; the other methods take its float64 copy, made before the timings (the values
are the same).

    python bench/persistence3d.py                   # 64^3 and 128^3, noise and smooth
    python bench/persistence3d.py --sizes 64 --methods ours_T,cripser_T
    python bench/persistence3d.py --quick           # tiny volumes, a smoke test

The process runs with one OpenMP/MKL/OpenBLAS thread and one Numba thread (except the
``*_threads`` methods). gudhi is called once per volume from 96^3 on (``--slow-repeats``),
about 30-40 s per call at 128^3. Results: a table on stdout and JSON in
``bench/results/persistence3d_cpu2.json`` (``--json``).
"""
from __future__ import annotations

import os

# One thread for every library that reads these when it loads (torch through cripser,
# BLAS through NumPy/SciPy). Set before NumPy is imported.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import glob  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "persistence3d_cpu2.json"
QUICK_JSON = HERE / "out" / "persistence3d_quick.json"
KINDS = ("noise", "smooth")
#: From this side length on, gudhi runs ``--slow-repeats`` times (about 30-40 s per call at 128^3).
SLOW_FROM = 96
#: Entries of ``stage_times3d`` that are counts (critical edges, faces, H1 columns), not seconds.
COUNTS = ("edges", "faces", "columns")
#: Pairs of one volume: dimension -> (K, 2) float64 (birth, death), finite deaths only,
#: zero persistence dropped, rows sorted.
Pairs = Dict[int, np.ndarray]


class Unavailable(Exception):
    """A method that cannot run here (its row says why)."""


@dataclass
class Method:
    """One way of computing the diagrams of a volume.

    ``run`` takes the prepared input and returns the method's raw result (what it would hand
    to its caller); ``pairs`` turns that result into :data:`Pairs`, outside the timings.
    """

    key: str
    label: str
    construction: str
    wants_float64: bool
    run: Callable[[np.ndarray], Any]
    pairs: Callable[[Any, np.ndarray], Pairs]


# ---------------------------------------------------------------------------- volumes


def make_volume(size: int, kind: str, seed: int = 0) -> np.ndarray:
    """A ``size``^3 float32 benchmark volume: uniform noise or that noise blurred (sigma 4).

    Returns
    -------
    numpy.ndarray, shape (size, size, size), float32, C-contiguous
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}; got {kind!r}")
    noise = np.random.default_rng(seed).random((size, size, size))
    if kind == "smooth":
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(noise, 4)
    return np.ascontiguousarray(noise, dtype=np.float32)


def prepared(method: Method, volume: np.ndarray) -> np.ndarray:
    """The input ``method`` takes: the float32 volume or its float64 copy."""
    return volume.astype(np.float64) if method.wants_float64 else volume


# ---------------------------------------------------------------------------- pairs


def canonical_pairs(dims: np.ndarray, births: np.ndarray, deaths: np.ndarray) -> Pairs:
    """:data:`Pairs` of flat arrays: finite deaths, nonzero persistence, rows sorted.

    A death at or above 1e300 (cripser's essential class, ``DBL_MAX``) counts as infinite.
    """
    dims = np.asarray(dims).astype(np.int64)
    births = np.asarray(births, dtype=np.float64)
    deaths = np.asarray(deaths, dtype=np.float64)
    keep = np.isfinite(deaths) & (np.abs(deaths) < 1e300) & (births != deaths)
    out: Pairs = {}
    for dim in (0, 1, 2):
        rows = np.column_stack([births[keep & (dims == dim)], deaths[keep & (dims == dim)]])
        out[dim] = rows[np.lexsort(rows.T[::-1])] if len(rows) else rows.reshape(0, 2)
    return out


def pair_counts(pairs: Pairs) -> List[int]:
    """Finite pairs of nonzero persistence in dimensions 0, 1, 2."""
    return [int(len(pairs[dim])) for dim in (0, 1, 2)]


def same_pairs(a: Pairs, b: Pairs) -> bool:
    """Whether two diagram sets hold the same (birth, death) multisets in every dimension."""
    return all(np.array_equal(a[dim], b[dim]) for dim in (0, 1, 2))


# ---------------------------------------------------------------------------- methods


def _ours(construction: str, all_threads: bool) -> Method:
    import inspect

    import numba

    from satloss_gpu import cubical_persistence

    if "spatial_dims" not in inspect.signature(cubical_persistence).parameters:
        raise Unavailable("satloss_gpu.cubical_persistence has no `spatial_dims` argument yet")
    threads = int(numba.config.NUMBA_NUM_THREADS) if all_threads else 1

    def run(volume: np.ndarray) -> Any:
        numba.set_num_threads(threads)
        try:
            return cubical_persistence(volume, spatial_dims=3, construction=construction,
                                       dims=(0, 1, 2), backend="cpu")
        finally:
            numba.set_num_threads(1)

    def pairs(result: Any, volume: np.ndarray) -> Pairs:
        result = result.to_numpy()
        return canonical_pairs(result.dim, result.birth, result.death)

    label = f"satloss-gpu cpu {construction} ({threads} thread{'s' if threads > 1 else ''})"
    key = f"ours_{construction}" + ("_threads" if all_threads else "")
    return Method(key, label, construction, False, run, pairs)


def _cripser(construction: str) -> Method:
    import cripser

    compute = cripser.computePH_T if construction == "T" else cripser.computePH

    def run(volume: np.ndarray) -> Any:
        return compute(volume, maxdim=2)

    def pairs(result: Any, volume: np.ndarray) -> Pairs:
        return canonical_pairs(result[:, 0], result[:, 1], result[:, 2])

    name = "computePH_T" if construction == "T" else "computePH (V)"
    return Method(f"cripser_{construction}", f"cripser {name}", construction, True, run, pairs)


def _gudhi(construction: str) -> Method:
    import gudhi

    def run(volume: np.ndarray) -> Any:
        if construction == "T":
            complex_ = gudhi.CubicalComplex(top_dimensional_cells=volume)
            complex_.compute_persistence(homology_coeff_field=2)
            return complex_, complex_.cofaces_of_persistence_pairs()
        complex_ = gudhi.CubicalComplex(vertices=volume)
        complex_.compute_persistence(homology_coeff_field=2)
        return complex_, complex_.vertices_of_persistence_pairs()

    def pairs(result: Any, volume: np.ndarray) -> Pairs:
        complex_ = result[0]
        parts = [complex_.persistence_intervals_in_dimension(dim) for dim in (0, 1, 2)]
        dims = np.concatenate([np.full(len(p), d) for d, p in enumerate(parts)])
        both = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts])
        return canonical_pairs(dims, both[:, 0], both[:, 1])

    label = "gudhi T + cofaces" if construction == "T" else "gudhi V + vertices"
    return Method(f"gudhi_{construction}", label, construction, True, run, pairs)


def betti_matching_module() -> Any:
    """Betti-Matching-3D's compiled module from the ``topolosses`` wheel, loaded by file.

    Loading the extension by its path keeps ``topolosses``'s own imports (torch, MONAI
    losses) out of the process. Raises :class:`Unavailable` with the reason.
    """
    spec = importlib.util.find_spec("topolosses")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("package topolosses not installed "
                          "(pip install topolosses==0.2.0 --no-deps)")
    root = list(spec.submodule_search_locations)[0]
    files = glob.glob(os.path.join(root, "losses", "betti_matching", "src", "betti_matching*"))
    files = [f for f in files if f.endswith((".so", ".pyd"))]
    if not files:
        raise Unavailable(f"no compiled betti_matching module under {root}")
    loader = importlib.machinery.ExtensionFileLoader("betti_matching", files[0])
    module_spec = importlib.util.spec_from_file_location("betti_matching", files[0],
                                                         loader=loader)
    module = importlib.util.module_from_spec(module_spec)
    try:
        loader.exec_module(module)
    except ImportError as error:
        raise Unavailable(f"betti_matching does not load: {error}") from error
    if not hasattr(module, "compute_barcode"):
        raise Unavailable("betti_matching has no compute_barcode")
    return module


def _betti_matching() -> Method:
    module = betti_matching_module()

    def run(volume: np.ndarray) -> Any:
        return module.compute_barcode(volume)

    def pairs(result: Any, volume: np.ndarray) -> Pairs:
        dims, births, deaths = [], [], []
        for dim in (0, 1, 2):
            birth = np.asarray(result.birth_coordinates[dim]).reshape(-1, 3)
            death = np.asarray(result.death_coordinates[dim]).reshape(-1, 3)
            dims.append(np.full(len(birth), dim))
            births.append(volume[tuple(birth.T)])
            deaths.append(volume[tuple(death.T)])
        return canonical_pairs(np.concatenate(dims), np.concatenate(births),
                               np.concatenate(deaths))

    return Method("bm3d_V", "Betti-Matching-3D compute_barcode (V)", "V", True, run, pairs)


FACTORIES: Dict[str, Callable[[], Method]] = {
    "ours_T": lambda: _ours("T", False),
    "ours_V": lambda: _ours("V", False),
    "ours_T_threads": lambda: _ours("T", True),
    "ours_V_threads": lambda: _ours("V", True),
    "cripser_T": lambda: _cripser("T"),
    "cripser_V": lambda: _cripser("V"),
    "gudhi_T": lambda: _gudhi("T"),
    "gudhi_V": lambda: _gudhi("V"),
    "bm3d_V": _betti_matching,
}


def load_methods(keys: List[str]) -> Tuple[Dict[str, Method], Dict[str, str]]:
    """The methods that load and a first call on a tiny volume runs; reasons for the others.

    The first call compiles satloss-gpu's kernels for float32 (the timings exclude it).
    """
    loaded: Dict[str, Method] = {}
    failed: Dict[str, str] = {}
    tiny = make_volume(6, "noise", seed=1)
    for key in keys:
        try:
            method = FACTORIES[key]()
            method.pairs(method.run(prepared(method, tiny)), prepared(method, tiny))
            loaded[key] = method
        except Unavailable as reason:
            failed[key] = str(reason)
        except Exception as error:  # any failure is a row, never a crash
            failed[key] = f"{type(error).__name__}: {error}"[:300]
    return loaded, failed


# ---------------------------------------------------------------------------- timings


def repeats_of(key: str, size: int, repeats: int, slow_repeats: int) -> int:
    """Calls of ``key`` on a ``size``^3 volume: ``slow_repeats`` for gudhi from 96^3 on."""
    return max(1, slow_repeats) if key.startswith("gudhi") and size >= SLOW_FROM else repeats


def time_volume(methods: Dict[str, Method], volume: np.ndarray, repeats: Dict[str, int]
                ) -> Tuple[Dict[str, dict], Dict[str, Pairs]]:
    """CPU and wall times of every method on one volume, the methods taking turns.

    Returns the times ({key: {"cpu": [...], "wall": [...]}}, or {"error": ...}) and the
    pairs of each method's first call.
    """
    inputs = {key: prepared(m, volume) for key, m in methods.items()}
    times: Dict[str, dict] = {key: {"cpu": [], "wall": []} for key in methods}
    pairs: Dict[str, Pairs] = {}
    for round_ in range(max(repeats.values(), default=0)):
        for key, method in methods.items():
            if round_ >= repeats[key] or "error" in times[key]:
                continue
            gc.collect()
            try:
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                result = method.run(inputs[key])
                cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
                if key not in pairs:
                    pairs[key] = method.pairs(result, inputs[key])
            except Exception as error:  # a row that says why
                times[key] = {"error": f"{type(error).__name__}: {error}"[:300]}
                continue
            del result
            times[key]["cpu"].append(cpu)
            times[key]["wall"].append(wall)
    return times, pairs


def agreement(methods: Dict[str, Method], pairs: Dict[str, Pairs]) -> Dict[str, dict]:
    """Each method's pairs against the reference of its construction.

    The reference is satloss-gpu's one-thread result, else cripser's.
    """
    out = {}
    for key, method in methods.items():
        if key not in pairs:
            continue
        reference = next((r for r in (f"ours_{method.construction}",
                                      f"cripser_{method.construction}") if r in pairs), None)
        out[key] = {"counts": pair_counts(pairs[key]), "reference": reference,
                    "agree": None if reference in (None, key)
                    else same_pairs(pairs[key], pairs[reference])}
    return out


# ---------------------------------------------------------------------------- memory


def _memory_now() -> Tuple[int, Callable[[], int], str]:
    """(resident bytes now, function giving the peak since now, how it is measured).

    Linux: the peak is reset to the current resident size (``/proc/self/clear_refs``) and
    read from ``VmHWM``; elsewhere ``getrusage`` maxima (peak since the process started).
    """
    def status(field: str) -> int:
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(field):
                    return 1024 * int(line.split()[1])
        raise OSError(field)

    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return status("VmRSS:"), lambda: status("VmHWM:"), "VmHWM after reset - VmRSS"
    except OSError:
        return (_maxrss(), _maxrss, "ru_maxrss after - before")


def _maxrss() -> int:
    """Peak resident bytes of this process so far (``getrusage``; KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return scale * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_memory(key: str, size: int, kind: str) -> dict:
    """One call of ``key`` on one volume in this (fresh) process: added memory and CPU time.

    Runs after the method's first call on a tiny volume (imports, compilation).
    """
    import numba

    numba.set_num_threads(1)
    loaded, failed = load_methods([key])
    if key in failed:
        return {"error": failed[key]}
    method = loaded[key]
    data = prepared(method, make_volume(size, kind))
    gc.collect()
    maxrss_before = _maxrss()
    before, peak, how = _memory_now()
    start = time.process_time()
    result = method.run(data)
    seconds = time.process_time() - start
    added = peak() - before
    return {"added_bytes": int(added), "bytes_per_voxel": added / data.size, "measured_as": how,
            "ru_maxrss_added_bytes": int(_maxrss() - maxrss_before), "cpu_seconds": seconds,
            "rss_before_bytes": int(before), "result_type": type(result).__name__}


def measure_memory(key: str, size: int, kind: str, timeout: float = 1800) -> dict:
    """:func:`child_memory` in a fresh Python process (this script with ``--child``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", key,
               "--sizes", str(size), "--kinds", kind]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("CHILD "):
            return json.loads(line[6:])
    return {"error": f"exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}"}


# ---------------------------------------------------------------------------- stages


def stage_table(volumes: Dict[str, np.ndarray], repeats: int) -> Any:
    """Median CPU seconds per stage (and the counts) of satloss-gpu's 3D CPU core, T and V.

    A string saying why when ``stage_times3d`` does not exist (yet) or fails.
    """
    try:
        from satloss_gpu.kernels.cpu.local_pairing3d import stage_times3d
    except ImportError as error:
        return f"no stage_times3d ({error})"
    rows = []
    try:
        stage_times3d(make_volume(6, "noise", seed=1))  # compilation
        for name, volume in volumes.items():
            for vertex in (False, True):
                runs = [stage_times3d(volume, vertex=vertex) for _ in range(max(1, repeats))]
                stages = {s: float(np.median([r[s] for r in runs])) for s in runs[0]}
                rows.append({"volume": name, "construction": "V" if vertex else "T",
                             "voxels": int(volume.size), "stages": stages})
    except Exception as error:  # reported, never a crash
        return f"stage_times3d raised {type(error).__name__}: {error}"[:300]
    return rows


# ---------------------------------------------------------------------------- report


def summarise(times: Dict[str, dict], methods: Dict[str, Method]) -> Dict[str, dict]:
    """Median and smallest CPU seconds, median wall seconds and ratios to ours, per method."""
    rows = {}
    for key, record in times.items():
        if "error" in record or not record["cpu"]:
            rows[key] = {"error": record.get("error", "no call")}
            continue
        rows[key] = {"cpu_median_s": float(np.median(record["cpu"])),
                     "cpu_min_s": float(np.min(record["cpu"])),
                     "wall_median_s": float(np.median(record["wall"])),
                     "calls": len(record["cpu"]), "cpu_s": record["cpu"],
                     "wall_s": record["wall"]}
    for key, row in rows.items():
        reference = rows.get(f"ours_{methods[key].construction}", {})
        if "cpu_median_s" in row and "cpu_median_s" in reference:
            row["ratio_cpu"] = row["cpu_median_s"] / reference["cpu_median_s"]
            row["ratio_wall"] = row["wall_median_s"] / reference["wall_median_s"]
    return rows


def print_table(results: List[dict], labels: Dict[str, str]) -> None:
    """The main table: one line per (volume, method)."""
    print(f"\n{'method':40s} {'volume':12s} {'median s':>9s} {'min s':>8s} {'wall s':>8s} "
          f"{'ratio':>7s} {'added MB':>9s} {'B/voxel':>8s} {'calls':>5s}  pairs H0/H1/H2")
    for entry in results:
        for key, row in entry["methods"].items():
            label = labels.get(key, key)
            memory = entry["memory"].get(key, {})
            mb = f"{memory['added_bytes'] / 1e6:9.1f}" if "added_bytes" in memory else f"{'-':>9s}"
            per = (f"{memory['bytes_per_voxel']:8.0f}" if "bytes_per_voxel" in memory
                   else f"{'-':>8s}")
            if "error" in row:
                print(f"{label:40s} {entry['volume']:12s} not run: {row['error']}")
                continue
            ratio = f"{row['ratio_cpu']:6.1f}x" if "ratio_cpu" in row else f"{'-':>7s}"
            counts = entry["agreement"].get(key, {}).get("counts")
            print(f"{label:40s} {entry['volume']:12s} {row['cpu_median_s']:9.3f} "
                  f"{row['cpu_min_s']:8.3f} {row['wall_median_s']:8.3f} {ratio} {mb} {per} "
                  f"{row['calls']:5d}  {'/'.join(map(str, counts)) if counts else '-'}")
    print("ratio: median CPU time over satloss-gpu's (same construction, one thread); > 1 means "
          "satloss-gpu is faster. added MB: peak resident memory of one call in a fresh "
          "process minus the memory before it.")


def print_agreement(results: List[dict], labels: Dict[str, str]) -> None:
    print("\nDiagrams (finite pairs of nonzero persistence, (birth, death) multisets per "
          "dimension) against the reference of the same construction:")
    for entry in results:
        for key, row in entry["agreement"].items():
            if row["agree"] is None:
                continue
            word = "agree" if row["agree"] else "DIFFER"
            print(f"  {entry['volume']:12s} {labels.get(key, key):40s} vs "
                  f"{labels.get(row['reference'], row['reference']):30s} {word} "
                  f"(H0/H1/H2 {'/'.join(map(str, row['counts']))})")


def print_stages(stages: Any) -> None:
    print("\nsatloss-gpu CPU core by stage (median CPU ms, one thread):")
    if isinstance(stages, str):
        print(f"  {stages}")
        return
    for row in stages:
        voxels = int(row["voxels"])
        times = ", ".join(f"{name} {1e3 * s:.1f}" for name, s in row["stages"].items()
                          if name not in COUNTS)
        counts = ", ".join(f"{name} {row['stages'][name] / voxels:.4f}" for name in COUNTS
                           if name in row["stages"])
        print(f"  {row['volume']:12s} {row['construction']}: {times}"
              + (f"; per voxel: {counts}" if counts else ""))


def machine() -> dict:
    """CPU model, cores, Python and the load average now."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as lines:
            model = next(line.split(":", 1)[1].strip() for line in lines
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def source_state() -> dict:
    """The repository's commit and whether the package's sources differ from it (or why not
    known): the numbers belong to that code."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    try:
        changed = git("status", "--porcelain", "--", "kernels", "satloss_gpu").splitlines()
        return {"commit": git("rev-parse", "HEAD").strip(),
                "changed_sources": [line[3:] for line in changed if line.endswith(".py")]}
    except (OSError, subprocess.SubprocessError) as error:
        return {"commit": f"unknown ({type(error).__name__})"}


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("numpy", "numba", "scipy", "gudhi", "cripser", "topolosses", "satloss-gpu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


# ---------------------------------------------------------------------------- main


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="side lengths, comma-separated "
                        "(default 64,128; --quick 10)")
    parser.add_argument("--kinds", default="noise,smooth", help="noise, smooth or both")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per method and volume (default 3; --quick 1)")
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help=f"timed calls of gudhi from {SLOW_FROM}^3 on (default 1)")
    parser.add_argument("--methods", default=",".join(FACTORIES),
                        help="method keys, comma-separated: " + ", ".join(FACTORIES))
    parser.add_argument("--memory-methods", default=None,
                        help="methods whose memory is measured in a fresh process "
                             "(default: every timed method)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--quick", action="store_true", help="tiny volumes, one call each")
    parser.add_argument("--json", default=None,
                        help=f"output file (default {DEFAULT_JSON.relative_to(HERE.parent)}; "
                             "--quick: bench/out/persistence3d_quick.json)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in (args.sizes or ("10" if args.quick else "64,128")).split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.methods = [m for m in args.methods.split(",") if m]
    for name, values, known in (("--kinds", args.kinds, KINDS),
                                ("--methods", args.methods, tuple(FACTORIES))):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"{name}: unknown {unknown}; choose from {list(known)}")
    if any(s < 2 for s in args.sizes):
        parser.error("--sizes: every side length must be at least 2")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.memory_methods = (args.methods if args.memory_methods is None
                           else [m for m in args.memory_methods.split(",") if m])
    args.json = Path(args.json) if args.json else (QUICK_JSON if args.quick else DEFAULT_JSON)
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    """Timings, agreement, memory and stages for every volume; the JSON record."""
    import numba

    numba.set_num_threads(1)
    load_before = os.getloadavg()
    source = source_state()
    started = time.perf_counter()
    methods, failed = load_methods(args.methods)
    labels = {key: m.label for key, m in methods.items()}
    volumes = {f"{kind} {size}^3": (size, kind) for size in args.sizes for kind in args.kinds}
    results = []
    for name, (size, kind) in volumes.items():
        volume = make_volume(size, kind)
        repeats = {key: repeats_of(key, size, args.repeats, args.slow_repeats) for key in methods}
        load = os.getloadavg()
        times, pairs = time_volume(methods, volume, repeats)
        entry = {"volume": name, "size": size, "kind": kind, "voxels": int(volume.size),
                 "load_average_before": load, "repeats": repeats,
                 "methods": {**summarise(times, methods),
                             **{key: {"error": why} for key, why in failed.items()}},
                 "agreement": agreement(methods, pairs), "memory": {}}
        results.append(entry)
        print(f"[{time.perf_counter() - started:7.1f} s] timed {name} (load {load[0]:.2f})",
              flush=True)
    if not args.no_memory:
        for entry in results:
            for key in [k for k in args.memory_methods if k in methods]:
                entry["memory"][key] = measure_memory(key, entry["size"], entry["kind"])
            print(f"[{time.perf_counter() - started:7.1f} s] memory of {entry['volume']}",
                  flush=True)
    stages = stage_table({name: make_volume(*spec) for name, spec in volumes.items()},
                         args.repeats)
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
            "versions": versions(), "source": source,
            "numba_default_threads": int(numba.config.NUMBA_NUM_THREADS),
            "settings": {"sizes": args.sizes, "kinds": args.kinds, "repeats": args.repeats,
                         "slow_repeats": args.slow_repeats, "slow_from": SLOW_FROM,
                         "methods": args.methods, "threads": "one (OMP/MKL/OpenBLAS and Numba)"},
            "labels": {**labels, **{k: k for k in failed}},
            "load_average_before_after": [load_before, os.getloadavg()],
            "wall_seconds": time.perf_counter() - started,
            "results": results, "stages": stages}


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("CHILD " + json.dumps(child_memory(args.child, args.sizes[0], args.kinds[0])),
              flush=True)
        return 0
    record = run_benchmark(args)
    labels = record["labels"]
    slow = [r for r in record["results"] if r["size"] >= SLOW_FROM]
    print(f"\n3D cubical persistence H0 + H1 + H2, float32 volumes, one thread, methods "
          f"interleaved; median CPU time of {args.repeats} calls"
          + (f" ({args.slow_repeats} for gudhi from {SLOW_FROM}^3)" if slow else "") + ".")
    print(f"load average before/after: {record['load_average_before_after']}; source "
          f"{record['source']}")
    print_table(record["results"], labels)
    print_agreement(record["results"], labels)
    print_stages(record["stages"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2, default=str))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
