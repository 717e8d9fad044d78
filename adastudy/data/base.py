"""The containers every dataset fills, the training-source protocol, and the error data
problems raise.

Evaluation sets are plain frozen dataclasses of tensors, and training data is a
`TrainSource` (device-resident tensors here, a DataLoader over files in
`adastudy.data.faces`), so the trial layer (training, evaluation) needs to know nothing
about where the data came from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from adastudy.errors import AdastudyError

__all__ = [
    "DataError",
    "IdentificationSet",
    "PairSet",
    "TensorSource",
    "TrainSource",
    "TrialData",
    "normalize_images",
]


class DataError(AdastudyError):
    """Data that cannot be built as asked: e.g. more pairs than a split allows."""


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 face images (N, 3, H, W) as float32 in [-1, 1]: (x / 255 - 0.5) / 0.5, the
    normalisation of insightface's training and evaluation; float inputs pass as they are
    (the embedded datasets give them ready)."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div_(127.5).sub_(1.0)


class TrainSource(Protocol):
    """A trial's training samples, handed out in batches.

    `batches(batch_size, seed, epoch, device)` yields `steps_per_epoch(batch_size)`
    batches `(inputs, labels)` on `device` (inputs float, ready for the model; labels
    int64 in [0, num_classes)), every sample at most once per epoch and the last partial
    batch dropped (BatchNorm needs more than one sample). The same (seed, epoch) gives
    the same batches, whatever was asked before. With `shard = (rank, ranks)` each batch
    is rank `rank`'s slice of that global batch (rows rank·B/ranks … (rank+1)·B/ranks;
    B a multiple of `ranks`). `corrupt` counts the samples skipped so far because they
    could not be read (always 0 for data in memory); `exact_batches` says no batch ever
    loses a row (so the ranks' slices are always the same size).
    """

    num_classes: int
    input_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def batches(
        self, batch_size: int, seed: int, epoch: int, device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    @property
    def corrupt(self) -> int: ...

    @property
    def exact_batches(self) -> bool: ...


def shard_rows(batch: int, shard: tuple[int, int]) -> slice:
    """The rows of a global batch of `batch` that rank `shard[0]` of `shard[1]` takes."""
    rank, ranks = shard
    if batch % ranks:
        from adastudy.errors import ParameterError

        raise ParameterError(f"train.devices: a batch of {batch} does not split into "
                             f"{ranks} equal shards")
    per_rank = batch // ranks
    return slice(rank * per_rank, (rank + 1) * per_rank)


class TensorSource:
    """Training samples held as tensors, copied once to the device and indexed there:
    the fast path for data that fits (the embedded datasets).

    Epoch e's order is the e-th `torch.randperm` of a CPU generator seeded `seed`, as
    the trial loop drew it before sources existed, so results did not change.
    """

    corrupt = 0
    exact_batches = True

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        self.inputs = inputs
        self.labels = labels
        self.num_classes = num_classes
        self.input_shape = tuple(inputs.shape[1:])
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._orders: tuple[int, int, torch.Generator] | None = None  # (seed, next epoch, gen)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // min(batch_size, len(self))

    def _order(self, seed: int, epoch: int) -> torch.Tensor:
        if self._orders is None or self._orders[0] != seed or self._orders[1] > epoch:
            self._orders = (seed, 0, torch.Generator().manual_seed(seed))
        _, next_epoch, generator = self._orders
        for _ in range(epoch - next_epoch):  # epochs skipped (a resumed trial)
            torch.randperm(len(self), generator=generator)
        self._orders = (seed, epoch + 1, generator)
        return torch.randperm(len(self), generator=generator)

    def batches(
        self, batch_size: int, seed: int, epoch: int, device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if device not in self._on:
            self._on = {device: (self.inputs.to(device), self.labels.to(device))}
        inputs, labels = self._on[device]
        batch = min(batch_size, len(self))
        rows = shard_rows(batch, shard)
        order = self._order(seed, epoch).to(device)
        for b in range(self.steps_per_epoch(batch_size)):
            index = order[b * batch : (b + 1) * batch][rows]
            yield inputs[index], labels[index]


@dataclass(frozen=True)
class PairSet:
    """LFW-style verification pairs over `inputs`.

    Pair p compares `inputs[left[p]]` with `inputs[right[p]]`; `issame[p]` says whether
    they show the same identity.
    Verification sets (`val`, `test`) hold P pairs in 10 consecutive folds of P/10,
    each fold its P/20 same pairs first, then its P/20 different pairs.
    """

    inputs: torch.Tensor  # (M, *input_shape) float32, or uint8 images (`normalize_images`)
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
    """Everything one trial needs: training samples and the held-out evaluation sets.

    The embedded datasets give `train_inputs` / `train_labels` (a `TensorSource`), their
    own `test`, `impostor` and `identification` sets; data on disk gives `files` (a
    DataLoader source) and the `[eval.<name>]` sets in `eval_sets`.
    """

    name: str  # "synthetic", "digits", "recordio" or "folder"
    form: str  # "features" or "images"
    num_classes: int  # training classes C
    input_shape: tuple[int, ...]  # (F,) for features, (channels, H, W) for images
    val: PairSet  # validation pairs (selection and pruning; never a test set)
    flippable: bool  # True when a horizontal flip preserves identity
    train_inputs: torch.Tensor | None = None  # (N, *input_shape) float32
    train_labels: torch.Tensor | None = None  # (N,) int64 in [0, C)
    test: PairSet | None = None  # test pairs, LFW-style, scored once at the end
    impostor: PairSet | None = None  # every genuine test pair (capped) + many impostors
    identification: IdentificationSet | None = None
    #: Named test sets (`[eval.<name>]`), scored once at the end, in the spec's order.
    eval_sets: dict[str, PairSet] = field(default_factory=dict)
    files: TrainSource | None = None  # the training source of data on disk

    @functools.cached_property
    def source(self) -> TrainSource:
        """The training samples as a `TrainSource` (one per data set: a cached data set
        keeps its samples on the device between trials)."""
        if self.files is not None:
            return self.files
        if self.train_inputs is None or self.train_labels is None:
            raise DataError(f"{self.name}: the data has no training samples")
        return TensorSource(self.train_inputs, self.train_labels, self.num_classes)
