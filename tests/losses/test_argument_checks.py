"""Bad settings and inputs of the losses: refused with a message that names the argument and
shows what was found, never coerced into another value; channel weights as MONAI's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from satloss_gpu.losses import LossOptions, SATLoss, TopoLoss, sat_loss, sat_matching, topo_loss


def _batch(shape=(2, 1, 10, 10), seed=0):
    rng = np.random.default_rng(seed)
    target = torch.as_tensor(rng.random(shape) < 0.4, dtype=torch.float64)
    pred = torch.as_tensor(rng.uniform(0.01, 0.99, shape), dtype=torch.float64)
    return pred, target


@pytest.mark.parametrize("settings, error, message", [
    # spatial_clamp: finite, ordered, bounded numbers (1e308 used to fail inside the solver)
    ({"spatial_clamp": (1e308, 1e308)}, ValueError, r"`spatial_clamp` must satisfy 0 <= low <= "
                                                    r"high <= 1e\+06 .*got \(1e\+308, 1e\+308\)"),
    ({"spatial_clamp": (float("nan"), 1.0)}, ValueError, r"got \(nan, 1.0\)"),
    ({"spatial_clamp": (0.1, float("inf"))}, ValueError, "`spatial_clamp` must satisfy"),
    ({"spatial_clamp": (-0.1, 1.0)}, ValueError, "`spatial_clamp` must satisfy"),
    ({"spatial_clamp": ("0.1", "1")}, TypeError, "`spatial_clamp` must be a pair of numbers"),
    ({"spatial_clamp": (True, True)}, TypeError, "not bools or strings"),
    ({"spatial_clamp": (0.1, 0.5, 1.0)}, TypeError, "`spatial_clamp` must be a pair"),
    ({"spatial_clamp": 0.5}, TypeError, "`spatial_clamp` must be a pair of numbers"),
    # dims: ints only
    ({"dims": (0.7,)}, TypeError, r"`dims` must hold ints from \(0, 1, 2\); got float 0.7"),
    ({"dims": (True,)}, TypeError, "`dims` must hold ints .*got bool True"),
    ({"dims": "01"}, TypeError, "`dims` must be a sequence of ints .*got str '01'"),
    ({"dims": 1}, TypeError, "`dims` must be a sequence of ints"),
    ({"dims": (0, 3)}, ValueError, r"`dims` must be a non-empty subset of \(0, 1, 2\)"),
])
def test_bad_settings_are_refused_not_coerced(settings, error, message):
    with pytest.raises(error, match=message):
        LossOptions(**settings)
    with pytest.raises(error, match=message):
        SATLoss(**settings)


def test_good_numbers_of_any_kind_are_accepted():
    assert LossOptions(dims=np.array([1, 0])).dims == (0, 1)
    assert LossOptions(spatial_clamp=np.array([0.1, 2.0])).spatial_clamp == (0.1, 2.0)
    assert LossOptions(spatial_clamp=(0, 1)).spatial_clamp == (0.0, 1.0)
    assert LossOptions(spatial_clamp=(1e6, 1e6)).spatial_clamp == (1e6, 1e6)


@pytest.mark.parametrize("weights, error, message", [
    ("123", TypeError, "`channel_weights` must be a sequence of numbers; got a string '123'"),
    ([True], TypeError, "`channel_weights` must be a sequence of real numbers"),
    ([1.0, "a"], TypeError, "`channel_weights` must be a sequence of real numbers"),
    (torch.tensor([True]), TypeError, "`channel_weights` must hold real numbers; got dtype "
                                      "torch.bool"),
    (torch.ones(1, requires_grad=True), TypeError, "`channel_weights` must not require grad"),
    ([[1.0]], ValueError, r"`channel_weights` must have shape \(C,\).*got shape \(1, 1\)"),
    (2.0, ValueError, r"`channel_weights` must have shape \(C,\).*got shape \(\)"),
    ([float("nan")], ValueError, r"`channel_weights` must be finite and non-negative; got \[nan\]"),
    (torch.ones(1, device="meta"), ValueError, "`channel_weights` must be on the CPU or a CUDA"),
])
def test_bad_channel_weights_are_refused(weights, error, message):
    with pytest.raises(error, match=message):
        SATLoss(channel_weights=weights)
    if not (isinstance(weights, torch.Tensor) and weights.requires_grad):
        pred, target = _batch((2, 1, 6, 6))
        with pytest.raises(error, match=message):
            sat_loss(pred, target, channel_weights=weights)


def test_channel_weights_follow_monai():
    """A weighted mean over channels: unit weights are the default, weights scale linearly."""
    pred, target = _batch((2, 3, 10, 10), seed=1)
    plain = sat_loss(pred, target, reduction="none")
    torch.testing.assert_close(SATLoss(reduction="none", channel_weights=[1, 1, 1])(pred, target),
                               plain, rtol=1e-12, atol=0)
    per_channel = torch.stack([sat_loss(pred[:, c], target[:, c], reduction="none")
                               for c in range(3)], 1)
    weights = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(sat_loss(pred, target, reduction="none", channel_weights=weights),
                               (per_channel * weights).mean(1), rtol=1e-12, atol=0)


def test_the_functional_gives_weights_that_require_grad_a_gradient():
    pred, target = _batch((2, 2, 8, 8), seed=2)
    weights = torch.tensor([1.0, 3.0], dtype=torch.float64, requires_grad=True)
    sat_loss(pred, target, channel_weights=weights).backward()
    per_channel = torch.stack([sat_loss(pred[:, c], target[:, c]) for c in range(2)])
    torch.testing.assert_close(weights.grad, per_channel / 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("make, owner", [
    (lambda: SATLoss(bogus=1), "SATLoss"),
    (lambda: TopoLoss(bogus=1), "TopoLoss"),
    (lambda: sat_matching(*_batch(), bogus=1), "sat_matching"),
    (lambda: topo_loss(*_batch(), bogus=1), "topo_loss"),
    (lambda: sat_loss(*_batch(), bogus=1), "sat_loss"),
])
def test_unknown_settings_name_the_loss(make, owner):
    with pytest.raises(TypeError, match=rf"^{owner}\(\) got an unexpected keyword argument "
                                        r"'bogus'"):
        make()


def test_unknown_settings_suggest_the_close_name():
    with pytest.raises(TypeError, match="'spatail'; did you mean 'spatial'"):
        SATLoss(spatail=False)
    with pytest.raises(TypeError, match=r"^TopoLoss\(\) got an unexpected keyword argument "
                                        r"'spatial'$"):
        TopoLoss(spatial=True)


def test_repr_shows_the_channel_weights():
    assert "channel_weights=[0.5, 2.0]" in repr(SATLoss(channel_weights=[0.5, 2.0]))
    assert "channel_weights" not in repr(SATLoss())


def test_messages_show_what_was_found():
    pred, target = _batch()
    high = torch.full_like(pred, 1.0 + 1e-7)
    with pytest.raises(ValueError, match=r"found values in \[1.0000001, 1.0000001\]"):
        sat_loss(high, target)
    nan_mask = torch.full((2, 10, 10), float("nan"))
    nan_mask[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match=r"^`mask` must be bool or hold 0/1 values; found "
                                         r"\[0.5\] and 199 NaN values$"):
        sat_loss(pred, target, mask=nan_mask)
    with pytest.raises(ValueError, match=r"^`mask` must have shape \(2, 10, 10\) or "
                                         r"\(2, 1, 10, 10\); got \(3, 3\)$"):
        sat_loss(pred, target, mask=torch.ones(3, 3))
    labels = torch.zeros(2, 10, 10)
    labels[0, 0, :3] = float("nan")
    with pytest.raises(ValueError, match=r"integer class indices in \[0, 3\); found 3 NaN values$"):
        sat_loss(torch.rand(2, 3, 10, 10), labels, num_classes=3)


@pytest.mark.parametrize("device_of", ["pred", "target", "mask"])
def test_a_meta_tensor_is_refused_by_name(device_of):
    pred, target = _batch()
    args = {"pred": pred, "target": target, "mask": torch.ones(2, 10, 10)}
    args[device_of] = args[device_of].to("meta")
    with pytest.raises(ValueError, match=rf"`{device_of}` must be on the CPU or a CUDA device; "
                                         "got a tensor on device 'meta'"):
        sat_loss(args["pred"], args["target"], mask=args["mask"])
