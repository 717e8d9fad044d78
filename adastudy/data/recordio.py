"""insightface's MXNet RecordIO training sets (`train.rec` + `train.idx`), read without MXNet.

    reader = RecordIOReader("faces_emore/train.rec")   # train.idx next to it
    label, jpeg = reader.read(reader.keys[0])

The file format (dmlc-core's RecordIO, as MXNet writes it):

- a record is `uint32 magic 0xced7230a`, `uint32 lrecord`, the payload, then zero
  padding to a multiple of 4 bytes (all little-endian). The upper 3 bits of `lrecord`
  are a continuation flag (0 whole, 1 start, 2 middle, 3 end), the lower 29 the length.
- MXNet splits a payload at each 4-byte-aligned occurrence of the magic bytes inside it
  (so a reader that resynchronises on the magic never mistakes data for a record start):
  the parts are stored as start / middle ... / end records, and joining them puts the
  magic bytes back between the parts.
- the payload (MXNet's `recordio.pack`) is a header `struct '<IfQQ'` (flag, label, id,
  id2), then `flag` float32 labels when flag > 0, then the encoded image (JPEG or PNG).
- the `.idx` file is text lines `key<TAB>offset`, the byte offset of each record.

insightface stores a meta record at key 0 (flag > 0, labels `(id_start, id_end)`, an empty
image): the images are keys 1 ... id_start - 1, and keys id_start ... id_end - 1 hold one
record per identity, which are not images. Without a meta record (key 0 an ordinary image
with flag 0, or no key 0) every key is an image. A vector label (flag > 0 on an image
record, as in some insightface sets) means the class is its first value.

Every problem raises `DataError` with one line naming the file and the record key or
byte offset: a missing file, a bad magic number, a truncated record, a split record
without its end, an index offset past the end of the file, a malformed index line.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from adastudy.data.base import DataError

__all__ = [
    "MAGIC",
    "MAGIC_BYTES",
    "RecordHeader",
    "RecordIOReader",
    "read_payload",
    "unpack",
]

MAGIC = 0xCED7230A
#: The magic number as it lies in the file; also what joins the parts of a split record.
MAGIC_BYTES = struct.pack("<I", MAGIC)

_RECORD_HEAD = struct.Struct("<II")  # magic, lrecord
_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: MXNet's IRHeader
_LENGTH_MASK = (1 << 29) - 1
_WHOLE, _START, _MIDDLE, _END = 0, 1, 2, 3
_INDEX_LINE = re.compile(r"(\d+)\t(\d+)")


class RecordHeader(NamedTuple):
    """The header of one record's payload: MXNet's IRHeader, labels always a tuple."""

    flag: int  # 0: one scalar label; > 0: that many float32 labels follow the header
    labels: tuple[float, ...]  # (label,) when flag == 0, else the `flag` labels
    id: int
    id2: int


def _split_lrecord(lrecord: int) -> tuple[int, int]:
    """(continuation flag, length) of a record's second word."""
    return lrecord >> 29, lrecord & _LENGTH_MASK


def _padded(length: int) -> int:
    """Bytes a part of `length` takes in the file: its payload is padded to 4 bytes."""
    return (length + 3) & ~3


def _read_part_head(handle: BinaryIO, offset: int, where: str) -> tuple[int, int] | None:
    """(continuation flag, length) of the part at `offset`; None at the end of the file.

    A bad magic number and a header cut by the end of the file raise `DataError`.
    """
    handle.seek(offset)
    head = handle.read(_RECORD_HEAD.size)
    if not head:
        return None
    if len(head) < _RECORD_HEAD.size:
        raise DataError(
            f"{where}: truncated record at offset {offset} "
            f"(the file ends {len(head)} bytes into its 8-byte header)"
        )
    magic, lrecord = _RECORD_HEAD.unpack(head)
    if magic != MAGIC:
        raise DataError(
            f"{where}: bad magic number 0x{magic:08x} at offset {offset} "
            f"(expected 0x{MAGIC:08x}): not the start of a record"
        )
    return _split_lrecord(lrecord)


def _read_part_data(handle: BinaryIO, offset: int, length: int, where: str) -> bytes:
    """The `length` payload bytes of the part whose header is at `offset`."""
    data = handle.read(length)
    if len(data) < length:
        raise DataError(
            f"{where}: truncated record at offset {offset} "
            f"(its header says {length} payload bytes, the file holds {len(data)})"
        )
    return data


def read_payload(handle: BinaryIO, offset: int, where: str) -> bytes:
    """The payload of the record at byte `offset` of the open RecordIO file `handle`.

    A split record (continuation flags start, middle ..., end) is joined with the magic
    bytes between its parts, as MXNet's reader does. `where` prefixes every error
    (e.g. "train.rec: record 17"); errors: nothing at `offset` (past the end of the
    file), a bad magic number, a truncated part, a record that starts with a middle or
    end part, and a split record without its end part.
    """
    found = _read_part_head(handle, offset, where)
    if found is None:
        raise DataError(f"{where}: offset {offset} is at or past the end of the file")
    cflag, length = found
    if cflag == _WHOLE:
        return _read_part_data(handle, offset, length, where)
    if cflag != _START:
        raise DataError(
            f"{where}: the record at offset {offset} is the "
            f"{'middle' if cflag == _MIDDLE else 'end'} part of a split record, not its start"
        )
    parts = [_read_part_data(handle, offset, length, where)]
    position = offset + _RECORD_HEAD.size + _padded(length)
    while True:
        found = _read_part_head(handle, position, where)
        if found is None:
            raise DataError(
                f"{where}: split record at offset {offset} without its end "
                f"(the file ends at offset {position})"
            )
        cflag, length = found
        if cflag not in (_MIDDLE, _END):
            raise DataError(
                f"{where}: split record at offset {offset} without its end "
                f"(a new record starts at offset {position})"
            )
        parts.append(_read_part_data(handle, position, length, where))
        if cflag == _END:
            return MAGIC_BYTES.join(parts)
        position += _RECORD_HEAD.size + _padded(length)


def _unpack_header(payload: bytes, where: str) -> tuple[RecordHeader, int]:
    """The header of `payload` and the offset where the image starts."""
    if len(payload) < _HEADER.size:
        raise DataError(
            f"{where}: payload of {len(payload)} bytes is shorter than the "
            f"{_HEADER.size}-byte record header"
        )
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    if flag == 0:
        return RecordHeader(0, (float(label),), id_, id2), _HEADER.size
    end = _HEADER.size + 4 * flag
    if len(payload) < end:
        raise DataError(
            f"{where}: the record header announces {flag} labels, but the payload "
            f"of {len(payload)} bytes cannot hold them"
        )
    labels = tuple(float(v) for v in np.frombuffer(payload, "<f4", flag, _HEADER.size))
    return RecordHeader(flag, labels, id_, id2), end


def unpack(
    payload: bytes, where: str = "record"
) -> tuple[int, tuple[float, ...], int, int, bytes]:
    """(flag, labels, id, id2, image) of a record's payload, as MXNet's `recordio.unpack`.

    `labels` is `(label,)` when flag is 0, else the `flag` float32 labels stored after
    the header; `image` is the encoded image (empty in insightface's meta and identity
    records). `where` prefixes the error for a payload too short for its header.
    """
    header, start = _unpack_header(payload, where)
    return header.flag, header.labels, header.id, header.id2, bytes(payload[start:])


def _class_of(header: RecordHeader) -> int:
    """The class index a header stores: its label, or the first value of a vector label
    (flag > 0 always stores at least one value)."""
    return int(header.labels[0])


class RecordIOReader:
    """Random access to the images of an insightface `train.rec` through its `.idx`.

    `idx_path` defaults to `rec_path` with the suffix `.idx`; when that file does not
    exist the `.rec` is scanned once to find the records (keys 0, 1, ... in file order,
    as MXNet's `im2rec` numbers them). Reading is safe from several DataLoader worker
    processes: each process opens its own file handle (a forked child reopens the file
    rather than share the parent's file position), and a pickled reader carries no
    handle. One reader is not meant to be shared by threads.

    The index is kept as numpy arrays (not a dict) so a 5.8M-record MS1M index costs
    ~140 MB, not ~1 GB, and pickles to spawned workers quickly.
    """

    def __init__(
        self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = (
            Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        )
        if not self.rec_path.is_file():
            raise DataError(f"{self.rec_path}: no such RecordIO file")
        self._file: BinaryIO | None = None
        self._pid: int | None = None
        self._size = self.rec_path.stat().st_size
        if self.idx_path.is_file():
            index_keys, index_offsets = self._read_index()
        elif idx_path is not None:
            raise DataError(f"{self.idx_path}: no such index file")
        else:
            index_keys, index_offsets = self._scan()
        order = np.argsort(index_keys, kind="stable")
        self._sorted_keys = index_keys[order]
        self._sorted_offsets = index_offsets[order]
        self.meta = self._read_meta()
        if self.meta is None:
            self._keys = index_keys
        else:
            id_start = self.meta[0]
            self._keys = index_keys[(index_keys >= 1) & (index_keys < id_start)]
        self._keys.setflags(write=False)
        # The offset of each image key, by position: a training loop reads by position,
        # without a search per image.
        self._key_offsets = self._sorted_offsets[np.searchsorted(self._sorted_keys, self._keys)]
        self._rec_name = str(self.rec_path)
        self._num_classes: int | None = None

    # -- the index ---------------------------------------------------------------------

    def _read_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, offsets) in the order of the `.idx` lines."""
        keys: list[int] = []
        offsets: list[int] = []
        seen: set[int] = set()
        try:
            text = self.idx_path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.idx_path}: cannot read the index ({exc})") from exc
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.rstrip()
            if not line:
                continue  # a trailing blank line is harmless
            match = _INDEX_LINE.fullmatch(line)
            if match is None:
                shown = line if len(line) <= 60 else line[:57] + "..."
                raise DataError(
                    f"{self.idx_path}: line {number}: expected 'key<TAB>offset', found {shown!r}"
                )
            key, offset = int(match[1]), int(match[2])
            if key in seen:
                raise DataError(f"{self.idx_path}: line {number}: key {key} is listed twice")
            seen.add(key)
            keys.append(key)
            offsets.append(offset)
        return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def _scan(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, offsets) found by walking the `.rec` from its start (no `.idx`)."""
        offsets: list[int] = []
        handle = self._handle()
        where = f"{self.rec_path}: scanning for records (no {self.idx_path.name})"
        position = 0
        while position < self._size:
            if position + _RECORD_HEAD.size > self._size:
                offsets.append(position)  # a header cut by the end: reading it says so
                break
            found = _read_part_head(handle, position, where)
            if found is None:  # pragma: no cover - the size check above rules this out
                break
            cflag, length = found
            if cflag in (_WHOLE, _START):
                offsets.append(position)  # middle and end parts belong to the record before
            position += _RECORD_HEAD.size + _padded(length)
        return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def _offset(self, key: int) -> int:
        """The byte offset of record `key`; KeyError when the index does not list it."""
        at = int(np.searchsorted(self._sorted_keys, key))
        if at == len(self._sorted_keys) or self._sorted_keys[at] != key:
            raise KeyError(key)
        return int(self._sorted_offsets[at])

    def _read_meta(self) -> tuple[int, int] | None:
        """(id_start, id_end) of insightface's meta record at key 0, or None without one."""
        try:
            self._offset(0)
        except KeyError:
            return None
        header = self.header(0)
        if header.flag == 0:
            return None  # key 0 is an ordinary image
        where = f"{self.rec_path}: record 0 (meta)"
        if header.flag < 2:
            raise DataError(f"{where}: expected 2 labels (id_start, id_end), found {header.flag}")
        id_start, id_end = header.labels[0], header.labels[1]
        if not (id_start.is_integer() and id_end.is_integer() and 1 <= id_start <= id_end):
            raise DataError(
                f"{where}: labels ({id_start}, {id_end}) are not key bounds 1 <= id_start <= id_end"
            )
        return int(id_start), int(id_end)

    # -- the file handle, one per process ----------------------------------------------

    def _handle(self) -> BinaryIO:
        """This process's handle on the `.rec`, opened on first use and after a fork."""
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # After a fork the inherited handle shares its file position with the parent
            # (and every sibling worker), so concurrent seeks would interleave: reopen.
            try:
                self._file = open(self.rec_path, "rb")  # kept open as long as the reader
            except OSError as exc:
                raise DataError(f"{self.rec_path}: cannot open ({exc})") from exc
            self._pid = pid
        return self._file

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_file"] = None  # a handle does not travel; the receiving process opens its own
        state["_pid"] = None
        return state

    def close(self) -> None:
        """Close this process's handle (the next read reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> RecordIOReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def _where(self, key: int) -> str:
        return f"{self.rec_path}: record {key}"

    def _checked_offset(self, key: int) -> int:
        """The offset of `key`, checked against the size of the `.rec`."""
        offset = self._offset(key)
        if offset >= self._size:
            raise DataError(
                f"{self._where(key)}: offset {offset} from {self.idx_path.name} is past the "
                f"end of the file ({self._size} bytes; is the .rec truncated?)"
            )
        return offset

    @property
    def keys(self) -> np.ndarray:
        """The image keys (int64, read-only), in index order; meta and identity records
        excluded."""
        return self._keys

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def payload(self, key: int) -> bytes:
        """The raw payload of record `key` (split records joined)."""
        return read_payload(self._handle(), self._checked_offset(key), self._where(key))

    def read(self, key: int) -> tuple[int, bytes]:
        """(class label, encoded image bytes) of record `key`; the label is the first
        value of a vector label. KeyError when the index does not list `key`."""
        where = self._where(key)
        payload = self.payload(key)
        header, start = _unpack_header(payload, where)
        return _class_of(header), bytes(payload[start:])

    def read_image(self, position: int) -> tuple[int, bytes]:
        """`read(keys[position])`, without the index search: what a DataLoader asks for."""
        key = int(self._keys[position])
        offset = int(self._key_offsets[position])
        where = f"{self._rec_name}: record {key}"
        if offset >= self._size:
            self._checked_offset(key)  # raises the "past the end" error
        payload = read_payload(self._handle(), offset, where)
        if len(payload) >= _HEADER.size:
            flag, label = _HEADER.unpack_from(payload)[:2]
            if flag == 0:  # the common case: one scalar label
                return int(label), payload[_HEADER.size:]
        header, start = _unpack_header(payload, where)
        return _class_of(header), bytes(payload[start:])

    def header(self, key: int) -> RecordHeader:
        """The header of record `key`, read without its image where the record allows.

        Only the first part of a record is read (the whole record when its first part is
        too short to hold the header); a record cut by the end of the file is reported
        from its length, without reading it.
        """
        where = self._where(key)
        offset = self._checked_offset(key)
        handle = self._handle()
        found = _read_part_head(handle, offset, where)
        if found is None:  # pragma: no cover - _checked_offset rules this out
            raise DataError(f"{where}: offset {offset} is at or past the end of the file")
        cflag, length = found
        end = offset + _RECORD_HEAD.size + length
        if cflag in (_WHOLE, _START) and end > self._size:
            raise DataError(
                f"{where}: truncated record at offset {offset} (its header says {length} "
                f"payload bytes, the file holds {max(self._size - offset - 8, 0)})"
            )
        if cflag not in (_WHOLE, _START):
            read_payload(handle, offset, where)  # raises the "not its start" error
        head = _read_part_data(handle, offset, min(length, _HEADER.size), where)
        flag = _HEADER.unpack_from(head)[0] if len(head) == _HEADER.size else 0
        need = _HEADER.size + 4 * flag
        if len(head) == _HEADER.size and need <= length:
            head += _read_part_data(handle, offset, need - _HEADER.size, where)
            return _unpack_header(head, where)[0]
        # The header runs into a later part of a split record (or the record is too
        # short for it, which _unpack_header reports): read it whole.
        return _unpack_header(read_payload(handle, offset, where), where)[0]

    def labels(self) -> np.ndarray:
        """The class label of every image key (int64, in `keys` order), from headers only:
        from insightface's identity records where they partition the image keys (two
        headers per identity, not one per image: MS1M's 5.8 M images have 85,742
        identities), else from every image's header."""
        found = self._labels_from_identities() if self.meta is not None else None
        if found is not None:
            return found
        return np.fromiter(
            (_class_of(self.header(int(key))) for key in self._keys),
            dtype=np.int64,
            count=len(self),
        )

    def _labels_from_identities(self) -> np.ndarray | None:
        """The labels from the identity records (record id_start + c holds the key range
        [first, end) of one identity's images; the first image's header gives the label);
        None when they do not partition the image keys exactly (a gap, an overlap, a
        range that is not keys), and every header must be read instead."""
        assert self.meta is not None
        id_start, id_end = self.meta
        order = np.argsort(self._keys, kind="stable")
        sorted_keys = self._keys[order]
        labels = np.full(len(self), -1, dtype=np.int64)
        for record in range(id_start, id_end):
            try:
                bounds = self.header(record).labels
            except (KeyError, DataError):
                return None
            if len(bounds) < 2 or not all(float(v).is_integer() for v in bounds[:2]):
                return None
            first, end = int(bounds[0]), int(bounds[1])
            low, high = np.searchsorted(sorted_keys, [first, end])
            if end <= first or high - low != end - first:
                return None  # an empty range, or keys missing from it
            chosen = order[low:high]
            if (labels[chosen] != -1).any():
                return None  # ranges overlap
            try:
                labels[chosen] = _class_of(self.header(first))
            except (KeyError, DataError):
                return None
        return None if (labels == -1).any() else labels

    @property
    def num_classes(self) -> int:
        """The number of classes: `id_end - id_start` of the meta record (one identity
        record each); without a meta record, the largest label + 1 (read once)."""
        if self._num_classes is None:
            if self.meta is not None:
                self._num_classes = self.meta[1] - self.meta[0]
            else:
                labels = self.labels()
                self._num_classes = int(labels.max()) + 1 if labels.size else 0
        return self._num_classes
