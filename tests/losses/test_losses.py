"""SATLoss / TopoLoss against a plain per-image implementation of the reference semantics.

The reference below is written directly from the specification: gudhi's T-construction
cubical complex on the rank image (the tie rule of section 2), values read back from the
unperturbed image, and POT's exact ``ot.emd2`` on the (n+1) x (m+1) problem, one image,
channel and dimension at a time, in float64. Its gradient is POT's (the optimal plan)
chained through torch.
"""
from __future__ import annotations

import math

import gudhi
import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from satloss_gpu import SATLoss, TopoLoss
from satloss_gpu.persistence.backends.gudhi_backend import strict_ranks
from satloss_gpu.losses.functional import DiagramMatching, sat_loss, sat_matching, topo_loss


# ----------------------------------------------------------------------------- the reference

def _critical_pixels(image: np.ndarray, dim: int) -> list[tuple[tuple, tuple]]:
    """(birth pixel, death pixel) of every pair of dimension ``dim`` (T-construction)."""
    height, width = image.shape
    ranks = strict_ranks(image)
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
    complex_.compute_persistence()
    regular, essential = complex_.cofaces_of_persistence_pairs()

    def pixel(flat_f):
        return tuple(int(v) for v in np.unravel_index(int(flat_f), (height, width), order="F"))

    pairs = []
    if dim < len(regular):
        pairs += [(pixel(b), pixel(d)) for b, d in np.asarray(regular[dim]).reshape(-1, 2)]
    if dim == 0 and len(essential) and len(essential[0]):
        last = np.unravel_index(int(np.argmax(ranks)), ranks.shape)
        pairs += [(pixel(b), tuple(int(v) for v in last)) for b in np.ravel(essential[0])]
    return [(b, d) for b, d in pairs if image[b] != image[d]]


def reference_image_loss(p: torch.Tensor, t: np.ndarray, spatial=True, pad=True, dims=(0, 1),
                         clamp=(0.05, 1.0)) -> torch.Tensor:
    """Loss of one (H, W) image, differentiable in ``p`` (float64)."""
    height, width = p.shape
    if pad:
        p = F.pad(p[None, None], (1, 1, 1, 1), value=1.0)[0, 0]
        t = np.pad(t, 1, constant_values=1)
    x = 1.0 - p
    y = torch.as_tensor(1.0 - t, dtype=torch.float64)
    total = (x * 0.0).sum()
    for dim in dims:
        pred_pairs = _critical_pixels(x.detach().numpy(), dim)
        target_pairs = _critical_pixels(y.numpy(), dim)
        n, m = len(pred_pairs), len(target_pairs)
        if n + m == 0:
            continue
        cost = x.new_zeros((n + 1, m + 1))
        for i, (bp, dp) in enumerate(pred_pairs):
            cost[i, m] = (x[dp] - x[bp]).abs() / math.sqrt(2)
            for j, (bt, dt) in enumerate(target_pairs):
                pd = torch.sqrt((x[bp] - y[bt]) ** 2 + (x[dp] - y[dt]) ** 2)
                if spatial:
                    sp = math.hypot((bp[0] - bt[0]) / height, (bp[1] - bt[1]) / width)
                    pd = pd * min(max(sp, clamp[0]), clamp[1])
                cost[i, j] = pd
        for j, (bt, dt) in enumerate(target_pairs):
            cost[n, j] = (y[dt] - y[bt]).abs() / math.sqrt(2)
        a = torch.tensor([1.0] * n + [float(m)], dtype=torch.float64)
        b = torch.tensor([1.0] * m + [float(n)], dtype=torch.float64)
        total = total + ot.emd2(a, b, cost)
    return total


def reference_loss(pred: torch.Tensor, target: torch.Tensor, **options) -> torch.Tensor:
    """Mean over images of the mean over channels of :func:`reference_image_loss`."""
    if pred.ndim == 3:
        pred, target = pred[:, None], target[:, None]
    per_image = []
    for b in range(pred.shape[0]):
        channels = [reference_image_loss(pred[b, c], target[b, c].numpy(), **options)
                    for c in range(pred.shape[1])]
        per_image.append(torch.stack(channels).mean())
    return torch.stack(per_image).mean()


# ----------------------------------------------------------------------------- inputs

def _target(rng: np.random.Generator, shape: tuple) -> torch.Tensor:
    """Binary masks with lines, blobs and holes."""
    t = np.zeros(shape)
    flat = t.reshape(-1, *shape[-2:])
    height, width = shape[-2:]
    for img in flat:
        for _ in range(2):
            img[rng.integers(height), :] = 1
            img[:, rng.integers(width)] = 1
        img[rng.random((height, width)) < 0.08] = 1
        r, c = rng.integers(0, max(height - 4, 1)), rng.integers(0, max(width - 4, 1))
        img[r:r + 4, c:c + 4] = 1
        img[r + 1:r + 3, c + 1:c + 3] = 0
    return torch.as_tensor(t)


def _pred(rng: np.random.Generator, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Random ("random") or smooth ("smooth") probabilities in (0, 1), float64."""
    if kind == "random":
        p = rng.uniform(0.01, 0.99, target.shape)
    else:
        sigma = (0,) * (target.ndim - 2) + (1.0, 1.0)
        noisy = target.numpy() + 0.4 * rng.standard_normal(target.shape)
        p = np.clip(gaussian_filter(noisy, sigma), 0.0, 1.0) * 0.98 + 0.01
    return torch.as_tensor(p, dtype=torch.float64)


def _grads(loss_fn, pred: torch.Tensor, target: torch.Tensor) -> tuple[float, np.ndarray]:
    p = pred.clone().requires_grad_(True)
    loss = loss_fn(p, target)
    loss.backward()
    return loss.item(), p.grad.numpy()


# ----------------------------------------------------------------------------- value and gradient

CASES = [
    # (shape, kind, spatial, pad)
    ((1, 1, 9, 9), "random", True, True),
    ((2, 1, 11, 7), "smooth", True, True),
    ((3, 2, 8, 13), "random", False, True),
    ((4, 3, 10, 10), "smooth", True, False),
    ((2, 13, 9), "random", True, False),
    ((4, 1, 17, 15), "smooth", False, False),
    ((2, 2, 24, 31), "smooth", True, True),
]


@pytest.mark.parametrize("shape,kind,spatial,pad", CASES)
def test_value_and_gradient_match_reference(shape, kind, spatial, pad):
    rng = np.random.default_rng(sum(shape) + spatial + 2 * pad)
    target = _target(rng, shape)
    pred = _pred(rng, target, kind)
    ours, our_grad = _grads(lambda p, t: sat_loss(p, t, spatial=spatial, pad=pad), pred, target)
    ref, ref_grad = _grads(lambda p, t: reference_loss(p, t, spatial=spatial, pad=pad),
                           pred, target)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(our_grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert np.abs(our_grad).sum() > 0


@pytest.mark.parametrize("dims", [(0,), (1,)])
@pytest.mark.parametrize("clamp", [(0.05, 1.0), (0.0, 0.3)])
def test_dims_and_clamp_match_reference(dims, clamp):
    rng = np.random.default_rng(7)
    target = _target(rng, (2, 1, 12, 10))
    pred = _pred(rng, target, "smooth")
    ours, our_grad = _grads(lambda p, t: sat_loss(p, t, dims=dims, spatial_clamp=clamp),
                            pred, target)
    ref, ref_grad = _grads(lambda p, t: reference_loss(p, t, dims=dims, clamp=clamp),
                           pred, target)
    assert ours == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(our_grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["auto", "emd", "cpu", "cuda"])
@pytest.mark.parametrize("backend", ["cpu", "gudhi"])
def test_solvers_and_backends_agree(solver, backend):
    rng = np.random.default_rng(3)
    target = _target(rng, (3, 1, 14, 12))
    pred = _pred(rng, target, "random")
    ours, our_grad = _grads(lambda p, t: sat_loss(p, t, solver=solver, backend=backend),
                            pred, target)
    ref, ref_grad = _grads(reference_loss, pred, target)
    assert ours == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(our_grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_float32_close_to_float64():
    rng = np.random.default_rng(11)
    target = _target(rng, (2, 1, 16, 16))
    pred = _pred(rng, target, "smooth")
    single = sat_loss(pred.float(), target)
    double = sat_loss(pred, target)
    assert single.dtype == torch.float32
    assert float(single) == pytest.approx(float(double), rel=1e-5)


def test_gradcheck_small():
    rng = np.random.default_rng(5)
    target = _target(rng, (2, 1, 6, 7))
    pred = torch.as_tensor(rng.uniform(0.1, 0.9, (2, 1, 6, 7)), dtype=torch.float64)
    pred.requires_grad_(True)
    for spatial in (True, False):
        assert torch.autograd.gradcheck(
            lambda p: sat_loss(p, target, spatial=spatial, solver="emd"), (pred,),
            eps=1e-7, atol=1e-6,
        )


def test_input_types_bool_numpy_target_and_half_pred():
    rng = np.random.default_rng(6)
    target = _target(rng, (2, 10, 11))
    pred = _pred(rng, target, "random").float()
    expected = sat_loss(pred, target).item()
    assert sat_loss(pred, target.bool()).item() == pytest.approx(expected)
    assert sat_loss(pred, target.numpy()).item() == pytest.approx(expected)
    half = pred.half().requires_grad_(True)
    loss = sat_loss(half, target)
    loss.backward()
    assert loss.dtype == torch.float32 and half.grad.dtype == torch.float16
    assert loss.item() == pytest.approx(sat_loss(half.detach().float(), target).item())


def test_target_gets_no_gradient():
    rng = np.random.default_rng(1)
    target = _target(rng, (1, 1, 8, 8)).requires_grad_(True)
    pred = _pred(rng, target.detach(), "random").requires_grad_(True)
    sat_loss(pred, target).backward()
    assert target.grad is None
    assert pred.grad is not None


# ----------------------------------------------------------------------------- empty diagrams

@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("target_value", [0.0, 1.0])
@pytest.mark.parametrize("pred_kind", ["constant", "random"])
def test_empty_diagrams_are_finite(pad, target_value, pred_kind):
    rng = np.random.default_rng(2)
    target = torch.full((2, 1, 9, 8), target_value, dtype=torch.float64)
    if pred_kind == "constant":
        pred = torch.full(target.shape, 0.5, dtype=torch.float64)
    else:
        pred = _pred(rng, target, "random")
    ours, our_grad = _grads(lambda p, t: sat_loss(p, t, pad=pad), pred, target)
    ref, ref_grad = _grads(lambda p, t: reference_loss(p, t, pad=pad), pred, target)
    assert math.isfinite(ours) and np.isfinite(our_grad).all()
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(our_grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_identical_prediction_and_target_cost_zero():
    rng = np.random.default_rng(4)
    target = _target(rng, (2, 1, 10, 10))
    pred = target.clone().requires_grad_(True)
    loss = sat_loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all()


# ----------------------------------------------------------------------------- reductions, channels

def test_reductions_and_channel_weights():
    rng = np.random.default_rng(8)
    target = _target(rng, (3, 2, 10, 9))
    pred = _pred(rng, target, "smooth")
    none = sat_loss(pred, target, reduction="none")
    assert none.shape == (3,)
    assert float(sat_loss(pred, target, reduction="sum")) == pytest.approx(float(none.sum()))
    assert float(sat_loss(pred, target)) == pytest.approx(float(none.mean()))
    per_channel = torch.stack([sat_loss(pred[:, c], target[:, c], reduction="none")
                               for c in range(2)], dim=1)
    np.testing.assert_allclose(none.numpy(), per_channel.mean(1).numpy(), rtol=1e-12)
    weighted = sat_loss(pred, target, reduction="none", channel_weights=[0.25, 2.0])
    np.testing.assert_allclose(weighted.numpy(), (per_channel @ torch.tensor(
        [0.25, 2.0], dtype=torch.float64)).numpy() / 2, rtol=1e-12)
    # MONAI's convention: a weighted mean over channels, so unit weights change nothing
    unit = sat_loss(pred, target, reduction="none", channel_weights=[1.0, 1.0])
    np.testing.assert_allclose(unit.numpy(), none.numpy(), rtol=1e-12)


def test_modules_forward_to_functional():
    rng = np.random.default_rng(9)
    target = _target(rng, (2, 1, 10, 11))
    pred = _pred(rng, target, "random")
    assert float(SATLoss()(pred, target)) == pytest.approx(float(sat_loss(pred, target)))
    assert float(TopoLoss()(pred, target)) == pytest.approx(
        float(sat_loss(pred, target, spatial=False)))
    assert float(topo_loss(pred, target)) == pytest.approx(float(TopoLoss()(pred, target)))
    crit = SATLoss(reduction="none", channel_weights=[2.0])
    assert crit.channel_weights.dtype == torch.float32
    np.testing.assert_allclose(crit(pred, target).numpy(),
                               2 * sat_loss(pred, target, reduction="none").numpy())
    assert "spatial=False" in repr(TopoLoss())


def test_target_cache():
    rng = np.random.default_rng(10)
    target = _target(rng, (3, 2, 9, 9))
    pred = _pred(rng, target, "smooth")
    crit = SATLoss(reduction="none")
    plain = crit(pred, target)
    first = crit(pred, target, keys=["a", "b", "c"])
    np.testing.assert_allclose(first.numpy(), plain.numpy(), rtol=1e-12)
    assert len(crit._target_cache) == 3
    # known keys in another order with their targets, and a new key "d"
    other = _target(np.random.default_rng(99), (3, 2, 9, 9))
    batch = torch.cat([target[[1, 0]], other[2:]])
    mixed = crit(pred[[1, 0, 2]], batch, keys=["b", "a", "d"])
    np.testing.assert_allclose(mixed.numpy(), crit(pred[[1, 0, 2]], batch).numpy(), rtol=1e-12)
    # a key whose target changed is computed again, never served its old diagram
    changed = crit(pred, other, keys=["a", "b", "c"])
    np.testing.assert_allclose(changed.numpy(), crit(pred, other).numpy(), rtol=1e-12)
    assert not np.allclose(changed.numpy(), plain.numpy())
    assert len(crit._target_cache) == 4
    crit.clear_cache()
    assert not crit._target_cache


# ----------------------------------------------------------------------------- matching output

def test_match_is_consistent_with_loss_and_reference_diagrams():
    rng = np.random.default_rng(12)
    target = _target(rng, (2, 2, 10, 12))
    pred = _pred(rng, target, "smooth")
    crit = SATLoss(reduction="none")
    matchings = crit.match(pred, target)
    assert len(matchings) == 2 * 2 * 2
    assert all(isinstance(mt, DiagramMatching) for mt in matchings)
    totals = np.zeros((2, 2))
    for mt in matchings:
        diag_p = np.abs(mt.pred_death - mt.pred_birth) / math.sqrt(2)
        diag_t = np.abs(mt.target_death - mt.target_birth) / math.sqrt(2)
        recomposed = (mt.match_cost.sum() + diag_p[mt.pred_to_diagonal].sum()
                      + diag_t[mt.target_to_diagonal].sum())
        assert recomposed == pytest.approx(mt.cost, rel=1e-12, abs=1e-15)
        assert len(mt.matches) + len(mt.pred_to_diagonal) == len(mt.pred_birth)
        assert len(mt.matches) + len(mt.target_to_diagonal) == len(mt.target_birth)
        assert len(set(mt.matches[:, 1].tolist())) == len(mt.matches)
        for pixels in (mt.pred_birth_pixel, mt.pred_death_pixel, mt.target_birth_pixel):
            assert ((pixels >= -1) & (pixels <= np.array([10, 12]))).all()
        # the prediction's diagram is the reference's, values read at its critical pixels
        x = np.pad(1.0 - pred[mt.image, mt.channel].numpy(), 1, constant_values=0.0)
        ref = sorted((x[b], x[d]) for b, d in _critical_pixels(x, mt.dim))
        ours = sorted(zip(mt.pred_birth, mt.pred_death))
        np.testing.assert_allclose(np.array(ours).reshape(-1, 2), np.array(ref).reshape(-1, 2))
        np.testing.assert_allclose(x[tuple((mt.pred_birth_pixel + 1).T)], mt.pred_birth)
        totals[mt.image, mt.channel] += mt.cost
    np.testing.assert_allclose(totals.mean(1), crit(pred, target).numpy(), rtol=1e-12)


def test_sat_matching_functional_matches_method():
    rng = np.random.default_rng(13)
    target = _target(rng, (1, 8, 8))
    pred = _pred(rng, target, "random")
    a = sat_matching(pred, target)
    b = TopoLoss().match(pred, target)
    c = sat_matching(pred, target, spatial=False)
    assert len(a) == 2 and a[0].image == 0 and a[1].dim == 1
    assert [mt.cost for mt in b] == pytest.approx([mt.cost for mt in c])


# ----------------------------------------------------------------------------- sinkhorn

def test_sinkhorn_is_a_valid_upper_bound_close_to_exact():
    rng = np.random.default_rng(14)
    target = _target(rng, (4, 1, 20, 20))
    pred = _pred(rng, target, "smooth")
    exact = sat_loss(pred, target, reduction="none")
    p = pred.clone().requires_grad_(True)
    approx = sat_loss(p, target, reduction="none", solver="sinkhorn")
    approx.sum().backward()
    assert torch.isfinite(p.grad).all()
    assert (approx >= exact - 1e-12).all()
    assert approx.sum().item() <= 1.25 * exact.sum().item()
    for mt in sat_matching(pred, target, solver="sinkhorn"):
        assert len(set(mt.matches[:, 1].tolist())) == len(mt.matches)


def test_sinkhorn_options():
    rng = np.random.default_rng(15)
    target = _target(rng, (1, 1, 8, 8))
    pred = _pred(rng, target, "random")
    crit = SATLoss(solver="sinkhorn", solver_options={"reg": 0.01, "max_iter": 50})
    assert math.isfinite(float(crit(pred, target)))
    with pytest.raises(ValueError, match="`reg` must be positive"):
        sat_loss(pred, target, solver="sinkhorn", solver_options={"reg": 0.0})
    with pytest.raises(ValueError, match="solver_options"):
        sat_loss(pred, target, solver="emd", solver_options={"reg": 0.01})


# ----------------------------------------------------------------------------- errors

def test_errors():
    pred = torch.rand(2, 1, 6, 6)
    target = (torch.rand(2, 1, 6, 6) > 0.5).float()
    with pytest.raises(TypeError, match="`pred` must be a torch.Tensor"):
        sat_loss(pred.numpy(), target)
    with pytest.raises(TypeError, match="`pred` must be a floating-point"):
        sat_loss((pred > 0.5).long(), target)
    with pytest.raises(ValueError, match=r"`pred` must have shape \(B, C, H, W\)"):
        sat_loss(pred[0, 0], target[0, 0])
    with pytest.raises(ValueError, match="`target` must have the shape of `pred`"):
        sat_loss(pred, target[:, :, :5])
    with pytest.raises(ValueError, match=r"`pred` must hold probabilities in \[0, 1\]"):
        sat_loss(pred * 3 - 1, target)
    bad = pred.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`pred` must be finite; found 1 NaN"):
        sat_loss(bad, target)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="`pred` must be finite"):
        sat_loss(bad, target)
    with pytest.raises(ValueError, match=r"`target` must be binary .*255\.0"):
        sat_loss(pred, target * 255)
    with pytest.raises(ValueError, match="`target` must be finite"):
        sat_loss(pred, torch.full_like(target, float("nan")))
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        sat_loss(pred, target, reduction="max")
    with pytest.raises(ValueError, match="`solver` must be one of"):
        sat_loss(pred, target, solver="hungarian")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        sat_loss(pred, target, backend="tpu")
    with pytest.raises(ValueError, match="`construction` must be one of"):
        sat_loss(pred, target, construction="X")
    with pytest.raises(ValueError, match="`dims` must be a non-empty subset"):
        sat_loss(pred, target, dims=(2,))
    with pytest.raises(ValueError, match="`spatial_clamp` must satisfy"):
        sat_loss(pred, target, spatial_clamp=(0.5, 0.1))
    with pytest.raises(ValueError, match="`channel_weights` must have one weight per channel"):
        sat_loss(pred, target, channel_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="`channel_weights` must be finite and non-negative"):
        sat_loss(pred, target, channel_weights=[-1.0])
    with pytest.raises(ValueError, match="`keys` must hold one id per image"):
        sat_loss(pred, target, keys=["a"], cache={})
    with pytest.raises(TypeError, match="`keys` must be a sequence"):
        sat_loss(pred, target, keys="ab", cache={})
    with pytest.raises(TypeError, match="`pad` must be a bool"):
        sat_loss(pred, target, pad=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'spatial'"):
        topo_loss(pred, target, spatial=True)


# ----------------------------------------------------------------------------- real GPU

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(16)
    target = _target(rng, (4, 2, 32, 29)).to(dtype)
    pred = _pred(rng, target, "smooth").to(dtype)
    cpu_value, cpu_grad = _grads(lambda p, t: sat_loss(p, t, reduction="sum"), pred, target)
    p = pred.cuda().requires_grad_(True)
    loss = sat_loss(p, target.cuda(), reduction="sum")
    loss.backward()
    assert loss.device.type == "cuda" and p.grad.device.type == "cuda"
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    assert loss.item() == pytest.approx(cpu_value, rel=tolerance)
    np.testing.assert_allclose(p.grad.cpu().numpy(), cpu_grad, rtol=tolerance,
                               atol=tolerance * np.abs(cpu_grad).max())
    approx = sat_loss(pred.cuda(), target.cuda(), reduction="sum", solver="sinkhorn")
    assert approx.device.type == "cuda" and approx.item() >= cpu_value * (1 - tolerance)


def test_memory_estimates_raise_before_allocating(monkeypatch):
    from satloss_gpu import _validation

    rng = np.random.default_rng(8)
    target = _target(rng, (1, 1, 12, 12))
    pred = _pred(rng, target, "random")
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="GiB of host memory"):
        sat_loss(pred, target)
    monkeypatch.setattr(_validation, "BYTES_PER_PIXEL", {4: 0, 8: 0})
    with pytest.raises(MemoryError, match="target points"):
        sat_loss(pred, target)


def test_an_8192_image_is_refused_or_fits_by_estimate(monkeypatch):
    """The estimate for one 8192 x 8192 image against a 24 GiB machine (no allocation)."""
    from satloss_gpu import _validation

    big = torch.empty((1, 1, 8192, 8192), dtype=torch.float32)
    monkeypatch.setattr(_validation, "available_memory", lambda: 24 * 2**30)
    _validation.check_memory_for_images(big)  # fits: about 8 GiB
    monkeypatch.setattr(_validation, "available_memory", lambda: 4 * 2**30)
    with pytest.raises(MemoryError, match=r"\(1, 1, 8192, 8192\)"):
        _validation.check_memory_for_images(big)
