"""Checking a face data set on disk: what `adastudy data check PATH` reports.

    report = check("faces_emore")            # a folder holding train.rec + train.idx
    report.identities, report.images, report.corrupt

`identify` tells the format from the path; `check` opens the set with its reader
(`recordio`, `verification_bin`, `folders`), counts identities, images and pairs, and
decodes a sample of `SAMPLE` images spread evenly over the set (every image with
`full=True`). Two kinds of problems are kept apart, so a checker can exit 1 on the
first and 2 on the second:

- a corrupt record or line (a bad magic number, a truncated record, an index offset
  past the end of the `.rec`, an undecodable image, a pairs line naming a missing
  image) is listed in `CheckReport.corrupt`, one line each, and checking goes on;
- a set that cannot be read as a whole (a missing file, an unknown format, a `.bin`
  that is not the expected pickle, a folder with no identities, a malformed `.idx`, an
  unreadable key-0 meta record, a pairs file none of whose pairs resolve) raises
  `DataError`.

A RecordIO check reads the header of every record, sampled or not (the labels give
the identity count, and a broken record is found even when it is not sampled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adastudy.data.base import DataError
from adastudy.data.folders import IMAGE_SUFFIXES, ImageFolder, read_pairs_txt
from adastudy.data.images import decode_image
from adastudy.data.recordio import RecordIOReader
from adastudy.data.verification_bin import load_bin

__all__ = ["FORMATS", "MAX_LISTED", "SAMPLE", "CheckReport", "check", "identify"]

FORMATS = ("recordio", "bin", "folder", "pairs")
#: Images decoded by a check without `full=True`, spread evenly over the set.
SAMPLE = 100
#: Corrupt lines kept in a report; the rest are only counted (a truncated download of
#: a 5.8M-record .rec would otherwise list millions of offsets past its end).
MAX_LISTED = 1000

Progress = Callable[[int, int], None]


@dataclass
class CheckReport:
    """What a check found. `None` marks a count the format does not have."""

    format: str  # one of FORMATS
    path: Path
    identities: int | None  # distinct labels (recordio, folder) or names (pairs); None: bin
    images: int  # images in the set (for pairs: distinct images the pairs name)
    pairs: int | None  # verification pairs (bin, pairs); None otherwise
    decoded: int  # images decoded without error (the sample, or all with full=True)
    image_shape: tuple[int, int] | None  # (h, w) of the first decoded image
    corrupt: list[str] = field(default_factory=list)  # at most MAX_LISTED lines
    corrupt_count: int = 0  # every corrupt record or line, listed or not
    full: bool = False  # whether every image was decoded, not a sample

    @property
    def ok(self) -> bool:
        """True when nothing corrupt was found."""
        return self.corrupt_count == 0

    def to_json(self) -> dict[str, object]:
        """The report as JSON-ready values (`path` a string, `image_shape` a list)."""
        return {
            "format": self.format,
            "path": str(self.path),
            "identities": self.identities,
            "images": self.images,
            "pairs": self.pairs,
            "decoded": self.decoded,
            "image_shape": list(self.image_shape) if self.image_shape is not None else None,
            "full": self.full,
            "corrupt": list(self.corrupt),
            "corrupt_count": self.corrupt_count,
        }


def _has_identity_folder(root: Path) -> bool:
    """Whether `root` holds a sub-folder with an image (stops at the first one)."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            with os.scandir(entry.path) as files:
                if any(os.path.splitext(f.name)[1].lower() in IMAGE_SUFFIXES for f in files):
                    return True
    return False


def identify(path: str | os.PathLike[str]) -> str:
    """The format of the data at `path`, one of `FORMATS`.

    "recordio": a `.rec` (or `.idx`) file, or a folder holding `train.rec`;
    "bin": a `.bin` file; "pairs": a `.txt` file; "folder": a folder of identity
    sub-folders. Anything else raises `DataError`.
    """
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".rec", ".idx"):
            return "recordio"
        if suffix == ".bin":
            return "bin"
        if suffix == ".txt":
            return "pairs"
    elif path.is_dir():
        if (path / "train.rec").is_file():
            return "recordio"
        if _has_identity_folder(path):
            return "folder"
    else:
        raise DataError(f"{path}: no such file or folder")
    raise DataError(
        f"{path}: unknown data format: expected a .rec file (or a folder holding train.rec), "
        "a verification .bin, a pairs .txt, or a folder of identity sub-folders"
    )


class _Findings:
    """The corrupt lines of one check, the first MAX_LISTED kept, all counted."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_LISTED:
            self.lines.append(message)


class _Ticker:
    """Calls `progress(done, total)` at the start, about every 1/1000 of the way, and
    at the end, so a progress bar is not redrawn millions of times."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.step = max(1, total // 1000)
        if progress is not None:
            progress(0, total)

    def tick(self, done: int) -> None:
        if self.progress is not None and (done % self.step == 0 or done == self.total):
            self.progress(done, self.total)


def _sample(count: int, full: bool) -> list[int]:
    """The positions of the images to decode: all, or SAMPLE spread evenly over them."""
    if full or count <= SAMPLE:
        return list(range(count))
    # count > SAMPLE: the rounded points are more than 1 apart, so all distinct.
    return [int(i) for i in np.linspace(0, count - 1, SAMPLE).round()]


class _Decoder:
    """Decodes images, counting successes and keeping the first image's shape."""

    def __init__(self, findings: _Findings) -> None:
        self.findings = findings
        self.decoded = 0
        self.shape: tuple[int, int] | None = None

    def decode(self, data: bytes, where: str) -> None:
        try:
            pixels = decode_image(data, where)
        except DataError as exc:
            self.findings.add(str(exc))
            return
        self.decoded += 1
        if self.shape is None:
            self.shape = (int(pixels.shape[0]), int(pixels.shape[1]))


def _decode_files(
    files: list[Path], full: bool, decoder: _Decoder, progress: Progress | None
) -> None:
    """Decode a sample of `files` (all with `full`), noting unreadable ones as corrupt."""
    chosen = _sample(len(files), full)
    ticker = _Ticker(progress, len(chosen))
    for done, index in enumerate(chosen, start=1):
        image = files[index]
        try:
            data = image.read_bytes()
        except OSError as exc:
            decoder.findings.add(f"{image}: cannot read ({exc.strerror or exc})")
        else:
            decoder.decode(data, str(image))
        ticker.tick(done)


def _check_recordio(path: Path, full: bool, progress: Progress | None) -> CheckReport:
    if path.is_dir():
        reader = RecordIOReader(path / "train.rec")
    elif path.suffix.lower() == ".idx":
        reader = RecordIOReader(path.with_suffix(".rec"), path)
    else:
        reader = RecordIOReader(path)
    findings = _Findings()
    decoder = _Decoder(findings)
    num_classes = reader.num_classes if reader.meta is not None else None
    sampled = set(_sample(len(reader), full))
    ticker = _Ticker(progress, len(reader))
    labels: set[int] = set()
    for position, key in enumerate(int(k) for k in reader.keys):
        where = f"{reader.rec_path}: record {key}"
        try:
            if position in sampled:
                label, data = reader.read(key)
            else:
                label, data = int(reader.header(key).labels[0]), None
        except DataError as exc:
            findings.add(str(exc))
        else:
            if label < 0 or (num_classes is not None and label >= num_classes):
                bound = "" if num_classes is None else f" (the meta record counts {num_classes})"
                findings.add(f"{where}: label {label} is not a class index{bound}")
            else:
                labels.add(label)
            if data is not None:
                decoder.decode(data, where)
        ticker.tick(position + 1)
    return CheckReport(
        format="recordio",
        path=path,
        identities=len(labels),
        images=len(reader),
        pairs=None,
        decoded=decoder.decoded,
        image_shape=decoder.shape,
        corrupt=findings.lines,
        corrupt_count=findings.count,
        full=full,
    )


def _check_bin(path: Path, full: bool, progress: Progress | None) -> CheckReport:
    images, issame = load_bin(path)
    findings = _Findings()
    decoder = _Decoder(findings)
    chosen = _sample(len(images), full)
    ticker = _Ticker(progress, len(chosen))
    for done, index in enumerate(chosen, start=1):
        decoder.decode(images[index], f"{path}: image {index} (pair {index // 2})")
        ticker.tick(done)
    return CheckReport(
        format="bin",
        path=path,
        identities=None,
        images=len(images),
        pairs=len(issame),
        decoded=decoder.decoded,
        image_shape=decoder.shape,
        corrupt=findings.lines,
        corrupt_count=findings.count,
        full=full,
    )


def _check_folder(path: Path, full: bool, progress: Progress | None) -> CheckReport:
    faces = ImageFolder(path)
    findings = _Findings()
    decoder = _Decoder(findings)
    _decode_files(faces.paths, full, decoder, progress)
    return CheckReport(
        format="folder",
        path=path,
        identities=faces.num_classes,
        images=len(faces),
        pairs=None,
        decoded=decoder.decoded,
        image_shape=decoder.shape,
        corrupt=findings.lines,
        corrupt_count=findings.count,
        full=full,
    )


def _check_pairs(
    path: Path, images: Path | None, full: bool, progress: Progress | None
) -> CheckReport:
    folder = images if images is not None else path.parent
    problems: list[str] = []
    pairs = read_pairs_txt(path, folder, problems=problems)
    if not pairs:
        first = f" (line problems, first: {problems[0]})" if problems else ""
        raise DataError(
            f"{path}: no pair resolves to two images under {folder}{first}; "
            "is it a pairs file, and is that the image folder?"
        )
    findings = _Findings()
    for message in problems:
        findings.add(message)
    decoder = _Decoder(findings)
    # Each image once, in first-use order (LFW's 6,000 pairs use 7,701 images).
    distinct = list(dict.fromkeys(image for left, right, _ in pairs for image in (left, right)))
    _decode_files(distinct, full, decoder, progress)
    return CheckReport(
        format="pairs",
        path=path,
        identities=len({image.parent.name for image in distinct}),
        images=len(distinct),
        pairs=len(pairs),
        decoded=decoder.decoded,
        image_shape=decoder.shape,
        corrupt=findings.lines,
        corrupt_count=findings.count,
        full=full,
    )


def check(
    path: str | os.PathLike[str],
    full: bool = False,
    images: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Check the face data at `path` (any format `identify` knows) and report on it.

    `full` decodes every image instead of a sample of `SAMPLE`; `images` is the image
    folder a pairs file refers to (default: the folder holding the pairs file), and
    is refused for the other formats. `progress(done, total)`, when given, is called
    as the check goes (at most about 1,000 times): total is the number of records for
    RecordIO (each header is read), the number of images to decode otherwise.
    Corrupt records are listed in the report; `DataError` means the set cannot be
    read at all (see the module docstring).
    """
    path = Path(path)
    form = identify(path)
    if images is not None and form != "pairs":
        raise DataError(f"{path}: an image folder is given, but only a pairs file needs one")
    if form == "recordio":
        return _check_recordio(path, full, progress)
    if form == "bin":
        return _check_bin(path, full, progress)
    if form == "folder":
        return _check_folder(path, full, progress)
    return _check_pairs(path, Path(images) if images is not None else None, full, progress)
