"""The input options of the losses against their explicit composition.

``sigmoid=True`` is ``torch.sigmoid`` then the loss; ``softmax=True`` with ``num_classes`` is
``torch.softmax`` and ``F.one_hot`` of the label map then the per-channel loss;
``include_background=False`` drops channel 0 of both; ``mask=`` is the loss of ``p * mask``
and ``t * mask``. Values and gradients must be those of the composition, in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from satloss_gpu import SATLoss, TopoLoss
from satloss_gpu.functional import sat_loss, sat_matching, topo_loss


def _logits(shape, seed, scale=3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.randn(shape, generator=generator, dtype=torch.float64)
    return scale * F.avg_pool2d(smooth.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape) * 3


def _binary(shape, seed) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = (torch.rand(shape, generator=generator) < 0.3).double()
    t[..., 3, :] = 1.0
    t[..., :, 5] = 1.0
    return t


def _labels(shape, classes, seed) -> torch.Tensor:
    """(B, H, W) label map with bars of each class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, shape, generator=generator)
    for k in range(1, classes):
        labels[:, 2 * k, :] = k
    return labels


def _value_and_grad(fn, leaf: torch.Tensor):
    x = leaf.detach().clone().requires_grad_(True)
    value = fn(x)
    value.sum().backward()
    return value.detach(), x.grad


def _assert_same(ours, reference):
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], reference[1], rtol=1e-10, atol=1e-12)
    assert float(reference[1].abs().sum()) > 0


# ----------------------------------------------------------------------------- sigmoid

@pytest.mark.parametrize("shape", [(2, 1, 12, 10), (2, 2, 9, 11), (3, 10, 8)])
@pytest.mark.parametrize("spatial", [True, False])
def test_sigmoid_equals_explicit_sigmoid(shape, spatial):
    z, t = _logits(shape, 1), _binary(shape, 2)
    ours = _value_and_grad(lambda x: sat_loss(x, t, sigmoid=True, spatial=spatial), z)
    reference = _value_and_grad(lambda x: sat_loss(torch.sigmoid(x), t, spatial=spatial), z)
    _assert_same(ours, reference)


def test_sigmoid_on_saturated_logits_and_the_modules():
    z = _logits((2, 1, 10, 10), 3, scale=40.0)   # many logits beyond +-30
    t = _binary(z.shape, 4)
    assert float(z.abs().max()) > 30
    for crit, explicit in ((SATLoss(sigmoid=True), SATLoss()), (TopoLoss(sigmoid=True), TopoLoss())):
        ours = _value_and_grad(lambda x: crit(x, t), z)
        reference = _value_and_grad(lambda x: explicit(torch.sigmoid(x), t), z)
        assert torch.isfinite(ours[0]) and bool(torch.isfinite(ours[1]).all())
        _assert_same(ours, reference)


# ----------------------------------------------------------------------------- softmax, label maps

@pytest.mark.parametrize("label_shape", ["BHW", "B1HW", "float", "numpy", "one-hot"])
def test_softmax_with_label_map_equals_one_hot_then_loss(label_shape):
    classes = 3
    z = _logits((2, classes, 11, 9), 5)
    labels = _labels((2, 11, 9), classes, 6)
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).double()
    given = {"BHW": labels, "B1HW": labels[:, None], "float": labels.double(),
             "numpy": labels.numpy().astype(np.uint8), "one-hot": one_hot}[label_shape]
    num_classes = None if label_shape == "one-hot" else classes
    ours = _value_and_grad(lambda x: sat_loss(x, given, softmax=True, num_classes=num_classes), z)
    reference = _value_and_grad(lambda x: sat_loss(torch.softmax(x, 1), one_hot), z)
    _assert_same(ours, reference)


def test_probabilities_with_a_label_map():
    classes = 4
    probs = torch.softmax(_logits((2, classes, 10, 10), 7), 1)
    labels = _labels((2, 10, 10), classes, 8)
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).double()
    ours = _value_and_grad(lambda x: sat_loss(x, labels, num_classes=classes), probs)
    reference = _value_and_grad(lambda x: sat_loss(x, one_hot), probs)
    _assert_same(ours, reference)


def test_include_background_false_drops_channel_zero_after_the_softmax():
    classes = 3
    z = _logits((2, classes, 12, 12), 9)
    labels = _labels((2, 12, 12), classes, 10)
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).double()
    weights = [0.25, 0.75]
    crit = SATLoss(softmax=True, num_classes=classes, include_background=False,
                   channel_weights=weights)
    ours = _value_and_grad(lambda x: crit(x, labels), z)
    reference = _value_and_grad(
        lambda x: sat_loss(torch.softmax(x, 1)[:, 1:], one_hot[:, 1:], channel_weights=weights), z)
    _assert_same(ours, reference)


def test_topology_is_computed_per_class():
    """With weight C on class k alone (a weighted mean over the C channels), the loss is
    the binary loss of class k's channel."""
    classes = 3
    z = _logits((2, classes, 10, 12), 11)
    labels = _labels((2, 10, 12), classes, 12)
    probs = torch.softmax(z, 1)
    for k in range(classes):
        weights = [float(classes) if c == k else 0.0 for c in range(classes)]
        per_image = sat_loss(z, labels, softmax=True, num_classes=classes,
                             channel_weights=weights, reduction="none")
        binary = sat_loss(probs[:, k], (labels == k).double(), reduction="none")
        torch.testing.assert_close(per_image, binary, rtol=1e-12, atol=1e-12)
        assert float(binary.min()) > 0


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("mask_shape", ["BHW", "B1HW", "BCHW", "bool"])
def test_mask_equals_manually_backgrounded_inputs(mask_shape):
    p = torch.sigmoid(_logits((2, 2, 12, 14), 13))
    t = _binary(p.shape, 14)
    generator = torch.Generator().manual_seed(15)
    full = (torch.rand(p.shape, generator=generator) < 0.8).double()
    full[:, :, :, :3] = 0.0
    mask = {"BHW": full[:, 0], "B1HW": full[:, :1], "BCHW": full, "bool": full[:, 0] > 0}[mask_shape]
    applied = full if mask_shape == "BCHW" else full[:, :1]
    ours = _value_and_grad(lambda x: sat_loss(x, t, mask=mask), p)
    reference = _value_and_grad(lambda x: sat_loss(x * applied, t * applied), p)
    _assert_same(ours, reference)
    assert float(ours[1][(applied == 0).expand_as(p)].abs().max()) == 0.0


def test_mask_with_logits_and_label_maps():
    classes = 3
    z = _logits((2, classes, 12, 12), 16)
    labels = _labels((2, 12, 12), classes, 17)
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).double()
    yy, xx = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    disc = (((yy - 5.5) ** 2 + (xx - 5.5) ** 2) < 30).double().expand(2, 12, 12)
    crit = SATLoss(softmax=True, num_classes=classes)
    ours = _value_and_grad(lambda x: crit(x, labels, mask=disc), z)
    reference = _value_and_grad(
        lambda x: sat_loss(torch.softmax(x, 1) * disc[:, None], one_hot * disc[:, None]), z)
    _assert_same(ours, reference)
    ours = _value_and_grad(lambda x: sat_loss(x, one_hot[:, 1], sigmoid=True, mask=disc),
                           z[:, 1])
    reference = _value_and_grad(lambda x: sat_loss(torch.sigmoid(x) * disc, one_hot[:, 1] * disc),
                                z[:, 1])
    _assert_same(ours, reference)


def test_what_lies_outside_the_mask_does_not_change_the_loss():
    t = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    t[:, :, 4:12, 8] = 1.0
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 2:14, 2:14] = True
    clean = 0.1 + 0.8 * t
    noisy = clean.clone()
    generator = torch.Generator().manual_seed(18)
    noise = torch.rand(clean.shape, generator=generator, dtype=torch.float64)
    noisy[~mask] = noise[~mask]
    t_noisy = t.clone()
    t_noisy[~mask] = (noise[~mask] > 0.5).double()
    masked = sat_loss(noisy, t_noisy, mask=mask, reduction="none")
    torch.testing.assert_close(masked, sat_loss(clean, t, mask=mask, reduction="none"))
    assert float((sat_loss(noisy, t_noisy, reduction="none") - masked).min()) > 0


def test_matching_takes_the_same_options():
    z = _logits((1, 1, 10, 10), 19)
    t = _binary(z.shape, 20)
    mask = torch.ones(1, 10, 10)
    mask[:, :, :2] = 0
    ours = SATLoss(sigmoid=True, solver="emd").match(z, t, mask=mask)
    reference = sat_matching(torch.sigmoid(z) * mask[:, None], t * mask[:, None], solver="emd")
    assert [m.cost for m in ours] == pytest.approx([m.cost for m in reference], rel=1e-12)
    assert sum(m.cost for m in ours) == pytest.approx(float(sat_loss(z, t, sigmoid=True,
                                                                     mask=mask)), rel=1e-12)


# ----------------------------------------------------------------------------- reduction="none"

def test_reduction_none_gives_per_sample_losses_for_weighting():
    z = _logits((3, 1, 10, 10), 21)
    t = _binary(z.shape, 22)
    per_sample = sat_loss(z, t, sigmoid=True, reduction="none")
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample.mean(), sat_loss(z, t, sigmoid=True))
    torch.testing.assert_close(per_sample.sum(), sat_loss(z, t, sigmoid=True, reduction="sum"))
    weights = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    crit = SATLoss(sigmoid=True, reduction="none")
    ours = _value_and_grad(lambda x: (weights * crit(x, t)).sum(), z)
    singles = [_value_and_grad(lambda x: crit(x, t[b:b + 1]).sum(), z[b:b + 1]) for b in range(3)]
    torch.testing.assert_close(ours[0], sum(w * s[0] for w, s in zip(weights, singles)))
    torch.testing.assert_close(ours[1], torch.cat([w * s[1] for w, s in zip(weights, singles)]))


# ----------------------------------------------------------------------------- autocast

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_inputs_are_computed_in_float32(dtype):
    torch.manual_seed(23)
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    image = torch.rand(2, 3, 16, 16)
    t = _binary((2, 1, 16, 16), 24).float()
    crit = SATLoss(sigmoid=True)
    with torch.autocast("cpu", dtype=dtype):
        logits = net(image)
        assert logits.dtype == dtype
        loss = crit(logits, t)
    assert loss.dtype == torch.float32
    reference = crit(logits.detach().float(), t)
    assert float(loss.detach()) == float(reference.detach())
    loss.backward()
    assert net.weight.grad is not None and bool(torch.isfinite(net.weight.grad).all())
    half = logits.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        crit(half, t).backward()
    assert half.grad.dtype == dtype and float(half.grad.float().abs().sum()) > 0


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(construction="X"), ValueError, "`construction` must be one of"),
    (dict(reduction="bar"), ValueError, "`reduction` must be one of"),
    (dict(solver="fast"), ValueError, "`solver` must be one of"),
    (dict(backend="tpu"), ValueError, "`backend` must be one of"),
    (dict(dims=(3,)), ValueError, "`dims` must be a non-empty subset"),
    (dict(spatial_clamp=(1.0, 0.5)), ValueError, "`spatial_clamp` must satisfy"),
    (dict(pad="yes"), TypeError, "`pad` must be a bool"),
    (dict(sigmoid=True, softmax=True), ValueError, "`sigmoid` and `softmax` are exclusive"),
    (dict(sigmoid=1), TypeError, "`sigmoid` must be a bool"),
    (dict(include_background=None), TypeError, "`include_background` must be a bool"),
    (dict(num_classes=1), ValueError, "`num_classes` must be >= 2"),
    (dict(num_classes="3"), TypeError, "`num_classes` must be an int"),
    (dict(channel_weights=[1.0, -1.0]), ValueError, "`channel_weights` must be finite and non-negative"),
    (dict(num_classes=3, channel_weights=[1.0, 1.0]), ValueError,
     r"`channel_weights` must have one weight per channel \(3\)"),
    (dict(num_classes=3, include_background=False, channel_weights=[1.0, 1.0, 1.0]), ValueError,
     r"`channel_weights` must have one weight per channel \(2\)"),
    (dict(solver="emd", solver_options={"reg": 0.1}), ValueError, "`solver_options` apply to"),
])
def test_bad_options_fail_when_the_module_is_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        SATLoss(**kwargs)


def test_topo_loss_rejects_the_spatial_options():
    with pytest.raises(TypeError, match="spatial"):
        topo_loss(torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), spatial=True)
    with pytest.raises(ValueError, match="`sigmoid` and `softmax` are exclusive"):
        TopoLoss(sigmoid=True, softmax=True)


@pytest.mark.parametrize("call,error,match", [
    (lambda: sat_loss(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), softmax=True), ValueError,
     "`softmax=True` needs at least 2 channels"),
    (lambda: sat_loss(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8).long(), num_classes=4),
     ValueError, "`pred` must have num_classes=4 channels"),
    (lambda: sat_loss(torch.rand(2, 3, 8, 8), torch.full((2, 8, 8), 3), num_classes=3),
     ValueError, r"`target` must hold class indices in \[0, 3\); found \[3\]"),
    (lambda: sat_loss(torch.rand(2, 3, 8, 8), torch.full((2, 8, 8), 0.5), num_classes=3),
     ValueError, "`target` must hold integer class indices"),
    (lambda: sat_loss(torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), num_classes=3),
     ValueError, r"`target` must be a label map of shape \(B, H, W\)"),
    (lambda: sat_loss(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8)), ValueError,
     "pass num_classes=3"),
    (lambda: sat_loss(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), include_background=False),
     ValueError, "`include_background=False` needs at least 2 channels"),
    (lambda: sat_loss(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), mask=torch.ones(2, 8, 7)),
     ValueError, "`mask` must have shape"),
    (lambda: sat_loss(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), mask=torch.full((2, 8, 8), 0.5)),
     ValueError, "`mask` must be bool or hold 0/1 values"),
    (lambda: sat_loss(torch.randn(2, 1, 8, 8) * 5, torch.zeros(2, 1, 8, 8)), ValueError,
     "sigmoid=True"),
    (lambda: sat_loss(torch.full((2, 1, 8, 8), math.nan), torch.zeros(2, 1, 8, 8), sigmoid=True),
     ValueError, r"`pred` \(logits\) must be finite"),
    (lambda: sat_loss(torch.zeros(2, 1, 8, 8).long(), torch.zeros(2, 1, 8, 8), sigmoid=True),
     TypeError, "`pred` must be a floating-point tensor of logits"),
])
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- degenerate targets

def test_constant_predictions_against_all_background_and_all_foreground_targets():
    """The numbers stated in the README (default options, pad=True)."""
    background, foreground = torch.zeros(2, 1, 32, 32), torch.ones(2, 1, 32, 32)
    for c in (0.1, 0.5, 0.9):
        p = torch.full((2, 1, 32, 32), c, dtype=torch.float64, requires_grad=True)
        loss = sat_loss(p, background)
        assert loss.item() == pytest.approx(0.1 * c, rel=1e-9)
        loss.backward()
        assert int((p.grad != 0).sum()) == 2   # one pixel per image
        p = p.detach().requires_grad_(True)
        loss = sat_loss(p, foreground)
        assert loss.item() == pytest.approx(math.sqrt(2) * (1 - c), rel=1e-9)
        loss.backward()
        assert int((p.grad != 0).sum()) == 2   # both deaths at the last pixel of the order
    saturated = torch.ones(2, 1, 32, 32, requires_grad=True)
    loss = sat_loss(saturated, background)
    loss.backward()
    assert loss.item() == pytest.approx(math.sqrt(2)) and float(saturated.grad.abs().sum()) == 0
    for target in (background, foreground):
        assert float(sat_loss(torch.full((2, 1, 32, 32), 0.3), target, pad=False)) == 0.0
