"""Face images on disk as a trial's data: a DataLoader training source and `[eval]` sets.

    data = build_faces(trial.data, trial.eval, trial.validation_source())
    for x, y in data.source.batches(256, seed=0, epoch=0, device=device): ...

Training data is an insightface RecordIO set (`recordio.RecordIOReader`) or a folder of
identity sub-folders (`folders.ImageFolder`); both hand out encoded images, which worker
processes decode (`data.workers`). Everything random about a batch (the order of an
epoch and which images are flipped) is drawn in the trial's process from (seed, epoch),
so the same seed gives the same batches with 0, 1 or 8 workers; workers only decode.
Images reach the device as uint8 (a quarter of the bytes of float32, in pinned memory
on CUDA) and are normalised there, `(x / 255 - 0.5) / 0.5`.

A corrupt training sample (a record or image that cannot be read or decoded) is
skipped and counted; past `data.max_corrupt` distinct ones (default 0.1 % of the
samples) the trial fails with the count and the first error. Evaluation sets are
strict: one undecodable test image raises, since a test with holes is another test.

Validation never comes from a test set: either `data.val_identities` identities are
held out of training and give `data.val_pairs` pairs ("holdout"), or an `[eval]` set is
named for it (and is then not a test set).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from adastudy.data import pairs
from adastudy.data.base import DataError, PairSet, TrialData, normalize_images, shard_rows
from adastudy.data.folders import ImageFolder, read_pairs_txt
from adastudy.data.images import decode_image
from adastudy.data.recordio import RecordIOReader
from adastudy.data.seeding import numpy_rng, stream_seed
from adastudy.data.verification_bin import load_bin

__all__ = [
    "CORRUPT_SHARE",
    "FaceImages",
    "LoaderSource",
    "build_faces",
    "default_workers",
    "load_eval_set",
    "open_images",
]

#: Default `data.max_corrupt`: this share of the training samples.
CORRUPT_SHARE = 1e-3
#: At most this many decoding workers by default (more rarely pays on one trial).
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Decoding workers when `data.workers` is unset: the cores this process may use,
    less one for the training loop, at most `MAX_DEFAULT_WORKERS` (1 on 2 cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


# -- the images of a training set ------------------------------------------------------


class _Items:
    """A training set's samples by position: `read(i) -> (label, bytes)`, `labels`,
    `where(i)` (what an error names). One class for RecordIO and folders."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        if kind == "recordio":
            rec = path / "train.rec" if path.is_dir() else path
            self.reader: RecordIOReader | ImageFolder = RecordIOReader(rec)
            self.keys: np.ndarray | None = self.reader.keys
            # Every header once (no image bytes): the labels choose held-out identities.
            self.labels = self.reader.labels()
        else:
            self.reader = ImageFolder(path)
            self.keys = None
            self.labels = self.reader.labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def read(self, i: int) -> tuple[int, bytes]:
        if self.keys is not None:
            return self.reader.read_image(i)
        return self.reader.read(i)

    def where(self, i: int) -> str:
        if self.keys is not None:
            return f"{self.reader.rec_path}: record {int(self.keys[i])}"
        return str(self.reader.paths[i])


def open_images(path: str | os.PathLike[str], kind: str) -> _Items:
    """The samples of the training set at `path`, `kind` "recordio" or "folder"."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.path: {path}: no such file or folder")
    return _Items(path, kind)


def _pixels(data: bytes, i: int, where: Callable[[int], str], size: int) -> np.ndarray:
    """Decoded H x W x 3 uint8 pixels of image `i`, resized to size x size when they are
    not; `where(i)` names it in an error (built only then: it costs a sample time)."""
    try:
        pixels = decode_image(data, "")
    except DataError as exc:
        raise DataError(f"{where(i)}{exc}") from exc
    if pixels.shape[0] != size or pixels.shape[1] != size:
        resized = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(resized, dtype=np.uint8)
    return pixels


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


class FaceImages(Dataset):
    """Training samples for a DataLoader: item `(i, flip)` is `(image, class, error)`,
    the image uint8 (3, size, size), mirrored when `flip`; a sample that cannot be read
    gives `(None, -1, (i, error message))`, so one bad file costs the batch one sample,
    not the trial. `classes[label]` maps a stored label to its training class (-1: held out).
    """

    def __init__(self, items: _Items, positions: np.ndarray, classes: np.ndarray,
                 size: int) -> None:
        self.items = items
        self.positions = positions
        self.classes = classes
        self.size = size

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def __getitem__(
        self, item: tuple[int, bool]
    ) -> tuple[torch.Tensor | None, int, tuple[int, str] | None]:
        index, flip = item
        position = int(self.positions[index])
        try:
            label, data = self.items.read(position)
            if not 0 <= label < self.classes.shape[0] or self.classes[label] < 0:
                raise DataError(f"{self.items.where(position)}: label {label} is not one of "
                                "the training classes")
            pixels = _pixels(data, position, self.items.where, self.size)
        except DataError as exc:
            return None, -1, (index, str(exc))
        if flip:
            pixels = pixels[:, ::-1]
        return _chw(pixels), int(self.classes[label]), None


def _collate(
    items: list[tuple[torch.Tensor | None, int, tuple[int, str] | None]],
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """(images, classes, [(sample index, error)]) of a batch, its bad samples left out."""
    good = [(x, y) for x, y, error in items if error is None]
    errors = [error for _, _, error in items if error is not None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), errors
    # default_collate stacks into shared memory inside a worker: no copy on the way back.
    images, classes = default_collate(good)
    return images, classes, errors


class _EpochBatches(Sampler):
    """The batches of one epoch as lists of `(index, flip)`: a permutation and the flips
    drawn from (seed, epoch) in the trial's process; the last partial batch dropped."""

    def __init__(self, count: int, batch_size: int, flip: bool,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.count = count
        self.batch_size = batch_size
        self.flip = flip
        self.rows = shard_rows(batch_size, shard)  # this rank's slice of each batch
        self.seed = 0
        self.epoch = 0

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        rng = np.random.default_rng(stream_seed(self.seed, f"faces-epoch-{self.epoch}"))
        order = rng.permutation(self.count).tolist()
        flips = (rng.random(self.count) < 0.5 if self.flip
                 else np.zeros(self.count, bool)).tolist()
        size = self.batch_size
        for b in range(len(self)):
            chosen = slice(b * size, (b + 1) * size)
            yield list(zip(order[chosen], flips[chosen], strict=True))[self.rows]

    def __len__(self) -> int:
        return self.count // self.batch_size


def _seed_worker(worker_id: int) -> None:
    """numpy's and Python's generators in a worker, from the seed torch gave it (a
    different one per worker and per loader); nothing a batch holds depends on them."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class LoaderSource:
    """A `TrainSource` over face images on disk, decoded by `workers` processes.

    One DataLoader per batch size, its workers kept between epochs (and trials, while
    the data set is cached); on CUDA its batches are pinned and copied without
    blocking. Corrupt samples are counted in the trial's process (`corrupt`, distinct
    samples) and past `max_corrupt` raise `DataError` with the count.
    """

    def __init__(self, dataset: FaceImages, num_classes: int, *, workers: int, flip: bool,
                 max_corrupt: int, where: str) -> None:
        self.dataset = dataset
        self.num_classes = num_classes
        self.input_shape = (3, dataset.size, dataset.size)
        self.workers = workers
        self.flip = flip
        self.max_corrupt = max_corrupt
        self.where = where
        self._bad: dict[int, str] = {}
        self._loaders: dict[tuple[int, bool, tuple[int, int]],
                            tuple[DataLoader, _EpochBatches]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // min(batch_size, len(self))

    @property
    def corrupt(self) -> int:
        return len(self._bad)

    #: A corrupt sample leaves its batch a row short.
    exact_batches = False

    def _loader(self, batch_size: int, pin: bool, shard: tuple[int, int]
                ) -> tuple[DataLoader, _EpochBatches]:
        key = (batch_size, pin, shard)
        if key not in self._loaders:
            sampler = _EpochBatches(len(self), batch_size, self.flip, shard)
            loader = DataLoader(
                self.dataset, batch_sampler=sampler, num_workers=self.workers,
                collate_fn=_collate, pin_memory=pin, worker_init_fn=_seed_worker,
                # Its own generator for the workers' base seed: drawing it from torch's
                # global one would change the trial's dropout with the worker count.
                generator=torch.Generator().manual_seed(stream_seed(0, "faces-workers")),
                persistent_workers=self.workers > 0,
                prefetch_factor=4 if self.workers > 0 else None,
            )
            self._loaders = {key: (loader, sampler)}  # one set of workers at a time
        return self._loaders[key]

    def batches(
        self, batch_size: int, seed: int, epoch: int, device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch = min(batch_size, len(self))
        loader, sampler = self._loader(batch, device.type == "cuda", shard)
        sampler.seed, sampler.epoch = seed, epoch
        for images, classes, errors in loader:
            for index, message in errors:
                self._note(index, message)
            # BatchNorm needs two samples; the ranks of one trial step together, so a
            # rank's short slice still steps (its BatchNorm counts every rank's rows).
            if images.shape[0] < 2 and shard[1] == 1:
                continue
            x = normalize_images(images.to(device, non_blocking=True))
            yield x, classes.to(device, non_blocking=True)

    def _note(self, index: int, message: str) -> None:
        self._bad.setdefault(index, message)
        if len(self._bad) > self.max_corrupt:
            first = next(iter(self._bad.values()))
            raise DataError(
                f"{self.where}: {len(self._bad)} corrupt training samples, more than "
                f"data.max_corrupt = {self.max_corrupt}; the first: {first}"
            )


# -- verification sets -----------------------------------------------------------------


class _Blobs(Dataset):
    """Images to decode for an evaluation set: item i is `(image, error)`."""

    def __init__(self, fetch: Callable[[int], bytes], where: Callable[[int], str], count: int,
                 size: int) -> None:
        self.fetch, self.where, self.count, self.size = fetch, where, count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, str | None]:
        try:
            return _chw(_pixels(self.fetch(i), i, self.where, self.size)), None
        except DataError as exc:
            return None, str(exc)


def _decode_all(blobs: _Blobs, workers: int) -> torch.Tensor:
    """Every image of `blobs` as uint8 (N, 3, size, size); the first undecodable one
    raises (an evaluation set is scored whole or not at all)."""
    out = torch.empty(len(blobs), 3, blobs.size, blobs.size, dtype=torch.uint8)
    loader = DataLoader(blobs, batch_size=256, num_workers=workers if len(blobs) > 256 else 0,
                        collate_fn=list)
    done = 0
    for chunk in loader:
        for image, error in chunk:
            if error is not None:
                raise DataError(error)
            out[done] = image
            done += 1
    return out


def load_eval_set(name: str, path: str | os.PathLike[str], images: str | None, size: int,
                  workers: int = 0) -> PairSet:
    """The `[eval.<name>]` set at `path` as a `PairSet` of uint8 images: an insightface
    `.bin` (pair p = images 2p and 2p + 1) or an LFW `pairs.txt` over the image folder
    `images` (default: the folder holding it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        blobs, issame = load_bin(path)
        decoded = _decode_all(_Blobs(blobs.__getitem__, lambda i: f"{path}: image {i} "
                                     f"(pair {i // 2})", len(blobs), size), workers)
        left = torch.arange(0, len(blobs), 2, dtype=torch.int64)
        return PairSet(decoded, left, left + 1, torch.from_numpy(np.asarray(issame, bool)))
    if suffix == ".txt":
        folder = Path(images) if images is not None else path.parent
        listed = read_pairs_txt(path, folder)
        if not listed:
            raise DataError(f"{path}: holds no pairs")
        files = list(dict.fromkeys(f for left, right, _ in listed for f in (left, right)))
        position = {f: i for i, f in enumerate(files)}

        def fetch(i: int) -> bytes:
            try:
                return files[i].read_bytes()
            except OSError as exc:
                raise DataError(f"{files[i]}: cannot read ({exc.strerror or exc})") from exc

        decoded = _decode_all(_Blobs(fetch, lambda i: str(files[i]), len(files), size),
                              workers)
        return PairSet(
            decoded,
            torch.tensor([position[left] for left, _, _ in listed], dtype=torch.int64),
            torch.tensor([position[right] for _, right, _ in listed], dtype=torch.int64),
            torch.tensor([same for _, _, same in listed], dtype=torch.bool),
        )
    if not path.exists():
        raise DataError(f"eval.{name}.path: {path}: no such file")
    raise DataError(f"eval.{name}.path: {path}: expected an insightface .bin or a pairs .txt")


# -- the trial's data ------------------------------------------------------------------


def _held_out(labels: np.ndarray, spec: Any) -> np.ndarray:
    """The labels of `data.val_identities` identities with two or more images, drawn
    from `data.seed`; at least two training identities must remain."""
    values, counts = np.unique(labels, return_counts=True)
    eligible = values[counts >= 2]
    wanted = spec.val_identities
    if wanted > eligible.shape[0] or values.shape[0] - wanted < 2:
        raise DataError(
            f"data.val_identities: {wanted} held-out identities need as many with two or "
            f"more images and two left to train on; {spec.path} has {values.shape[0]} "
            f"identities, {eligible.shape[0]} of them with two or more images"
        )
    rng = numpy_rng(spec.seed, "faces-holdout")
    return np.sort(rng.choice(eligible, size=wanted, replace=False))


def _holdout_pairs(items: _Items, held: np.ndarray, spec: Any, workers: int) -> PairSet:
    """`data.val_pairs` LFW-style pairs over the held-out identities' images; only the
    images the pairs use are decoded."""
    members = np.flatnonzero(np.isin(items.labels, held))
    rng = numpy_rng(spec.seed, "faces-holdout-pairs")
    left, right, issame = pairs.verification_pairs(
        items.labels[members], spec.val_pairs, rng, key="data.val_pairs",
        pool=f"the {held.shape[0]} held-out identities (data.val_identities)")
    used, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    chosen = members[used]

    def fetch(i: int) -> bytes:
        try:
            return items.read(int(chosen[i]))[1]
        except DataError as exc:
            raise DataError(f"{exc} (a validation image of a held-out identity)") from exc

    decoded = _decode_all(_Blobs(fetch, lambda i: items.where(int(chosen[i])), len(chosen),
                                 spec.image_size), workers)
    count = left.shape[0]
    return PairSet(decoded, torch.from_numpy(inverse[:count].astype(np.int64)),
                   torch.from_numpy(inverse[count:].astype(np.int64)),
                   torch.from_numpy(np.asarray(issame, bool)))


def build_faces(spec: Any, eval_sets: Mapping[str, Any] | None = None,
                validation: str = "holdout") -> TrialData:
    """The trial data of a `recordio` or `folder` `[data]` section: the training source,
    the validation pairs (`validation`: "holdout" or the name of one of `eval_sets`),
    and every other `[eval]` set as a test set."""
    eval_sets = dict(eval_sets or {})
    workers = spec.workers if spec.workers is not None else default_workers()
    items = open_images(spec.path, spec.name)
    if len(items) == 0:
        raise DataError(f"data.path: {spec.path}: holds no images")
    tests = {name: load_eval_set(name, e.path, e.images, spec.image_size, workers)
             for name, e in eval_sets.items() if name != validation}
    if validation == "holdout":
        held = _held_out(items.labels, spec)
        val = _holdout_pairs(items, held, spec, workers)
    else:
        if validation not in eval_sets:
            raise DataError(f"study.selection: no [eval.{validation}] set")
        chosen = eval_sets[validation]
        held = np.empty(0, np.int64)
        val = load_eval_set(validation, chosen.path, chosen.images, spec.image_size, workers)
    train_mask = ~np.isin(items.labels, held)
    trained = np.unique(items.labels[train_mask])
    if trained.shape[0] < 2:
        raise DataError(f"data.path: {spec.path}: fewer than two identities to train on")
    if trained[0] < 0:
        raise DataError(f"data.path: {spec.path}: a label is negative ({int(trained[0])})")
    classes = np.full(int(trained[-1]) + 1, -1, dtype=np.int64)
    classes[trained] = np.arange(trained.shape[0])
    positions = np.flatnonzero(train_mask).astype(np.int64)
    limit = (spec.max_corrupt if spec.max_corrupt is not None
             else math.floor(CORRUPT_SHARE * positions.shape[0]))
    source = LoaderSource(
        FaceImages(items, positions, classes, spec.image_size), int(trained.shape[0]),
        workers=workers, flip=spec.flip, max_corrupt=limit, where=str(spec.path))
    return TrialData(
        name=spec.name, form="images", num_classes=source.num_classes,
        input_shape=source.input_shape, val=val, flippable=True, eval_sets=tests,
        files=source,
    )

