"""The training loop with the fused `head.loss` against the trainer as it was before it,
side by side in one process: bare loop, fused, unfused, alternating, best of the repeats.

    python benchmarks/fused_loss.py --head cosface                          # C = 1,000
    python benchmarks/fused_loss.py --head adacos-dynamic --identities 10000 \
        --images-per-identity 4 --epochs 1 --repeats 3                       # C = 10,000
    python benchmarks/fused_loss.py --tiny                                  # smoke run

"Unfused" swaps `CosineHead.loss` for what the trainer did before: the logits of
`head(x, y)`, `F.cross_entropy` over them and the accuracy's count from their argmax.
Prints one Markdown row: bare samples/s, unfused and fused samples/s with their ratio
to the bare loop (`benchmarks/loop.py`'s `bare_loop`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop import bare_loop  # noqa: E402  (benchmarks/loop.py)

from adastudy import heads  # noqa: E402
from adastudy.data import build_data  # noqa: E402
from adastudy.spec import DataSpec, ModelSpec, TrainSpec, TrialSpec  # noqa: E402
from adastudy.train import run_trial  # noqa: E402


def unfused_loss(self: heads.CosineHead, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The trainer's loss before `head.loss`: logits, then F.cross_entropy."""
    logits = self(x, y)
    self.correct = torch.eq(logits.argmax(dim=1), y).sum()
    return F.cross_entropy(logits, y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="cosface")
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--images-per-identity", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.identities, args.images_per_identity, args.epochs, args.repeats = 20, 8, 1, 1
    small_eval = {"eval_identities": 20, "eval_images_per_identity": 4, "val_pairs": 100,
                  "test_pairs": 200, "distractors": 20}
    spec = TrialSpec(
        data=DataSpec(form="features", identities=args.identities,
                      images_per_identity=args.images_per_identity, **small_eval),
        model=ModelSpec(),
        train=TrainSpec(epochs=args.epochs, batch_size=32 if args.tiny else 256,
                        eval_every=0, log_every=20, device="cpu"),
        head=args.head)
    data = build_data(spec.data)
    fused = heads.CosineHead.loss
    runs: dict[str, list[float]] = {"bare": [], "fused": [], "unfused": []}
    try:
        for _ in range(args.repeats):
            runs["bare"].append(bare_loop(spec, data))
            heads.CosineHead.loss = fused
            runs["fused"].append(run_trial(spec, data=data).samples_per_s)
            heads.CosineHead.loss = unfused_loss
            runs["unfused"].append(run_trial(spec, data=data).samples_per_s)
    finally:
        heads.CosineHead.loss = fused
    best = {k: max(v) for k, v in runs.items()}
    print(f"# fused loss: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"C = {data.num_classes:,}, best of {args.repeats}")
    print("| head | C | bare samples/s | unfused (× bare) | fused head.loss (× bare) |")
    print("|---|---|---:|---:|---:|")
    print(f"| {args.head} | {data.num_classes:,} | {best['bare']:,.0f} | "
          f"{best['unfused']:,.0f} ({best['unfused'] / best['bare']:.3f}) | "
          f"{best['fused']:,.0f} ({best['fused'] / best['bare']:.3f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
