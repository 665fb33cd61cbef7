"""``target_tiebreak``: the target's critical pixels chosen by the prediction among its ties."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from satloss_gpu import SATLoss, TopoLoss
from satloss_gpu.functional import sat_loss, sat_matching
from satloss_gpu.losses import LossOptions


def _random_pair(rng: np.random.Generator, shape: tuple, density: float):
    target = torch.as_tensor((rng.random(shape) < density).astype(np.float64))
    pred = torch.as_tensor(rng.random(shape))
    return pred, target


def _points(matchings, side: str) -> list:
    """Per problem, the sorted (birth, death) points of one side."""
    out = []
    for m in matchings:
        birth, death = getattr(m, f"{side}_birth"), getattr(m, f"{side}_death")
        out.append(sorted(zip(birth.tolist(), death.tolist())))
    return out


def _border_gap(size: int = 24):
    """A vertical line from border to border, 2 pixels wide, and a prediction with a gap."""
    target = torch.zeros(1, 1, size, size, dtype=torch.float64)
    target[..., :, 11:13] = 1.0
    rng = np.random.default_rng(3)
    pred = 0.1 + 0.8 * target + torch.as_tensor(rng.uniform(-0.05, 0.05, target.shape))
    pred[..., 9:12, 11:13] = 0.3
    return pred.clamp(0.01, 0.99), target


@pytest.mark.parametrize("shape", [(2, 1, 12, 12), (1, 2, 9, 14), (1, 1, 1, 17), (2, 1, 16, 1)])
@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.6, 1.0])
def test_target_diagram_values_do_not_depend_on_the_tiebreak(shape, pad, construction, density):
    rng = np.random.default_rng(hash((shape, pad, construction, density)) % 2 ** 32)
    pred, target = _random_pair(rng, shape, density)
    settings = dict(pad=pad, construction=construction, backend="cpu", solver="emd")
    by_index = sat_matching(pred, target, target_tiebreak="index", **settings)
    by_prediction = sat_matching(pred, target, target_tiebreak="prediction", **settings)
    assert _points(by_index, "target") == _points(by_prediction, "target")
    assert _points(by_index, "pred") == _points(by_prediction, "pred")
    assert sum(len(p) for p in _points(by_index, "target")) == sum(
        len(m.target_birth) for m in by_prediction)


def test_target_loop_is_born_where_the_prediction_closes_it():
    pred, target = _border_gap()
    (problem,) = sat_matching(pred, target, dims=(1,), pad=True, target_tiebreak="prediction",
                              backend="cpu", solver="emd")
    # the prediction's gap feature: the loop through the frame closed at the gap
    gap_points = [i for i, (r, c) in enumerate(problem.pred_birth_pixel)
                  if 9 <= r <= 11 and 11 <= c <= 12]
    assert len(gap_points) == 1
    gap_pixel = tuple(problem.pred_birth_pixel[gap_points[0]])
    matched = dict((int(i), int(j)) for i, j in problem.matches)
    assert tuple(problem.target_birth_pixel[matched[gap_points[0]]]) == gap_pixel
    # by index, no target loop is born there: the gap feature is left unmatched
    (by_index,) = sat_matching(pred, target, dims=(1,), pad=True, backend="cpu", solver="emd")
    assert gap_pixel not in {tuple(p) for p in by_index.target_birth_pixel}
    assert gap_points[0] in by_index.pred_to_diagonal


def test_target_component_is_born_at_the_predictions_strongest_pixel():
    pred, target = _border_gap()
    (problem,) = sat_matching(pred, target, dims=(0,), pad=False, target_tiebreak="prediction",
                              backend="cpu", solver="emd")
    on_line = torch.where(target[0, 0] > 0, pred[0, 0], torch.full_like(pred[0, 0], -1.0))
    strongest = divmod(int(on_line.argmax()), on_line.shape[1])
    assert [tuple(p) for p in problem.target_birth_pixel] == [strongest]


def test_prediction_tiebreak_turns_the_gradient_at_a_border_gap():
    """With the frame, the index tie-break pushes the gap open; by prediction, closed."""
    pred, target = _border_gap()
    gradient_at_gap = {}
    for tiebreak in ("index", "prediction"):
        p = pred.clone().requires_grad_(True)
        sat_loss(p, target, pad=True, backend="cpu", target_tiebreak=tiebreak).backward()
        gradient_at_gap[tiebreak] = float(p.grad[..., 9:12, 11:13].sum())
    # descent moves p against the gradient: a negative gradient raises the gap's probability
    assert gradient_at_gap["index"] > 0
    assert gradient_at_gap["prediction"] < 0


def test_backends_agree_with_prediction_tiebreak():
    rng = np.random.default_rng(5)
    pred, target = _random_pair(rng, (2, 1, 13, 11), 0.4)
    values = {}
    for backend in ("cpu", "gudhi"):
        p = pred.clone().requires_grad_(True)
        loss = sat_loss(p, target, backend=backend, solver="emd", target_tiebreak="prediction")
        loss.backward()
        values[backend] = (loss.item(), p.grad.clone())
    assert values["cpu"][0] == pytest.approx(values["gudhi"][0], rel=1e-12)
    torch.testing.assert_close(values["cpu"][1], values["gudhi"][1])


def test_prediction_tiebreak_bypasses_the_target_cache():
    rng = np.random.default_rng(7)
    pred, target = _random_pair(rng, (2, 1, 10, 10), 0.5)
    cache: dict = {}
    cached = sat_loss(pred, target, backend="cpu", target_tiebreak="prediction",
                      keys=["a", "b"], cache=cache)
    assert cache == {}
    assert cached.item() == sat_loss(pred, target, backend="cpu",
                                     target_tiebreak="prediction").item()


def test_modules_take_the_option_and_reject_bad_values():
    pred, target = _border_gap()
    assert SATLoss(target_tiebreak="prediction").options.target_tiebreak == "prediction"
    assert TopoLoss(target_tiebreak="prediction")(pred, target).item() == pytest.approx(
        TopoLoss()(pred, target).item())
    with pytest.raises(ValueError, match="target_tiebreak"):
        LossOptions(target_tiebreak="distance")
    with pytest.raises(ValueError, match="target_tiebreak"):
        sat_loss(pred, target, target_tiebreak="nearest")
