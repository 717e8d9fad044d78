"""Writers of the face-data formats the readers in `adastudy.data` read, for tests (no MXNet).

Each writes a format the way its usual producer does, written here from the format
description rather than with the readers' code, so a reader bug is not mirrored:

- `write_recordio`: insightface's `train.rec` + `train.idx` (MXNet's RecordIO and
  `recordio.pack`), with or without the key-0 meta record and identity records, with
  scalar or vector labels, and records split MXNet-style around the magic bytes;
- `write_bin` / `write_py2_bin`: insightface's verification `.bin` pickles;
- `write_folder` / `write_pairs`: identity folders and LFW's `pairs.txt`;
- `tiny_jpeg`, `tiny_png`, `png_with_magic`: small deterministic images.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

MAGIC_BYTES = struct.pack("<I", 0xCED7230A)

Label = int | tuple[float, ...]


# -- images ------------------------------------------------------------------------------


def _pixels(seed: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """Blocky seeded pixels (8 x 8 random cells scaled up): small files, distinct seeds."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(8, 8, channels), dtype=np.uint8)
    height, width = size
    rows = np.arange(height) * 8 // height
    cols = np.arange(width) * 8 // width
    return cells[rows][:, cols]


def tiny_jpeg(seed: int, size: tuple[int, int] = (112, 112)) -> bytes:
    """A seeded RGB JPEG of `size` (height, width)."""
    buffer = io.BytesIO()
    Image.fromarray(_pixels(seed, size, 3), "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def tiny_png(
    seed: int, size: tuple[int, int] = (112, 112), mode: str = "RGB", text: bytes | None = None
) -> bytes:
    """A seeded PNG of `size` in `mode` ("RGB", "L", "RGBA"); `text` goes into a tEXt
    chunk, verbatim (tEXt is Latin-1, so any bytes survive)."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = _pixels(seed, size, channels)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)
    info = None
    if text is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("note", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def aligned_magic_positions(data: bytes) -> list[int]:
    """Where the magic bytes start at a multiple of 4 in `data`: where MXNet splits."""
    return [i for i in range(0, len(data) - 3, 4) if data[i : i + 4] == MAGIC_BYTES]


#: Three copies of the magic, the last two adjacent: a start, a middle, an empty middle, an end.
THREE_MAGICS = MAGIC_BYTES + b"gap!" + MAGIC_BYTES + MAGIC_BYTES


def png_with_magic(seed: int, inner: bytes = THREE_MAGICS) -> bytes:
    """A PNG whose bytes hold `inner` (by default three copies of the magic, the last two
    adjacent) at a 4-byte-aligned position, so MXNet would write it as split records.

    A record's image starts at a multiple of 4 in its payload (the 24-byte header, 4 bytes
    per vector label), so alignment in the image is alignment in the payload.
    """
    for pad in range(4):
        data = tiny_png(seed, size=(16, 16), text=b"x" * pad + inner)
        if data.index(inner) % 4 == 0:
            return data
    raise AssertionError("unreachable: one of 4 paddings aligns the text")


# -- RecordIO ----------------------------------------------------------------------------


def pack_payload(label: Label, image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """MXNet's `recordio.pack`: header '<IfQQ', vector labels after it (flag = their
    number, header label 0), then the image."""
    if isinstance(label, tuple):
        values = np.asarray(label, dtype="<f4")
        return struct.pack("<IfQQ", values.size, 0.0, id_, id2) + values.tobytes() + image
    return struct.pack("<IfQQ", 0, float(label), id_, id2) + image


def _part(cflag: int, data: bytes) -> bytes:
    """One stored part: magic, lrecord (flag << 29 | length), data, zero padding."""
    padding = b"\0" * (-len(data) % 4)
    return MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(data)) + data + padding


def record_bytes(payload: bytes, split: bool = False) -> bytes:
    """The stored record of `payload`: whole, or (`split`) cut as dmlc-core's
    RecordIOWriter cuts it, at each 4-byte-aligned magic, parts flagged 1 / 2 ... / 3.

    `split` on a payload without an aligned magic raises, so a test cannot believe it
    wrote a split record when it did not.
    """
    if not split:
        return _part(0, payload)
    cuts = aligned_magic_positions(payload)
    if not cuts:
        raise ValueError("the payload holds no 4-byte-aligned magic: nothing to split at")
    parts, start = [], 0
    for cut in cuts:
        parts.append(_part(1 if start == 0 else 2, payload[start:cut]))
        start = cut + 4
    parts.append(_part(3, payload[start:]))
    return b"".join(parts)


def write_recordio(
    folder: str | Path,
    images: Sequence[tuple[Label, bytes]],
    meta: bool = True,
    split_at: Iterable[int] = (),
    name: str = "train",
    first_key: int | None = None,
) -> tuple[Path, Path]:
    """Write `<name>.rec` and `<name>.idx` in `folder`; return their paths.

    With `meta` (insightface's layout): key 0 is the meta record (flag 2, labels
    (id_start, id_end), no image), the images are keys 1 ... n, and keys id_start ...
    id_end - 1 hold one identity record per class (labels (first key, last key + 1)),
    id_start = n + 1. Without `meta` the images are keys `first_key` (default 0) ...,
    and nothing else. `split_at` lists the keys of the images to store as split records.
    """
    folder = Path(folder)
    split = set(split_at)
    if meta:
        if first_key not in (None, 1):
            raise ValueError("with a meta record the images start at key 1")
        first_key = 1
    elif first_key is None:
        first_key = 0
    records: list[tuple[int, bytes]] = []
    image_keys = range(first_key, first_key + len(images))
    for key, (label, image) in zip(image_keys, images, strict=True):
        records.append((key, record_bytes(pack_payload(label, image, id_=key), key in split)))
    if meta:
        classes: dict[int, list[int]] = {}
        for key, (label, _) in zip(image_keys, images, strict=True):
            classes.setdefault(int(label[0] if isinstance(label, tuple) else label), []).append(key)
        id_start = len(images) + 1
        id_end = id_start + len(classes)
        meta_payload = pack_payload((float(id_start), float(id_end)), b"")
        identity_records = [
            (id_start + rank, record_bytes(pack_payload((float(keys[0]), keys[-1] + 1.0), b"")))
            for rank, (_, keys) in enumerate(sorted(classes.items()))
        ]
        records = [(0, record_bytes(meta_payload)), *records, *identity_records]
    rec, idx = folder / f"{name}.rec", folder / f"{name}.idx"
    lines, blob, offset = [], bytearray(), 0
    for key, data in records:
        lines.append(f"{key}\t{offset}\n")
        blob += data
        offset += len(data)
    rec.write_bytes(bytes(blob))
    idx.write_text("".join(lines), encoding="ascii")
    return rec, idx


def read_index(idx: Path) -> dict[int, int]:
    """key -> offset of an `.idx` file (for tests that damage a record)."""
    pairs = (line.split("\t") for line in idx.read_text().splitlines() if line)
    return {int(key): int(offset) for key, offset in pairs}


def stored_parts(rec: Path) -> list[tuple[int, int]]:
    """(offset, continuation flag) of every stored part of `rec`, in file order."""
    data, parts, position = rec.read_bytes(), [], 0
    while position < len(data):
        assert data[position : position + 4] == MAGIC_BYTES, f"no magic at {position}"
        (lrecord,) = struct.unpack_from("<I", data, position + 4)
        parts.append((position, lrecord >> 29))
        position += 8 + (((lrecord & ((1 << 29) - 1)) + 3) & ~3)
    return parts


# -- verification .bin -------------------------------------------------------------------


def write_bin(
    path: str | Path,
    images: Sequence[bytes],
    issame: Sequence[bool],
    protocol: int = 2,
    arrays: bool = False,
) -> Path:
    """Pickle `(bins, issame_list)` at `protocol`; `arrays` stores each image as a 1-D
    uint8 numpy array instead of bytes (as some re-packed copies do)."""
    path = Path(path)
    bins = [np.frombuffer(image, dtype=np.uint8).copy() if arrays else image for image in images]
    path.write_bytes(pickle.dumps((bins, list(issame)), protocol=protocol))
    return path


def write_py2_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> Path:
    """The pickle Python 2 writes for `(bins, issame_list)` at protocol 2: its `str`
    images as SHORT_BINSTRING / BINSTRING, which Python 3 decodes only with an encoding
    (`encoding="bytes"` gives bytes back; the default ASCII fails on JPEG bytes)."""
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += b"]("  # EMPTY_LIST, MARK
    for image in images:
        if len(image) < 256:
            out += b"U" + bytes([len(image)]) + image  # SHORT_BINSTRING
        else:
            out += b"T" + struct.pack("<i", len(image)) + image  # BINSTRING
    out += b"e]("  # APPENDS, EMPTY_LIST, MARK
    out += b"".join(b"\x88" if same else b"\x89" for same in issame)  # NEWTRUE / NEWFALSE
    out += b"e\x86."  # APPENDS, TUPLE2, STOP
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


# -- folders and pairs -------------------------------------------------------------------


def write_folder(root: str | Path, identities: dict[str, list[bytes]]) -> Path:
    """`root/<name>/<name>_<i:04d>.jpg` for each identity's images, i from 1 (LFW's naming)."""
    root = Path(root)
    for name, images in identities.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for number, image in enumerate(images, start=1):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(image)
    return root


def write_pairs(
    path: str | Path,
    same: Sequence[tuple[str, int, int]],
    different: Sequence[tuple[str, int, str, int]],
    header: str | None = "1\t{n}",
    sep: str = "\t",
) -> Path:
    """LFW's `pairs.txt`: `header` (`{n}` is the number of same pairs; None: no header),
    then the same-person lines `name i j`, then the different-person lines
    `name1 i name2 j`, fields joined by `sep`."""
    lines = [] if header is None else [header.format(n=len(same))]
    lines += [sep.join(str(field) for field in pair) for pair in same]
    lines += [sep.join(str(field) for field in pair) for pair in different]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
