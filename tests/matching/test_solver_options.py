"""Solver settings refused up front with a clear message (issue 20, defect 13).

``solver_options`` of the "sinkhorn" solver are checked where they are defined
(:func:`satloss_gpu.matching.sinkhorn.check_sinkhorn_options`), when a loss is built; and
``solver="cuda"`` on a machine without a GPU names ``solver`` instead of Numba's driver error.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from satloss_gpu import SATLoss
from satloss_gpu.matching.sinkhorn import (SINKHORN_OPTIONS, check_sinkhorn_options,
                                           sinkhorn_match_batch)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"bogus": 1}, TypeError, r"accept reg, max_iter, tol; got unknown 'bogus'"),
        ({"regg": 1e-2}, TypeError, r"did you mean 'reg'\?"),
        ({"reg": -1}, ValueError,
         r"`reg` must be positive and finite \(a float\) \(an option of solver='sinkhorn'\); "
         r"got -1"),
        ({"reg": 0.0}, ValueError, r"`reg` must be positive"),
        ({"reg": float("inf")}, ValueError, r"`reg` .* finite"),
        ({"reg": "0.1"}, TypeError, r"`reg` .* got str '0.1'"),
        ({"max_iter": 0}, ValueError, r"`max_iter` must be a positive int .*; got 0"),
        ({"max_iter": 2.5}, TypeError, r"`max_iter` .* got float 2.5"),
        ({"max_iter": True}, TypeError, r"`max_iter` .* got bool"),
        ({"tol": -1e-3}, ValueError, r"`tol` .* non-negative"),
        ({"tol": float("nan")}, ValueError, r"`tol` .* finite"),
    ],
)
def test_bad_sinkhorn_options_are_refused_when_the_loss_is_built(options, error, match):
    with pytest.raises(error, match=match):
        check_sinkhorn_options(options)
    with pytest.raises(error, match=match):
        SATLoss(solver="sinkhorn", solver_options=options)


def test_good_sinkhorn_options_are_converted_and_used():
    assert set(SINKHORN_OPTIONS) == {"reg", "max_iter", "tol"}
    checked = check_sinkhorn_options({"reg": np.float32(0.5), "max_iter": np.int64(3),
                                      "tol": 0})
    assert checked == {"reg": 0.5, "max_iter": 3, "tol": 0.0}
    assert type(checked["max_iter"]) is int and type(checked["tol"]) is float
    loss = SATLoss(solver="sinkhorn", solver_options={"reg": 0.05, "max_iter": 20})
    pred = torch.full((1, 1, 8, 8), 0.2)
    pred[0, 0, 2:5, 2:5] = 0.9
    target = (pred > 0.5).float()
    assert torch.isfinite(loss(pred, target))


def test_sinkhorn_match_batch_checks_its_keywords():
    cost = torch.rand(1, 3, 2)
    with pytest.raises(ValueError, match=r"`reg` must be positive"):
        sinkhorn_match_batch(cost, torch.rand(1, 3), torch.rand(1, 2), [3], [2], reg=-1.0)


def test_cuda_solver_without_a_gpu_names_the_solver():
    """Outside the simulator, on a machine with no GPU: a ValueError naming ``solver``."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code = textwrap.dedent("""
        import numpy as np
        from satloss_gpu.matching import match_batch
        try:
            match_batch(np.ones((1, 3, 2)), np.ones((1, 3)), np.ones((1, 2)), [3], [2],
                        solver="cuda")
        except ValueError as error:
            print("ValueError:", error)
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert "ValueError: `solver='cuda'` needs a CUDA GPU; none is available" in out.stdout, (
        out.stdout + out.stderr)
