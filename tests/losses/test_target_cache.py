"""The cache of target diagrams: served only for the target it was computed from, bounded.

Every cached result is compared with the loss computed without the cache (same inputs), and
the persistence calls are counted to show that hits skip the target's computation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from satloss_gpu.losses import SATLoss, TargetCache, functional, sat_loss
from satloss_gpu.losses._cache import fingerprints


def _batch(seed: int, shape=(2, 1, 12, 12), density=0.5):
    rng = np.random.default_rng(seed)
    target = torch.as_tensor(rng.random(shape) < density, dtype=torch.float64)
    pred = torch.as_tensor(rng.uniform(0.01, 0.99, shape), dtype=torch.float64)
    return pred, target


@pytest.fixture
def persistence_calls(monkeypatch):
    """Images passed to the persistence of each call of ``_diagram_table``."""
    calls: list[int] = []
    original = functional._diagram_table

    def counting(images, *args, **kwargs):
        calls.append(int(images.shape[0]))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(functional, "_diagram_table", counting)
    return calls


def test_duplicate_keys_each_get_their_own_target():
    pred, target = _batch(0)
    target[1] = torch.as_tensor(np.random.default_rng(1).random((1, 12, 12)) < 0.3)
    plain = SATLoss(reduction="none")(pred, target)
    cached = SATLoss(reduction="none")(pred, target, keys=["x", "x"])
    torch.testing.assert_close(cached, plain, rtol=1e-12, atol=0)
    assert float(plain[0]) != pytest.approx(float(plain[1]))


def test_hits_skip_the_targets_persistence(persistence_calls):
    pred, target = _batch(2, (3, 2, 10, 10))
    crit = SATLoss(reduction="none")
    first = crit(pred, target, keys=[0, 1, 2])
    assert persistence_calls == [6, 6]           # the targets' 6 images, then the prediction's
    persistence_calls.clear()
    again = crit(pred, target, keys=[0, 1, 2])
    assert persistence_calls == [6]              # the prediction only
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_a_changed_target_or_mask_is_computed_again(persistence_calls):
    pred, target = _batch(3)
    crit = SATLoss(reduction="none")
    crit(pred, target, keys=["a", "b"])
    crop = target.clone()
    crop[0, 0, :4] = 1 - crop[0, 0, :4]          # sample "a" now shows another target
    persistence_calls.clear()
    torch.testing.assert_close(crit(pred, crop, keys=["a", "b"]), crit(pred, crop),
                               rtol=1e-12, atol=0)
    assert persistence_calls[0] == 1             # only "a" was computed again
    mask = torch.ones(2, 12, 12, dtype=torch.bool)
    mask[:, :, 6:] = False
    torch.testing.assert_close(crit(pred, crop, keys=["a", "b"], mask=mask),
                               crit(pred, crop, mask=mask), rtol=1e-12, atol=0)
    assert len(crit.target_cache) == 2           # each key's entry was replaced, not added


def test_the_cache_forgets_the_least_recently_used_entry():
    pred, target = _batch(4, (1, 1, 10, 10))
    crit = SATLoss(cache_max_entries=2)
    for key in ("a", "b", "a", "c"):             # "b" is the least recently used at "c"
        crit(pred, target, keys=[key])
    assert len(crit.target_cache) == 2
    assert {key for key, _ in crit.target_cache._entries} == {"a", "c"}
    cache = TargetCache(max_entries=1)
    sat_loss(pred, target, keys=["a"], cache=cache)
    sat_loss(pred, target, keys=["b"], cache=cache)
    assert len(cache) == 1 and repr(cache) == "TargetCache(entries=1, max_entries=1)"


def test_a_plain_dict_still_serves_as_the_cache():
    pred, target = _batch(5)
    store: dict = {}
    value = sat_loss(pred, target, keys=["a", "b"], cache=store)
    assert len(store) == 2
    torch.testing.assert_close(sat_loss(pred, target, keys=["a", "b"], cache=store), value,
                               rtol=0, atol=0)


def test_keys_from_a_data_loader():
    pred, target = _batch(6, (3, 1, 10, 10))
    crit = SATLoss(reduction="none")
    plain = crit(pred, target)
    indices = next(iter(torch.utils.data.DataLoader(range(3), batch_size=3)))
    assert indices.dtype == torch.int64
    torch.testing.assert_close(crit(pred, target, keys=indices), plain, rtol=1e-12, atol=0)
    assert {key for key, _ in crit.target_cache._entries} == {0, 1, 2}
    torch.testing.assert_close(crit(pred, target, keys=[0, 1, np.int64(2)]), plain,
                               rtol=1e-12, atol=0)
    assert len(crit.target_cache) == 3           # the same three ids


@pytest.mark.parametrize("keys, error, message", [
    (torch.tensor([0.0, 1.0, 2.0]), TypeError, "`keys` given as an array must hold integer"),
    (torch.tensor([True, False, True]), TypeError, "`keys` given as an array must hold integer"),
    (torch.tensor([0, 1]), ValueError, r"`keys` must hold one id per image, shape \(3,\)"),
    (torch.tensor([[0, 1, 2]]), ValueError, r"shape \(3,\); got shape \(1, 3\)"),
    ([0, 1.0, 2], TypeError, "`keys` must hold sample ids that are not floats or bools"),
    ([0, True, 2], TypeError, "not floats or bools"),
    ([[0], [1], [2]], TypeError, "`keys` must hold hashable sample ids"),
    ("abc", TypeError, "`keys` must be a sequence of sample ids"),
    ([0, 1], ValueError, r"`keys` must hold one id per image \(3\); got 2"),
])
def test_bad_keys_are_refused(keys, error, message):
    pred, target = _batch(7, (3, 1, 8, 8))
    with pytest.raises(error, match=message):
        SATLoss()(pred, target, keys=keys)


def test_bad_cache_settings_are_refused():
    pred, target = _batch(8)
    with pytest.raises(ValueError, match="`cache_max_entries` must be an int >= 1; got 0"):
        SATLoss(cache_max_entries=0)
    with pytest.raises(TypeError, match="`max_entries` must be an int >= 1; got float"):
        TargetCache(max_entries=2.5)
    with pytest.raises(TypeError, match="`max_entries` must be an int >= 1; got bool"):
        TargetCache(max_entries=True)
    with pytest.raises(TypeError, match="`cache` must be a satloss_gpu.losses.TargetCache or a "
                                        "dict; got list"):
        sat_loss(pred, target, keys=["a", "b"], cache=[])


def test_fingerprints_tell_targets_apart():
    rng = np.random.default_rng(9)
    base = torch.as_tensor(rng.random((64, 40, 40)) < 0.5, dtype=torch.float32)
    flipped = base.clone().reshape(64, -1)
    flipped[torch.arange(64), torch.as_tensor(rng.integers(0, 1600, 64))] += 1
    flipped = (flipped % 2).reshape(base.shape)  # each sample differs from base at one pixel
    ours, theirs = fingerprints(base), fingerprints(flipped)
    assert all(a != b for a, b in zip(ours, theirs))
    assert fingerprints(base.double()) == ours   # exact sums: any dtype, any order
    assert fingerprints(base.flip(0)) == ours[::-1]
