"""adastudy.data: determinism, open-set pools, LFW-style pair sets, identification, digits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from adastudy.data import (
    DataError,
    IdentificationSet,
    PairSet,
    TrialData,
    build_data,
    digits,
    pairs,
    synthetic,
)
from adastudy.data.seeding import numpy_rng, torch_generator
from adastudy.errors import AdastudyError
from adastudy.spec import DataSpec, SyntheticData

SMALL_IMAGES = DataSpec(form="images", image_size=16, distractors=50, test_pairs=600)


@pytest.fixture(scope="module")
def features() -> TrialData:
    return build_data(DataSpec())


@pytest.fixture(scope="module")
def images() -> TrialData:
    return build_data(SMALL_IMAGES)


@pytest.fixture(scope="module")
def digit_features() -> TrialData:
    return build_data(DataSpec(name="digits"))


def tensors(data: TrialData) -> dict[str, torch.Tensor]:
    """Every tensor of a TrialData, by a dotted name."""
    out = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if isinstance(value, torch.Tensor):
            out[field.name] = value
        elif dataclasses.is_dataclass(value):
            for inner in dataclasses.fields(value):
                out[f"{field.name}.{inner.name}"] = getattr(value, inner.name)
    return out


def pair_keys(pair_set: PairSet) -> np.ndarray:
    """Unordered pairs as integers, for duplicate checks."""
    size = pair_set.inputs.shape[0]
    lo = torch.minimum(pair_set.left, pair_set.right).numpy()
    hi = torch.maximum(pair_set.left, pair_set.right).numpy()
    return lo * size + hi


def check_pair_tensors(pair_set: PairSet) -> None:
    assert pair_set.left.dtype == torch.int64 and pair_set.right.dtype == torch.int64
    assert pair_set.issame.dtype == torch.bool
    assert pair_set.inputs.dtype == torch.float32
    assert pair_set.left.shape == pair_set.right.shape == pair_set.issame.shape
    size = pair_set.inputs.shape[0]
    for index in (pair_set.left, pair_set.right):
        assert int(index.min()) >= 0 and int(index.max()) < size
    assert bool((pair_set.left != pair_set.right).all()), "a sample paired with itself"
    assert np.unique(pair_keys(pair_set)).shape[0] == len(pair_set), "duplicate pair"


def check_verification(pair_set: PairSet, count: int, labels: np.ndarray | None = None) -> None:
    """Count, 10 consecutive folds each half same / half different, pair hygiene, labels."""
    check_pair_tensors(pair_set)
    assert len(pair_set) == count
    issame = pair_set.issame.numpy()
    for fold in np.split(issame, 10):
        assert fold.sum() * 2 == fold.shape[0]
    if labels is not None:
        left, right = pair_set.left.numpy(), pair_set.right.numpy()
        np.testing.assert_array_equal(labels[left] == labels[right], issame)


def synthetic_labels(identities: int, per_identity: int) -> np.ndarray:
    """Pools are identity-major: sample i belongs to identity i // per_identity."""
    return np.repeat(np.arange(identities), per_identity)


def ten_fold_accuracy(scores: np.ndarray, issame: np.ndarray) -> float:
    """Mean test accuracy over 10 consecutive folds, the threshold chosen on the other 9."""
    accuracies = []
    for test in np.split(np.arange(scores.shape[0]), 10):
        train = np.setdiff1d(np.arange(scores.shape[0]), test)
        order = np.argsort(scores[train])
        sorted_scores, sorted_same = scores[train][order], issame[train][order]
        # Threshold sorted_scores[k]: predict "same" for indices >= k.
        same_below = np.concatenate([[0], np.cumsum(sorted_same)])[:-1]
        different_below = np.arange(order.shape[0]) - same_below
        correct = different_below + (sorted_same.sum() - same_below)
        threshold = sorted_scores[int(np.argmax(correct))]
        accuracies.append(np.mean((scores[test] >= threshold) == issame[test]))
    return float(np.mean(accuracies))


def raw_cosine_accuracy(pair_set: PairSet) -> float:
    x = torch.nn.functional.normalize(pair_set.inputs.flatten(1).double(), dim=1)
    scores = (x[pair_set.left] * x[pair_set.right]).sum(1).numpy()
    return ten_fold_accuracy(scores, pair_set.issame.numpy())


# -- determinism ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        DataSpec(identities=20, distractors=30, test_pairs=600),
        SMALL_IMAGES,
        DataSpec(name="digits"),
        DataSpec(name="digits", form="images", seed=3),
    ],
    ids=["features", "images", "digits", "digit-images"],
)
def test_same_spec_gives_bit_identical_data_whatever_the_global_rng(spec: DataSpec) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = tensors(build_data(spec))
    torch.manual_seed(12345)
    torch.rand(100)
    np.random.seed(999)
    second = tensors(build_data(spec))
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert value.dtype == second[name].dtype, name
        assert torch.equal(value, second[name]), name


def test_another_seed_gives_other_data() -> None:
    a = build_data(DataSpec(identities=20, distractors=0, test_pairs=600))
    b = build_data(DataSpec(identities=20, distractors=0, test_pairs=600, seed=1))
    assert not torch.equal(a.train_inputs, b.train_inputs)
    assert not torch.equal(a.test.left, b.test.left)
    c = build_data(DataSpec(name="digits", seed=1))
    assert not torch.equal(build_data(DataSpec(name="digits")).test.inputs, c.test.inputs)


def test_each_part_has_its_own_stream() -> None:
    """Changing the pair counts or the distractors leaves the training samples alone."""
    base = build_data(DataSpec(identities=20, distractors=10, test_pairs=600))
    other = build_data(DataSpec(identities=20, distractors=40, test_pairs=1200))
    assert torch.equal(base.train_inputs, other.train_inputs)
    assert torch.equal(base.test.inputs, other.test.inputs)
    assert torch.equal(base.val.left, other.val.left)


def test_seeding_streams_are_distinct_and_stable() -> None:
    a = torch.rand(4, generator=torch_generator(0, "a"))
    assert torch.equal(a, torch.rand(4, generator=torch_generator(0, "a")))
    assert not torch.equal(a, torch.rand(4, generator=torch_generator(0, "b")))
    assert not torch.equal(a, torch.rand(4, generator=torch_generator(1, "a")))
    assert numpy_rng(0, "a").integers(1 << 30) == numpy_rng(0, "a").integers(1 << 30)


# -- synthetic: pools and identities ----------------------------------------------------


def test_evaluation_identities_are_never_training_identities() -> None:
    spec = DataSpec()
    codes = synthetic.identity_codes(spec)
    assert {name: c.shape[0] for name, c in codes.items()} == {
        "train": 100,
        "val": 50,
        "test": 100,
        "distractor": 1000,
    }
    names = list(codes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            distances = torch.cdist(codes[a], codes[b])
            assert float(distances.min()) > 0.1, (a, b)
            equal_rows = (codes[a][:, None, :] == codes[b][None, :, :]).all(-1)
            assert not bool(equal_rows.any()), (a, b)
    # Within a pool every identity is new too.
    for name, c in codes.items():
        assert torch.unique(c, dim=0).shape[0] == c.shape[0], name


def test_codes_are_scaled_so_identities_are_one_apart() -> None:
    codes = synthetic.identity_codes(DataSpec(identities=2000))["train"]
    rms = torch.cdist(codes[:1000], codes[1000:]).pow(2).mean().sqrt()
    assert 0.95 < float(rms) < 1.05


def test_default_pool_sizes(features: TrialData) -> None:
    assert features.name == "synthetic" and features.form == "features"
    assert features.num_classes == 100 and features.input_shape == (64,)
    assert features.train_inputs.shape == (2000, 64)
    assert features.train_inputs.dtype == torch.float32
    assert features.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(features.train_labels.numpy(), synthetic_labels(100, 20))
    assert features.val.inputs.shape == (500, 64)
    assert features.test.inputs.shape == (1000, 64)
    assert features.impostor.inputs is features.test.inputs
    assert not features.flippable
    assert bool(torch.isfinite(features.train_inputs).all())


def test_val_pool_grows_when_val_pairs_need_it() -> None:
    spec = DataSpec(eval_images_per_identity=2, eval_identities=40, test_pairs=40, distractors=0)
    assert synthetic.val_identities(spec) == 300  # 300 same pairs of one each
    data = build_data(spec)
    check_verification(data.val, 600, synthetic_labels(300, 2))
    assert synthetic.val_identities(DataSpec(eval_identities=300)) == 150


def test_synthetic_pairs(features: TrialData) -> None:
    check_verification(features.val, 600, synthetic_labels(50, 10))
    check_verification(features.test, 6000, synthetic_labels(100, 10))


def test_impostor_set(features: TrialData) -> None:
    impostor = features.impostor
    check_pair_tensors(impostor)
    labels = synthetic_labels(100, 10)
    issame = impostor.issame.numpy()
    np.testing.assert_array_equal(labels[impostor.left] == labels[impostor.right], issame)
    assert issame.sum() == 100 * 45  # every genuine pair of the test pool
    assert (~issame).sum() == pairs.IMPOSTOR_PAIRS_CAP >= 10_000
    assert issame[: 100 * 45].all()  # genuine pairs first


def test_identification(features: TrialData) -> None:
    ident = features.identification
    assert isinstance(ident, IdentificationSet)
    assert ident.probes.shape == (900, 64) and ident.gallery.shape == (1100, 64)
    assert ident.probe_labels.dtype == ident.gallery_labels.dtype == torch.int64
    gallery_labels = ident.gallery_labels.numpy()
    assert (gallery_labels == -1).sum() == 1000
    np.testing.assert_array_equal(np.sort(gallery_labels[gallery_labels >= 0]), np.arange(100))
    np.testing.assert_array_equal(np.bincount(ident.probe_labels.numpy()), np.full(100, 9))
    # Probes and labelled gallery images are the test pool, each sample exactly once.
    pool = features.test.inputs
    labelled = ident.gallery[torch.from_numpy(gallery_labels >= 0)]
    together = torch.cat([ident.probes, labelled])
    match = torch.cdist(together, pool).argmin(1)
    assert torch.equal(torch.sort(match).values, torch.arange(1000))
    assert torch.equal(together, pool[match])
    np.testing.assert_array_equal(
        synthetic_labels(100, 10)[match.numpy()],
        np.concatenate([ident.probe_labels.numpy(), gallery_labels[gallery_labels >= 0]]),
    )
    # Distractors are not test samples.
    distractors = ident.gallery[torch.from_numpy(gallery_labels == -1)]
    assert float(torch.cdist(distractors, pool).min()) > 0


def test_raw_feature_verification_is_neither_trivial_nor_hopeless(features: TrialData) -> None:
    """Calibration: 0.78-0.81 over seeds 0-4 at the defaults (a trained MLP gets ~0.90)."""
    assert 0.70 < raw_cosine_accuracy(features.test) < 0.90
    assert 0.70 < raw_cosine_accuracy(features.val) < 0.90


def test_spread_makes_the_task_harder() -> None:
    small = dict(identities=10, distractors=0, test_pairs=2000)
    tight = raw_cosine_accuracy(build_data(DataSpec(spread=0.05, **small)).test)
    loose = raw_cosine_accuracy(build_data(DataSpec(spread=1.5, **small)).test)
    assert tight > loose + 0.1


def test_too_many_test_pairs_is_a_data_error() -> None:
    spec = DataSpec(eval_identities=10, eval_images_per_identity=3, test_pairs=100)
    with pytest.raises(DataError, match=r"^data\.test_pairs: .*\(at most 60 pairs\)$") as info:
        build_data(spec)
    assert isinstance(info.value, AdastudyError)
    assert "\n" not in str(info.value)


def test_no_distractors() -> None:
    data = build_data(DataSpec(identities=10, distractors=0, test_pairs=200))
    assert data.identification.gallery.shape == (100, 64)
    assert bool((data.identification.gallery_labels >= 0).all())


def test_feature_dim_is_honoured() -> None:
    data = build_data(DataSpec(identities=10, feature_dim=7, distractors=3, test_pairs=200))
    assert data.input_shape == (7,)
    assert data.train_inputs.shape == (200, 7)
    assert data.identification.gallery.shape == (103, 7)


# -- synthetic images -------------------------------------------------------------------


def test_image_form(images: TrialData) -> None:
    assert images.form == "images" and images.flippable
    assert images.input_shape == (3, 16, 16)
    assert images.train_inputs.shape == (2000, 3, 16, 16)
    assert images.train_inputs.dtype == torch.float32
    assert float(images.train_inputs.min()) >= 0.0 and float(images.train_inputs.max()) <= 1.0
    check_verification(images.test, 600, synthetic_labels(100, 10))
    check_verification(images.val, 600, synthetic_labels(50, 10))
    assert images.identification.gallery.shape == (150, 3, 16, 16)
    assert images.identification.probes.shape == (900, 3, 16, 16)
    assert 0.6 < raw_cosine_accuracy(images.test) < 0.95


def test_identity_images_are_mirror_symmetric() -> None:
    renderer = synthetic._Renderer.make(17, torch_generator(0, "images-renderer"))
    codes = synthetic.identity_codes(DataSpec(identities=12))["train"]
    clean = renderer.identity_images(codes)
    assert clean.shape == (12, 3, 17, 17)
    assert torch.equal(clean, clean.flip(-1))
    assert float((clean[0] - clean[1]).abs().mean()) > 0.01  # identities differ


def test_a_flip_preserves_identity(images: TrialData) -> None:
    """Nearest-centre identification is as good for flipped images as for the originals."""
    x = images.test.inputs.view(100, 10, 3, 16, 16)
    centres = x[:, :5].mean(1).flatten(1)
    queries = x[:, 5:].reshape(500, 3, 16, 16)
    truth = torch.arange(100).repeat_interleave(5)

    def accuracy(batch: torch.Tensor) -> float:
        return float((torch.cdist(batch.flatten(1), centres).argmin(1) == truth).float().mean())

    plain, flipped = accuracy(queries), accuracy(queries.flip(-1))
    assert plain > 0.5
    assert abs(plain - flipped) < 0.05


# -- digits -----------------------------------------------------------------------------


def test_digits_split_is_stratified_and_disjoint() -> None:
    _, labels = digits._load()
    train, val, test = digits.split(labels, seed=0)
    assert train.shape[0] + val.shape[0] + test.shape[0] == 1797
    assert np.intersect1d(train, val).size == np.intersect1d(train, test).size == 0
    assert np.intersect1d(val, test).size == 0
    for part, share in ((train, digits.TRAIN_SHARE), (val, digits.VAL_SHARE), (test, 0.30)):
        counts = np.bincount(labels[part], minlength=10)
        expected = share * np.bincount(labels)
        assert np.all(np.abs(counts - expected) <= 1)


def test_digits_features(digit_features: TrialData) -> None:
    data = digit_features
    images, labels = digits._load()
    train, val, test = digits.split(labels, seed=0)
    flat = torch.from_numpy(images.reshape(-1, 64))
    assert data.name == "digits" and data.form == "features" and not data.flippable
    assert data.num_classes == 10 and data.input_shape == (64,)
    assert torch.equal(data.train_inputs, flat[train])
    np.testing.assert_array_equal(data.train_labels.numpy(), labels[train])
    assert float(data.train_inputs.min()) == 0.0 and float(data.train_inputs.max()) == 1.0
    # Pairs come from the test split (val pairs from the validation split).
    assert torch.equal(data.test.inputs, flat[test])
    assert data.impostor.inputs is data.test.inputs
    assert torch.equal(data.val.inputs, flat[val])
    check_verification(data.test, 6000, labels[test])
    check_verification(data.val, 600, labels[val])
    impostor = data.impostor
    check_pair_tensors(impostor)
    same = labels[test][impostor.left] == labels[test][impostor.right]
    np.testing.assert_array_equal(same, impostor.issame.numpy())
    assert same.sum() == pairs.count_same_pairs(labels[test])
    assert (~same).sum() == pairs.IMPOSTOR_PAIRS_CAP
    ident = data.identification
    assert ident.gallery.shape == (10, 64)
    np.testing.assert_array_equal(np.sort(ident.gallery_labels.numpy()), np.arange(10))
    assert ident.probes.shape == (test.shape[0] - 10, 64)


def test_digit_images() -> None:
    data = build_data(DataSpec(name="digits", form="images", test_pairs=200, val_pairs=100))
    assert data.input_shape == (1, 8, 8)
    assert data.train_inputs.shape[1:] == (1, 8, 8)
    assert data.identification.gallery.shape == (10, 1, 8, 8)
    check_verification(data.test, 200)
    check_verification(data.val, 100)


@pytest.mark.parametrize("key", ["test_pairs", "val_pairs"])
def test_digits_too_many_pairs_is_a_data_error(key: str) -> None:
    with pytest.raises(DataError, match=rf"^data\.{key}: .*digits"):
        build_data(DataSpec(name="digits", **{key: 100_000}))


# -- the pair builders ------------------------------------------------------------------


def labels_of(counts: list[int]) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(5).permutation(labels)  # any order


@pytest.mark.parametrize(
    "counts", [[2] * 30, [3, 5, 2, 9, 4, 7, 6, 2, 2, 8], [40] * 25, [1, 1, 5, 5, 5]]
)
def test_same_and_different_pairs(counts: list[int]) -> None:
    labels = labels_of(counts)
    rng = np.random.default_rng(0)
    same_total = pairs.count_same_pairs(labels)
    assert same_total == sum(n * (n - 1) // 2 for n in counts)
    n = len(labels)
    assert pairs.count_different_pairs(labels) == n * (n - 1) // 2 - same_total
    for take in (1, same_total // 3, same_total):  # including every pair there is
        a, b = pairs.same_pairs(labels, take, rng)
        assert a.shape == (take,) and np.all(labels[a] == labels[b]) and np.all(a != b)
        assert np.unique(np.minimum(a, b) * n + np.maximum(a, b)).size == take
    different_total = pairs.count_different_pairs(labels)
    for take in (1, 50, different_total):
        a, b = pairs.different_pairs(labels, take, rng)
        assert a.shape == (take,) and np.all(labels[a] != labels[b])
        assert np.unique(np.minimum(a, b) * n + np.maximum(a, b)).size == take
    with pytest.raises(ValueError):
        pairs.same_pairs(labels, same_total + 1, rng)


def test_different_pairs_on_a_large_pool() -> None:
    labels = np.repeat(np.arange(5000), 2)  # 50 M pairs
    a, b = pairs.different_pairs(labels, 20_000, np.random.default_rng(1))
    assert np.all(labels[a] != labels[b])
    assert np.unique(np.minimum(a, b) * 10_000 + np.maximum(a, b)).size == 20_000


def test_same_pairs_unranking_on_large_groups() -> None:
    labels = np.repeat(np.arange(3), 100_000)  # ~1.5e10 same pairs: float rounding territory
    a, b = pairs.same_pairs(labels, 5000, np.random.default_rng(2))
    assert np.all(labels[a] == labels[b]) and np.all(a != b)
    assert a.max() < labels.shape[0] and b.max() < labels.shape[0]


def test_verification_pairs_structure_and_errors() -> None:
    labels = labels_of([4] * 10)  # 60 same pairs, 720 different pairs
    left, right, issame = pairs.verification_pairs(
        labels, 120, np.random.default_rng(0), key="data.test_pairs", pool="p"
    )
    assert left.shape == right.shape == issame.shape == (120,)
    for fold in range(10):
        part = issame[fold * 12 : (fold + 1) * 12]
        assert part[:6].all() and not part[6:].any()
    np.testing.assert_array_equal(labels[left] == labels[right], issame)
    message = (
        r"^data\.test_pairs: 140 pairs need 70 same .* but p has 60 same .*\(at most 120 pairs\)$"
    )
    with pytest.raises(DataError, match=message):
        pairs.verification_pairs(
            labels, 140, np.random.default_rng(0), key="data.test_pairs", pool="p"
        )
    with pytest.raises(DataError, match="multiple of 20"):
        pairs.verification_pairs(labels, 30, np.random.default_rng(0), key="data.x", pool="p")


def test_identification_split_puts_one_of_each_label_in_the_gallery() -> None:
    labels = labels_of([3, 1, 4, 2])
    probes, gallery = pairs.identification_split(labels, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(labels[gallery]), np.arange(4))
    assert np.union1d(probes, gallery).size == labels.size
    assert np.intersect1d(probes, gallery).size == 0


def test_unknown_dataset_is_a_data_error() -> None:
    spec = SyntheticData.model_construct(**{**DataSpec().model_dump(), "name": "mnist"})
    with pytest.raises(DataError, match="data.name"):
        build_data(spec)


def test_digits_read_without_importing_sklearn_equal_load_digits(monkeypatch):
    """The bundled file read directly (no scikit-learn import: about a second per sweep
    worker) gives exactly what `load_digits` gives, as does the fallback through it."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    from adastudy.data import digits

    bunch = load_digits()
    reference = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(np.float32)
    for bundled in (digits._bundled_file, lambda: None):
        monkeypatch.setattr(digits, "_bundled_file", bundled)
        images, labels = digits._load()
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert np.array_equal(images, reference) and np.array_equal(labels, bunch.target)
    code = ("import sys; from adastudy.data import digits; digits._load(); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
