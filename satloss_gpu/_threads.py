"""Threads of the compiled code: waiting, never spinning.

Two layers, both sized by Numba's thread count (``NUMBA_NUM_THREADS``, or
``numba.set_num_threads`` at run time; ``NUMBA_NUM_THREADS=1`` runs everything in the
calling thread):

* OpenMP: torch's CPU operations and Numba's ``parallel=True`` kernels (the compiled matching
  solvers of ``solver="cpu"``) run on OpenMP on most machines. GNU OpenMP lets idle workers
  spin before they sleep; with another process busy on one core, a two-thread loss took 3 to
  5 times as long as one thread (``bench/loss.py --busy``). :func:`prefer_passive_openmp`
  (called when the package is imported) sets ``OMP_WAIT_POLICY=PASSIVE`` unless the variable
  is already set, so that an OpenMP runtime started after the import lets idle workers sleep.
  To change it, set ``OMP_WAIT_POLICY`` (e.g. ``ACTIVE``) or ``NUMBA_THREADING_LAYER``
  (``workqueue``, ``omp``, ``tbb``) in the environment before importing the package.
* Plain threads: the persistence backend (:mod:`satloss_gpu.kernels.cpu.local_pairing`) and
  the compiled passes of the reduced matching release the GIL; :func:`run_ranges` hands
  ranges of items to a pool of Python threads, one range at a time, so a thread on a core that
  another process keeps busy simply takes fewer ranges (dynamic scheduling), and idle threads
  sleep on a lock.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

__all__ = ["thread_count", "run_ranges", "prefer_passive_openmp"]

_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
#: Ranges per thread: more gives better balance on a loaded machine, fewer less overhead.
RANGES_PER_THREAD = 4


def prefer_passive_openmp() -> None:
    """Ask OpenMP for sleeping (not spinning) idle workers unless the user chose otherwise.

    Effective only while Numba's OpenMP layer has not started (it reads the variable then).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def thread_count() -> int:
    """Threads the compiled passes may use: Numba's current setting."""
    import numba

    return max(1, int(numba.get_num_threads()))


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="satloss")
            _POOL_SIZE = size
        return _POOL


def run_ranges(work: Callable[[int, int], None], count: int,
               threads: Optional[int] = None) -> None:
    """Call ``work(first, stop)`` on ranges covering ``0:count``, in parallel threads.

    Parameters
    ----------
    work : callable
        A GIL-releasing function of a half-open range of item indices; ranges are disjoint.
    count : int
        Number of items.
    threads : int, optional
        Default :func:`thread_count`. With one thread (or one item) ``work(0, count)`` runs in
        the calling thread.
    """
    threads = thread_count() if threads is None else max(1, int(threads))
    if count <= 0:
        return
    if threads == 1 or count == 1:
        work(0, count)
        return
    pieces = min(count, RANGES_PER_THREAD * threads)
    bounds = [round(k * count / pieces) for k in range(pieces + 1)]
    pool = _pool(min(threads, pieces))
    futures = [pool.submit(work, bounds[k], bounds[k + 1]) for k in range(pieces)
               if bounds[k + 1] > bounds[k]]
    for future in futures:
        future.result()
