"""Evaluation protocols against plain loop references and insightface's own algorithm.

verification: a loop over folds, thresholds and pairs, and insightface's calculate_roc
written out with sklearn's KFold, on random and on quantised embeddings whose squared
distances tie with each other and fall exactly on thresholds. TAR@FAR: counted by hand
and against a brute-force threshold search. Rank-1: a full-matrix argmax. embed: flip,
batches, modes.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from adastudy import evaluate
from adastudy.errors import AdastudyError, ParameterError

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = [float(t) for t in np.arange(0, 4, 0.01)]  # the protocol's grid, as floats


# -- references ---------------------------------------------------------------------------

def loop_squared_distances(emb1: np.ndarray, emb2: np.ndarray) -> list[float]:
    """||a/|a| - b/|b|||^2 for each pair, one scalar at a time."""
    out = []
    for a, b in zip(emb1.tolist(), emb2.tolist(), strict=True):
        na = math.sqrt(sum(v * v for v in a)) or 1.0
        nb = math.sqrt(sum(v * v for v in b)) or 1.0
        out.append(sum((x / na - y / nb) ** 2 for x, y in zip(a, b, strict=True)))
    return out


def loop_protocol(dist: list[float], issame: list[bool], folds: int = 10,
                  strict: bool = True, thresholds: list[float] = THRESHOLDS,
                  ) -> tuple[float, float, list[float]]:
    """LFW protocol with Python loops over folds, thresholds and pairs.

    Returns (mean, std, each fold's threshold). strict=False predicts "same" on
    dist <= t: a wrong variant, to show that the tests can tell the two apart.
    """
    n = len(dist)
    bounds, start = [], 0
    for f in range(folds):
        size = n // folds + (1 if f < n % folds else 0)
        bounds.append((start, start + size))
        start += size

    def predict(d: float, t: float) -> bool:
        return d < t if strict else d <= t

    accuracies, chosen = [], []
    for lo, hi in bounds:
        best_t, best_acc = None, -1.0
        for t in thresholds:
            correct = count = 0
            for i in range(n):
                if lo <= i < hi:
                    continue
                correct += predict(dist[i], t) == issame[i]
                count += 1
            if correct / count > best_acc:  # strictly better: the first best wins
                best_t, best_acc = t, correct / count
        correct = sum(predict(dist[i], best_t) == issame[i] for i in range(lo, hi))
        accuracies.append(correct / (hi - lo))
        chosen.append(best_t)
    mean = sum(accuracies) / folds
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / folds)
    return mean, std, chosen


def insightface_reference(emb1, emb2, actual_issame, nrof_folds=10):
    """insightface's verification.calculate_roc (accuracy part), sklearn KFold and all."""

    def calculate_accuracy(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        tp = np.sum(np.logical_and(predict_issame, actual_issame))
        tn = np.sum(np.logical_and(np.logical_not(predict_issame),
                                   np.logical_not(actual_issame)))
        return float(tp + tn) / dist.size

    embeddings1 = normalize(np.asarray(emb1, dtype=np.float64))
    embeddings2 = normalize(np.asarray(emb2, dtype=np.float64))
    thresholds = np.arange(0, 4, 0.01)
    nrof_pairs = min(len(actual_issame), embeddings1.shape[0])
    k_fold = KFold(n_splits=nrof_folds, shuffle=False)
    accuracy = np.zeros(nrof_folds)
    indices = np.arange(nrof_pairs)
    diff = np.subtract(embeddings1, embeddings2)
    dist = np.sum(np.square(diff), 1)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            acc_train[threshold_idx] = calculate_accuracy(
                threshold, dist[train_set], actual_issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        accuracy[fold_idx] = calculate_accuracy(
            thresholds[best_threshold_index], dist[test_set], actual_issame[test_set])
    return float(np.mean(accuracy)), float(np.std(accuracy))


# -- data -----------------------------------------------------------------------------------

def random_pairs(n: int, dim: int, seed: int, noise: float = 1.3):
    rng = np.random.default_rng(seed)
    emb1 = rng.standard_normal((n, dim))
    issame = rng.random(n) < 0.5
    emb2 = np.where(issame[:, None], emb1 + noise * rng.standard_normal((n, dim)),
                    rng.standard_normal((n, dim)))
    return emb1, emb2, issame


def quantised_pairs(n: int, seed: int, dim: int = 64):
    """Pairs whose squared distances are exactly k/16 (many ties, some on thresholds).

    Rows of ±1/8 in 64 dims have norm exactly 1; a partner differing in k signs is at
    squared distance k * (1/4)^2 = k/16, so 0.25, 0.5, 0.75, 1.0 (k = 4, 8, 12, 16) are
    thresholds of the grid exactly. Rows are scaled by powers of two, which normalising
    undoes exactly. issame is mostly k <= 8, so the best threshold sits on those ties.
    """
    rng = np.random.default_rng(seed)
    emb1 = rng.choice([-1.0, 1.0], size=(n, dim)) / 8
    k = rng.integers(0, 24, size=n)
    emb2 = emb1.copy()
    for i in range(n):
        flip = rng.choice(dim, size=k[i], replace=False)
        emb2[i, flip] *= -1
    issame = (k <= 8) ^ (rng.random(n) < 0.15)
    emb1 *= 2.0 ** rng.integers(-3, 4, size=(n, 1))
    emb2 *= 2.0 ** rng.integers(-3, 4, size=(n, 1))
    return emb1, emb2, issame, k / 16


# -- verification -----------------------------------------------------------------------

@pytest.mark.parametrize(("n", "dim", "seed", "noise"), [
    (617, 8, 0, 1.3), (617, 8, 1, 2.0), (120, 5, 2, 1.0), (95, 3, 3, 3.0),
    pytest.param(6000, 4, 4, 1.6, marks=pytest.mark.slow),
])
def test_verification_matches_the_loop_reference_on_random_embeddings(n, dim, seed, noise):
    emb1, emb2, issame = random_pairs(n, dim, seed, noise)
    mean, std = evaluate.verification_accuracy(emb1, emb2, issame)
    ref_mean, ref_std, _ = loop_protocol(loop_squared_distances(emb1, emb2), issame.tolist())
    assert mean == pytest.approx(ref_mean, abs=1e-12)
    assert std == pytest.approx(ref_std, abs=1e-12)
    assert 0.5 < mean < 1.0  # a task neither trivial nor hopeless


@pytest.mark.parametrize(("n", "seed"), [
    (617, 0), (600, 1), (233, 2), pytest.param(6000, 3, marks=pytest.mark.slow),
])
def test_verification_matches_the_loop_reference_with_ties_on_thresholds(n, seed):
    emb1, emb2, issame, exact = quantised_pairs(n, seed)
    dist = loop_squared_distances(emb1, emb2)
    assert dist == exact.tolist()  # the construction is binary-exact
    on_grid = set(dist) & set(THRESHOLDS)
    assert {0.25, 0.5, 0.75, 1.0} <= on_grid
    detail = evaluate.verification_folds(emb1, emb2, issame)
    mean, std = evaluate.verification_accuracy(emb1, emb2, issame)
    ref_mean, ref_std, ref_thresholds = loop_protocol(dist, issame.tolist())
    assert mean == pytest.approx(ref_mean, abs=1e-12)
    assert std == pytest.approx(ref_std, abs=1e-12)
    assert detail.thresholds_sq_dist.tolist() == ref_thresholds
    # With distances on the grid, "<=" reaches the same accuracies one threshold lower:
    # only the chosen thresholds tell the two apart, and here they do.
    assert loop_protocol(dist, issame.tolist(), strict=False)[2] != ref_thresholds


def test_thresholds_are_numpys_arange_values_not_decimals():
    # np.arange(0, 4, 0.01)[35] is 0.35000000000000003; a distance of exactly 0.35 is below
    # it (so "same"), which a grid built as i / 100 would get wrong.
    grid = np.arange(0, 4, 0.01)
    odd = [i for i in range(400) if grid[i] != i / 100]
    assert 35 in odd
    rng = np.random.default_rng(5)
    n = 500
    picks = rng.choice(odd, size=n)
    dist = (picks / 100).astype(np.float64)  # the decimals, some just under their threshold
    dist[::3] = grid[picks[::3]]  # some exactly on a threshold
    issame = (picks <= 120) ^ (rng.random(n) < 0.1)
    detail = evaluate._folds_from_squared_distances(dist, issame, 10)
    ref_mean, ref_std, ref_thresholds = loop_protocol(dist.tolist(), issame.tolist())
    assert detail.mean == pytest.approx(ref_mean, abs=1e-12)
    assert detail.std == pytest.approx(ref_std, abs=1e-12)
    assert detail.thresholds_sq_dist.tolist() == ref_thresholds


def test_a_distance_of_0_35_is_below_the_threshold_0_35_of_the_grid():
    # fold 0 = pairs 0-1, fold 1 = pairs 2-3. Each fold's first best threshold on the other
    # is index 35 (the first above 0.345, resp. 0.35); the genuine pair at exactly 0.35 is
    # then "same" under np.arange's 0.35000000000000003, but not under a decimal 0.35.
    dist = np.array([0.345, 0.40, 0.35, 0.50])
    issame = np.array([True, False, True, False])
    detail = evaluate._folds_from_squared_distances(dist, issame, 2)
    grid = np.arange(0, 4, 0.01)
    assert detail.thresholds_sq_dist.tolist() == [grid[35], grid[35]]
    assert detail.accuracies.tolist() == [1.0, 1.0]
    assert loop_protocol(dist.tolist(), issame.tolist(), folds=2)[:2] == (1.0, 0.0)
    decimals = loop_protocol(dist.tolist(), issame.tolist(), folds=2,
                             thresholds=[i / 100 for i in range(400)])
    assert decimals[:2] == (0.75, 0.25)


@pytest.mark.parametrize(("n", "dim", "seed", "folds"), [
    (6000, 32, 0, 10), (6000, 16, 1, 10), (617, 8, 2, 10), (617, 8, 3, 7), (50, 4, 4, 2),
])
def test_verification_matches_insightface_with_sklearn_kfold(n, dim, seed, folds):
    emb1, emb2, issame = random_pairs(n, dim, seed)
    got = evaluate.verification_accuracy(emb1, emb2, issame, folds=folds)
    ref = insightface_reference(emb1, emb2, issame, nrof_folds=folds)
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize(("n", "seed"), [(6000, 7), (617, 8)])
def test_verification_matches_insightface_with_ties(n, seed):
    emb1, emb2, issame, _ = quantised_pairs(n, seed)
    got = evaluate.verification_accuracy(emb1, emb2, issame)
    assert got == pytest.approx(insightface_reference(emb1, emb2, issame), abs=1e-12)


def test_verification_folds_detail_follows_kfold():
    emb1, emb2, issame = random_pairs(617, 8, 0)
    detail = evaluate.verification_folds(emb1, emb2, issame)
    sizes = [len(test) for _, test in KFold(n_splits=10).split(np.arange(617))]
    assert detail.fold_sizes.tolist() == sizes == [62] * 7 + [61] * 3
    assert detail.accuracies.shape == detail.thresholds_sq_dist.shape == (10,)
    assert set(detail.thresholds_sq_dist.tolist()) <= set(THRESHOLDS)
    assert (detail.mean, detail.std) == evaluate.verification_accuracy(emb1, emb2, issame)


def test_verification_accepts_tensors_and_0_1_labels():
    emb1, emb2, issame = random_pairs(300, 8, 1)
    want = evaluate.verification_accuracy(emb1, emb2, issame)
    got = evaluate.verification_accuracy(
        torch.from_numpy(emb1), torch.from_numpy(emb2), torch.from_numpy(issame.astype(int)))
    assert got == want
    # float32 inputs go through float64: the same protocol, not necessarily the same bits
    got32 = evaluate.verification_accuracy(emb1.astype(np.float32), emb2.astype(np.float32),
                                           issame)
    assert got32[0] == pytest.approx(want[0], abs=0.01)


def test_inputs_are_not_modified():
    emb1, emb2, issame = random_pairs(100, 4, 2)
    copies = emb1.copy(), emb2.copy()
    evaluate.verification_accuracy(emb1, emb2, issame)
    evaluate.pair_scores(emb1, emb2)
    assert np.array_equal(emb1, copies[0]) and np.array_equal(emb2, copies[1])


def test_pair_scores_are_cosines():
    emb1, emb2, _ = random_pairs(50, 6, 3)
    want = [sum(x * y for x, y in zip(a, b, strict=True))
            / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
            for a, b in zip(emb1.tolist(), emb2.tolist(), strict=True)]
    got = evaluate.pair_scores(torch.from_numpy(emb1).float(), emb2)
    assert got.dtype == np.float64 and got.shape == (50,)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(evaluate.pair_scores(emb1, emb2), want, atol=1e-14)


# -- TAR @ FAR ------------------------------------------------------------------------------

IMPOSTORS = [0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
GENUINE = [0.95, 0.85, 0.8, 0.75, 0.9]


def hand_made():
    scores = np.array(GENUINE[:2] + IMPOSTORS[:5] + GENUINE[2:] + IMPOSTORS[5:])
    issame = np.array([True] * 2 + [False] * 5 + [True] * 3 + [False] * 5)
    return scores, issame


@pytest.mark.parametrize(("far", "want"), [
    (0.1, 3 / 5),   # k = 1: t = 0.8 (2nd highest impostor); accept 0.95, 0.85, 0.9
    (0.2, 3 / 5),   # k = 2: t = 0.8 again; the three tied 0.8 impostors stay out
    (0.3, 3 / 5),   # k = 3: t = 0.8 again; only 0.9 accepted: 1 impostor <= 3
    (0.4, 1.0),     # k = 4: t = 0.5; every genuine pair is above it
    (0.5, 1.0),
    (1.0, 1.0),     # k = n: everything accepted
])
def test_tar_at_far_counted_by_hand(far, want):
    scores, issame = hand_made()
    assert evaluate.tar_at_far(scores, issame, far) == pytest.approx(want, abs=0)


def test_tar_at_far_ties_exactly_at_the_threshold_are_rejected():
    # impostors 0.7, 0.6, 0.6, ...; k = 1 -> t = 0.6, genuine 0.6 is NOT accepted
    scores = np.array([0.7, 0.6, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.6, 0.61, 0.65])
    issame = np.array([False] * 10 + [True] * 3)
    assert evaluate.tar_at_far(scores, issame, 0.1) == pytest.approx(2 / 3)
    assert evaluate.tar_at_far(torch.tensor(scores, dtype=torch.float32),
                               torch.tensor(issame), 0.1) == pytest.approx(2 / 3)


def test_tar_at_far_k_zero_is_the_too_few_impostors_error():
    scores, issame = hand_made()  # 10 impostors: far = 0.05 would allow k = 0
    with pytest.raises(ParameterError, match="far=0.05 needs at least 20 impostor pairs; got 10"):
        evaluate.tar_at_far(scores, issame, 0.05)
    with pytest.raises(ParameterError, match="needs at least 1000000 impostor pairs"):
        evaluate.tar_at_far(scores, issame, 1e-6)


def brute_tar(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """The lowest impostor-score threshold t with #(impostor > t) <= floor(far * n)."""
    imp = [s for s, same in zip(scores.tolist(), issame.tolist(), strict=True) if not same]
    gen = [s for s, same in zip(scores.tolist(), issame.tolist(), strict=True) if same]
    k = math.floor(far * len(imp) + 1e-9)
    if k >= len(imp):
        return 1.0
    for t in sorted(set(imp)):
        if sum(s > t for s in imp) <= k:
            return sum(s > t for s in gen) / len(gen)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(5))
def test_tar_at_far_matches_brute_force_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    issame = rng.random(n) < 0.2
    scores = np.round(rng.normal(0.0, 0.15, n) + 0.35 * issame, 2)  # heavy ties
    n_imp = int((~issame).sum())
    for far in evaluate.measurable_fars(n_imp, (0.5, 0.3, 1e-1, 0.05, 1e-2, 1e-3)):
        got = evaluate.tar_at_far(scores, issame, far)
        assert got == brute_tar(scores, issame, far)
        accepted = np.sum(scores[~issame] > np.sort(scores[~issame])[::-1][
            math.floor(far * n_imp + 1e-9)])
        assert accepted <= far * n_imp + 1e-9


def test_measurable_fars_are_exactly_what_tar_at_far_accepts():
    assert evaluate.measurable_fars(1000) == (1e-1, 1e-2, 1e-3)
    assert evaluate.measurable_fars(999) == (1e-1, 1e-2)
    assert evaluate.measurable_fars(0) == ()
    assert evaluate.measurable_fars(10**6) == evaluate.DEFAULT_FARS
    rng = np.random.default_rng(0)
    for n_imp in (9, 10, 100, 1000, 1001):
        scores = rng.random(n_imp + 5)
        issame = np.array([True] * 5 + [False] * n_imp)
        ok = evaluate.measurable_fars(n_imp)
        for far in evaluate.DEFAULT_FARS:
            if far in ok:
                evaluate.tar_at_far(scores, issame, far)
            else:
                with pytest.raises(ParameterError):
                    evaluate.tar_at_far(scores, issame, far)


# -- rank-1 identification -------------------------------------------------------------------

def identification_set(seed: int, probes: int = 60, ids: int = 40, distractors: int = 200,
                       dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    g_labels = np.concatenate([np.arange(ids), np.full(distractors, -1)])
    gallery = np.concatenate([centres, rng.standard_normal((distractors, dim))])
    gallery[:ids] += 0.8 * rng.standard_normal((ids, dim))
    perm = rng.permutation(len(g_labels))
    gallery, g_labels = gallery[perm], g_labels[perm]
    p_labels = rng.integers(0, ids, size=probes)
    probe = centres[p_labels] + 0.8 * rng.standard_normal((probes, dim))
    return probe, p_labels, gallery, g_labels


def brute_force_best(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    p = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return np.argmax(p @ g.T, axis=1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunking", [
    {}, {"chunk_size": 7}, {"chunk_size": 1}, {"max_chunk_bytes": 240 * 4 * 3 + 5},
    {"max_chunk_bytes": 1},
])
def test_rank1_matches_a_full_matrix_argmax(seed, chunking):
    probe, p_labels, gallery, g_labels = identification_set(seed)
    best = brute_force_best(probe, gallery)
    want = float(np.mean(g_labels[best] == p_labels))
    assert 0.2 < want < 1.0
    got = evaluate.rank1_identification(probe, p_labels, gallery, g_labels, **chunking)
    assert got == want
    got_t = evaluate.rank1_identification(torch.from_numpy(probe).float(), torch.from_numpy(
        p_labels), torch.from_numpy(gallery).float(), torch.from_numpy(g_labels), **chunking)
    assert got_t == want
    idx = evaluate.best_gallery_match(probe, gallery, **chunking)
    assert idx.dtype == torch.int64 and idx.device.type == "cpu"
    assert idx.numpy().tolist() == best.tolist()


def test_rank1_chunks_keep_the_block_within_max_chunk_bytes(monkeypatch):
    probe, p_labels, gallery, g_labels = identification_set(0, probes=50)
    blocks: list[tuple[int, int]] = []
    mm = torch.mm

    def recording_mm(a, b, *, out=None):
        blocks.append((a.shape[0], b.shape[1]))
        return mm(a, b, out=out)

    monkeypatch.setattr(torch, "mm", recording_mm)
    g = gallery.shape[0]
    limit = g * 4 * 3 + 5  # three float32 rows of the (chunk, G) block
    evaluate.rank1_identification(probe, p_labels, gallery, g_labels, max_chunk_bytes=limit)
    assert blocks == [(3, g)] * 16 + [(2, g)]
    assert all(rows * cols * 4 <= limit for rows, cols in blocks)
    blocks.clear()
    evaluate.rank1_identification(probe, p_labels, gallery, g_labels, chunk_size=20)
    assert blocks == [(20, g), (20, g), (10, g)]
    assert evaluate._probe_chunk_rows(100_000, 4, 256 * 2**20, None) == 671
    assert evaluate._probe_chunk_rows(100_000, 4, 10, None) == 1


def test_rank1_ties_go_to_the_lowest_gallery_index():
    e = np.eye(4, dtype=np.float32)
    gallery = np.stack([e[1], e[0], 2 * e[0], e[2], -e[0]])  # rows 1 and 2 tie for e0
    g_labels = np.array([9, 5, 7, 8, -1])
    probe = np.stack([e[0], 3 * e[0], e[0] + e[3]])
    assert evaluate.best_gallery_match(probe, gallery).tolist() == [1, 1, 1]
    assert evaluate.rank1_identification(probe, [5, 7, 5], gallery, g_labels) == 2 / 3
    assert evaluate.rank1_identification(probe, [5, 7, 5], gallery, g_labels,
                                         chunk_size=1) == 2 / 3


def test_rank1_labels_may_be_strings_and_embeddings_float64():
    probe, p_labels, gallery, g_labels = identification_set(1)
    names = np.array([f"id{label}" for label in range(-1, 40)])
    want = evaluate.rank1_identification(probe, p_labels, gallery, g_labels)
    got = evaluate.rank1_identification(probe, names[p_labels + 1], gallery,
                                        names[g_labels + 1])
    assert got == want


# -- embed -----------------------------------------------------------------------------------

class Recorder(torch.nn.Module):
    """Flatten + linear (not flip-invariant), a dropout, and a log of the batch sizes."""

    def __init__(self, in_features: int, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(in_features, dim)
        self.dropout = torch.nn.Dropout(0.5)
        self.batches: list[int] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        self.modes.append(self.training)
        return self.dropout(self.linear(x.flatten(1)))


def test_embed_with_flip_sums_the_flipped_embedding():
    x = torch.randn(10, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    model = Recorder(3 * 4 * 5).eval()
    with torch.no_grad():
        plain, flipped = model(x), model(torch.flip(x, dims=[-1]))
    assert not torch.allclose(plain, flipped)  # the test model is not flip-invariant
    model.batches.clear()
    got = evaluate.embed(model, x, batch_size=4, flip=True)
    torch.testing.assert_close(got, plain + flipped)
    assert model.batches == [4, 4, 4, 4, 2, 2]
    torch.testing.assert_close(evaluate.embed(model, x.numpy(), batch_size=3), plain)


def test_embed_covers_every_row_runs_in_eval_and_restores_modes():
    x = torch.randn(10, 7, generator=torch.Generator().manual_seed(2))
    model = Recorder(7).train()
    model.dropout.eval()  # a mixed state, to be restored as it was
    got = evaluate.embed(model, x, batch_size=4)
    assert model.batches == [4, 4, 2] and model.modes == [False] * 3
    assert model.training and not model.dropout.training and model.linear.training
    assert got.shape == (10, 6) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert not got.requires_grad
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(got, model(x))


def test_embed_restores_modes_when_the_model_fails():
    class Failing(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate.embed(model, torch.zeros(3, 2))
    assert model.training


def test_embed_returns_float32_from_a_float64_model():
    model = torch.nn.Linear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    got = evaluate.embed(model, x, batch_size=2)
    assert got.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(got, model(x).float())


# -- GPU -------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rank1_and_embed_on_cuda_match_cpu():
    probe, p_labels, gallery, g_labels = identification_set(0)
    want = evaluate.rank1_identification(probe, p_labels, gallery, g_labels)
    cuda = torch.device("cuda")
    got = evaluate.rank1_identification(
        torch.from_numpy(probe).float().to(cuda), torch.from_numpy(p_labels).to(cuda),
        torch.from_numpy(gallery).float().to(cuda), torch.from_numpy(g_labels).to(cuda),
        max_chunk_bytes=240 * 4 * 5)
    assert got == want
    emb1, emb2, issame = random_pairs(600, 8, 0)
    assert evaluate.verification_accuracy(
        torch.from_numpy(emb1).to(cuda), torch.from_numpy(emb2).to(cuda),
        torch.from_numpy(issame).to(cuda)) == evaluate.verification_accuracy(emb1, emb2, issame)
    model = Recorder(3 * 4 * 5).to(cuda)
    x = torch.randn(9, 3, 4, 5)
    got_emb = evaluate.embed(model, x, batch_size=4, flip=True)
    assert got_emb.device.type == "cpu" and got_emb.dtype == torch.float32
    model_cpu = Recorder(3 * 4 * 5).eval()
    with torch.no_grad():
        want_emb = model_cpu(x) + model_cpu(torch.flip(x, dims=[-1]))
    torch.testing.assert_close(got_emb, want_emb, atol=1e-4, rtol=1e-4)


# -- errors ----------------------------------------------------------------------------------

E1, E2, SAME = random_pairs(40, 4, 0)
SCORES, ISSAME = hand_made()
PROBE, P_LABELS, GALLERY, G_LABELS = identification_set(0, probes=5)

ERRORS = {
    "emb shapes": (lambda: evaluate.verification_accuracy(E1, E2[:, :3], SAME), "emb1 and emb2"),
    "emb 1-D": (lambda: evaluate.verification_accuracy(E1[0], E2[0], SAME[:1]), "emb1"),
    "issame length": (lambda: evaluate.verification_accuracy(E1, E2, SAME[:-1]), "issame"),
    "issame values": (lambda: evaluate.verification_accuracy(E1, E2, SAME * 2), "issame"),
    "folds 1": (lambda: evaluate.verification_accuracy(E1, E2, SAME, folds=1), "folds"),
    "folds > pairs": (lambda: evaluate.verification_accuracy(E1, E2, SAME, folds=41), "folds"),
    "folds float": (lambda: evaluate.verification_accuracy(E1, E2, SAME, folds=2.5), "folds"),
    "no genuine": (lambda: evaluate.verification_accuracy(E1, E2, SAME & False), "genuine"),
    "no impostor": (lambda: evaluate.verification_accuracy(E1, E2, SAME | True), "impostor"),
    "no pairs": (lambda: evaluate.pair_scores(E1[:0], E2[:0]), "emb1 and emb2"),
    "far 0": (lambda: evaluate.tar_at_far(SCORES, ISSAME, 0), "far"),
    "far > 1": (lambda: evaluate.tar_at_far(SCORES, ISSAME, 1.5), "far"),
    "far nan": (lambda: evaluate.tar_at_far(SCORES, ISSAME, float("nan")), "far"),
    "far text": (lambda: evaluate.tar_at_far(SCORES, ISSAME, "often"), "far"),
    "few impostors": (lambda: evaluate.tar_at_far(SCORES, ISSAME, 0.01), "impostor pairs"),
    "scores length": (lambda: evaluate.tar_at_far(SCORES[:-1], ISSAME, 0.1), "issame"),
    "scores nan": (lambda: evaluate.tar_at_far(SCORES * np.nan, ISSAME, 0.1), "scores"),
    "tar no genuine": (lambda: evaluate.tar_at_far(SCORES, ISSAME & False, 0.1), "genuine"),
    "tar no impostor": (lambda: evaluate.tar_at_far(SCORES, ISSAME | True, 0.1), "impostor"),
    "measurable negative": (lambda: evaluate.measurable_fars(-1), "num_impostors"),
    "measurable far": (lambda: evaluate.measurable_fars(10, (0.1, 2.0)), "far"),
    "rank1 dims": (lambda: evaluate.rank1_identification(
        PROBE[:, :3], P_LABELS, GALLERY, G_LABELS), "dim"),
    "rank1 labels": (lambda: evaluate.rank1_identification(
        PROBE, P_LABELS[:-1], GALLERY, G_LABELS), "probe_labels"),
    "rank1 gallery labels": (lambda: evaluate.rank1_identification(
        PROBE, P_LABELS, GALLERY, G_LABELS[:3]), "gallery_labels"),
    "rank1 empty gallery": (lambda: evaluate.rank1_identification(
        PROBE, P_LABELS, GALLERY[:0], G_LABELS[:0]), "gallery_emb"),
    "rank1 chunk 0": (lambda: evaluate.rank1_identification(
        PROBE, P_LABELS, GALLERY, G_LABELS, chunk_size=0), "chunk_size"),
    "rank1 bytes 0": (lambda: evaluate.rank1_identification(
        PROBE, P_LABELS, GALLERY, G_LABELS, max_chunk_bytes=0), "max_chunk_bytes"),
    "embed batch 0": (lambda: evaluate.embed(
        torch.nn.Linear(2, 2), torch.zeros(3, 2), batch_size=0), "batch_size"),
    "embed empty": (lambda: evaluate.embed(torch.nn.Linear(2, 2), torch.zeros(0, 2)), "inputs"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_impossible_inputs_raise_one_line_parameter_errors(case):
    call, names = ERRORS[case]
    with pytest.raises(ParameterError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, AdastudyError) and isinstance(info.value, ValueError)
    assert "\n" not in message and message
    assert names in message, message


# -- benchmark script ----------------------------------------------------------------------

def test_benchmark_script_runs_on_tiny_sizes():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "evaluate.py"), "--pairs", "200",
         "--dim", "16", "--probes", "100", "--gallery", "1000", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    for line in ("verification: 200 pairs, dim 16", "naive loop agrees: True",
                 "verification_accuracy:", "target <= 200 ms", "naive per-threshold loop:",
                 "speed-up over naive loop:",
                 "rank-1 identification: 100 probes, 1000 gallery, dim 16",
                 "peak extra memory:", "target <= 1024 MB", "probes/s", "all targets met:"):
        assert line in out, line
