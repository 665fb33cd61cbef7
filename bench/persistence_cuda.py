"""Time the GPU persistence backend: 64 images of 512x512, H0 + H1 with critical pixels.

Inputs: uniform noise, noise blurred with sigma 1 and 4, and tiles of the vesselness map
(Sato filter) of the green channel of scikit-image's retina photograph. For each input:
median wall time of ``cubical_persistence(..., backend="cuda")`` over repeats after warm-up
(``torch.cuda.synchronize`` around each call), the share of every pipeline stage (CUDA
events recorded between stages), the same with the sequential one-thread-per-image pairing
(the baseline), and cripser ``computePH_T`` on one CPU core (a few images, scaled to the
batch). Prints a table and writes ``bench/out/persistence_cuda.json``.

Usage::

    python bench/persistence_cuda.py [--batch 64] [--size 512] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

STAGES = ("order", "basins", "edges", "forest", "sort", "pair", "assemble")


def make_inputs(batch: int, size: int, seed: int = 0) -> dict:
    from scipy.ndimage import gaussian_filter
    from skimage import data, filters

    rng = np.random.default_rng(seed)
    noise = rng.random((batch, size, size)).astype(np.float32)
    inputs = {
        "uniform noise": noise,
        "blurred noise s=1": np.stack([gaussian_filter(x, 1.0) for x in noise]).astype(np.float32),
        "blurred noise s=4": np.stack([gaussian_filter(x, 4.0) for x in noise]).astype(np.float32),
    }
    green = data.retina()[:, :, 1].astype(np.float64) / 255.0
    vessels = filters.sato(green, sigmas=(1, 2, 3), black_ridges=True).astype(np.float32)
    limit = vessels.shape[0] - size
    offsets = rng.integers(0, max(limit, 1), (batch, 2))
    inputs["retina vesselness"] = np.stack(
        [vessels[r:r + size, c:c + size] for r, c in offsets]).astype(np.float32)
    return inputs


def pair_tuples(dg) -> list:
    d = dg.to_numpy()
    return sorted(zip(*(np.asarray(c).tolist()
                        for c in (d.image, d.dim, d.birth_index, d.death_index))))


def time_backend(images_gpu, pairing: str, repeats: int, warmup: int) -> dict:
    import torch

    from satloss_gpu import cubical_persistence
    from satloss_gpu.persistence import backends
    from satloss_gpu.persistence.backends.cuda import CUDABackend

    backend = CUDABackend(pairing=pairing)
    backends._INSTANCES["cuda"] = backend
    events: list = []

    def hook(name: str) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        events.append((name, event))

    for _ in range(warmup):
        cubical_persistence(images_gpu, backend="cuda")
    torch.cuda.synchronize()
    walls, stage_ms = [], {s: [] for s in STAGES}
    backend.stage_hook = hook
    for _ in range(repeats):
        events.clear()
        torch.cuda.synchronize()
        start = time.perf_counter()
        dg = cubical_persistence(images_gpu, backend="cuda")
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        for (_, first), (name, second) in zip(events, events[1:]):
            if name in stage_ms:
                stage_ms[name].append(first.elapsed_time(second))
    backend.stage_hook = None
    backends._INSTANCES.pop("cuda", None)
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "stage_ms": {k: statistics.median(v) for k, v in stage_ms.items() if v},
        "stats": dict(backend.last_stats),
        "pairs": len(dg),
        "diagrams": dg,
    }


def time_cripser(images: np.ndarray, n_images: int) -> float:
    """Seconds per image of cripser computePH_T (T-construction, H0+H1, cells), one core."""
    import cripser

    times = []
    for image in images[:n_images]:
        start = time.perf_counter()
        cripser.computePH_T(image.astype(np.float64), maxdim=1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cripser-images", type=int, default=3)
    parser.add_argument("--check-images", type=int, default=4,
                        help="images per input compared with the CPU backend")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0")
    import torch

    from satloss_gpu import cubical_persistence

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    device_name = torch.cuda.get_device_name()
    results = {"device": device_name, "batch": args.batch, "size": args.size,
               "repeats": args.repeats, "inputs": {}}
    header = (f"{'input':<20} {'cuda ms':>8} {'seq ms':>8} {'seq/cuda':>8} {'cripser ms':>11} "
              f"{'crip/cuda':>9} {'edges':>10} {'rounds':>6} {'forest':>7} {'levels':>6} ok")
    print(f"{device_name}: {args.batch} x {args.size}x{args.size}, H0+H1, T-construction")
    print(header)
    for name, images in make_inputs(args.batch, args.size).items():
        gpu = torch.as_tensor(images, device="cuda")
        fast = time_backend(gpu, "halving", args.repeats, args.warmup)
        slow = time_backend(gpu, "sequential", max(3, args.repeats // 3), 1)
        cripser_s = time_cripser(images, args.cripser_images) * args.batch
        check = images[: args.check_images]
        expected = pair_tuples(cubical_persistence(check, backend="cpu"))
        got = pair_tuples(cubical_persistence(torch.as_tensor(check, device="cuda"),
                                              backend="cuda"))
        agrees = got == expected and pair_tuples(fast["diagrams"]) == pair_tuples(
            slow["diagrams"])
        stats = fast["stats"]
        row = {
            "cuda_median_ms": 1e3 * fast["median_s"],
            "cuda_min_ms": 1e3 * fast["min_s"],
            "sequential_median_ms": 1e3 * slow["median_s"],
            "cripser_one_core_ms": 1e3 * cripser_s,
            "stage_ms": fast["stage_ms"],
            "sequential_stage_ms": slow["stage_ms"],
            "stats": stats,
            "pairs": fast["pairs"],
            "agrees_with_cpu_backend": bool(agrees),
        }
        results["inputs"][name] = row
        print(f"{name:<20} {row['cuda_median_ms']:8.2f} {row['sequential_median_ms']:8.2f} "
              f"{row['sequential_median_ms'] / row['cuda_median_ms']:8.1f} "
              f"{row['cripser_one_core_ms']:11.0f} "
              f"{row['cripser_one_core_ms'] / row['cuda_median_ms']:9.0f} "
              f"{stats.get('basin_edges', 0):10d} {stats.get('boruvka_rounds', 0):6d} "
              f"{stats.get('longest_forest', 0):7d} {stats.get('halving_levels', 0):6d} "
              f"{'yes' if agrees else 'NO'}")
    print("\nstage medians (ms), halving pairing | sequential pairing:")
    print(f"{'input':<20} " + " ".join(f"{s:>8}" for s in STAGES))
    for name, row in results["inputs"].items():
        print(f"{name:<20} " + " ".join(f"{row['stage_ms'].get(s, 0):8.2f}" for s in STAGES))
        print(f"{'  (sequential)':<20} "
              + " ".join(f"{row['sequential_stage_ms'].get(s, 0):8.2f}" for s in STAGES))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    path = out / "persistence_cuda.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
