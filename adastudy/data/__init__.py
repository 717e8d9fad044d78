"""Datasets for one trial: training samples plus held-out verification and identification sets.

    from adastudy.data import build_data
    data = build_data(spec.data)        # a TrialData
    data.test.inputs[data.test.left]    # left samples of the LFW-style test pairs

Two embedded datasets, picked by `DataSpec.name`, neither downloads anything:

- "synthetic" (`adastudy.data.synthetic`): seeded identities, open set (evaluation
  identities are never trained on), as feature vectors or small mirror-symmetric images.
- "digits" (`adastudy.data.digits`): scikit-learn's bundled 8x8 handwritten digits,
  closed set (10 classes), split seeded and stratified into train / val / test.

Every random draw uses a local generator seeded from `DataSpec.seed`: the same spec gives
bit-identical tensors, whatever torch's or numpy's global random state.
"""

from __future__ import annotations

from adastudy.data.base import DataError, IdentificationSet, PairSet, TrialData
from adastudy.spec import DataSpec

__all__ = ["DataError", "IdentificationSet", "PairSet", "TrialData", "build_data"]


def build_data(spec: DataSpec) -> TrialData:
    """The dataset `spec.name` with its knobs; raises `DataError` when it cannot be built."""
    if spec.name == "synthetic":
        from adastudy.data.synthetic import build_synthetic

        return build_synthetic(spec)
    if spec.name == "digits":
        from adastudy.data.digits import build_digits

        return build_digits(spec)
    raise DataError(f"data.name: unknown dataset {spec.name!r}")
