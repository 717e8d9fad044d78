"""What the spread statistics (cos_nontarget_var, d_eff, stability_margin, update_slope)
cost a step.

    python benchmarks/spread_statistics.py [--rounds 16]

Forward + backward of cosface and adacos-dynamic at N = 256, D = 512, C = 10,000 and
50,000, three ways alternating in one process: everything on; without the update's
slope (its B-weighted mean cosine, one more pass over the (N, C) cosines as a batched
dot product); and with the mean non-target cosine alone (as before the variance was
recorded). Median of the rounds after the first two. Targets: each extra <= 1.05 x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adastudy import heads
from adastudy.heads import CosineHead, build_head

N, D = 256, 512
TARGET = 1.05


def _mean_only(self: CosineHead, embeddings: torch.Tensor,
               sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    row_sum = sim.sum(dim=1)
    return row_sum, row_sum  # the squares cost nothing: the step before the variance


def _without_slope(sim, index, scale, workspace, tilted=False):  # noqa: ANN001, ANN202
    ln_b, _ = _LOG_SUM(sim, index, scale, workspace)
    return ln_b, (torch.zeros_like(ln_b) if tilted else None)


_LOG_SUM = heads._log_nontarget_sum
#: variant → (the non-target moments, the ln B_i function)
VARIANTS = {
    "all": (CosineHead.cosine_row_sums, _LOG_SUM),
    "no slope": (CosineHead.cosine_row_sums, _without_slope),
    "mean only": (_mean_only, _without_slope),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    names = list(VARIANTS)
    for classes in (10_000, 50_000):
        x = torch.randn(N, D, requires_grad=True)
        y = torch.randint(0, classes, (N,))
        for name in ("cosface", "adacos-dynamic"):
            head = build_head(name, classes, D)
            times: dict[str, list[float]] = {k: [] for k in names}
            for r in range(args.rounds):
                for variant in names[r % 3:] + names[:r % 3]:  # each goes first in turn
                    moments, log_sum = VARIANTS[variant]
                    CosineHead.cosine_row_sums = moments
                    heads._log_nontarget_sum = log_sum
                    begin = time.perf_counter()
                    F.cross_entropy(head(x, y), y).backward()
                    times[variant].append(time.perf_counter() - begin)
            CosineHead.cosine_row_sums, heads._log_nontarget_sum = VARIANTS["all"]
            med = {k: statistics.median(v[2:]) for k, v in times.items()}
            print(f"C = {classes:,} {name}: all {med['all'] * 1e3:.1f} ms, no slope "
                  f"{med['no slope'] * 1e3:.1f} ms, mean only {med['mean only'] * 1e3:.1f} "
                  f"ms; the slope x{med['all'] / med['no slope']:.3f}, the variance "
                  f"x{med['no slope'] / med['mean only']:.3f} (targets <= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
