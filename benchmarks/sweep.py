"""Trials per hour of `adastudy sweep` with 1 and with N workers, on the same study.

    python benchmarks/sweep.py                         # studies/quick.toml, 1 vs 2 workers
    python benchmarks/sweep.py --spec my.toml --workers 4

Each run goes into a fresh temporary folder (nothing is resumed), through the real
command line, so process start-up, data generation and the store are all counted.
Target on a 2-core machine: 2 workers >= 1.7 x the trials per hour of 1 worker.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402

from adastudy import spec as specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.7


def timed_sweep(spec_path: Path, workers: int) -> float:
    """Wall seconds of one full sweep in a fresh folder."""
    script = Path(sys.executable).parent / "adastudy"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [str(script), "sweep", str(spec_path), "--out", f"{tmp}/run", "--workers",
             str(workers), "--json"],
            check=True, stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "quick.toml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    trials = len(specs.load(args.spec).trials())
    print(f"# sweep benchmark: {cpu_name()}, {args.spec.name}, {trials} trials")
    one = timed_sweep(args.spec, 1)
    many = timed_sweep(args.spec, args.workers)
    print(f"1 worker     {one:8.1f} s   {trials / one * 3600:10,.0f} trials/hour")
    print(f"{args.workers} workers    {many:8.1f} s   {trials / many * 3600:10,.0f} trials/hour")
    ratio = one / many
    print(f"ratio {args.workers} workers / 1 worker = {ratio:.2f} (target >= {TARGET:.2f}): "
          f"{'met' if ratio >= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
