"""Benchmark: cubical persistence with critical pixels, side by side with gudhi and cripser.

Times H0 + H1 of the T-construction (sublevel, float32 input) on one CPU thread for every
method, in one run, on the same images: the methods take turns within every repeat
(interleaved), and the table reports medians of the process CPU time, with ratios (the wall
times are in the JSON). Methods: the CPU backend (local pairing), cripser, gudhi with cofaces, and gudhi's fast 2D path (no critical cells). Then the stage
times of the local-pairing core, the thread scaling of a batch, the threads with another
process keeping one core busy (default threads against one thread, interleaved), and the time
and peak memory of a 4096 x 4096 image (each in a child process).

    python bench/persistence.py                 # the full table (a few minutes)
    python bench/persistence.py --quick         # smaller repeats
    python bench/persistence.py --backend cuda  # also the GPU backend (needs a GPU)

Results: a table on stdout and JSON in bench/out/persistence.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "out"


def test_images(seed: int = 0) -> Dict[str, np.ndarray]:
    """Named float32 benchmark images: noise, blurred noise, a retina vesselness map."""
    from scipy.ndimage import gaussian_filter

    from satloss_gpu.training.synthetic import generate

    rng = np.random.default_rng(seed)
    mask = generate("vessels", (512, 512), seed=seed)[1].astype(np.float64)
    likelihood = np.clip(gaussian_filter(mask, 1.5) * 1.6
                         + 0.25 * gaussian_filter(rng.random((512, 512)), 1.0), 0.0, 1.0)
    images = {
        "random 512": rng.random((512, 512)),
        "smooth 512 (sigma 4)": gaussian_filter(rng.random((512, 512)), 4),
        "likelihood map 512": likelihood,
        "retina vesselness 512": retina_vesselness(512),
        "random 1024": rng.random((1024, 1024)),
        "smooth 1024 (sigma 4)": gaussian_filter(rng.random((1024, 1024)), 4),
        # The loss's target: the binary mask framed with foreground, inverted.
        "binary target 514": 1.0 - np.pad(mask, 1, constant_values=1.0),
    }
    return {name: np.ascontiguousarray(im, dtype=np.float32) for name, im in images.items()}


def retina_vesselness(size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of the Sato vesselness of ``skimage.data.retina()``."""
    from skimage import data, filters

    green = data.retina()[..., 1].astype(np.float64) / 255.0
    top = (green.shape[0] - size) // 2
    crop = green[top : top + size, top : top + size]
    vessels = filters.sato(crop, sigmas=(1, 2, 3), black_ridges=True)
    return vessels / vessels.max()


def median_time(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``run()`` in seconds, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_times(runs: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, dict]:
    """Median CPU and wall times of each run, the runs taking turns in every repeat.

    Every run is called once first (warm-up, compilation).
    """
    for run in runs.values():
        run()
    cpu: Dict[str, list] = {name: [] for name in runs}
    wall: Dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            run()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {name: {"cpu_seconds": float(np.median(cpu[name])),
                   "wall_seconds": float(np.median(wall[name]))} for name in runs}


OURS = "satloss-gpu cpu (cells)"


def methods() -> Dict[str, Callable[[np.ndarray], object]]:
    """Each method: H0 + H1 of the T-construction of one image."""
    import cripser
    import gudhi
    from gudhi.sklearn.cubical_persistence import CubicalPersistence

    from satloss_gpu import cubical_persistence

    fast = CubicalPersistence(homology_dimensions=[0, 1], n_jobs=1)

    def gudhi_cofaces(image):
        complex_ = gudhi.CubicalComplex(top_dimensional_cells=image)
        complex_.compute_persistence()
        return complex_.cofaces_of_persistence_pairs()

    return {
        OURS: lambda im: cubical_persistence(im, backend="cpu"),
        "cripser computePH_T (cells)": lambda im: cripser.computePH_T(im.astype(np.float64),
                                                                       maxdim=1),
        "gudhi cofaces (cells)": gudhi_cofaces,
        "gudhi fast 2D path (no cells)": lambda im: fast.fit_transform([im]),
    }


def single_image_table(images, repeats: int, skip_slow: bool) -> list:
    """One row per (image, method): median CPU and wall times, methods interleaved."""
    from tqdm import tqdm

    rows = []
    for name, image in tqdm(images.items(), desc="single image", leave=False):
        runs = {}
        for method, run in methods().items():
            if skip_slow and method.startswith("gudhi cofaces") and image.size > 512 * 512:
                continue
            runs[method] = (lambda run=run: run(image))
        reps = max(1, repeats if image.size <= 600 * 600 else repeats // 2)
        for method, times in interleaved_times(runs, reps).items():
            rows.append({"image": name, "method": method, "seconds": times["cpu_seconds"],
                         "wall_seconds": times["wall_seconds"]})
    return rows


def stage_times(images, repeats: int) -> list:
    """Median time of each stage of the local-pairing core, one image at a time."""
    from satloss_gpu.kernels.cpu import local_pairing as core

    rows = []
    for name, image in images.items():
        flat = image.ravel()
        height, width = image.shape
        n = height * width

        def parents():
            corner = np.empty((height + 1) * (width + 1) + 1, dtype=np.int32)
            corner[-1] = -(n + 1)
            square = np.empty(n + 1, dtype=np.int32)
            square[n] = n
            return corner, square

        corner, square = parents()
        keys, payload = core._decode(flat, height, width, core.RULE_TABLE, corner, square)
        edges = core._radix_sort(keys.copy(), payload.copy(), 32)
        out = np.empty(edges.size + 1, dtype=np.int32)
        left = edges.copy()
        n_left = core._h0_pass(flat, height, width, left, corner.copy(), False, True, out,
                               out.copy(), 0)[1]
        runs = {
            "first and last pixels": lambda: core._extremes(flat, height, width),
            "raster pass": lambda: core._decode(flat, height, width, core.RULE_TABLE,
                                                *parents()),
            "sort": lambda: core._radix_sort(keys.copy(), payload.copy(), 32),
            "H0 pass": lambda: core._h0_pass(flat, height, width, edges.copy(), corner.copy(),
                                             False, True, out, out.copy(), 0),
            "H1 pass": lambda: core._h1_pass(flat, height, width, left, n_left, square.copy(),
                                             False, out, out.copy(), 0),
            "whole core": lambda: core.image_pairs(flat, height, width, False, True, True),
        }
        times = interleaved_times(runs, repeats)
        rows.append({"image": name, "critical_edges_per_pixel": edges.size / n,
                     **{stage: t["cpu_seconds"] for stage, t in times.items()}})
    return rows


def thread_scaling(batch_size: int, repeats: int) -> list:
    """Batch throughput of the CPU backend by thread count, in a fresh process.

    A fresh process keeps worker threads that other libraries leave spinning (gudhi's, after
    the single-image table) from taking the cores being measured.
    """
    code = _smooth_batch_code(batch_size) + (
        "from persistence import median_time\n"
        "rows = []\n"
        "for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):\n"
        "    numba.set_num_threads(threads)\n"
        "    seconds = median_time(lambda: cubical_persistence(batch, backend='cpu'), %d)\n"
        "    rows.append({'threads': threads, 'batch': %d, 'seconds': seconds,\n"
        "                 'images_per_second': %d / seconds})\n"
        "print(json.dumps(rows))\n"
    ) % (repeats, batch_size, batch_size)
    return _json_of_fresh_process(code)


def _smooth_batch_code(batch_size: int) -> str:
    """Python source that imports the benchmark's tools and makes ``batch``: smooth 512 x 512
    float32 images (for the fresh processes of the thread measurements)."""
    return (
        "import json, subprocess, sys, time, numba, numpy as np\n"
        "from scipy.ndimage import gaussian_filter\n"
        "sys.path.insert(0, %r)\n"
        "from satloss_gpu import cubical_persistence\n"
        "rng = np.random.default_rng(1)\n"
        "batch = np.stack([gaussian_filter(rng.random((512, 512)), 2) for _ in range(%d)])\n"
        "batch = batch.astype(np.float32)\n"
    ) % (str(Path(__file__).resolve().parent), batch_size)


def _json_of_fresh_process(code: str) -> Any:
    """Run ``code`` in a fresh Python process; the JSON of its last line of output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def busy_core_threads(batch_size: int, repeats: int) -> dict:
    """Default threads against one thread while another process keeps one core busy.

    In a fresh process: a batch of smooth 512 x 512 images, the two settings interleaved, with
    a child process spinning on one core (as a data loader does), then without it.
    """
    code = _smooth_batch_code(batch_size) + (
        "from persistence import interleaved_times\n"
        "default = numba.get_num_threads()\n"
        "def run(threads):\n"
        "    numba.set_num_threads(threads)\n"
        "    return cubical_persistence(batch, backend='cpu')\n"
        "runs = {'default threads': lambda: run(default), 'one thread': lambda: run(1)}\n"
        "result = {'default_threads': default, 'batch': %d}\n"
        "busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "try:\n"
        "    time.sleep(0.5)\n"
        "    result['busy'] = interleaved_times(runs, %d)\n"
        "finally:\n"
        "    busy.kill(); busy.wait()\n"
        "result['idle'] = interleaved_times(runs, %d)\n"
        "print(json.dumps(result))\n"
    ) % (batch_size, repeats, repeats)
    return _json_of_fresh_process(code)


def peak_memory_4096() -> dict:
    """Time and peak resident memory of one 4096 x 4096 image, in a fresh process.

    The peak counts from the moment the image exists (Linux: the peak is reset through
    ``/proc/self/clear_refs`` first; elsewhere the process's peak so far is the base).
    """
    call = "dg = cubical_persistence(im); pairs = len(dg)"
    code = (
        "import numpy as np, resource, time\n"
        "from satloss_gpu import cubical_persistence\n"
        "small = np.random.default_rng(0).random((64, 64)).astype(np.float32)\n"
        "cubical_persistence(small)\n"
        "im = np.random.default_rng(0).random((4096, 4096)).astype(np.float32)\n"
        "def status(field):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(field):\n"
        "            return int(line.split()[1])\n"
        "try:\n"
        "    open('/proc/self/clear_refs', 'w').write('5')\n"  # peak RSS := current RSS
        "    base, peak = status('VmRSS'), lambda: status('VmHWM')\n"
        "except OSError:\n"
        "    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        f"{call}\n"
        "t = time.perf_counter() - t\n"
        "print(t, base, peak(), pairs)\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    seconds, base_kb, peak_kb, pairs = float(out[0]), int(out[1]), int(out[2]), int(out[3])
    return {"image": "random 4096", "seconds": seconds, "pairs": pairs,
            "peak_rss_mib": peak_kb / 1024, "rss_before_mib": base_kb / 1024,
            "peak_above_input_mib": (peak_kb - base_kb) / 1024}


def print_single_table(rows: list) -> None:
    by_image: Dict[str, Dict[str, float]] = {}
    for row in rows:
        by_image.setdefault(row["image"], {})[row["method"]] = row["seconds"]
    names = list(methods().keys())
    header = f"{'image':24s}" + "".join(f"{m[:28]:>30s}" for m in names)
    print(header)
    for image, times in by_image.items():
        ours = times[OURS]
        cells = []
        for m in names:
            if m not in times:
                cells.append(f"{'-':>30s}")
            elif m == OURS:
                cells.append(f"{1e3 * times[m]:>27.1f} ms")
            else:
                cells.append(f"{1e3 * times[m]:>17.1f} ms ({times[m] / ours:5.1f}x)")
        print(f"{image:24s}" + "".join(cells))
    print("(x): that method's time over satloss-gpu's; > 1 means satloss-gpu is faster.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip slow cases")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32, help="batch size for thread scaling")
    parser.add_argument("--backend", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: also run bench/persistence_cuda.py on the GPU")
    parser.add_argument("--no-memory", action="store_true", help="skip the 4096 x 4096 case")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    import numba

    numba.set_num_threads(1)
    images = test_images()
    single = single_image_table(images, repeats, skip_slow=args.quick)
    stages = stage_times(images, repeats)
    scaling = thread_scaling(8 if args.quick else args.batch, max(1, repeats // 2))
    busy = busy_core_threads(8, max(3, repeats))
    memory = None if args.no_memory else [peak_memory_4096()]

    import cripser
    import gudhi

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "gudhi": gudhi.__version__, "cripser": getattr(cripser, "__version__", "?")},
        "single_image_one_thread": single,
        "local_pairing_stages": stages,
        "thread_scaling": scaling,
        "busy_core": busy,
        "memory_4096": memory,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "persistence.json").write_text(json.dumps(result, indent=2))

    print("\nH0 + H1 with critical pixels, T-construction, float32, one thread, interleaved, "
          f"median CPU time of {repeats}:")
    print_single_table(single)
    print("\nLocal-pairing core by stage (ms, median CPU time):")
    stage_names = [k for k in stages[0] if k not in ("image", "critical_edges_per_pixel")]
    print(f"{'image':24s}{'edges/px':>9s}" + "".join(f"{k[:12]:>13s}" for k in stage_names))
    for row in stages:
        print(f"{row['image']:24s}{row['critical_edges_per_pixel']:9.3f}"
              + "".join(f"{1e3 * row[k]:13.2f}" for k in stage_names))
    print("\nBatch of smooth 512 x 512 images, CPU backend, by threads:")
    for row in scaling:
        print(f"  {row['threads']:2d} threads: {1e3 * row['seconds']:8.1f} ms  "
              f"{row['images_per_second']:7.1f} images/s")
    print(f"\nBatch of {busy['batch']} smooth 512 x 512 images, default "
          f"({busy['default_threads']}) threads vs one thread, median wall time:")
    for state in ("busy", "idle"):
        times = busy[state]
        default = times["default threads"]["wall_seconds"]
        one = times["one thread"]["wall_seconds"]
        label = "one core kept busy" if state == "busy" else "no other process"
        print(f"  {label:20s}: default {1e3 * default:7.1f} ms, one thread {1e3 * one:7.1f} ms "
              f"(default / one = {default / one:.2f})")
    for row in memory or []:
        print(f"\n4096 x 4096 random image: {row['seconds']:.2f} s, "
              f"{row['pairs']} pairs, peak RSS {row['peak_rss_mib']:.0f} MiB, "
              f"{row['peak_above_input_mib']:.0f} MiB above the RSS before the call")
    if args.backend == "cuda":
        cuda_script = Path(__file__).resolve().parent / "persistence_cuda.py"
        subprocess.run([sys.executable, str(cuda_script)], check=True)
    print(f"\nJSON: {OUT_DIR / 'persistence.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
