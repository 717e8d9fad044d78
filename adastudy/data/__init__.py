"""Datasets for one trial: training samples plus held-out verification and identification sets.

    from adastudy.data import build_trial_data
    data = build_trial_data(trial)      # a TrialData, for a TrialSpec
    data.source.batches(256, seed, epoch, device)   # the training batches
    data.val                            # the validation pairs (never a test set)

Embedded datasets, picked by `[data] name`, which download nothing:

- "synthetic" (`adastudy.data.synthetic`): seeded identities, open set (evaluation
  identities are never trained on), as feature vectors or small mirror-symmetric images.
- "digits" (`adastudy.data.digits`): scikit-learn's bundled 8x8 handwritten digits,
  closed set (10 classes), split seeded and stratified into train / val / test.

And the user's face images on disk (`adastudy.data.faces`): "recordio" (insightface's
train.rec + train.idx) and "folder" (one sub-folder per identity), tested on the
`[eval.<name>]` sets (insightface `.bin` files, LFW `pairs.txt`).

Every random draw uses a local generator seeded from the data's `seed`: the same spec
gives bit-identical tensors, whatever torch's or numpy's global random state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adastudy.data.base import (
    DataError,
    IdentificationSet,
    PairSet,
    TensorSource,
    TrainSource,
    TrialData,
)

__all__ = [
    "DataError",
    "IdentificationSet",
    "PairSet",
    "TensorSource",
    "TrainSource",
    "TrialData",
    "build_data",
    "build_trial_data",
    "check_paths",
    "declared_num_classes",
]


def build_data(spec: Any, eval_sets: Mapping[str, Any] | None = None,
               validation: str = "holdout") -> TrialData:
    """The dataset `spec.name` with its knobs (`[data]`); data on disk also takes its
    `[eval]` sets and where validation comes from (see `build_faces`). Raises
    `DataError` when it cannot be built."""
    if spec.name == "synthetic":
        from adastudy.data.synthetic import build_synthetic

        return build_synthetic(spec)
    if spec.name == "digits":
        from adastudy.data.digits import build_digits

        return build_digits(spec)
    if spec.name in ("recordio", "folder"):
        from adastudy.data.faces import build_faces

        return build_faces(spec, eval_sets, validation)
    raise DataError(f"data.name: unknown dataset {spec.name!r}")


def build_trial_data(trial: Any) -> TrialData:
    """The data of a `TrialSpec`: its `[data]`, and for data on disk its `[eval]` sets
    and validation source."""
    if trial.data.name in ("synthetic", "digits"):
        return build_data(trial.data)
    return build_data(trial.data, trial.eval, trial.validation_source())


def declared_num_classes(spec: Any) -> int | None:
    """The training classes C that a `[data]` section declares without reading any file
    (synthetic: its identities; digits: 10); None for data on disk, whose count is known
    once it is opened (then from `TrialData.num_classes`)."""
    if spec.name == "synthetic":
        return int(spec.identities)
    if spec.name == "digits":
        from adastudy.data.digits import NUM_CLASSES

        return NUM_CLASSES
    return None


def check_paths(study: Any) -> None:
    """Raise `DataError` (one line, naming the key and the path) when a `[data]` path of
    any variant, or an `[eval]` file or image folder, of the `StudySpec` is missing:
    checked before a sweep writes anything, not found by its first trial."""
    from pathlib import Path

    from adastudy.spec import MAIN_VARIANT

    for variant in study.variant_names():
        data = study.variant_sections(variant)[0]
        if data.name not in ("recordio", "folder"):
            continue
        where = "data" if variant == MAIN_VARIANT else f"variants.{variant}.data"
        path = Path(data.path)
        if data.name == "recordio":
            found = (path / "train.rec").is_file() if path.is_dir() else path.is_file()
            wanted = "a .rec file, or a folder holding train.rec"
        else:
            found, wanted = path.is_dir(), "a folder of identity sub-folders"
        if not found:
            raise DataError(f"{where}.path: {path}: not found (expected {wanted})")
    for name, eval_set in study.eval.items():
        if not Path(eval_set.path).is_file():
            raise DataError(f"eval.{name}.path: {eval_set.path}: no such file")
        if eval_set.images is not None and not Path(eval_set.images).is_dir():
            raise DataError(f"eval.{name}.images: {eval_set.images}: no such folder")
