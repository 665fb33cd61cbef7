"""The loss settings: one frozen object, validated once, shared by the functional and the Modules."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from satloss_gpu.losses import LossOptions, SATLoss, TopoLoss, sat_loss


def test_sat_loss_defaults_are_the_options_defaults():
    signature = inspect.signature(sat_loss).parameters
    for field in dataclasses.fields(LossOptions):
        assert signature[field.name].default == field.default, field.name


def test_options_are_normalised_and_frozen():
    options = LossOptions(dims=[1, 0, 1], spatial_clamp=[0, 2])
    assert options.dims == (0, 1)
    assert options.spatial_clamp == (0.0, 2.0)
    assert options.solver_options == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.solver = "emd"
    assert options.replace(solver="emd").solver == "emd"


@pytest.mark.parametrize("settings, error, message", [
    ({"solver": "hungarian"}, ValueError, "`solver` must be one of"),
    ({"reduction": "max"}, ValueError, "`reduction` must be one of"),
    ({"backend": "tpu"}, ValueError, "`backend` must be one of"),
    ({"pad": 1}, TypeError, "`pad` must be a bool"),
    ({"solver_options": {"reg": 0.1}}, ValueError, "apply to solver='sinkhorn' only"),
    ({"solver": "sinkhorn", "solver_options": [("reg", 0.1)]}, TypeError, "must be a dict"),
])
def test_modules_validate_their_settings_once_at_construction(settings, error, message):
    with pytest.raises(error, match=message):
        SATLoss(**settings)
    with pytest.raises(error, match=message):
        LossOptions(**settings)


def test_modules_keep_one_options_object():
    crit = TopoLoss(solver="emd", reduction="sum")
    assert crit.options == LossOptions(spatial=False, solver="emd", reduction="sum")
    assert "solver='emd'" in repr(crit)
    with pytest.raises(TypeError, match="unexpected keyword argument 'spatial_clamp'"):
        TopoLoss(spatial_clamp=(0.1, 1.0))


def test_module_and_functional_agree_with_the_same_settings():
    target = torch.zeros(2, 1, 12, 12)
    target[:, :, 3:9, 5] = 1.0
    pred = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    settings = dict(solver="emd", backend="cpu", reduction="none", dims=(0,))
    expected = sat_loss(pred, target, **settings)
    torch.testing.assert_close(SATLoss(**settings)(pred, target), expected)
