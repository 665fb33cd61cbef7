"""The cache of target diagrams: per sample id, checked against the target, bounded (LRU).

A training loop shows the loss the same targets every epoch; their diagrams can be kept
instead of computed again. An entry is found by the sample id (``keys=``) and the settings
that shape a diagram, and it is served only if the target passed now is the target it was
computed from: each entry carries a fingerprint of that target (masked, padded and
inverted, as the persistence saw it), compared at every lookup. A changed target (a random
crop, another mask) is computed again and replaces the entry; two images of one batch under
the same id each get their own target's diagram. The cache keeps at most ``max_entries``
entries and forgets the least recently used first.

The fingerprint of a sample's target ``y`` (n values, each 0 or 1) is ``y @ R``: two
columns of random integers below ``2 ** bits``, ``bits = 53 - n.bit_length()``, so every sum
is an exact integer in float64 (the same result in any summation order, on any device).
Two different targets give the same column with probability at most ``2 ** -bits`` (they
differ at some pixel, whose random weight is then determined by the others): below
``2 ** -52`` for both columns for any sample under 134 million pixels. The random columns
(16 bytes per pixel of a sample) are kept for the last 4 sample sizes and devices.
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Hashable, Optional

import torch

__all__ = ["TargetCache", "DEFAULT_MAX_ENTRIES", "fingerprints", "as_target_cache",
           "cached_per_sample", "check_max_entries"]

#: Entries a cache keeps by default: one per training sample of most segmentation datasets
#: (an entry holds a few small tensors: the target's pairs, tens for a binary mask).
DEFAULT_MAX_ENTRIES = 10_000

_FINGERPRINT_COLUMNS = 2
_FINGERPRINT_SEED = 0x5A7


@functools.lru_cache(maxsize=4)
def _projection(n_values: int, device: str) -> torch.Tensor:
    """(n, 2) float64 random integers below ``2 ** (53 - n.bit_length())``, fixed per n."""
    bits = 53 - n_values.bit_length()
    generator = torch.Generator().manual_seed(_FINGERPRINT_SEED)
    weights = torch.randint(0, 2 ** bits, (n_values, _FINGERPRINT_COLUMNS), generator=generator)
    return weights.to(device=device, dtype=torch.float64)


def fingerprints(targets: torch.Tensor) -> list[tuple[float, ...]]:
    """One fingerprint per sample of a (B, ...) batch of 0/1 targets (one host transfer).

    Parameters
    ----------
    targets : torch.Tensor, shape (B, ...), values 0 and 1
        Any float dtype, any device.

    Returns
    -------
    list of tuple of float
        B fingerprints, equal for equal targets (see the module notes for collisions).
    """
    flat = targets.detach().reshape(int(targets.shape[0]), -1).to(torch.float64)
    sums = flat @ _projection(int(flat.shape[1]), str(flat.device))
    return [tuple(row) for row in sums.cpu().tolist()]


class TargetCache:
    """Target diagrams per sample id, served only for the target they were computed from.

    Parameters
    ----------
    max_entries : int, default :data:`DEFAULT_MAX_ENTRIES` (10000)
        Most entries kept (one per sample id and loss settings); the least recently used
        entry is forgotten first. Set it to at least the number of samples of an epoch:
        an epoch that visits more ids than it holds, in the same order every time, finds
        none of them cached.

    Notes
    -----
    An entry is keyed by the sample id and the settings that shape the target's diagram
    (construction, frame, dimensions, image size, dtype, device), and carries a
    fingerprint of the target it was computed from; a lookup with another target (another
    crop, another mask) misses, and the new diagram replaces the entry.

    Examples
    --------
    >>> from satloss_gpu.losses import TargetCache
    >>> cache = TargetCache(max_entries=2)
    >>> len(cache), cache.max_entries
    (0, 2)
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max_entries = check_max_entries(max_entries)
        self._entries: dict = {}

    @classmethod
    def _over(cls, entries: dict) -> "TargetCache":
        """A cache of the default bound storing its entries in the plain dict ``entries``."""
        cache = cls()
        cache._entries = entries
        return cache

    @property
    def max_entries(self) -> int:
        """The most entries kept."""
        return self._max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def get(self, key: Hashable, fingerprint: tuple) -> Any:
        """The value stored under ``key`` for the target of ``fingerprint``, else None."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._entries[key] = entry  # most recently used: last in insertion order
        stored_fingerprint, value = entry
        return value if stored_fingerprint == fingerprint else None

    def put(self, key: Hashable, fingerprint: tuple, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any entry), evicting the oldest beyond the bound."""
        self._entries.pop(key, None)
        self._entries[key] = (fingerprint, value)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def __repr__(self) -> str:
        return f"TargetCache(entries={len(self)}, max_entries={self._max_entries})"


def check_max_entries(max_entries: Any, name: str = "max_entries") -> int:
    """``max_entries`` as an int >= 1, else ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(max_entries, bool):
        raise TypeError(f"`{name}` must be an int >= 1; got bool {max_entries!r}")
    try:
        value = operator.index(max_entries)
    except TypeError:
        raise TypeError(f"`{name}` must be an int >= 1; got {type(max_entries).__name__} "
                        f"{max_entries!r}") from None
    if value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value}")
    return value


def as_target_cache(cache: Any) -> Optional[TargetCache]:
    """``cache`` as a :class:`TargetCache`: itself, or a plain dict used as its storage."""
    if cache is None or isinstance(cache, TargetCache):
        return cache
    if isinstance(cache, dict):
        return TargetCache._over(cache)
    raise TypeError(f"`cache` must be a satloss_gpu.losses.TargetCache or a dict; got "
                    f"{type(cache).__name__}")


def cached_per_sample(cache: TargetCache, keys: list, targets: torch.Tensor,
                      compute: Callable[[list[int]], list]) -> list:
    """The value of each of the B samples of ``targets``, from ``cache`` where it is known.

    ``compute(indices)`` returns the values of the samples at ``indices`` (one batched call
    for every miss); each is stored under its key. Samples sharing a key but not a target
    each get their own value.
    """
    prints = fingerprints(targets)
    values = [cache.get(key, prints[b]) for b, key in enumerate(keys)]
    missing = [b for b, value in enumerate(values) if value is None]
    if missing:
        for b, value in zip(missing, compute(missing)):
            values[b] = value
            cache.put(keys[b], prints[b], value)
    return values
