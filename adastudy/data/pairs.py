"""Pair and identification builders shared by every dataset.

All of them take the identity label of each sample of a pool (a numpy int array, any
order) and a seeded `numpy.random.Generator`, and return sample indices into the pool.
Pairs are unordered: (a, b) and (b, a) are the same pair, and a set never holds both.
Nothing here is O(M^2) in the pool size M: pairs are numbered and drawn without
replacement, never enumerated or rejected (memory O(M + count); numpy's draw without
replacement takes O(available) only when count > available / 50).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from adastudy.data.base import DataError, IdentificationSet, PairSet

__all__ = [
    "FOLDS",
    "IMPOSTOR_GENUINE_CAP",
    "IMPOSTOR_PAIRS_CAP",
    "count_different_pairs",
    "count_same_pairs",
    "different_pairs",
    "identification_set",
    "identification_split",
    "impostor_pairs",
    "pair_set",
    "same_pairs",
    "verification_pairs",
]

#: LFW-style verification sets have 10 consecutive folds.
FOLDS = 10
#: The impostor set keeps at most this many genuine pairs of its pool ...
IMPOSTOR_GENUINE_CAP = 50_000
#: ... and at most this many impostor pairs (FAR down to ~1e-4 is then measurable).
IMPOSTOR_PAIRS_CAP = 100_000

IntArray = NDArray[np.int64]


def _groups(labels: NDArray) -> tuple[IntArray, IntArray, IntArray]:
    """Sample indices sorted by label (stable), and each label's start and count in it."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable").astype(np.int64)
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    return order, starts.astype(np.int64), counts.astype(np.int64)


def count_same_pairs(labels: NDArray) -> int:
    """Number of unordered pairs of distinct samples with the same label."""
    _, _, counts = _groups(labels)
    return int((counts * (counts - 1) // 2).sum())


def count_different_pairs(labels: NDArray) -> int:
    """Number of unordered pairs of samples with different labels."""
    _, _, counts = _groups(labels)
    total = int(counts.sum())
    return (total * total - int((counts * counts).sum())) // 2


def _unrank_pair(t: IntArray) -> tuple[IntArray, IntArray]:
    """The t-th pair (a, b), a < b, in the order t = b(b-1)/2 + a."""
    b = np.floor((1.0 + np.sqrt(1.0 + 8.0 * t.astype(np.float64))) / 2.0).astype(np.int64)
    # Float rounding can put b one off for large t; correct it exactly in integers.
    b -= (b * (b - 1) // 2 > t).astype(np.int64)
    b += ((b + 1) * b // 2 <= t).astype(np.int64)
    return t - b * (b - 1) // 2, b


def _random_orientation(
    first: IntArray, second: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    swap = rng.random(first.shape[0]) < 0.5
    return np.where(swap, second, first), np.where(swap, first, second)


def same_pairs(labels: NDArray, count: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """`count` distinct same-label pairs, uniform without replacement, in random order.

    Every same-label pair is numbered (label by label), `count` numbers are drawn
    without replacement and turned back into pairs, so no rejection loop is needed
    even when `count` equals the number available.
    """
    order, starts, counts = _groups(labels)
    per_label = counts * (counts - 1) // 2
    available = int(per_label.sum())
    if count > available:
        raise ValueError(f"asked for {count} same pairs, only {available} exist")
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    ranks = rng.choice(available, size=count, replace=False).astype(np.int64)
    ends = np.cumsum(per_label)
    group = np.searchsorted(ends, ranks, side="right")
    a, b = _unrank_pair(ranks - (ends[group] - per_label[group]))
    return _random_orientation(order[starts[group] + a], order[starts[group] + b], rng)


def different_pairs(
    labels: NDArray, count: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """`count` distinct different-label pairs, uniform without replacement, in random order.

    With the samples sorted by label, a different-label pair is a sample and one of the
    samples of the later labels; numbering them sample by sample, drawing `count`
    numbers without replacement and turning them back into pairs needs O(M) memory and
    no rejection loop.
    """
    order, starts, counts = _groups(labels)
    size = order.shape[0]
    group_end = np.repeat(starts + counts, counts)  # per sorted position
    partners = size - group_end
    available = int(partners.sum())
    if count > available:
        raise ValueError(f"asked for {count} different pairs, only {available} exist")
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    ranks = rng.choice(available, size=count, replace=False).astype(np.int64)
    ends = np.cumsum(partners)
    first = np.searchsorted(ends, ranks, side="right")
    second = group_end[first] + ranks - (ends[first] - partners[first])
    return _random_orientation(order[first], order[second], rng)


def verification_pairs(
    labels: NDArray, count: int, rng: np.random.Generator, *, key: str, pool: str
) -> tuple[IntArray, IntArray, NDArray[np.bool_]]:
    """LFW-style pairs: `count` pairs in 10 consecutive folds, each half same / half different.

    Within a fold the same pairs come first, then the different pairs. No pair repeats
    and no sample is paired with itself. `key` (e.g. "data.test_pairs") and `pool`
    (a few words describing the pool) name the knob and the pool in the error raised
    when the pool cannot supply `count` pairs.
    """
    if count <= 0 or count % (2 * FOLDS):
        raise DataError(f"{key}: must be a positive multiple of {2 * FOLDS}, got {count}")
    half, per_fold = count // 2, count // (2 * FOLDS)
    same_available = count_same_pairs(labels)
    different_available = count_different_pairs(labels)
    if half > same_available or half > different_available:
        limit = 2 * min(same_available, different_available)
        limit -= limit % (2 * FOLDS)
        raise DataError(
            f"{key}: {count} pairs need {half} same and {half} different pairs, but {pool} "
            f"has {same_available} same and {different_available} different pairs "
            f"(at most {limit} pairs)"
        )
    same_left, same_right = same_pairs(labels, half, rng)
    diff_left, diff_right = different_pairs(labels, half, rng)
    left, right, issame = [], [], []
    for fold in range(FOLDS):
        part = slice(fold * per_fold, (fold + 1) * per_fold)
        left += [same_left[part], diff_left[part]]
        right += [same_right[part], diff_right[part]]
        issame += [np.ones(per_fold, dtype=bool), np.zeros(per_fold, dtype=bool)]
    return np.concatenate(left), np.concatenate(right), np.concatenate(issame)


def impostor_pairs(
    labels: NDArray,
    rng: np.random.Generator,
    *,
    genuine_cap: int = IMPOSTOR_GENUINE_CAP,
    impostor_cap: int = IMPOSTOR_PAIRS_CAP,
) -> tuple[IntArray, IntArray, NDArray[np.bool_]]:
    """Pairs for TAR at FAR: the pool's genuine pairs, then its impostor pairs.

    All genuine (same-label) pairs when there are at most `genuine_cap`, else a uniform
    sample of `genuine_cap`; likewise for the impostor (different-label) pairs with
    `impostor_cap`.
    """
    genuine = min(count_same_pairs(labels), genuine_cap)
    impostors = min(count_different_pairs(labels), impostor_cap)
    same_left, same_right = same_pairs(labels, genuine, rng)
    diff_left, diff_right = different_pairs(labels, impostors, rng)
    issame = np.concatenate([np.ones(genuine, dtype=bool), np.zeros(impostors, dtype=bool)])
    return np.concatenate([same_left, diff_left]), np.concatenate([same_right, diff_right]), issame


def pair_set(inputs: torch.Tensor, pairs: tuple[IntArray, IntArray, NDArray[np.bool_]]) -> PairSet:
    """A `PairSet` over `inputs` from (left, right, issame) numpy arrays."""
    left, right, issame = pairs
    return PairSet(
        inputs=inputs,
        left=torch.from_numpy(np.ascontiguousarray(left, dtype=np.int64)),
        right=torch.from_numpy(np.ascontiguousarray(right, dtype=np.int64)),
        issame=torch.from_numpy(np.ascontiguousarray(issame, dtype=bool)),
    )


def identification_split(labels: NDArray, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """(probe indices, gallery indices): one random sample of each label goes to the gallery.

    Labels with a single sample have no probe; both index arrays are sorted.
    """
    order, starts, counts = _groups(labels)
    chosen = order[starts + (rng.random(counts.shape[0]) * counts).astype(np.int64)]
    gallery = np.sort(chosen)
    probes = np.setdiff1d(np.arange(np.asarray(labels).shape[0], dtype=np.int64), gallery)
    return probes, gallery


def identification_set(
    inputs: torch.Tensor,
    labels: NDArray,
    rng: np.random.Generator,
    distractors: torch.Tensor | None = None,
) -> IdentificationSet:
    """Probes = the pool less one sample per label; gallery = those samples + distractors."""
    probes, gallery = identification_split(labels, rng)
    labels_t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    gallery_inputs = inputs[torch.from_numpy(gallery)]
    gallery_labels = labels_t[torch.from_numpy(gallery)]
    if distractors is not None and distractors.shape[0] > 0:
        gallery_inputs = torch.cat([gallery_inputs, distractors])
        minus_one = torch.full((distractors.shape[0],), -1, dtype=torch.int64)
        gallery_labels = torch.cat([gallery_labels, minus_one])
    return IdentificationSet(
        probes=inputs[torch.from_numpy(probes)],
        probe_labels=labels_t[torch.from_numpy(probes)],
        gallery=gallery_inputs,
        gallery_labels=gallery_labels,
    )
