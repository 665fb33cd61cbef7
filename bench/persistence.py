"""Benchmark: cubical persistence with critical pixels, side by side with gudhi and cripser.

Times H0 + H1 of the T-construction (sublevel, float32 input) on one CPU thread for every
method, in one run, on the same images, and reports medians and ratios. Then the thread
scaling of a batch, and the peak memory of a 4096 x 4096 image (in a child process).

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
from typing import Callable, Dict

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "out"


def test_images(seed: int = 0) -> Dict[str, np.ndarray]:
    """Named float32 benchmark images: noise, blurred noise, a retina vesselness map."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    images = {
        "random 512": rng.random((512, 512)),
        "smooth 512 (sigma 4)": gaussian_filter(rng.random((512, 512)), 4),
        "retina vesselness 512": retina_vesselness(512),
        "random 1024": rng.random((1024, 1024)),
        "smooth 1024 (sigma 4)": gaussian_filter(rng.random((1024, 1024)), 4),
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
        "satloss-gpu cpu (cells)": lambda im: cubical_persistence(im, backend="cpu"),
        "cripser computePH_T (cells)": lambda im: cripser.computePH_T(im.astype(np.float64),
                                                                       maxdim=1),
        "gudhi cofaces (cells)": gudhi_cofaces,
        "gudhi fast 2D path (no cells)": lambda im: fast.fit_transform([im]),
    }


def single_image_table(images, repeats: int, skip_slow: bool) -> list:
    from tqdm import tqdm

    rows = []
    todo = [(name, image, method, run) for name, image in images.items()
            for method, run in methods().items()]
    for name, image, method, run in tqdm(todo, desc="single image", leave=False):
        if skip_slow and method.startswith("gudhi cofaces") and image.size > 512 * 512:
            continue
        reps = max(1, repeats if image.size <= 512 * 512 else repeats // 2)
        seconds = median_time(lambda: run(image), reps)
        rows.append({"image": name, "method": method, "seconds": seconds})
    return rows


def thread_scaling(batch_size: int, repeats: int) -> list:
    """Batch throughput of the CPU backend by thread count, in a fresh process.

    A fresh process keeps worker threads that other libraries leave spinning (gudhi's, after
    the single-image table) from taking the cores being measured.
    """
    code = (
        "import json, sys, numba, numpy as np\n"
        "from scipy.ndimage import gaussian_filter\n"
        "sys.path.insert(0, %r)\n"
        "from persistence import median_time\n"
        "from satloss_gpu import cubical_persistence\n"
        "rng = np.random.default_rng(1)\n"
        "batch = np.stack([gaussian_filter(rng.random((512, 512)), 2) for _ in range(%d)])\n"
        "batch = batch.astype(np.float32)\n"
        "rows = []\n"
        "for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):\n"
        "    numba.set_num_threads(threads)\n"
        "    seconds = median_time(lambda: cubical_persistence(batch, backend='cpu'), %d)\n"
        "    rows.append({'threads': threads, 'batch': %d, 'seconds': seconds,\n"
        "                 'images_per_second': %d / seconds})\n"
        "print(json.dumps(rows))\n"
    ) % (str(Path(__file__).resolve().parent), batch_size, repeats, batch_size, batch_size)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_memory_4096() -> dict:
    """Time and peak resident memory of one 4096 x 4096 image, in a fresh process."""
    code = (
        "import numpy as np, resource, time\n"
        "from satloss_gpu import cubical_persistence\n"
        "cubical_persistence(np.random.default_rng(0).random((64, 64)).astype(np.float32))\n"
        "im = np.random.default_rng(0).random((4096, 4096)).astype(np.float32)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter(); dg = cubical_persistence(im); t = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(t, base, peak, len(dg))\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    seconds, base_kb, peak_kb, pairs = float(out[0]), int(out[1]), int(out[2]), int(out[3])
    return {"image": "random 4096", "seconds": seconds, "pairs": pairs,
            "peak_rss_mib": peak_kb / 1024, "rss_before_mib": base_kb / 1024}


def print_single_table(rows: list) -> None:
    by_image: Dict[str, Dict[str, float]] = {}
    for row in rows:
        by_image.setdefault(row["image"], {})[row["method"]] = row["seconds"]
    names = list(methods().keys())
    header = f"{'image':24s}" + "".join(f"{m[:28]:>30s}" for m in names)
    print(header)
    for image, times in by_image.items():
        ours = times["satloss-gpu cpu (cells)"]
        cells = []
        for m in names:
            if m not in times:
                cells.append(f"{'-':>30s}")
            elif m.startswith("satloss"):
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
    scaling = thread_scaling(8 if args.quick else args.batch, max(1, repeats // 2))
    memory = None if args.no_memory else peak_memory_4096()

    import cripser
    import gudhi

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {"numpy": np.__version__, "numba": numba.__version__,
                     "gudhi": gudhi.__version__, "cripser": getattr(cripser, "__version__", "?")},
        "single_image_one_thread": single,
        "thread_scaling": scaling,
        "memory_4096": memory,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "persistence.json").write_text(json.dumps(result, indent=2))

    print("\nH0 + H1 with critical pixels, T-construction, float32, one thread, median of "
          f"{repeats}:")
    print_single_table(single)
    print("\nBatch of smooth 512 x 512 images, CPU backend, by threads:")
    for row in scaling:
        print(f"  {row['threads']:2d} threads: {1e3 * row['seconds']:8.1f} ms  "
              f"{row['images_per_second']:7.1f} images/s")
    if memory:
        print(f"\n4096 x 4096 random image: {memory['seconds']:.2f} s, {memory['pairs']} pairs, "
              f"peak RSS {memory['peak_rss_mib']:.0f} MiB "
              f"(before: {memory['rss_before_mib']:.0f} MiB)")
    if args.backend == "cuda":
        cuda_script = Path(__file__).resolve().parent / "persistence_cuda.py"
        subprocess.run([sys.executable, str(cuda_script)], check=True)
    print(f"\nJSON: {OUT_DIR / 'persistence.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
