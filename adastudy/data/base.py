"""The containers every dataset fills, and the error data problems raise.

These are plain frozen dataclasses of tensors, so the trial layer (training,
evaluation) needs to know nothing about where the data came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adastudy.errors import AdastudyError

__all__ = ["DataError", "IdentificationSet", "PairSet", "TrialData"]


class DataError(AdastudyError):
    """Data that cannot be built as asked: e.g. more pairs than a split allows."""


@dataclass(frozen=True)
class PairSet:
    """LFW-style verification pairs over `inputs`.

    Pair p compares `inputs[left[p]]` with `inputs[right[p]]`; `issame[p]` says whether
    they show the same identity.
    Verification sets (`val`, `test`) hold P pairs in 10 consecutive folds of P/10,
    each fold its P/20 same pairs first, then its P/20 different pairs.
    """

    inputs: torch.Tensor  # (M, *input_shape) float32
    left: torch.Tensor  # (P,) int64
    right: torch.Tensor  # (P,) int64
    issame: torch.Tensor  # (P,) bool

    def __len__(self) -> int:
        return int(self.issame.shape[0])


@dataclass(frozen=True)
class IdentificationSet:
    """Rank-1 identification (MegaFace style): probes against a gallery with distractors."""

    probes: torch.Tensor  # (Np, *input_shape) float32
    probe_labels: torch.Tensor  # (Np,) int64
    gallery: torch.Tensor  # (Ng, *input_shape) float32: one per probe identity + distractors
    gallery_labels: torch.Tensor  # (Ng,) int64; distractors have label -1


@dataclass(frozen=True)
class TrialData:
    """Everything one trial needs: training samples and the held-out evaluation sets."""

    name: str  # "synthetic" or "digits"
    form: str  # "features" or "images"
    num_classes: int  # training classes C
    input_shape: tuple[int, ...]  # (F,) for features, (channels, H, W) for images
    train_inputs: torch.Tensor  # (N, *input_shape) float32
    train_labels: torch.Tensor  # (N,) int64 in [0, C)
    val: PairSet  # validation pairs (for pruning / curves)
    test: PairSet  # test pairs, LFW-style, scored once at the end
    impostor: PairSet  # every genuine pair of the test pool (capped) + many impostors
    identification: IdentificationSet
    flippable: bool  # True when a horizontal flip preserves identity
