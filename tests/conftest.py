"""Test configuration shared by every test module.

The CUDA code paths run in two modes:

* ``sim``: no GPU. ``NUMBA_ENABLE_CUDASIM=1`` is set before Numba is imported, so every
  Numba-CUDA kernel runs in the simulator on NumPy (or CPU torch) inputs, on small sizes.
* ``gpu``: a CUDA GPU is present; kernels run for real on torch CUDA tensors.

Tests marked ``gpu`` need a real GPU and are skipped cleanly without one.
"""
import os

import pytest


def _has_cuda_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


HAS_GPU = _has_cuda_gpu()
if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if HAS_GPU else "1"
CUDA_SIMULATOR = os.environ["NUMBA_ENABLE_CUDASIM"] == "1"
CUDA_MODE = "sim" if CUDA_SIMULATOR else ("gpu" if HAS_GPU else "none")


def pytest_collection_modifyitems(config, items):
    if CUDA_MODE == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a real CUDA GPU (none found, or running the simulator)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"satloss-gpu CUDA mode: {CUDA_MODE}"


@pytest.fixture
def cuda_mode() -> str:
    """``"sim"`` (Numba CUDA simulator), ``"gpu"`` (real CUDA) or ``"none"``."""
    return CUDA_MODE


def to_cuda_input(array):
    """Put a NumPy test array where the CUDA backend takes it.

    A torch CUDA tensor on a real GPU; the NumPy array itself under the simulator.
    """
    if CUDA_MODE == "gpu":
        import torch

        return torch.as_tensor(array, device="cuda")
    return array


@pytest.fixture
def to_cuda():
    """Fixture returning :func:`to_cuda_input`."""
    return to_cuda_input
