"""SATLoss / TopoLoss on volumes (B, C, D, H, W) against a plain per-volume reference.

The reference is written from the specification, one volume, channel and homology dimension
at a time, in float64: an optional one-voxel frame of 1 on the six faces, ``x = 1 - p`` and
``y = 1 - t``, gudhi's T-construction cubical complex on the rank volume (ties broken by the
C-order flat index), the critical voxels from ``cofaces_of_persistence_pairs`` (the
essential class dying at the last voxel of the order), values read back from the volume,
pairs of zero persistence dropped, the cost
``clamp(||(dz / D, dy / H, dx / W)||, *clamp) * ||(b1 - b2, d1 - d2)||`` (the diagonal at
``|d - b| / sqrt(2)``) and POT's exact ``ot.emd2`` on the (n + 1) x (m + 1) problem. Its
gradient is POT's (the optimal plan) chained through torch.
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
from satloss_gpu.losses.functional import sat_loss, sat_matching, topo_loss
from satloss_gpu.persistence.backends.gudhi_backend import strict_ranks


# ----------------------------------------------------------------------------- the reference

def _critical_voxels(volume: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(birth voxels, death voxels), each (K, 3) int64, of the pairs of dimension ``dim``."""
    ranks = strict_ranks(volume)
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=ranks)
    # Z/2 coefficients, as every backend: gudhi's default Z/11 pairs some 3D H1 classes differently
    complex_.compute_persistence(homology_coeff_field=2, min_persistence=0)
    regular, essential = complex_.cofaces_of_persistence_pairs()

    def voxels(flat_f) -> np.ndarray:
        flat = np.asarray(flat_f, dtype=np.int64).ravel()
        return np.stack(np.unravel_index(flat, volume.shape, order="F"), axis=1)

    births, deaths = [np.zeros((0, 3), np.int64)], [np.zeros((0, 3), np.int64)]
    if dim < len(regular) and len(regular[dim]):
        pairs = np.asarray(regular[dim]).reshape(-1, 2)
        births.append(voxels(pairs[:, 0]))
        deaths.append(voxels(pairs[:, 1]))
    if dim == 0 and len(essential) and len(essential[0]):
        last = np.array(np.unravel_index(int(np.argmax(ranks)), volume.shape))
        births.append(voxels(essential[0]))
        deaths.append(np.repeat(last[None], len(np.ravel(essential[0])), axis=0))
    birth, death = np.concatenate(births), np.concatenate(deaths)
    keep = volume[tuple(birth.T)] != volume[tuple(death.T)]
    return birth[keep], death[keep]


def reference_volume_loss(p: torch.Tensor, t: np.ndarray, spatial=True, pad=True,
                          dims=(0, 1, 2), clamp=(0.05, 1.0)) -> torch.Tensor:
    """Loss of one (D, H, W) volume, differentiable in ``p`` (float64)."""
    size = torch.tensor(p.shape, dtype=torch.float64)
    if pad:
        p = F.pad(p[None, None], (1, 1) * 3, value=1.0)[0, 0]
        t = np.pad(t, 1, constant_values=1)
    x = 1.0 - p
    y = torch.as_tensor(1.0 - t, dtype=torch.float64)
    total = (x * 0.0).sum()
    for dim in dims:
        pred_birth, pred_death = _critical_voxels(x.detach().numpy(), dim)
        target_birth, target_death = _critical_voxels(y.numpy(), dim)
        n, m = len(pred_birth), len(target_birth)
        if n + m == 0:
            continue
        pb, pd = x[tuple(pred_birth.T)], x[tuple(pred_death.T)]
        tb, td = y[tuple(target_birth.T)], y[tuple(target_death.T)]
        cost = x.new_zeros((n + 1, m + 1))
        squared = (pb[:, None] - tb[None]) ** 2 + (pd[:, None] - td[None]) ** 2
        positive = squared > 0  # the subgradient 0 where two points coincide
        distance = torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)
        if spatial:
            offset = torch.as_tensor(pred_birth[:, None] - target_birth[None],
                                     dtype=torch.float64)
            factor = torch.sqrt(((offset / size) ** 2).sum(-1)).clamp(*clamp)
            distance = distance * factor
        cost[:n, :m] = distance
        cost[:n, m] = (pd - pb).abs() / math.sqrt(2)
        cost[n, :m] = (td - tb).abs() / math.sqrt(2)
        a = torch.tensor([1.0] * n + [float(m)], dtype=torch.float64)
        b = torch.tensor([1.0] * m + [float(n)], dtype=torch.float64)
        total = total + ot.emd2(a, b, cost)
    return total


def reference_loss(pred: torch.Tensor, target: torch.Tensor, **options) -> torch.Tensor:
    """Mean over volumes of the mean over channels of :func:`reference_volume_loss`."""
    per_volume = []
    for b in range(pred.shape[0]):
        channels = [reference_volume_loss(pred[b, c], target[b, c].numpy(), **options)
                    for c in range(pred.shape[1])]
        per_volume.append(torch.stack(channels).mean())
    return torch.stack(per_volume).mean()


# ----------------------------------------------------------------------------- inputs

def _target(rng: np.random.Generator, shape: tuple) -> torch.Tensor:
    """Binary volumes with tubes along the axes, a hollow box (a void) and speckle."""
    t = np.zeros(shape)
    depth, height, width = shape[-3:]
    for vol in t.reshape(-1, depth, height, width):
        vol[:, rng.integers(height), rng.integers(width)] = 1
        vol[rng.integers(depth), :, rng.integers(width)] = 1
        vol[rng.integers(depth), rng.integers(height), :] = 1
        vol[rng.random((depth, height, width)) < 0.05] = 1
        if min(depth, height, width) >= 5:
            z, r, c = (rng.integers(0, s - 4) for s in (depth, height, width))
            vol[z:z + 4, r:r + 4, c:c + 4] = 1
            vol[z + 1:z + 3, r + 1:r + 3, c + 1:c + 3] = 0
    return torch.as_tensor(t)


def _pred(rng: np.random.Generator, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Random ("random") or smooth ("smooth") probabilities in (0, 1), float64."""
    if kind == "random":
        p = rng.uniform(0.01, 0.99, target.shape)
    else:
        sigma = (0, 0, 1.0, 1.0, 1.0)
        noisy = target.numpy() + 0.4 * rng.standard_normal(target.shape)
        p = np.clip(gaussian_filter(noisy, sigma), 0.0, 1.0) * 0.98 + 0.01
    return torch.as_tensor(p, dtype=torch.float64)


def _grads(loss_fn, pred: torch.Tensor, target: torch.Tensor) -> tuple[float, np.ndarray]:
    p = pred.clone().requires_grad_(True)
    loss = loss_fn(p, target)
    loss.backward()
    return loss.item(), p.grad.numpy()


def _assert_equal_to_reference(loss_fn, reference_fn, pred, target) -> None:
    ours, our_grad = _grads(loss_fn, pred, target)
    ref, ref_grad = _grads(reference_fn, pred, target)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(our_grad, ref_grad, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- value and gradient

CASES = [
    # (shape (B, C, D, H, W), kind, spatial, pad)
    ((1, 1, 7, 9, 8), "random", True, True),
    ((2, 1, 9, 7, 11), "smooth", True, True),
    ((3, 2, 5, 6, 7), "random", False, True),
    ((2, 3, 6, 7, 5), "smooth", True, False),
    ((1, 2, 11, 9, 7), "random", True, False),
    ((3, 1, 8, 8, 9), "smooth", False, False),
]


@pytest.mark.parametrize("shape, kind, spatial, pad", CASES)
def test_value_and_gradient_equal_the_reference(shape, kind, spatial, pad):
    rng = np.random.default_rng(sum(shape) + 7 * spatial + 3 * pad)
    target = _target(rng, shape)
    pred = _pred(rng, target, kind)
    _assert_equal_to_reference(
        lambda p, t: sat_loss(p, t, spatial=spatial, pad=pad),
        lambda p, t: reference_loss(p, t, spatial=spatial, pad=pad), pred, target)


@pytest.mark.parametrize("dims", [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1)])
def test_every_subset_of_dims(dims):
    rng = np.random.default_rng(len(dims) * 10 + dims[0])
    target = _target(rng, (2, 1, 7, 8, 9))
    pred = _pred(rng, target, "smooth")
    clamp = (0.1, 0.6)
    _assert_equal_to_reference(
        lambda p, t: sat_loss(p, t, dims=dims, spatial_clamp=clamp),
        lambda p, t: reference_loss(p, t, dims=dims, clamp=clamp), pred, target)


@pytest.mark.parametrize("solver", ["auto", "emd", "cpu", "cuda"])
def test_solvers_agree_with_the_reference(solver):
    rng = np.random.default_rng(31)
    # the cuda solver runs its kernel in the simulator here: a smaller batch
    target = _target(rng, (1, 1, 5, 4, 6) if solver == "cuda" else (2, 1, 8, 7, 9))
    pred = _pred(rng, target, "random")
    _assert_equal_to_reference(lambda p, t: sat_loss(p, t, solver=solver), reference_loss,
                               pred, target)


def test_sinkhorn_is_a_valid_matching_close_to_the_optimum():
    rng = np.random.default_rng(45)
    target = _target(rng, (1, 1, 3, 4, 3))
    pred = _pred(rng, target, "smooth")
    exact = float(sat_loss(pred, target))
    approx = float(sat_loss(pred, target, solver="sinkhorn"))
    assert exact * (1 - 1e-9) <= approx <= exact * 1.05


def test_gudhi_backend_and_topo_loss_agree_with_the_reference():
    rng = np.random.default_rng(32)
    target = _target(rng, (2, 2, 6, 7, 5))
    pred = _pred(rng, target, "smooth")
    _assert_equal_to_reference(lambda p, t: sat_loss(p, t, backend="gudhi", solver="emd"),
                               reference_loss, pred, target)
    _assert_equal_to_reference(lambda p, t: TopoLoss()(p, t),
                               lambda p, t: reference_loss(p, t, spatial=False), pred, target)
    assert float(topo_loss(pred, target)) == pytest.approx(
        float(reference_loss(pred, target, spatial=False)), rel=1e-12)


def test_cuda_path_in_the_simulator_or_on_the_gpu(cuda_mode):
    """The cuda persistence backend and the cuda matching solver, as the 2D loss runs them
    (the simulator on host tensors; a real GPU on CUDA tensors)."""
    if cuda_mode == "none":
        pytest.skip("no CUDA simulator and no GPU")
    rng = np.random.default_rng(33)
    target = _target(rng, (2, 1, 5, 4, 6))
    pred = _pred(rng, target, "random")
    ref, ref_grad = _grads(reference_loss, pred, target)
    device = "cuda" if cuda_mode == "gpu" else "cpu"
    p = pred.to(device).requires_grad_(True)
    loss = sat_loss(p, target.to(device), backend="cuda", solver="cuda")
    loss.backward()
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(p.grad.cpu().numpy(), ref_grad, rtol=1e-10, atol=1e-12)


def test_float32_close_to_float64():
    rng = np.random.default_rng(34)
    target = _target(rng, (2, 1, 9, 10, 8))
    pred = _pred(rng, target, "smooth")
    single = sat_loss(pred.float(), target)
    assert single.dtype == torch.float32
    assert float(single) == pytest.approx(float(sat_loss(pred, target)), rel=1e-5)


def test_gradcheck_small():
    rng = np.random.default_rng(35)
    target = _target(rng, (1, 1, 4, 5, 3))
    pred = torch.as_tensor(rng.uniform(0.1, 0.9, (1, 1, 4, 5, 3)), dtype=torch.float64)
    pred.requires_grad_(True)
    for spatial in (True, False):
        assert torch.autograd.gradcheck(
            lambda p: sat_loss(p, target, spatial=spatial, solver="emd"), (pred,),
            eps=1e-7, atol=1e-6)


# ----------------------------------------------------------------------------- special volumes

def test_empty_diagrams():
    """No pair on either side (constant prediction, full target with the frame), one side
    empty (a constant prediction against a target with features), and the reverse."""
    rng = np.random.default_rng(36)
    shape = (2, 1, 5, 6, 7)
    full = torch.ones(shape, dtype=torch.float64)
    constant = torch.full(shape, 0.7, dtype=torch.float64)
    _assert_equal_to_reference(sat_loss, reference_loss, full.clone(), full)
    target = _target(rng, shape)
    _assert_equal_to_reference(sat_loss, reference_loss, constant, target)
    _assert_equal_to_reference(lambda p, t: sat_loss(p, t, pad=False),
                               lambda p, t: reference_loss(p, t, pad=False), constant,
                               torch.zeros(shape, dtype=torch.float64))
    _assert_equal_to_reference(sat_loss, reference_loss, _pred(rng, target, "random"), full)
    assert float(sat_loss(full.clone(), full)) == 0.0


@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_depth_one_volumes_equal_the_2d_loss_without_the_frame(kind, spatial):
    """A 1 x H x W volume is the H x W image: 26-connected components of one slice are its
    8-connected ones, its tunnels are the image's loops, the z offset is 0, and the order
    (value, flat index) is the same. Only without the frame: the frame's two full slices
    would close every loop of the slice into a void."""
    rng = np.random.default_rng(37 + spatial)
    target = _target(rng, (3, 2, 1, 11, 9))
    pred = _pred(rng, target, kind)
    settings = dict(pad=False, spatial=spatial, dims=(0, 1))
    volumes, volume_grad = _grads(lambda p, t: sat_loss(p, t, **settings), pred, target)
    images, image_grad = _grads(lambda p, t: sat_loss(p, t, **settings), pred[:, :, 0],
                                target[:, :, 0])
    assert volumes == pytest.approx(images, rel=1e-13)
    np.testing.assert_allclose(volume_grad[:, :, 0], image_grad, rtol=1e-12, atol=1e-14)
    with_voids = sat_loss(pred, target, pad=False, spatial=spatial)
    assert float(with_voids) == pytest.approx(volumes, rel=1e-13)  # no void in one slice


def test_the_frame_closes_a_tube_into_a_void_on_six_faces():
    """With the frame, a prediction tube through the volume along any axis opens into the
    frame at both ends; the target cube touching one face encloses nothing. The loss sees
    exactly what the reference sees, along each axis."""
    for axis in range(3):
        target = torch.zeros(1, 1, 5, 6, 7, dtype=torch.float64)
        pred = torch.full_like(target, 0.95)
        index = [slice(None)] * 5
        index[2 + axis] = slice(None)
        centre = [2, 3, 3]
        for other in range(3):
            if other != axis:
                index[2 + other] = centre[other]
        pred[tuple(index)] = 0.1
        _assert_equal_to_reference(sat_loss, reference_loss, pred, target)


# ----------------------------------------------------------------------------- options

def test_input_options_on_volumes():
    """Logits with softmax, a label map, no background, a mask and channel weights: the loss
    of the explicit composition."""
    rng = np.random.default_rng(38)
    shape = (2, 3, 5, 6, 7)
    logits = torch.as_tensor(rng.standard_normal(shape), dtype=torch.float64)
    labels = torch.as_tensor(rng.integers(0, 3, (2, 5, 6, 7)))
    mask = torch.as_tensor(rng.random((2, 5, 6, 7)) < 0.8)
    weights = torch.tensor([0.5, 2.0], dtype=torch.float64)

    def explicit(p, t):
        probs = torch.softmax(p, dim=1)[:, 1:] * mask[:, None]
        onehot = F.one_hot(t, 3).movedim(-1, 1)[:, 1:].double() * mask[:, None]
        per_volume = []
        for b in range(2):
            losses = torch.stack([reference_volume_loss(probs[b, c], onehot[b, c].numpy())
                                  for c in range(2)])
            per_volume.append((losses * weights).mean())
        return torch.stack(per_volume).mean()

    crit = SATLoss(softmax=True, num_classes=3, include_background=False,
                   channel_weights=weights)
    _assert_equal_to_reference(lambda p, t: crit(p, t, mask=mask), explicit, logits, labels)
    label_channel = labels[:, None]
    assert float(crit(logits, label_channel, mask=mask[:, None])) == pytest.approx(
        float(crit(logits, labels, mask=mask)), rel=1e-14)


def test_sigmoid_reduction_and_target_cache():
    rng = np.random.default_rng(39)
    shape = (3, 1, 6, 5, 7)
    target = _target(rng, shape)
    logits = torch.as_tensor(rng.standard_normal(shape), dtype=torch.float64)
    per_volume = sat_loss(logits, target, sigmoid=True, reduction="none")
    assert per_volume.shape == (3,)
    expected = [float(reference_loss(torch.sigmoid(logits[b:b + 1]), target[b:b + 1]))
                for b in range(3)]
    np.testing.assert_allclose(per_volume.numpy(), expected, rtol=1e-12)
    assert float(sat_loss(logits, target, sigmoid=True, reduction="sum")) == pytest.approx(
        sum(expected), rel=1e-12)
    crit = SATLoss(sigmoid=True, reduction="none")
    first = crit(logits, target, keys=[0, 1, 2])
    again = crit(logits, target, keys=[0, 1, 2])
    assert len(crit.target_cache) == 3
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(first, per_volume, rtol=1e-13, atol=0)


def test_target_tiebreak_by_prediction_keeps_the_values_of_the_target():
    rng = np.random.default_rng(40)
    target = _target(rng, (2, 1, 6, 7, 6))
    pred = _pred(rng, target, "smooth")
    spatial_off = [float(sat_loss(pred, target, spatial=False, target_tiebreak=tiebreak))
                   for tiebreak in ("index", "prediction")]
    assert spatial_off[0] == pytest.approx(spatial_off[1], rel=1e-13)
    ours = sat_matching(pred, target, target_tiebreak="prediction")
    plain = sat_matching(pred, target)
    for a, b in zip(ours, plain):
        np.testing.assert_array_equal(np.sort(a.target_death - a.target_birth),
                                      np.sort(b.target_death - b.target_birth))


def test_matchings_of_volumes_have_voxel_coordinates():
    rng = np.random.default_rng(41)
    target = _target(rng, (1, 2, 5, 6, 7))
    pred = _pred(rng, target, "random")
    matchings = SATLoss().match(pred, target)
    assert [(m.channel, m.dim) for m in matchings] == [(c, d) for c in range(2)
                                                       for d in range(3)]
    total = 0.0
    for m in matchings:
        assert m.pred_birth_pixel.shape[1:] == (3,) and m.target_birth_pixel.shape[1:] == (3,)
        low, high = m.pred_birth_pixel.min(0), m.pred_birth_pixel.max(0)
        assert (low >= -1).all() and (high <= np.array([5, 6, 7])).all()
        total += m.cost
    assert total / 2 == pytest.approx(float(sat_loss(pred, target)), rel=1e-12)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("pred_shape, target_shape, settings, error, message", [
    ((2, 1, 4, 5, 6), (2, 1, 4, 5, 7), {}, ValueError, r"`target` must have the shape of "
                                                         r"`pred` \(2, 1, 4, 5, 6\)"),
    ((2, 1, 4, 5, 6), (2, 4, 5, 6), {}, ValueError, "`target` must have the shape"),
    ((2, 3, 4, 5, 6), (2, 4, 5, 6), {}, ValueError, "pass num_classes=3"),
    ((2, 1, 4, 5, 6), (2, 1, 4, 5, 6), {"softmax": True}, ValueError,
     "`softmax=True` needs at least 2 channels"),
    ((2, 2, 4, 5, 6), (2, 4, 5, 6), {"num_classes": 3}, ValueError,
     "`pred` must have num_classes=3 channels"),
    ((2, 3, 4, 5, 6), (2, 4, 5, 7), {"num_classes": 3}, ValueError,
     r"label map of shape \(B, D, H, W\) = \(2, 4, 5, 6\)"),
    ((2, 1, 4, 5, 6), (2, 1, 4, 5, 6), {"include_background": False}, ValueError,
     "`include_background=False` needs at least 2 channels"),
    ((2, 1, 1, 4, 5, 6), (2, 1, 1, 4, 5, 6), {}, ValueError,
     r"`pred` must have shape \(B, C, H, W\), \(B, H, W\) or \(B, C, D, H, W\)"),
    ((2, 1, 0, 5, 6), (2, 1, 0, 5, 6), {}, ValueError, "`pred` must not be empty"),
])
def test_bad_volumes_are_refused_clearly(pred_shape, target_shape, settings, error, message):
    pred = torch.full(pred_shape, 0.5, dtype=torch.float64)
    target = torch.zeros(target_shape, dtype=torch.int64)
    with pytest.raises(error, match=message):
        sat_loss(pred, target, **settings)


def test_bad_values_masks_weights_and_dims_on_volumes():
    pred = torch.full((2, 2, 4, 5, 6), 0.5, dtype=torch.float64)
    target = torch.zeros_like(pred)
    with pytest.raises(ValueError, match=r"`pred` must hold probabilities in \[0, 1\]"):
        sat_loss(pred + 1.0, target)
    with pytest.raises(ValueError, match="`target` must be binary"):
        sat_loss(pred, target + 0.5)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 4, 5, 6\), "
                                         r"\(2, 1, 4, 5, 6\) or \(2, 2, 4, 5, 6\)"):
        sat_loss(pred, target, mask=torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match="one weight per channel"):
        sat_loss(pred, target, channel_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"`dims` must be a non-empty subset of \(0, 1\) for "
                                         r"images"):
        sat_loss(pred[:, :, 0], target[:, :, 0], dims=(0, 2))
    with pytest.raises(ValueError, match=r"`dims` must be a non-empty subset of \(0, 1\) for "
                                         r"images"):
        SATLoss(dims=(2,))(pred[:, 0], target[:, 0])
    with pytest.raises(ValueError, match=r"non-empty subset of \(0, 1, 2\)"):
        SATLoss(dims=(3,))


def test_default_dims_follow_the_rank():
    rng = np.random.default_rng(42)
    target = _target(rng, (1, 1, 5, 6, 7))
    pred = _pred(rng, target, "random")
    assert [m.dim for m in sat_matching(pred, target)] == [0, 1, 2]
    assert [m.dim for m in sat_matching(pred[:, :, 0], target[:, :, 0])] == [0, 1]
    assert "dims=None" in repr(SATLoss())


# ----------------------------------------------------------------------------- many target points

def test_many_target_points_use_the_certified_lists_with_voxel_coordinates():
    """More than FULL_LISTS_UP_TO target points: short lists, the same-voxel partners and the
    pricing rounds run on (z, y, x) birth voxels; still the reference's optimum."""
    from satloss_gpu.matching._reduced import FULL_LISTS_UP_TO

    rng = np.random.default_rng(43)
    target = torch.zeros(1, 1, 13, 15, 15, dtype=torch.float64)
    target[..., 1::2, 1::2, 1::2] = 1.0  # isolated voxels off the faces: a component each
    pred = (0.15 + 0.7 * target + 0.1 * torch.as_tensor(rng.random(target.shape))).clamp(0, 1)
    (matching,) = sat_matching(pred, target, dims=(0,))
    assert len(matching.target_birth) > FULL_LISTS_UP_TO
    _assert_equal_to_reference(lambda p, t: sat_loss(p, t, dims=(0,)),
                               lambda p, t: reference_loss(p, t, dims=(0,)), pred, target)


def test_same_voxel_partner_against_a_plain_search():
    from satloss_gpu.matching import _reduced as reduced

    rng = np.random.default_rng(44)
    shape = (3, 4, 5)
    pred_pixel = rng.integers(-1, 6, (2, 9, 3))
    target_pixel = rng.integers(-1, 6, (2, 6, 3))
    n, m = np.array([9, 5]), np.array([6, 4])
    partner = reduced._same_pixel_partner(pred_pixel, target_pixel, n, m, shape)
    for q in range(2):
        for j in range(6):
            expected = -1
            voxel = target_pixel[q, j]
            inside = all(0 <= voxel[a] < shape[a] for a in range(3))
            if j < m[q] and inside:
                hits = [i for i in range(n[q]) if (pred_pixel[q, i] == voxel).all()]
                expected = hits[-1] if hits else -1
            assert partner[q, j] == expected


def test_memory_estimate_of_volumes_raises_before_allocating(monkeypatch):
    from satloss_gpu import _validation

    big = torch.empty((2, 1, 256, 256, 256), dtype=torch.float32)
    monkeypatch.setattr(_validation, "available_memory", lambda: 8 * 2**30)
    _validation.check_memory_for_images(big)  # fits: about 6.5 GiB
    monkeypatch.setattr(_validation, "available_memory", lambda: 4 * 2**30)
    with pytest.raises(MemoryError, match=r"\(2, 1, 256, 256, 256\)"):
        _validation.check_memory_for_images(big)
