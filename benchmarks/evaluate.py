"""Speed of LFW verification and memory of rank-1 identification.

    python benchmarks/evaluate.py                     # 6,000 pairs; 10,000 x 100,000 x 512
    python benchmarks/evaluate.py --small             # a smoke run on tiny sizes
    python benchmarks/evaluate.py --pairs 200 --dim 16 --probes 100 --gallery 1000 --repeats 1

Measured in this one run:

- verification: median wall time of `evaluate.verification_accuracy` on `--pairs` pairs of
  `--dim`-d random float32 embeddings (target <= 0.2 s), and its ratio against a naive
  vectorisation of the same protocol: a Python loop over the 400 thresholds per fold, numpy
  over the pairs (insightface's own code). Both run round-robin; the answers must agree.
- identification: `evaluate.rank1_identification` with `--probes` probes against a
  `--gallery` gallery (float32) in a fresh subprocess: peak resident memory (ru_maxrss)
  after the inputs exist and are touched vs after the call (target <= 1024 MB extra), wall
  time and probes per second. One tiny call first, so that one-time library start-up
  (thread pools, BLAS buffers) is not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py)

from adastudy import evaluate  # noqa: E402

TARGET_VERIFICATION_S = 0.2
TARGET_RANK1_EXTRA_MB = 1024.0


def naive_verification_accuracy(
    emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray, folds: int = 10
) -> tuple[float, float]:
    """insightface's calculate_roc accuracy, one numpy pass per threshold per fold."""
    e1 = emb1.astype(np.float64)
    e2 = emb2.astype(np.float64)
    e1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    dist = np.sum(np.square(e1 - e2), axis=1)
    n = dist.shape[0]
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    thresholds = np.arange(0, 4, 0.01)
    accuracy = np.zeros(folds)
    for f in range(folds):
        test = np.arange(bounds[f], bounds[f + 1])
        train = np.setdiff1d(np.arange(n), test)
        acc_train = np.zeros(thresholds.shape[0])
        for i, t in enumerate(thresholds):
            predict = np.less(dist[train], t)
            acc_train[i] = np.mean(predict == issame[train])
        best = thresholds[np.argmax(acc_train)]
        accuracy[f] = np.mean(np.less(dist[test], best) == issame[test])
    return float(np.mean(accuracy)), float(np.std(accuracy))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def bench_verification(pairs: int, dim: int, repeats: int) -> tuple[bool, list[str]]:
    gen = np.random.default_rng(0)
    emb1 = gen.standard_normal((pairs, dim)).astype(np.float32)
    issame = np.arange(pairs) % 2 == 0
    noise = gen.standard_normal((pairs, dim)).astype(np.float32)
    # Genuine pairs: a noisy copy of emb1; impostors: unrelated.
    emb2 = np.where(issame[:, None], emb1 + 6.0 * noise, noise).astype(np.float32)
    candidates = {
        "adastudy": lambda: evaluate.verification_accuracy(emb1, emb2, issame),
        "naive": lambda: naive_verification_accuracy(emb1, emb2, issame),
    }
    answers = {name: fn() for name, fn in candidates.items()}  # warm-up, and the check
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = med["naive"] / med["adastudy"]
    agree = (
        abs(answers["adastudy"][0] - answers["naive"][0]) < 1e-12
        and abs(answers["adastudy"][1] - answers["naive"][1]) < 1e-12
    )
    ok = med["adastudy"] <= TARGET_VERIFICATION_S and agree
    mean, std = answers["adastudy"]
    lines = [
        f"verification: {pairs} pairs, dim {dim}, {repeats} repeats (median)",
        f"  accuracy: {mean:.4f} +- {std:.4f} (naive loop agrees: {agree})",
        f"  verification_accuracy: {med['adastudy'] * 1e3:.2f} ms "
        f"(target <= {TARGET_VERIFICATION_S * 1e3:.0f} ms: {_verdict(ok)})",
        f"  naive per-threshold loop: {med['naive'] * 1e3:.2f} ms",
        f"  speed-up over naive loop: {ratio:.1f}x",
    ]
    return ok, lines


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc); NaN where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rank1_child(probes: int, gallery: int, dim: int, identities: int) -> dict[str, float]:
    """Runs in a fresh process: inputs, touched; ru_maxrss before and after one call.

    The inputs are filled in place, block by block, so that building them leaves no
    high-water mark above what they hold (ru_maxrss before the call ~ current RSS).
    """
    gen = torch.Generator().manual_seed(0)
    block = 4096
    centres = torch.randn(identities, dim, generator=gen)
    g_labels = torch.arange(gallery) % (2 * identities)
    g_labels[g_labels >= identities] = -1  # half of the gallery: distractors
    gallery_emb = torch.empty(gallery, dim)
    for start in range(0, gallery, block):
        rows = gallery_emb[start : start + block]
        labels = g_labels[start : start + block]
        rows.normal_(generator=gen)
        known = labels >= 0
        rows[known] += 0.5 * centres[labels[known]]
    p_labels = torch.arange(probes) % identities
    probe_emb = torch.empty(probes, dim)
    for start in range(0, probes, block):
        rows = probe_emb[start : start + block]
        rows.normal_(generator=gen)
        rows += 0.5 * centres[p_labels[start : start + block]]
    # Every page of the inputs is written above; start the libraries up on a tiny call.
    evaluate.rank1_identification(probe_emb[:4], p_labels[:4], gallery_emb[:8], g_labels[:8])
    rss_before_mb = _current_rss_mb()
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    acc = evaluate.rank1_identification(probe_emb, p_labels, gallery_emb, g_labels)
    wall = time.perf_counter() - t0
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "accuracy": acc,
        "wall_s": wall,
        "rss_before_mb": rss_before_mb,
        "before_mb": before_kb / 1024,
        "after_mb": after_kb / 1024,
        "extra_mb": (after_kb - before_kb) / 1024,
    }


def bench_rank1(probes: int, gallery: int, dim: int) -> tuple[bool, list[str]]:
    identities = max(1, min(probes, gallery // 4))
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--rank1-child",
        "--probes", str(probes), "--gallery", str(gallery), "--dim", str(dim),
        "--identities", str(identities),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    ok = r["extra_mb"] <= TARGET_RANK1_EXTRA_MB
    inputs_mb = (probes + gallery) * dim * 4 / 2**20
    lines = [
        f"rank-1 identification: {probes} probes, {gallery} gallery, dim {dim}, float32, "
        f"{identities} identities, half the gallery distractors (fresh subprocess)",
        f"  rank-1 accuracy: {r['accuracy']:.4f}",
        f"  inputs: {inputs_mb:.1f} MB; RSS before call {r['rss_before_mb']:.1f} MB, "
        f"max RSS before call {r['before_mb']:.1f} MB, after {r['after_mb']:.1f} MB",
        f"  peak extra memory: {r['extra_mb']:.1f} MB "
        f"(target <= {TARGET_RANK1_EXTRA_MB:.0f} MB: {_verdict(ok)})",
        f"  wall time: {r['wall_s']:.3f} s, {probes / r['wall_s']:.0f} probes/s",
    ]
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes for a smoke run (200 pairs, dim 16, 100 x 1000)")
    parser.add_argument("--rank1-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--identities", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank1_child:
        torch.manual_seed(0)
        print(json.dumps(rank1_child(args.probes, args.gallery, args.dim, args.identities)))
        return 0
    if args.small:
        args.pairs, args.dim, args.probes, args.gallery = 200, 16, 100, 1000
        args.repeats = min(args.repeats, 3)

    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, numpy {np.__version__}")
    ok_v, lines_v = bench_verification(args.pairs, args.dim, args.repeats)
    print("\n".join(lines_v))
    ok_r, lines_r = bench_rank1(args.probes, args.gallery, args.dim)
    print("\n".join(lines_r))
    print(f"all targets met: {ok_v and ok_r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
