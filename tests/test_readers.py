"""The face-data readers (`adastudy.data.recordio`, `verification_bin`, `folders`,
`images`) and the checker (`adastudy.data.check`), on files written by `face_files`.

Every format round-trips exactly (image bytes and labels); every corrupt variant gives
one line naming the file and the record or line; a pickled reader works in worker
processes; `check` counts and lists what is corrupt.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import struct

import numpy as np
import pytest
from face_files import (
    MAGIC_BYTES,
    _pixels,
    pack_payload,
    png_with_magic,
    read_index,
    record_bytes,
    stored_parts,
    tiny_jpeg,
    tiny_png,
    write_bin,
    write_folder,
    write_pairs,
    write_py2_bin,
    write_recordio,
)

from adastudy.data.base import DataError
from adastudy.data.check import SAMPLE, check, identify
from adastudy.data.folders import ImageFolder, read_pairs_txt
from adastudy.data.images import decode_image
from adastudy.data.recordio import RecordHeader, RecordIOReader, read_payload, unpack
from adastudy.data.verification_bin import load_bin

SMALL = (16, 16)


def one_line(error: pytest.ExceptionInfo[DataError], *parts: object) -> str:
    """The error's message, asserted to be one line holding every one of `parts`."""
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert str(part) in message, f"{part!r} not in {message!r}"
    return message


def jpegs(count: int, classes: int = 3) -> list[tuple[int, bytes]]:
    return [(i % classes, tiny_jpeg(i, SMALL)) for i in range(count)]


# -- RecordIO: round trips ----------------------------------------------------------------


def test_recordio_round_trip_with_meta_record(tmp_path):
    images = [*jpegs(6), (1, tiny_png(99, SMALL))]
    rec, _ = write_recordio(tmp_path, images)
    reader = RecordIOReader(rec)
    # Images are keys 1..7; key 0 (meta) and the identity records 8..10 are not images.
    assert list(reader.keys) == list(range(1, 8))
    assert len(reader) == 7
    assert reader.meta == (8, 11)
    assert reader.num_classes == 3
    for key, (label, image) in zip(reader.keys, images, strict=True):
        assert reader.read(int(key)) == (label, image)
    assert reader.labels().dtype == np.int64
    assert reader.labels().tolist() == [label for label, _ in images]
    assert reader.header(2) == RecordHeader(0, (1.0,), 2, 0)
    assert reader.header(8).labels == (1.0, 5.0)  # class 0's identity record: keys 1, 4


def test_recordio_without_meta_every_key_is_an_image(tmp_path):
    images = jpegs(5, classes=5)
    rec, _ = write_recordio(tmp_path, images, meta=False)
    reader = RecordIOReader(rec)
    assert reader.meta is None
    assert list(reader.keys) == [0, 1, 2, 3, 4]
    assert reader.read(0) == images[0]
    assert reader.num_classes == 5  # the largest label + 1
    # No key 0 at all: still no meta record, and key 1 is the first image.
    rec, _ = write_recordio(tmp_path, images, meta=False, name="nokey0", first_key=1)
    reader = RecordIOReader(rec)
    assert reader.meta is None
    assert list(reader.keys) == [1, 2, 3, 4, 5]
    assert reader.read(5) == images[4]


def test_recordio_vector_labels_give_their_first_value_as_class(tmp_path):
    images = [((2.0, 0.25, -3.5), tiny_jpeg(1, SMALL)), ((0.0, 1.0), tiny_jpeg(2, SMALL))]
    rec, _ = write_recordio(tmp_path, images)
    reader = RecordIOReader(rec)
    assert reader.read(1) == (2, images[0][1])
    assert reader.read(2) == (0, images[1][1])
    assert [reader.read_image(0), reader.read_image(1)] == [reader.read(1), reader.read(2)]
    assert reader.header(1) == RecordHeader(3, (2.0, 0.25, -3.5), 1, 0)
    assert reader.labels().tolist() == [2, 0]
    assert reader.num_classes == 2


def every_header_label(reader: RecordIOReader) -> list[int]:
    return [int(reader.header(int(key)).labels[0]) for key in reader.keys]


def test_labels_come_from_identity_records_where_they_partition_the_keys(tmp_path, monkeypatch):
    images = [(label, tiny_jpeg(i, SMALL)) for i, label in enumerate([0, 0, 1, 1, 1, 2])]
    reader = RecordIOReader(write_recordio(tmp_path, images)[0])
    read: list[int] = []
    original = RecordIOReader.header

    def counting(self, key):
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(RecordIOReader, "header", counting)
    assert reader.labels().tolist() == [0, 0, 1, 1, 1, 2] == every_header_label(reader)
    # Two headers per identity (its record and its first image), not one per image.
    assert read[:6] == [7, 1, 8, 3, 9, 6]
    read.clear()
    # Interleaved identities: the writer's ranges overlap, so every header is read.
    mixed = [(label, tiny_jpeg(i, SMALL)) for i, label in enumerate([0, 1, 0, 2])]
    reader = RecordIOReader(write_recordio(tmp_path, mixed, name="mixed")[0])
    assert reader.labels().tolist() == [0, 1, 0, 2]
    assert set(read) >= {1, 2, 3, 4}


def test_recordio_split_records_are_joined_with_the_magic(tmp_path):
    magic_png = png_with_magic(7)
    images = [(0, tiny_jpeg(0, SMALL)), (1, magic_png), ((1.0, 9.0), magic_png), (2, magic_png)]
    rec, idx = write_recordio(tmp_path, images, split_at={2, 3})
    # The writer really split keys 2 and 3 (three magics: start, middle, middle, end).
    offsets = read_index(idx)
    flags = dict(stored_parts(rec))
    for key in (2, 3):
        start = offsets[key]
        following = [flag for offset, flag in stored_parts(rec) if offset >= start][:4]
        assert following == [1, 2, 2, 3]
    assert flags[offsets[4]] == 0  # key 4 holds the magic too, but was written whole
    reader = RecordIOReader(rec)
    assert [reader.read(key) for key in (1, 2, 3, 4)] == [
        images[0], (1, magic_png), (1, magic_png), (2, magic_png)
    ]
    assert reader.header(3).labels == (1.0, 9.0)
    # By position (a DataLoader's way), the same images and classes, split or not.
    assert [reader.read_image(i) for i in range(4)] == [
        reader.read(int(key)) for key in reader.keys]
    # Without the .idx, scanning the file finds the same records (skipping later parts).
    idx.unlink()
    scanned = RecordIOReader(rec)
    assert list(scanned.keys) == [1, 2, 3, 4]
    assert scanned.read(3) == (1, magic_png)
    assert scanned.labels().tolist() == [0, 1, 1, 2]


def _part(cflag: int, data: bytes) -> bytes:
    """A stored part, built here by hand (not by face_files) for read_payload's tests."""
    padding = b"\0" * (-len(data) % 4)
    return MAGIC_BYTES + struct.pack("<I", cflag << 29 | len(data)) + data + padding


def test_read_payload_on_hand_built_parts():
    whole = _part(0, b"abcdefg")  # 7 bytes: one padding byte to skip
    split = _part(1, b"head") + _part(2, b"") + _part(2, b"mid") + _part(3, b"tail!")
    handle = io.BytesIO(whole + split + _part(0, b"x"))
    assert read_payload(handle, 0, "t") == b"abcdefg"
    joined = read_payload(handle, len(whole), "t")
    assert joined == b"head" + MAGIC_BYTES + MAGIC_BYTES + b"mid" + MAGIC_BYTES + b"tail!"
    # A payload starting and ending with the magic: empty first and last parts.
    edge = b"".join(MAGIC_BYTES + bytes([i]) * 4 for i in range(3)) + MAGIC_BYTES
    stored = record_bytes(edge, split=True)
    assert read_payload(io.BytesIO(stored), 0, "t") == edge


def test_read_payload_errors_on_broken_split_records():
    handle = io.BytesIO(_part(1, b"head") + _part(0, b"next"))
    with pytest.raises(DataError) as error:
        read_payload(handle, 0, "x.rec: record 4")
    one_line(error, "x.rec: record 4", "without its end", "new record starts at offset 12")
    handle = io.BytesIO(_part(1, b"head") + _part(2, b"more"))
    with pytest.raises(DataError) as error:
        read_payload(handle, 0, "x.rec: record 4")
    one_line(error, "without its end", "file ends at offset 24")
    with pytest.raises(DataError) as error:
        read_payload(io.BytesIO(_part(3, b"tail")), 0, "x.rec: record 4")
    one_line(error, "end part of a split record")


def test_unpack_matches_mxnet_pack():
    assert unpack(pack_payload(3, b"img", id_=7, id2=9)) == (0, (3.0,), 7, 9, b"img")
    assert unpack(pack_payload((1.5, 2.0), b"img")) == (2, (1.5, 2.0), 0, 0, b"img")
    with pytest.raises(DataError) as error:
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8, "a.rec: record 2")
    one_line(error, "a.rec: record 2", "5 labels")
    with pytest.raises(DataError) as error:
        unpack(b"short", "a.rec: record 2")
    one_line(error, "a.rec: record 2", "shorter than the 24-byte record header")


# -- RecordIO: errors ---------------------------------------------------------------------


def test_recordio_bad_magic_names_file_key_value_and_offset(tmp_path):
    rec, idx = write_recordio(tmp_path, jpegs(5))
    offset = read_index(idx)[3]
    data = bytearray(rec.read_bytes())
    data[offset : offset + 4] = b"\xde\xad\xbe\xef"
    rec.write_bytes(bytes(data))
    reader = RecordIOReader(rec)
    for read in (reader.read, reader.header):
        with pytest.raises(DataError) as error:
            read(3)
        one_line(error, rec, "record 3", "bad magic number 0xefbeadde", f"offset {offset}")
    assert reader.read(4) == (0, tiny_jpeg(3, SMALL))  # the others still read


def test_recordio_truncated_record(tmp_path):
    images = jpegs(4)
    rec, idx = write_recordio(tmp_path, images, meta=False)
    offset = read_index(idx)[3]
    with open(rec, "r+b") as handle:
        # The header and 40 payload bytes: enough for the 24-byte record header, so
        # header() must notice the cut from the record's length, not from a short read.
        handle.truncate(offset + 8 + 40)
    reader = RecordIOReader(rec)
    for read in (reader.read, reader.header):
        with pytest.raises(DataError) as error:
            read(3)
        one_line(error, rec, "record 3", "truncated", f"offset {offset}")
    assert reader.read(2) == images[2]


def test_recordio_split_record_without_its_end(tmp_path):
    rec, idx = write_recordio(
        tmp_path, [(0, tiny_jpeg(0, SMALL)), (1, png_with_magic(1))], meta=False, split_at={1}
    )
    end_part = [offset for offset, flag in stored_parts(rec) if flag == 3][0]
    with open(rec, "r+b") as handle:
        handle.truncate(end_part)
    with pytest.raises(DataError) as error:
        RecordIOReader(rec).read(1)
    one_line(error, rec, "record 1", "without its end")


def test_recordio_index_offset_past_the_end(tmp_path):
    rec, idx = write_recordio(tmp_path, jpegs(4))
    lines = idx.read_text().splitlines()
    lines[2] = "2\t1000000000"
    idx.write_text("\n".join(lines) + "\n")
    reader = RecordIOReader(rec)
    with pytest.raises(DataError) as error:
        reader.read(2)
    one_line(error, rec, "record 2", "offset 1000000000", "past the end", idx.name)
    with pytest.raises(DataError) as error:
        reader.read_image(1)  # key 2, by position
    one_line(error, rec, "record 2", "offset 1000000000", "past the end", idx.name)


@pytest.mark.parametrize("line", ["2 120", "2\t", "x\t5", "2\t5\t7", "-2\t5"])
def test_recordio_malformed_index_line_names_its_number(tmp_path, line):
    rec, idx = write_recordio(tmp_path, jpegs(4))
    lines = idx.read_text().splitlines()
    lines[2] = line
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as error:
        RecordIOReader(rec)
    one_line(error, idx, "line 3", "key<TAB>offset")


def test_recordio_missing_files(tmp_path):
    with pytest.raises(DataError) as error:
        RecordIOReader(tmp_path / "train.rec")
    one_line(error, tmp_path / "train.rec", "no such")
    rec, _ = write_recordio(tmp_path, jpegs(2))
    with pytest.raises(DataError) as error:
        RecordIOReader(rec, tmp_path / "other.idx")
    one_line(error, tmp_path / "other.idx", "no such index")


# -- RecordIO: worker processes -----------------------------------------------------------

_INHERITED: RecordIOReader | None = None  # set before forking: what a forked worker inherits


def _read_in_child(job: tuple[bytes | None, int]) -> tuple[int, int | None, tuple[int, bytes]]:
    """In a worker: (its pid, the pid the reader's handle belongs to, the record)."""
    blob, key = job
    reader = pickle.loads(blob) if blob is not None else _INHERITED
    assert reader is not None
    record = reader.read(key)
    return os.getpid(), reader._pid, record


def test_pickled_reader_carries_no_handle_and_reopens(tmp_path):
    images = jpegs(4)
    rec, _ = write_recordio(tmp_path, images)
    reader = RecordIOReader(rec)
    assert reader.read(1) == images[0]  # the parent's handle is open
    assert reader._file is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file is None and clone._pid is None
    assert reader._file is not None  # pickling did not close the parent's handle
    assert clone.read(4) == images[3]
    assert clone._file is not reader._file


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_reader_reads_in_forked_worker_processes(tmp_path):
    global _INHERITED
    images = jpegs(8)
    rec, _ = write_recordio(tmp_path, images)
    reader = RecordIOReader(rec)
    reader.read(5)  # the parent's handle is open, its position mid-file
    _INHERITED = reader
    blob = pickle.dumps(reader)
    jobs = [(blob, key) for key in range(1, 9)] + [(None, key) for key in range(8, 0, -1)]
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_read_in_child, jobs, chunksize=1)
    finally:
        _INHERITED = None
    for (_, key), (pid, handle_pid, record) in zip(jobs, results, strict=True):
        assert record == images[key - 1]
        assert pid != os.getpid()
        assert handle_pid == pid  # each worker opened its own handle, pickled or inherited
    assert reader._pid == os.getpid()  # the parent keeps its own
    assert reader.read(2) == images[1]


# -- images -------------------------------------------------------------------------------


def test_decode_image_gives_rgb_uint8():
    pixels = decode_image(tiny_png(3, SMALL), "x")
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    assert np.array_equal(pixels, _pixels(3, SMALL, 3))  # PNG is lossless
    gray = decode_image(tiny_png(4, SMALL, mode="L"), "x")
    assert gray.shape == (16, 16, 3)
    assert np.array_equal(gray[:, :, 0], _pixels(4, SMALL, 1)[:, :, 0])
    assert np.array_equal(gray[:, :, 0], gray[:, :, 2])
    rgba = decode_image(tiny_png(5, SMALL, mode="RGBA"), "x")
    assert np.array_equal(rgba, _pixels(5, SMALL, 4)[:, :, :3])
    assert decode_image(tiny_jpeg(6, (20, 30)), "x").shape == (20, 30, 3)


@pytest.mark.parametrize("data", [b"not an image", b"", tiny_jpeg(1)[:300]])
def test_undecodable_image_names_where(data):
    with pytest.raises(DataError) as error:
        decode_image(data, "train.rec: record 17")
    message = one_line(error)
    assert message.startswith("train.rec: record 17: cannot decode the image (")


# -- verification .bin --------------------------------------------------------------------

BIN_IMAGES = [tiny_jpeg(i, SMALL) for i in range(4)] + [b"short-a", b"short-b"]
BIN_ISSAME = [True, False, True]


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_bin(p, BIN_IMAGES, BIN_ISSAME, protocol=2),
        lambda p: write_bin(p, BIN_IMAGES, BIN_ISSAME, protocol=2, arrays=True),
        lambda p: write_bin(p, BIN_IMAGES, BIN_ISSAME, protocol=4),
        lambda p: write_bin(p, BIN_IMAGES, BIN_ISSAME, protocol=5, arrays=True),
        lambda p: write_bin(p, BIN_IMAGES, np.asarray(BIN_ISSAME), protocol=2),
        lambda p: write_py2_bin(p, BIN_IMAGES, BIN_ISSAME),
    ],
    ids=["p2-bytes", "p2-arrays", "p4-bytes", "p5-arrays", "p2-numpy-bools", "python2"],
)
def test_bin_round_trip(tmp_path, write):
    path = write(tmp_path / "lfw.bin")
    images, issame = load_bin(path)
    assert images == BIN_IMAGES
    assert all(type(image) is bytes for image in images)
    assert issame.dtype == np.bool_ and issame.tolist() == BIN_ISSAME


def test_python2_bin_needs_the_bytes_encoding(tmp_path):
    # The writer's pickle is a real Python 2 one: the default decoding fails on it.
    path = write_py2_bin(tmp_path / "lfw.bin", BIN_IMAGES, BIN_ISSAME)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())


def _pickled(value: object) -> bytes:
    return pickle.dumps(value, protocol=2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x01garbage", "cannot unpickle"),
        (b"", "cannot unpickle"),
        (_pickled({"bins": []}), "expected a pickled (bins, issame_list) pair, found a dict"),
        (_pickled(([b"a"], [True], 3)), "found a tuple of 3"),
        (_pickled((b"ab", [True])), "bins is a bytes"),
        (_pickled(([b"a", "text"], [True])), "image 1 is a str"),
        (_pickled(([b"a", b"b"], ["yes"])), "issame 0 is 'yes'"),
        (_pickled(([b"a", b"b", b"c"], [True])), "odd number of images (3)"),
        (_pickled(([b"a", b"b", b"c", b"d"], [True])), "4 images for 1 pairs"),
    ],
    ids=["garbage", "empty", "dict", "triple", "bins-bytes", "str-image", "bad-bool", "odd",
         "mismatch"],
)
def test_bin_that_is_not_the_expected_pickle(tmp_path, content, expected):
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_bin(path)
    one_line(error, path, expected)


class _Exploit:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_bin_refuses_foreign_globals_before_running_them(tmp_path):
    target = tmp_path / "created-by-the-pickle"
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(_pickled(([_Exploit(str(target)), b"b"], [True])))
    with pytest.raises(DataError) as error:
        load_bin(path)
    one_line(error, path, "mkdir", "refused")
    assert not target.exists()


def test_missing_bin(tmp_path):
    with pytest.raises(DataError) as error:
        load_bin(tmp_path / "lfw.bin")
    one_line(error, tmp_path / "lfw.bin", "no such")


# -- image folders and pairs --------------------------------------------------------------


def test_image_folder_round_trip(tmp_path):
    faces = {
        "bob": [tiny_jpeg(1, SMALL), tiny_jpeg(2, SMALL)],
        "alice": [tiny_jpeg(3, SMALL), tiny_jpeg(4, SMALL)],
        "carol": [tiny_jpeg(5, SMALL)],
    }
    root = write_folder(tmp_path / "faces", faces)
    (root / "bob" / "bob_extra.PNG").write_bytes(tiny_png(6, SMALL))  # suffix in any case
    (root / "alice" / "notes.txt").write_text("not an image")
    (root / "alice" / ".hidden.jpg").write_bytes(b"ignored")
    (root / "empty").mkdir()  # no images: no identity
    write_folder(root / ".cache", {"x": [b"ignored"]})
    (root / "loose.jpg").write_bytes(b"not in an identity folder")
    folder = ImageFolder(root)
    assert folder.names == ["alice", "bob", "carol"]
    assert folder.num_classes == 3 and len(folder) == 6
    assert folder.labels.dtype == np.int64 and folder.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert [p.relative_to(root).as_posix() for p in folder.paths] == [
        "alice/alice_0001.jpg", "alice/alice_0002.jpg",
        "bob/bob_0001.jpg", "bob/bob_0002.jpg", "bob/bob_extra.PNG",
        "carol/carol_0001.jpg",
    ]
    assert folder.read(2) == (1, faces["bob"][0])
    assert folder.read(4) == (1, tiny_png(6, SMALL))


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError) as error:
        ImageFolder(tmp_path / "absent")
    one_line(error, tmp_path / "absent", "no such image folder")
    (tmp_path / "faces" / "empty").mkdir(parents=True)
    (tmp_path / "faces" / "loose.jpg").write_bytes(tiny_jpeg(0, SMALL))
    with pytest.raises(DataError) as error:
        ImageFolder(tmp_path / "faces")
    one_line(error, tmp_path / "faces", "no identities")


@pytest.fixture
def lfw(tmp_path):
    """An LFW-like folder: ann (3 images), ben (2), cy (1)."""
    return write_folder(tmp_path / "lfw", {
        "ann": [tiny_jpeg(i, SMALL) for i in range(3)],
        "ben": [tiny_jpeg(10 + i, SMALL) for i in range(2)],
        "cy": [tiny_jpeg(20, SMALL)],
    })


@pytest.mark.parametrize(("header", "sep"), [("10\t300", "\t"), ("6", " "), (None, "  ")])
def test_pairs_round_trip(lfw, header, sep):
    path = write_pairs(lfw / "pairs.txt", [("ann", 1, 3), ("ben", 2, 1)],
                       [("ann", 2, "cy", 1)], header=header, sep=sep)
    path.write_text(path.read_text().replace("\n", "\n\n", 1))  # a blank line is skipped
    pairs = read_pairs_txt(path, lfw)
    assert pairs == [
        (lfw / "ann" / "ann_0001.jpg", lfw / "ann" / "ann_0003.jpg", True),
        (lfw / "ben" / "ben_0002.jpg", lfw / "ben" / "ben_0001.jpg", True),
        (lfw / "ann" / "ann_0002.jpg", lfw / "cy" / "cy_0001.jpg", False),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ann 1", "expected 'name i j' or 'name1 i name2 j'"),
        ("ann one 2", "expected 'name i j'"),
        ("ann 0 1", "expected 'name i j'"),
        ("ann 1 2 cy 1", "expected 'name i j'"),
        ("ann 1 9", "no image {lfw}/ann/ann_0009.jpg"),
        ("ann 1 dan 1", "no image {lfw}/dan/dan_0001.jpg"),
    ],
)
def test_pairs_bad_line_names_its_number(lfw, line, expected):
    path = lfw / "pairs.txt"
    path.write_text(f"10\t300\nann\t1\t2\n{line}\nben 1 2\n")
    with pytest.raises(DataError) as error:
        read_pairs_txt(path, lfw)
    one_line(error, path, "line 3", expected.format(lfw=lfw))
    problems: list[str] = []
    pairs = read_pairs_txt(path, lfw, problems=problems)  # a checker collects, and goes on
    assert len(pairs) == 2 and len(problems) == 1 and "line 3" in problems[0]


def test_missing_pairs_file(lfw):
    with pytest.raises(DataError) as error:
        read_pairs_txt(lfw / "nope.txt", lfw)
    one_line(error, lfw / "nope.txt", "no such pairs file")


# -- identify and check -------------------------------------------------------------------


def test_identify_each_format(tmp_path, lfw):
    rec, idx = write_recordio(tmp_path, jpegs(2))
    assert identify(rec) == identify(idx) == identify(tmp_path) == "recordio"
    assert identify(write_bin(tmp_path / "lfw.bin", BIN_IMAGES, BIN_ISSAME)) == "bin"
    assert identify(write_pairs(tmp_path / "pairs.txt", [("ann", 1, 2)], [])) == "pairs"
    assert identify(lfw) == "folder"
    (tmp_path / "other").mkdir()
    (tmp_path / "table.csv").write_text("a,b\n")
    for unknown in (tmp_path / "other", tmp_path / "table.csv"):
        with pytest.raises(DataError) as error:
            identify(unknown)
        one_line(error, unknown, "unknown data format")
    with pytest.raises(DataError) as error:
        identify(tmp_path / "absent")
    one_line(error, tmp_path / "absent", "no such file or folder")


def test_check_recordio_lists_the_one_corrupt_jpeg(tmp_path):
    images = jpegs(10, classes=4)
    images[3] = (images[3][0], b"\xff\xd8\xff not really a jpeg")
    rec, _ = write_recordio(tmp_path, images)
    calls: list[tuple[int, int]] = []
    report = check(tmp_path, full=True, progress=lambda done, total: calls.append((done, total)))
    assert (report.format, report.images, report.identities) == ("recordio", 10, 4)
    assert report.decoded == 9 and report.image_shape == SMALL
    assert len(report.corrupt) == 1
    assert f"{rec}: record 4: cannot decode the image" in report.corrupt[0]
    summary = report.to_json()
    assert summary["corrupt_count"] == 1 and not report.ok
    assert json.loads(json.dumps(summary))["path"] == str(tmp_path)
    assert calls[0] == (0, 10) and calls[-1] == (10, 10)


def test_check_recordio_collects_broken_records_instead_of_raising(tmp_path):
    images = jpegs(250, classes=5)
    rec, idx = write_recordio(tmp_path, images, meta=True)
    offsets = read_index(idx)
    data = bytearray(rec.read_bytes())
    data[offsets[7] : offsets[7] + 4] = b"\0\0\0\0"  # key 7: not sampled (headers all read)
    rec.write_bytes(bytes(data))
    lines = idx.read_text().splitlines()
    lines[250] = "250\t99999999"  # the last image: past the end of the file
    idx.write_text("\n".join(lines) + "\n")
    report = check(rec)
    assert report.images == 250 and report.identities == 5
    assert report.decoded == SAMPLE - 1  # the last key is sampled, and unreadable
    assert report.corrupt_count == 2
    assert "record 7: bad magic number 0x00000000" in report.corrupt[0]
    assert "record 250: offset 99999999" in report.corrupt[1]
    assert check(rec, full=True).decoded == 248


def test_check_recordio_flags_labels_outside_the_meta_classes(tmp_path):
    rec, _ = write_recordio(tmp_path, [(0, tiny_jpeg(0, SMALL)), (5, tiny_jpeg(1, SMALL))])
    report = check(rec)  # the meta record counts 2 identities; label 5 is not one of them
    assert report.corrupt == [f"{rec}: record 2: label 5 is not a class index "
                              "(the meta record counts 2)"]


def test_check_bin(tmp_path):
    images = [tiny_jpeg(i, SMALL) for i in range(6)]
    images[3] = b"garbage"
    path = write_bin(tmp_path / "lfw.bin", images, [True, False, True])
    report = check(path)
    assert (report.format, report.images, report.pairs, report.identities) == ("bin", 6, 3, None)
    assert report.decoded == 5
    assert report.corrupt_count == 1 and f"{path}: image 3 (pair 1)" in report.corrupt[0]


def test_check_folder(tmp_path):
    root = write_folder(tmp_path / "faces", {
        "a": [tiny_jpeg(1, SMALL)], "b": [tiny_jpeg(2, SMALL), b"broken"], "c": [tiny_png(3)],
    })
    report = check(root)
    assert (report.format, report.identities, report.images, report.decoded) == (
        "folder", 3, 4, 3)
    assert report.corrupt == [
        f"{root / 'b' / 'b_0002.jpg'}: cannot decode the image (" + report.corrupt[0].split(
            "(", 1)[1]
    ]
    assert report.image_shape == SMALL


def test_check_pairs(tmp_path, lfw):
    path = write_pairs(lfw / "pairs.txt", [("ann", 1, 2), ("ben", 1, 2), ("ann", 1, 7)],
                       [("ann", 3, "cy", 1)])
    report = check(path)
    assert (report.format, report.pairs, report.images, report.identities) == (
        "pairs", 3, 6, 3)
    assert report.decoded == 6
    assert report.corrupt == [f"{path}: line 4: no image {lfw / 'ann' / 'ann_0007.jpg'}"]
    # A pairs file away from its images, given the image folder.
    away = write_pairs(tmp_path / "pairs.txt", [("ann", 1, 2)], [])
    assert check(away, images=lfw).pairs == 1
    with pytest.raises(DataError) as error:
        check(away)  # its own folder holds none of the images
    one_line(error, away, "no pair resolves", "image folder")
    with pytest.raises(DataError) as error:
        check(lfw, images=lfw)
    one_line(error, lfw, "only a pairs file")
