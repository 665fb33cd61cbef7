"""Metrics against hand-made masks with known values, and Betti numbers against labelling."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.measure import label

from satloss_gpu import metrics as M
from satloss_gpu.losses.cldice import SoftClDiceLoss, soft_cldice_loss, soft_dice_loss, soft_skeleton


def _mask(rows):
    return np.array([[c == "#" for c in r] for r in rows])


RING = _mask(["#####",
              "#...#",
              "#...#",
              "#####"])
FIGURE_EIGHT = _mask(["#######",
                      "#..#..#",
                      "#######"])
DIAGONAL = _mask(["#..",
                  ".#.",
                  "..#"])
# The hole touches the outside only diagonally: background is 4-connected, so it is a hole.
DIAGONAL_HOLE = _mask(["###.",
                       "#.#.",
                       "##..",
                       "...."])
LINE_ACROSS = _mask(["....",
                     "####",
                     "...."])


@pytest.mark.parametrize("mask, expected, expected_padded", [
    (np.zeros((4, 4), bool), (0, 0), (1, 1)),
    (_mask(["....", ".#..", "...."]), (1, 0), (2, 1)),
    (RING, (1, 1), (1, 1)),
    (FIGURE_EIGHT, (1, 2), (1, 2)),
    (DIAGONAL, (1, 0), (1, 2)),
    (DIAGONAL_HOLE, (1, 1), (1, 2)),
    (LINE_ACROSS, (1, 0), (1, 2)),
    (np.hstack([RING, np.zeros((4, 1), bool), RING]), (2, 2), (1, 3)),
])
def test_betti_numbers_of_hand_made_masks(mask, expected, expected_padded):
    assert tuple(M.betti_numbers(mask)) == expected
    assert tuple(M.betti_numbers(mask, pad=True)) == expected_padded


def _betti_by_labelling(mask):
    """beta0: 8-connected foreground components; beta1: enclosed 4-connected background ones."""
    b0 = label(mask, connectivity=2).max()
    background = label(~mask, connectivity=1)
    border = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    b1 = len(set(np.unique(background)) - set(border) - {0})
    return b0, b1


@pytest.mark.parametrize("seed", range(6))
def test_betti_numbers_match_connected_component_labelling(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 17, 23)) < rng.uniform(0.3, 0.7)
    masks[1] = ndi.binary_opening(masks[1])
    got = M.betti_numbers(masks)
    expected = np.array([_betti_by_labelling(m) for m in masks])
    np.testing.assert_array_equal(got, expected)
    # Probabilities are thresholded at 0.5 first.
    np.testing.assert_array_equal(M.betti_numbers(masks * 0.9 + 0.05), expected)


def test_betti_errors_and_summary_row():
    target = np.hstack([RING, np.zeros((4, 1), bool), RING])
    broken = target.copy()
    broken[0, 2] = False  # opens the first ring: one hole fewer, still one component
    assert M.betti_errors(broken, target) == (0, 1)
    row = M.segmentation_metrics(broken, target)
    assert set(row) == set(M.METRIC_NAMES)
    assert row["betti0_error"] == 0 and row["betti1_error"] == 1
    assert row["precision"] == 1.0
    assert row["recall"] == pytest.approx(27 / 28)


def test_pixel_metrics_by_hand():
    pred = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    target = np.array([[1, 0, 1, 0]], dtype=bool)
    assert M.accuracy(pred, target) == 0.5
    assert M.precision(pred, target) == 0.5
    assert M.recall(pred, target) == 0.5
    assert M.dice(pred, target) == 0.5
    assert M.f1_score(pred, target) == 0.5
    empty = np.zeros((3, 3), bool)
    assert M.dice(empty, empty) == 1.0 and M.precision(empty, empty) == 1.0
    assert M.dice(empty, ~empty) == 0.0 and M.recall(empty, ~empty) == 0.0


def test_cldice_by_hand():
    target = np.zeros((5, 11), bool)
    target[2, 1:8] = True                     # a 1-pixel line of 7 pixels
    pred = np.zeros_like(target)
    pred[2, 1:5] = True                       # its first 4 pixels
    # topology precision 1 (prediction skeleton inside the target), sensitivity 4/7
    assert M.cldice(pred, target) == pytest.approx(2 * (4 / 7) / (1 + 4 / 7))
    assert M.cldice(target, target) == 1.0
    thick = np.zeros((9, 15), bool)
    thick[3:6, 2:13] = True
    assert M.cldice(thick, thick) == 1.0
    assert M.cldice(np.zeros_like(thick), thick) == 0.0


def test_rand_error_and_variation_of_information():
    target = np.hstack([RING, np.zeros((4, 1), bool), RING])
    assert M.adapted_rand_error(target, target) == 0.0
    assert M.variation_of_information(target, target) == pytest.approx(0.0, abs=1e-12)
    merged = target.copy()
    merged[1, 5] = True                       # joins the two rings into one component
    assert M.adapted_rand_error(merged, target) > 0.1
    assert M.variation_of_information(merged, target) > 0.1
    empty = np.zeros_like(target)
    assert M.adapted_rand_error(empty, empty) == 0.0
    assert M.adapted_rand_error(target, empty) == 1.0


def test_summarize_ignores_nan_and_counts_images():
    rows = [M.segmentation_metrics(RING, RING, topology=False), M.segmentation_metrics(RING, RING)]
    assert np.isnan(rows[0]["voi"])
    summary = M.summarize(rows)
    assert summary["n_images"] == 2.0
    assert summary["dice"] == 1.0 and summary["betti1_error"] == 0.0


def test_metric_errors_name_the_argument():
    with pytest.raises(ValueError, match="`pred` and `target` must have the same shape"):
        M.dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`target` must be binary"):
        M.dice(np.zeros((3, 3)), np.full((3, 3), 7))
    with pytest.raises(ValueError, match=r"`pred` must have shape \(H, W\)"):
        M.accuracy(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="`masks` must have shape"):
        M.betti_numbers(np.zeros(5))


ALL_METRICS = [M.accuracy, M.precision, M.recall, M.f1_score, M.dice, M.cldice, M.betti_errors,
               M.signed_betti_differences, M.betti_matching_error, M.adapted_rand_error,
               M.variation_of_information, M.segmentation_metrics]


@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad, found", [(np.nan, "1 NaN and 0 inf"), (np.inf, "0 NaN and 1 inf")])
def test_every_metric_refuses_nan_and_inf(metric, bad, found):
    pred = np.full((4, 4), 0.9)
    pred[1, 2] = bad
    target = np.zeros((4, 4))
    with pytest.raises(ValueError, match=f"`pred` must be finite; found {found} values"):
        metric(pred, target)
    with pytest.raises(ValueError, match=f"`target` must be finite; found {found} values"):
        metric(target, pred)


def test_a_nan_prediction_does_not_score_as_empty():
    """dice used to return 0.0 (NaN > 0.5 is False): a silent score for a broken model."""
    with pytest.raises(ValueError, match="`pred` must be finite"):
        M.dice(np.full((3, 3), np.nan), np.ones((3, 3)))
    with pytest.raises(ValueError, match="`masks` must be finite"):
        M.betti_numbers(np.full((2, 3, 3), np.nan))


@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda f: f.__name__)
def test_every_metric_refuses_bad_masks(metric):
    target = np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"`pred` must hold probabilities in \[0, 1\] when it "
                                         r"holds floats; found values in \[-3.0, 2.5\]"):
        metric(np.array([[-3.0, 2.5], [0.0, 0.0]]), target[:2, :2])
    with pytest.raises(ValueError, match=r"`target` must be binary .*found other values \[0.3\]"):
        metric(target, np.full((4, 4), 0.3))
    with pytest.raises(ValueError, match=r"`pred` must not be empty; got shape \(0, 4\)"):
        metric(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="`pred` must be on the CPU or a CUDA device; got a "
                                         "tensor on device 'meta'"):
        metric(torch.zeros(4, 4, device="meta"), target)
    for threshold, error in ((float("nan"), ValueError), (1.5, ValueError), (True, TypeError),
                             ("0.5", TypeError)):
        with pytest.raises(error, match="`threshold` must be a number in \\[0, 1\\]"):
            metric(target, target, threshold=threshold)


def test_metric_flags_must_be_bools():
    mask = np.zeros((4, 4), bool)
    with pytest.raises(TypeError, match="`pad` must be a bool; got int"):
        M.betti_numbers(mask, pad=1)
    with pytest.raises(TypeError, match="`topology` must be a bool; got str"):
        M.segmentation_metrics(mask, mask, topology="no")
    with pytest.raises(TypeError, match="`per_dimension` must be a bool; got int"):
        M.betti_matching_error(mask, mask, per_dimension=1)


def test_float_targets_of_zeros_and_ones_and_half_precision_are_accepted():
    pred = torch.tensor([[0.9, 0.2], [0.7, 0.1]], dtype=torch.float16)
    assert M.dice(pred, np.array([[1.0, 0.0], [1.0, 0.0]])) == 1.0
    assert M.dice(pred.numpy(), np.array([[1, 0], [0, 0]], np.uint8)) == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- soft (clDice) losses
def test_soft_cldice_loss_is_zero_for_a_perfect_prediction_and_differentiable():
    target = torch.zeros(2, 1, 24, 24)
    target[0, 0, 10:13, 2:22] = 1
    target[1, 0, 2:22, 5:8] = 1
    assert float(soft_cldice_loss(target, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    pred = torch.full_like(target, 0.3, requires_grad=True)
    loss = SoftClDiceLoss()(pred, target)
    loss.backward()
    assert 0.0 < float(loss.detach()) <= 1.0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert soft_cldice_loss(pred, target, reduction="none").shape == (2,)


def test_soft_skeleton_of_a_bar_is_its_centre_line():
    bar = torch.zeros(1, 1, 11, 21)
    bar[..., 3:8, 2:19] = 1
    skel = soft_skeleton(bar, iterations=5)[0, 0]
    assert float(skel[5, 5:16].min()) == 1.0          # the centre row is kept
    assert float(skel[3, 5:16].max()) == 0.0          # the border rows are not


def test_soft_dice_loss_by_hand():
    pred = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])
    assert float(soft_dice_loss(pred, target, smooth=0.0)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        soft_dice_loss(pred, target, reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        soft_dice_loss(pred, target[..., :3])


# --------------------------------------------------------------------------- Betti matching
from satloss_gpu.metrics import (  # noqa: E402
    betti_matching_error, betti_numbers, segmentation_metrics, signed_betti_differences)


def _line():
    mask = np.zeros((9, 9), bool)
    mask[4, 1:8] = True
    return mask


def test_signed_betti_differences_say_missing_or_extra():
    target = _line()
    split = target.copy()
    split[4, 4] = False
    assert signed_betti_differences(split, target) == (1, 0)
    assert signed_betti_differences(target, split) == (-1, 0)
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False
    filled = np.zeros((9, 9), bool)
    filled[2:7, 2:7] = True
    assert signed_betti_differences(filled, ring) == (0, -1)


def test_framed_betti_error_joins_border_touching_components():
    target = np.zeros((9, 9), bool)
    target[4, :] = True  # border to border
    pred = target.copy()
    pred[4, 4] = False  # a gap: two pieces, both touching the border
    row = segmentation_metrics(pred, target)
    assert row["betti0_error"] == 1 and row["betti0_signed"] == 1
    assert row["betti0_error_framed"] == 0  # the frame hides the gap from beta0
    assert row["betti1_error_framed"] == 1  # ... and shows it as a missing hole


@pytest.mark.parametrize("pred, target, expected", [
    # identical masks: nothing unmatched
    (lambda: _line(), lambda: _line(), (0, 0)),
    # a gap: two predicted pieces in one union component, one of them unmatched
    (lambda: _gap(), lambda: _line(), (1, 0)),
    # a component far from the target: it and the missed target both unmatched, where the
    # Betti error counts 0
    (lambda: _dot(), lambda: _line(), (2, 0)),
    # a ring predicted where a ring of the same place is: matched
    (lambda: _ring(1), lambda: _ring(1), (0, 0)),
    # two rings in different places: same Betti numbers, no hole in common
    (lambda: _ring(0), lambda: _ring(10), (2, 2)),
    # a ring filled: one missing hole
    (lambda: _disk(1), lambda: _ring(1), (0, 1)),
])
def test_betti_matching_error_on_hand_made_masks(pred, target, expected):
    assert betti_matching_error(pred(), target(), per_dimension=True) == expected
    assert betti_matching_error(pred(), target()) == float(sum(expected))


def _gap():
    mask = _line()
    mask[4, 4] = False
    return mask


def _dot():
    mask = np.zeros((9, 9), bool)
    mask[1, 1] = True
    return mask


def _ring(offset):
    mask = np.zeros((20, 20), bool)
    mask[1 + offset:6 + offset, 1 + offset:6 + offset] = True
    mask[2 + offset:5 + offset, 2 + offset:5 + offset] = False
    return mask


def _disk(offset):
    mask = np.zeros((20, 20), bool)
    mask[1 + offset:6 + offset, 1 + offset:6 + offset] = True
    return mask


def test_betti_matching_error_counts_agree_with_the_persistence_betti_numbers():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = rng.random((24, 24)) < 0.55
        b0, b1 = betti_numbers(mask)
        # against an empty target nothing is matched: the error is every feature of the mask
        assert betti_matching_error(mask, np.zeros_like(mask), per_dimension=True) == (b0, b1)
        assert betti_matching_error(mask, mask) == 0.0


@pytest.mark.parametrize("call, error, match", [
    (lambda p, t: soft_dice_loss(p * float("nan"), t), ValueError, "`pred` must be finite"),
    (lambda p, t: soft_cldice_loss(p + 1.5, t), ValueError,
     r"`pred` must hold probabilities in \[0, 1\].*apply torch.sigmoid first"),
    (lambda p, t: soft_cldice_loss(p, t * 0.5), ValueError, "`target` must be binary"),
    (lambda p, t: soft_cldice_loss(p, t, iterations=2.7), TypeError,
     "`iterations` must be an int; got float 2.7"),
    (lambda p, t: soft_cldice_loss(p, t, iterations=-1), ValueError,
     "`iterations` must be an int >= 0; got -1"),
    (lambda p, t: soft_dice_loss(p, t, smooth="1"), TypeError, "`smooth` must be a number"),
    (lambda p, t: soft_dice_loss(p, t, smooth=float("nan")), ValueError,
     "`smooth` must be finite and >= 0"),
    (lambda p, t: SoftClDiceLoss(iterations=True), TypeError, "`iterations` must be an int"),
])
def test_soft_losses_refuse_bad_input(call, error, match):
    """NaN predictions used to give a NaN loss, and 2.7 iterations silently became 2."""
    target = torch.zeros(2, 1, 8, 8)
    target[..., 4, :] = 1
    with pytest.raises(error, match=match):
        call(torch.full_like(target, 0.5), target)


def test_argument_errors_describe_arrays_on_one_line():
    """An array passed where a number belongs was printed element by element, over lines."""
    from satloss_gpu.losses import SATLoss

    with pytest.raises(TypeError) as exc:
        M.binarize(np.ones((8, 8)), np.ones((8, 8)))
    assert str(exc.value) == "`threshold` must be a number in [0, 1]; got ndarray of shape (8, 8)"
    with pytest.raises(TypeError) as exc:
        SATLoss(dims=np.zeros((3, 3)))
    assert "\n" not in str(exc.value) and "ndarray of shape (3, 3)" in str(exc.value)


@pytest.mark.parametrize("rows,match", [
    ({"dice": 1.0}, r"`rows` must be an iterable of dicts .* got dict"),
    ([3], r"`rows\[0\]` must be a dict of metric values; got int"),
    ([{"dice": 0.5}, {"dice": "0.7"}], r"`rows\[1\]\['dice'\]` must be a real number; got str"),
    ([{"dice": None}], r"`rows\[0\]\['dice'\]` must be a real number; got NoneType"),
])
def test_summarize_refuses_rows_that_are_not_metric_dicts(rows, match):
    with pytest.raises(TypeError, match=match):
        M.summarize(rows, ["dice"])


def test_summarize_ignores_nan_and_other_keys():
    rows = [{"name": "a", "dice": 0.5}, {"name": "b", "dice": float("nan")}, {"name": "c"}]
    assert M.summarize(rows, ["dice"]) == {"dice": 0.5, "n_images": 3.0}
