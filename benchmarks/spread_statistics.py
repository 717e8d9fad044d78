"""What the spread statistics (cos_nontarget_var, d_eff, stability_margin) cost a step.

    python benchmarks/spread_statistics.py [--rounds 16]

Forward + backward of cosface and adacos-dynamic at N = 256, D = 512, C = 10,000 and
50,000: with the variance (one more pass over the (N, C) cosines, as a norm) against
the same step with the mean alone (as before the variance was recorded), alternating
in one process; median of the rounds after the first two. Target: <= 1.05 x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adastudy.heads import CosineHead, build_head

N, D = 256, 512
TARGET = 1.05


def _mean_only(self: CosineHead, embeddings: torch.Tensor, sim: torch.Tensor,
               cos_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = (sim.sum(dim=1) - cos_target) / max(self.num_classes - 1, 1)
    return mean, mean  # the second moment costs nothing: the step before the variance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    with_variance = CosineHead.nontarget_cosine_moments
    for classes in (10_000, 50_000):
        x = torch.randn(N, D, requires_grad=True)
        y = torch.randint(0, classes, (N,))
        for name in ("cosface", "adacos-dynamic"):
            head = build_head(name, classes, D)
            times: dict[str, list[float]] = {"variance": [], "mean only": []}
            for r in range(args.rounds):
                for variant in (("variance", "mean only") if r % 2 else
                                ("mean only", "variance")):
                    CosineHead.nontarget_cosine_moments = (
                        with_variance if variant == "variance" else _mean_only)
                    begin = time.perf_counter()
                    F.cross_entropy(head(x, y), y).backward()
                    times[variant].append(time.perf_counter() - begin)
            CosineHead.nontarget_cosine_moments = with_variance
            new, old = (statistics.median(times[k][2:]) for k in ("variance", "mean only"))
            print(f"C = {classes:,} {name}: with the variance {new * 1e3:.1f} ms, mean only "
                  f"{old * 1e3:.1f} ms, ratio {new / old:.3f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
