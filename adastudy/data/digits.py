"""scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes, no download.

A closed-set dataset: evaluation samples are new images of the 10 training classes.
The images are split per class, seeded by `DataSpec.seed` (stratified): `TRAIN_SHARE`
for training, `VAL_SHARE` for validation (the `val` pairs), the rest for testing
(`test` and `impostor` pairs, and identification). Split sizes with the bundled data:
train 989, val 269, test 539 (at seed 0; ±1 per class by rounding).

Knobs (`[data] name = "digits"` takes no others): `seed`, `form` ("features": 64
numbers in [0, 1]; "images": (1, 8, 8) in [0, 1]), `val_pairs` and `test_pairs` (a
`DataError` names the knob when a split cannot supply the pairs: at most 2 × its
same-class pairs, 28,520 test pairs and 6,960 val pairs at seed 0). The identification
gallery has one test image per class and no distractors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from adastudy.data import pairs
from adastudy.data.base import DataError, TrialData
from adastudy.data.seeding import numpy_rng
from adastudy.spec import DigitsData as DataSpec

__all__ = ["NUM_CLASSES", "TEST_SHARE", "TRAIN_SHARE", "VAL_SHARE", "build_digits", "split"]

NUM_CLASSES = 10
TRAIN_SHARE = 0.55
VAL_SHARE = 0.15
TEST_SHARE = 1.0 - TRAIN_SHARE - VAL_SHARE


def _bundled_file() -> Path | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (its import
    costs about a second, in every worker process of a sweep)."""
    found = importlib.util.find_spec("sklearn")
    for folder in (found.submodule_search_locations or []) if found else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _load() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64): the file that
    `sklearn.datasets.load_digits` reads (64 pixel values 0-16 and the label per row),
    read the same way; through `load_digits` itself where the file is not found."""
    path = _bundled_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        pixels, target = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
            raise DataError(
                "data.name: 'digits' needs scikit-learn (pip install scikit-learn)"
            ) from exc
        bunch = load_digits()
        pixels, target = bunch.data, bunch.target
    images = (np.asarray(pixels, dtype=np.float64).reshape(-1, 8, 8) / 16.0).astype(np.float32)
    return images, np.asarray(target, dtype=np.int64)


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices into the dataset: a seeded split per class, each sorted."""
    rng = numpy_rng(seed, "digits-split")
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(VAL_SHARE * members.shape[0])
        n_test = round(TEST_SHARE * members.shape[0])
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def build_digits(spec: DataSpec) -> TrialData:
    """The digits dataset of `spec` (see the module docstring)."""
    images, labels = _load()
    train, val, test = split(labels, spec.seed)
    if spec.form == "features":
        inputs = torch.from_numpy(images.reshape(-1, 64))
        input_shape: tuple[int, ...] = (64,)
    else:
        inputs = torch.from_numpy(images.reshape(-1, 1, 8, 8))
        input_shape = (1, 8, 8)

    def rows(index: np.ndarray) -> torch.Tensor:
        return inputs[torch.from_numpy(index)].contiguous()

    val_inputs, test_inputs = rows(val), rows(test)
    val_pairs = pairs.verification_pairs(
        labels[val],
        spec.val_pairs,
        numpy_rng(spec.seed, "val-pairs"),
        key="data.val_pairs",
        pool=f"the digits validation split ({val.shape[0]} images)",
    )
    test_pairs = pairs.verification_pairs(
        labels[test],
        spec.test_pairs,
        numpy_rng(spec.seed, "test-pairs"),
        key="data.test_pairs",
        pool=f"the digits test split ({test.shape[0]} images)",
    )
    impostor = pairs.impostor_pairs(labels[test], numpy_rng(spec.seed, "impostor-pairs"))
    identification = pairs.identification_set(
        test_inputs, labels[test], numpy_rng(spec.seed, "identification")
    )
    return TrialData(
        name="digits",
        form=spec.form,
        num_classes=NUM_CLASSES,
        input_shape=input_shape,
        train_inputs=rows(train),
        train_labels=torch.from_numpy(labels[train]),
        val=pairs.pair_set(val_inputs, val_pairs),
        test=pairs.pair_set(test_inputs, test_pairs),
        impostor=pairs.pair_set(test_inputs, impostor),
        identification=identification,
        flippable=False,
    )
