"""What running a study on Ray Tune costs over running it on Optuna, per trial.

    python benchmarks/ray_overhead.py                  # studies/quick.toml
    python benchmarks/ray_overhead.py --spec my.toml --workers 2 --cpus-per-trial 1

Both sweeps go through the real command line, each into a fresh temporary run folder,
with the same number of trials at a time and the same torch threads per trial (Optuna:
`--workers N`, one process per trial; Ray: a local Ray started for the sweep, `cores /
cpus-per-trial` trials at a time). Prints the total wall times, their ratio, the
seconds of overhead per trial, and, separately, what starting and stopping a local Ray
costs (the fixed part of that overhead).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402

from adastudy import spec as specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "adastudy"


def timed_sweep(spec_path: Path, options: list[str]) -> float:
    """Wall seconds of one full sweep in a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [str(SCRIPT), "sweep", str(spec_path), "--out", f"{tmp}/run", "--json", *options],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - start


def ray_start_stop() -> float:
    """Wall seconds to start a local Ray as the sweep does, and to shut it down (in a
    fresh process, imports excluded)."""
    code = (
        "import time, ray\n"
        "from adastudy.backends.ray import init_local_ray\n"
        "t = time.perf_counter(); init_local_ray(); ray.shutdown()\n"
        "print(time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "quick.toml")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="Optuna workers (default: one per core)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="Ray CPUs per trial (default 1: one trial per core)")
    args = parser.parse_args(argv)
    spec = specs.load(args.spec)
    trials = len(spec.trials()) + (
        len(spec.searched_heads()) * spec.search.trials * len(spec.study.seeds))
    print(f"# ray overhead: {cpu_name()}, {os.cpu_count()} cores, {args.spec.name}, "
          f"{trials} trials")
    optuna_s = timed_sweep(args.spec, ["--workers", str(args.workers)])
    ray_s = timed_sweep(args.spec, ["--backend", "ray", "--cpus-per-trial",
                                    f"{args.cpus_per_trial:g}"])
    fixed_s = ray_start_stop()
    print(f"optuna ({args.workers} workers)          {optuna_s:8.1f} s")
    print(f"ray ({args.cpus_per_trial:g} cpu per trial)        {ray_s:8.1f} s")
    print(f"ratio ray / optuna = {ray_s / optuna_s:.2f}")
    print(f"overhead per trial = {(ray_s - optuna_s) / trials:+.3f} s "
          f"({ray_s - optuna_s:+.1f} s over {trials} trials)")
    print(f"of which starting and stopping a local Ray: {fixed_s:.1f} s in all; the rest "
          f"{(ray_s - optuna_s - fixed_s) / trials:+.3f} s per trial")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
