"""Aligned face images in folders: one sub-folder per identity, and LFW's `pairs.txt`.

    faces = ImageFolder("CASIA-WebFace-aligned")      # root/<identity>/<image>.jpg
    label, jpeg = faces.read(0)
    pairs = read_pairs_txt("lfw/pairs.txt", "lfw")   # [(left, right, issame), ...]

`ImageFolder` follows CASIA-WebFace and torchvision's `ImageFolder`: the identities are
the sub-folders holding at least one image (.jpg, .jpeg, .png, .bmp, any case), sorted
by name to give labels 0 ... K-1, and the images of each are sorted by name. Hidden
entries (a leading dot) and other files are ignored; sub-sub-folders are not searched.

`pairs.txt` (LFW's verification protocol) names images by person and number, the file
`<folder>/<name>/<name>_<i:04d>.jpg`: a line `name i j` is a same-person pair, a line
`name1 i name2 j` a different-person pair. An optional first line of integers (LFW's
"10<TAB>300": folds and pairs per fold half, or a single count) is ignored, as are blank
lines; fields are separated by any whitespace.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adastudy.data.base import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "read_pairs_txt"]

#: The suffixes (lower case) counted as images in an identity folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def _images_in(folder: str) -> list[str]:
    """The image file names directly in `folder`, sorted."""
    with os.scandir(folder) as entries:  # scandir: no stat per file on most file systems
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
            and entry.is_file()
        )


class ImageFolder:
    """The images of a folder of identity sub-folders, with their labels.

    `paths[i]` is image i, `labels[i]` its identity's index into `names` (int64).
    Raises `DataError` when `root` is not a folder or holds no identity sub-folder
    with an image.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such image folder")
        with os.scandir(self.root) as entries:
            folders = sorted(
                entry.name
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir()
            )
        self.names: list[str] = []
        self.paths: list[Path] = []
        labels: list[int] = []
        for name in folders:
            images = _images_in(os.path.join(self.root, name))
            if not images:
                continue  # an empty sub-folder is no identity (its label would train nothing)
            label = len(self.names)
            self.names.append(name)
            self.paths.extend(self.root / name / image for image in images)
            labels.extend([label] * len(images))
        if not self.names:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(
                f"{self.root}: no identities: expected one sub-folder per identity holding "
                f"images ({suffixes})"
            )
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """The number of identities K (labels are 0 ... K-1)."""
        return len(self.names)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> tuple[int, bytes]:
        """(label, encoded image bytes) of image `i`."""
        path = self.paths[i]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        return int(self.labels[i]), data


def _is_number(field: str) -> bool:
    """Whether `field` is a plain decimal number (ASCII digits only, as int() reads)."""
    return field.isascii() and field.isdigit()


def _pair_line(fields: list[str]) -> tuple[str, int, str, int] | None:
    """(name1, i, name2, j) of a pairs line's fields, or None when malformed."""
    if len(fields) == 3:
        fields = [fields[0], fields[1], fields[0], fields[2]]
    if len(fields) != 4 or not (_is_number(fields[1]) and _is_number(fields[3])):
        return None
    first, second = int(fields[1]), int(fields[3])
    if first < 1 or second < 1:
        return None  # LFW numbers images from 1
    return fields[0], first, fields[2], second


def read_pairs_txt(
    path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    problems: list[str] | None = None,
) -> list[tuple[Path, Path, bool]]:
    """The pairs of the LFW-style `pairs.txt` at `path` over the images in `folder`:
    `(left image, right image, same person)` in file order.

    A malformed line, or one that names an image missing from `folder`, raises
    `DataError` with one line naming the file and the line number (and the missing
    file); with a `problems` list given, those lines are skipped and their messages
    appended to it instead (a checker lists them all). A missing `path` always raises.
    """
    path, folder = Path(path), Path(folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such pairs file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the pairs ({exc})") from exc

    def problem(message: str) -> None:
        if problems is None:
            raise DataError(message)
        problems.append(message)

    pairs: list[tuple[Path, Path, bool]] = []
    first_line = True
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if first_line:
            first_line = False
            if all(_is_number(field) for field in fields):
                continue  # the header: fold and pair counts, not a pair
        parsed = _pair_line(fields)
        if parsed is None:
            shown = line.strip() if len(line.strip()) <= 60 else line.strip()[:57] + "..."
            problem(
                f"{path}: line {number}: expected 'name i j' or 'name1 i name2 j', "
                f"found {shown!r}"
            )
            continue
        name1, first, name2, second = parsed
        left = folder / name1 / f"{name1}_{first:04d}.jpg"
        right = folder / name2 / f"{name2}_{second:04d}.jpg"
        missing = [image for image in (left, right) if not image.is_file()]
        if missing:
            problem(f"{path}: line {number}: no image {missing[0]}")
            continue
        pairs.append((left, right, name1 == name2))
    return pairs
