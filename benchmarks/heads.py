"""Forward + backward time of every head against the floor and pytorch-metric-learning.

    python benchmarks/heads.py                       # N=256, D=512, C=10,000 and 50,000
    python benchmarks/heads.py --classes 50 --batch 8 --dim 16 --repeats 2   # smoke run
    python benchmarks/heads.py --markdown            # a table for benchmarks/RESULTS.md

One step is: logits (or loss) from embeddings and labels, cross-entropy, backward into
the embeddings and the class weights. Candidates run round-robin (one step each per
round) so that drift of the machine's speed hits them all alike; each one's time is its
median over rounds. Ratios are measured in this one run:

- floor: normalise, matmul, times s, cross-entropy, nothing else (what any cosine
  head must at least do). Targets: cosface and arcface <= 1.10 x floor.
- adacos-dynamic / cosface: target <= 1.10.
- pml: pytorch-metric-learning's CosFaceLoss / ArcFaceLoss / NormalizedSoftmaxLoss on the
  same shapes; target: each head faster (ratio < 1).

adastudy's heads run with their statistics on (`track_statistics=True`), as in training,
through `head.loss` (the loss and the statistics from one pass, as the trainer runs
them), unless `--no-statistics` (then `F.cross_entropy(head(x, y), y)`).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402  (benchmarks/machine.py)

from adastudy.heads import HEAD_NAMES, build_head  # noqa: E402

FLOOR_SCALE = 30.0
PML_PEERS = {
    "cosface": "CosFaceLoss",
    "arcface": "ArcFaceLoss",
    "normface": "NormalizedSoftmaxLoss",
}
TARGET_FLOOR_RATIO = 1.10
TARGET_DYNAMIC_OVER_COSFACE = 1.10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_steps(
    num_classes: int, batch: int, dim: int, device: torch.device, with_pml: bool,
    statistics: bool = True,
) -> dict[str, Callable[[], None]]:
    """One closure per candidate; each runs forward + backward once."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=gen).to(device).requires_grad_(True)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    steps: dict[str, Callable[[], None]] = {}

    floor_weight = torch.nn.Parameter(torch.randn(num_classes, dim, generator=gen).to(device))

    def floor() -> None:
        cos = F.normalize(x, dim=1) @ F.normalize(floor_weight, dim=1).t()
        F.cross_entropy(cos * FLOOR_SCALE, y).backward()
        x.grad = floor_weight.grad = None

    steps["floor"] = floor

    for name in HEAD_NAMES:
        params = {"s": FLOOR_SCALE} if name in ("normface", "cosface", "arcface") else {}
        head = build_head(name, num_classes, dim, **params).to(device).train()
        head.track_statistics = statistics

        def step(head: torch.nn.Module = head) -> None:
            # With the statistics on, what training runs: the fused `head.loss`; off,
            # the public forward and F.cross_entropy.
            loss = head.loss(x, y) if statistics else F.cross_entropy(head(x, y), y)
            loss.backward()
            x.grad = None
            head.zero_grad(set_to_none=True)

        steps[name] = step

    if with_pml:
        from pytorch_metric_learning import losses

        for name, cls_name in PML_PEERS.items():
            cls = getattr(losses, cls_name)
            if name == "normface":
                loss = cls(num_classes=num_classes, embedding_size=dim, temperature=1 / FLOOR_SCALE)
            elif name == "arcface":  # PML's ArcFace margin is in degrees
                loss = cls(num_classes=num_classes, embedding_size=dim,
                           margin=math.degrees(0.5), scale=FLOOR_SCALE)
            else:
                loss = cls(num_classes=num_classes, embedding_size=dim,
                           margin=0.35, scale=FLOOR_SCALE)
            loss = loss.to(device)

            def pml_step(loss: torch.nn.Module = loss) -> None:
                loss(x, y).backward()
                x.grad = None
                loss.zero_grad(set_to_none=True)

            steps[f"pml:{name}"] = pml_step
    return steps


def time_steps(
    steps: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds per step of each candidate, measured round-robin in a shuffled
    order per round (a candidate's speed depends a little on what ran just before it:
    freed memory, caches)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for name in order:
            step = steps[name]
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def ratio_rows(times_s: dict[str, float]) -> list[tuple[str, float, float, float | None]]:
    """(candidate, ms, × floor, × pml counterpart or None) for each candidate."""
    rows = []
    for name, t in times_s.items():
        peer = times_s.get(f"pml:{name}")
        rows.append((name, t * 1e3, t / times_s["floor"], None if peer is None else t / peer))
    return rows


def verdicts(times_s: dict[str, float]) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio, target, met) for the issue's targets."""
    out = []
    for name in ("cosface", "arcface"):
        r = times_s[name] / times_s["floor"]
        out.append((f"{name} / floor", r, f"<= {TARGET_FLOOR_RATIO:.2f}", r <= TARGET_FLOOR_RATIO))
    r = times_s["adacos-dynamic"] / times_s["cosface"]
    out.append(("adacos-dynamic / cosface", r, f"<= {TARGET_DYNAMIC_OVER_COSFACE:.2f}",
                r <= TARGET_DYNAMIC_OVER_COSFACE))
    for name in PML_PEERS:
        if f"pml:{name}" in times_s:
            r = times_s[name] / times_s[f"pml:{name}"]
            out.append((f"{name} / pml {PML_PEERS[name]}", r, "< 1.00", r < 1.0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="10000,50000", help="comma-separated C values")
    parser.add_argument("--batch", type=int, default=256, help="N")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--no-pml", action="store_true", help="skip pytorch-metric-learning")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-statistics", action="store_true",
                        help="heads without their per-batch statistics")
    args = parser.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu_name()}, {torch.get_num_threads()} torch threads")
    print(f"# heads benchmark: torch {torch.__version__}, {device.type} ({where}), "
          f"N={args.batch}, D={args.dim}, median of {args.repeats} rounds, statistics "
          f"{'off' if args.no_statistics else 'on'}")

    all_met = True
    for num_classes in (int(c) for c in args.classes.split(",")):
        steps = make_steps(num_classes, args.batch, args.dim, device, not args.no_pml,
                           statistics=not args.no_statistics)
        times_s = time_steps(steps, device, args.repeats, args.warmup)
        print(f"\n## C = {num_classes:,}\n")
        if args.markdown:
            print("| candidate | ms / step | × floor | × pml peer |")
            print("|---|---:|---:|---:|")
        for name, ms, vs_floor, vs_pml in ratio_rows(times_s):
            peer = "" if vs_pml is None else f"{vs_pml:.2f}"
            if args.markdown:
                print(f"| {name} | {ms:.2f} | {vs_floor:.2f} | {peer} |")
            else:
                print(f"{name:<22} {ms:9.2f} ms   x floor {vs_floor:5.2f}   x pml {peer or '-':>5}")
        print()
        if args.markdown:
            print("| target | measured | wanted | met |")
            print("|---|---:|---:|---|")
        for what, ratio, wanted, met in verdicts(times_s):
            all_met &= met
            if args.markdown:
                print(f"| {what} | {ratio:.3f} | {wanted} | {'yes' if met else 'NO'} |")
            else:
                print(f"target {what:<40} {ratio:6.3f}  ({wanted})  {'met' if met else 'MISSED'}")
    print(f"\nall targets met: {'yes' if all_met else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
