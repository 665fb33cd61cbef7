"""The NumPy alias numba-cuda needs is restored where NumPy removed it, and left alone elsewhere."""
import numpy as np

from satloss_gpu.kernels.cuda import _compat


def test_missing_row_stack_is_restored_as_vstack(monkeypatch):
    monkeypatch.delattr(np, "row_stack", raising=False)
    assert not hasattr(np, "row_stack")
    _compat.ensure_numpy_aliases()
    assert np.row_stack is np.vstack
    stacked = np.row_stack([np.arange(3), np.arange(3, 6)])
    np.testing.assert_array_equal(stacked, [[0, 1, 2], [3, 4, 5]])


def test_existing_row_stack_is_kept(monkeypatch):
    def own(*arrays):
        return "own"

    monkeypatch.setattr(np, "row_stack", own, raising=False)
    _compat.ensure_numpy_aliases()
    assert np.row_stack is own
