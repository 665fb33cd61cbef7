"""Benchmark: the cost of the first loss in a fresh process, with a cold and a warm Numba cache.

Each measurement is a new Python process that imports the package and runs one
``SATLoss()(pred, target)`` forward and backward on (2, 1, 64, 64) inputs. "cold" starts
with an empty cache folder (``NUMBA_CACHE_DIR`` set to a new temporary folder), so every
kernel compiles; "warm" runs again on the folder the cold run filled. Reports wall and
process CPU seconds of ``import satloss_gpu`` and of the first loss, and the compiled
functions compiled from Python (Numba's compile events, callees included) with their
wall and CPU seconds.

    python bench/first_call.py               # 2 repeats
    python bench/first_call.py --repeats 3

Results: a table on stdout and JSON in bench/out/first_call.json (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

OUT_DIR = Path(__file__).resolve().parent / "out"

CHILD = r"""
import json, time
wall0, cpu0 = time.perf_counter(), time.process_time()
import satloss_gpu
from numba.core import event


class Listener(event.Listener):
    def __init__(self):
        self.depth, self.top = 0, []

    def on_start(self, ev):
        if self.depth == 0:
            self.begin = (time.perf_counter(), time.process_time())
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1
        if self.depth == 0:  # a function compiled from Python, its callees included
            func = ev.data["dispatcher"].py_func
            self.top.append([f"{func.__module__}.{func.__qualname__}",
                             round(time.perf_counter() - self.begin[0], 3),
                             round(time.process_time() - self.begin[1], 3)])


listener = Listener()
event.register("numba:compile", listener)
wall1, cpu1 = time.perf_counter(), time.process_time()
import torch
torch.manual_seed(0)
pred = torch.rand(2, 1, 64, 64, requires_grad=True)
target = (torch.rand(2, 1, 64, 64) > 0.5).float()
wall2, cpu2 = time.perf_counter(), time.process_time()
satloss_gpu.SATLoss()(pred, target).backward()
wall3, cpu3 = time.perf_counter(), time.process_time()
event.unregister("numba:compile", listener)
print(json.dumps({"import_wall_s": wall1 - wall0, "import_cpu_s": cpu1 - cpu0,
                  "first_loss_wall_s": wall3 - wall2, "first_loss_cpu_s": cpu3 - cpu2,
                  "compiled_from_python": listener.top}))
"""


def run_child(cache_dir: str) -> Dict[str, Any]:
    """One fresh process on the cache folder ``cache_dir``; its measurements."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(repeats: int) -> Dict[str, List[Dict[str, Any]]]:
    """Cold then warm runs, each cold run on a new cache folder."""
    runs: Dict[str, List[Dict[str, Any]]] = {"cold": [], "warm": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="satloss-first-call-") as cache_dir:
            runs["cold"].append(run_child(cache_dir))
            runs["warm"].append(run_child(cache_dir))
    return runs


def summary(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Dict[str, float]]:
    """Median of every timing, per cache state."""
    import statistics

    keys = ("import_wall_s", "import_cpu_s", "first_loss_wall_s", "first_loss_cpu_s")
    return {state: {k: round(statistics.median(r[k] for r in rows), 2) for k in keys}
            for state, rows in runs.items()}


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "first_call.json")
    args = parser.parse_args(argv)
    runs = measure(args.repeats)
    table = summary(runs)
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "median": table, "runs": runs}
    print(f"{'cache':6} {'import wall':>12} {'import CPU':>11} {'1st loss wall':>14} "
          f"{'1st loss CPU':>13}  (seconds, median of {args.repeats})")
    for state, row in table.items():
        print(f"{state:6} {row['import_wall_s']:12.2f} {row['import_cpu_s']:11.2f} "
              f"{row['first_loss_wall_s']:14.2f} {row['first_loss_cpu_s']:13.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
