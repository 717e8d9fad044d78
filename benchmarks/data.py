"""Images per second that the RecordIO training source decodes and batches, against a
bare `torch.utils.data` loop over the same records with PIL.

    python benchmarks/data.py                  # 2,000 JPEGs of 112 x 112, 1 and 2 workers
    python benchmarks/data.py --images 500 --repeats 2

A RecordIO file of synthetic JPEG faces (insightface's layout: a meta record, one
record per image) is written to a temporary folder. For each number of workers both
loops run one epoch, alternating, `--repeats` times; each prints its best images per
second, and the ratio of the bests (target: adastudy ≥ 0.95 × bare).

- adastudy: `LoaderSource.batches` from `build_faces` (a seeded permutation and flips
  drawn in the main process, decoding in the workers, corrupt samples counted, the
  uint8 batch normalised to [-1, 1] in the main process).
- bare: a `Dataset` that seeks to the record's offset from the `.idx`, unpacks the
  header, decodes with PIL, flips half the images and returns a uint8 tensor; a
  `DataLoader` with a shuffling sampler, `drop_last`, the default collate, and the
  same normalisation after it.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adastudy.data.faces import build_faces  # noqa: E402
from adastudy.spec import DataSpec  # noqa: E402

MAGIC = 0xCED7230A


def jpeg(seed: int, size: int) -> bytes:
    """A face-sized JPEG of smooth seeded noise (about the size of a real aligned face)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def record(payload: bytes) -> bytes:
    return (struct.pack("<II", MAGIC, len(payload)) + payload
            + b"\0" * (-len(payload) % 4))


def write_set(folder: Path, images: int, identities: int, size: int) -> Path:
    """train.rec + train.idx with a meta record at key 0, images at keys 1 ... n."""
    labels = [i * identities // images for i in range(images)]  # contiguous, as insightface
    records = [(0, record(struct.pack("<IfQQ", 2, 0.0, 0, 0)
                          + np.asarray([images + 1, images + 1 + identities], "<f4").tobytes()))]
    for key, label in enumerate(labels, start=1):
        records.append((key, record(struct.pack("<IfQQ", 0, float(label), key, 0)
                                    + jpeg(key, size))))
    for rank in range(identities):
        keys = [k for k, lab in enumerate(labels, start=1) if lab == rank]
        records.append((images + 1 + rank, record(
            struct.pack("<IfQQ", 2, 0.0, 0, 0)
            + np.asarray([keys[0], keys[-1] + 1], "<f4").tobytes())))
    rec, idx, offset, lines = folder / "train.rec", folder / "train.idx", 0, []
    with open(rec, "wb") as handle:
        for key, data in records:
            lines.append(f"{key}\t{offset}\n")
            handle.write(data)
            offset += len(data)
    idx.write_text("".join(lines))
    return rec


class BareRecords(Dataset):
    """The plain way: offsets from the .idx, a file handle per worker, PIL."""

    def __init__(self, rec: Path, count: int) -> None:
        self.rec = rec
        offsets = dict(line.split("\t") for line in rec.with_suffix(".idx").read_text().split(
            "\n") if line)
        self.offsets = [int(offsets[str(key)]) for key in range(1, count + 1)]
        self.handle = None
        self.pid = None
        self.flips = np.random.default_rng(0).random(count) < 0.5

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.handle is None or self.pid != os.getpid():
            self.handle, self.pid = open(self.rec, "rb"), os.getpid()
        self.handle.seek(self.offsets[i])
        _, length = struct.unpack("<II", self.handle.read(8))
        payload = self.handle.read(length & ((1 << 29) - 1))
        _, label, _, _ = struct.unpack_from("<IfQQ", payload)
        pixels = np.asarray(Image.open(io.BytesIO(payload[24:])).convert("RGB"))
        if self.flips[i]:
            pixels = pixels[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), int(label)


def bare_loader(rec: Path, count: int, workers: int, batch: int) -> DataLoader:
    """Workers kept between epochs, as the source keeps its own: the same footing."""
    return DataLoader(BareRecords(rec, count), batch_size=batch, shuffle=True,
                      drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None)


def epoch_bare(loader: DataLoader) -> float:
    started = time.perf_counter()
    seen = 0
    for x, _ in loader:
        x = x.float().div_(127.5).sub_(1.0)
        seen += x.shape[0]
    return seen / (time.perf_counter() - started)


def epoch_adastudy(source, batch: int, epoch: int) -> float:
    started = time.perf_counter()
    seen = 0
    for x, _ in source.batches(batch, 0, epoch, torch.device("cpu")):
        seen += x.shape[0]
    return seen / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rec = write_set(Path(tmp), args.images, args.identities, args.size)
        size_mb = rec.stat().st_size / 1e6
        print(f"RecordIO: {args.images:,} JPEGs of {args.size} x {args.size} "
              f"({size_mb:.1f} MB), batch {args.batch}, best of {args.repeats}, alternating")
        worst = float("inf")
        for workers in args.workers:
            # Both keep their workers between epochs: the first epoch (which starts
            # them) is a warm-up, for both loops.
            spec = DataSpec(name="recordio", path=str(rec), image_size=args.size,
                            workers=workers, val_identities=2, val_pairs=20)
            source = build_faces(spec, {}).source
            loader = bare_loader(rec, args.images, workers, args.batch)
            epoch_adastudy(source, args.batch, 0)
            epoch_bare(loader)
            ours, bare = [], []
            for repeat in range(args.repeats):
                ours.append(epoch_adastudy(source, args.batch, repeat + 1))
                bare.append(epoch_bare(loader))
            ratio = max(ours) / max(bare)
            worst = min(worst, ratio)
            print(f"workers {workers}: adastudy {max(ours):8.0f} img/s   bare {max(bare):8.0f} "
                  f"img/s   ratio adastudy / bare = {ratio:.3f}")
            del source, loader
        met = worst >= 0.95
        print(f"target >= 0.95: {'met' if met else 'missed'} (worst ratio {worst:.3f})")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
