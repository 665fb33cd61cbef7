"""Launches of the package's kernels do not print numba-cuda's low-occupancy warning."""
import re
import warnings

import numpy as np

from satloss_gpu.kernels.cuda._launch import LOW_OCCUPANCY_MESSAGE, quiet


def _warns(message: str):
    def configured(*args):
        warnings.warn(message, RuntimeWarning)
        return args

    return configured


OCCUPANCY = ("\x1b[1mGrid size 3 will likely result in GPU under-utilization due to low "
             "occupancy.\x1b[0m")


def test_quiet_silences_only_the_occupancy_warning():
    occupancy = OCCUPANCY
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quiet(_warns(occupancy))(1, 2) == (1, 2)
        quiet(_warns("something else"))()
    assert [str(w.message) for w in caught] == ["something else"]
    assert re.match(LOW_OCCUPANCY_MESSAGE, occupancy)


class _WarningKernel:
    """Stands for a Numba kernel: ``kernel[config](*args)`` warns as numba-cuda does."""

    def __init__(self):
        self.calls = 0

    def __getitem__(self, config):
        def run(*args):
            self.calls += 1
            warnings.warn(OCCUPANCY, RuntimeWarning)

        return run


def test_glue_and_matching_launches_go_through_quiet(monkeypatch):
    from satloss_gpu.kernels.cuda import matching_sap
    from satloss_gpu.kernels.cuda._glue import Glue

    kernel = _WarningKernel()
    monkeypatch.setattr(matching_sap, "sap_kernel", kernel)
    A = np.zeros((2, 3, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Glue().launcher(kernel, 1, 32)(np.zeros(1))
        matching_sap.launch(A, None, None, None, None, (), (), threads=32)
    assert kernel.calls == 2
    assert not caught
