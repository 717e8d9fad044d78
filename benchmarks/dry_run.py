"""How close `adastudy sweep SPEC --dry-run`'s wall-time estimate comes to the sweep.

    python benchmarks/dry_run.py                       # studies/quick.toml, 3 rounds
    python benchmarks/dry_run.py --spec my.toml --rounds 1

Each round runs the dry run and then the sweep it estimates, side by side, through the
real command line, each sweep in a fresh temporary folder. Prints each round's ratio
estimate / actual and their median. Target: the median within 0.67-1.5 x (an
estimate, on a machine whose speed moves ±15 % between runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = (0.67, 1.5)


def _adastudy(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "adastudy"
    return subprocess.run([str(script), *args], check=True, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "quick.toml")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# dry-run benchmark: {cpu_name()}, {args.spec.name}, {args.rounds} rounds")
    ratios = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = f"{tmp}/run"
            begin = time.perf_counter()
            plan = json.loads(_adastudy("sweep", str(args.spec), "--out", run, "--dry-run",
                                        "--json").stdout)
            dry_s = time.perf_counter() - begin
            begin = time.perf_counter()
            _adastudy("sweep", str(args.spec), "--out", run, "--json")
            actual_s = time.perf_counter() - begin
        ratio = plan["estimated_wall_s"] / actual_s
        ratios.append(ratio)
        print(f"round {round_ + 1}: estimate {plan['estimated_wall_s']:7.1f} s, sweep "
              f"{actual_s:7.1f} s, ratio {ratio:.2f}; the dry run itself took {dry_s:.1f} s")
    median = statistics.median(ratios)
    met = TARGET[0] <= median <= TARGET[1]
    print(f"median ratio estimate / actual = {median:.2f} (target {TARGET[0]}-{TARGET[1]}): "
          f"{'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
