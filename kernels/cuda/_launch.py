"""Kernel launches without numba-cuda's low-occupancy warning.

The pipelines launch small grids by design (one block per image for the matching, a grid per
halving level of a short edge list, every launch of a small batch), and numba-cuda warns at
each launch of fewer blocks than twice the multiprocessors. To a user of the loss that warning
is noise printed hundreds of times per step, with nothing to act on; launches made through
:func:`quiet` silence it, and only it, around the launch.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

__all__ = ["quiet", "LOW_OCCUPANCY_MESSAGE"]

#: Regular expression of the warning's message (numba-cuda may wrap it in terminal colours).
LOW_OCCUPANCY_MESSAGE = r".*Grid size \d+ will likely result in GPU under-utilization"


def quiet(configured: Any) -> Callable[..., Any]:
    """A configured kernel (``kernel[grid, block, ...]``) whose calls do not warn of occupancy."""

    def launch(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=LOW_OCCUPANCY_MESSAGE)
            return configured(*args)

    return launch
