"""What an engine costs per trial, and whether that cost grows with the study's size.

    python benchmarks/sweep_scale.py                            # 500 and 5,000 trials
    python benchmarks/sweep_scale.py --sizes 200 2000 --ray 200  # smaller, and Ray

A study of tiny trials (digits, one epoch, a small MLP, one seed per trial: the grid
is `seeds = [0 .. n-1]` of one cosface point) runs through the real command line into
a fresh folder, on the serial and the Optuna engine (one worker), at each size. The
engine's overhead per trial is the sweep's wall time (times the trials at once) minus
the sum of its trials' own wall times (`wall_time_s` of each record), divided by the
trials: process start-up, data building, the store, the journal, the live view,
consolidation. A sweep of 5 trials gives the fixed part (start-up, data, tables), so
that the cost that comes with each trial can be compared across sizes. Targets: at
most 20 ms per trial, and, less the fixed part, the same at the largest size as at the
smallest (within noise): constant, not growing. `--ray N` adds the Ray engine at N
trials (one CPU per trial, as many at once as cores), against Optuna with as many
workers in the same run, both as slot-seconds not spent in a trial, per trial.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402

SCRIPT = Path(sys.executable).parent / "adastudy"
TARGET_MS = 20.0
#: The overhead at the largest size may exceed the smallest's by this much and still
#: count as constant (the machine's noise on a sum of thousands of trials).
NOISE = 1.25

SPEC = """
[study]
name = "scale"
seeds = [{seeds}]

[heads.cosface]
s = [16.0]
m = [0.2]

[data]
name = "digits"

[model]
hidden = [32]
embedding_dim = 16

[train]
epochs = 1
batch_size = 256
lr = 0.05
log_every = 50
"""


def sweep(trials: int, options: list[str]) -> tuple[float, float, int]:
    """(wall s, the trials' own s summed, trials recorded) of one sweep in a fresh
    folder, through the command line."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "scale.toml"
        spec.write_text(SPEC.format(seeds=", ".join(str(i) for i in range(trials))))
        started = time.perf_counter()
        subprocess.run([str(SCRIPT), "sweep", str(spec), "--out", f"{tmp}/run", "--json",
                        *options], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        table = pd.read_parquet(Path(tmp) / "run" / "trials.parquet")
        return wall, float(table["wall_time_s"].sum()), len(table)


def overhead_s(trials: int, options: list[str], label: str, slots: int = 1) -> float:
    """The slot-seconds of the sweep not spent inside a trial: with `slots` trials at
    once, wall × slots − the trials' own time."""
    wall, own, recorded = sweep(trials, options)
    assert recorded == trials, f"{label}: {recorded} of {trials} trials recorded"
    overhead = wall * slots - own
    print(f"{label:<24} {trials:>6} trials  wall {wall:8.1f} s  trials' own {own:8.1f} s"
          f"  overhead {overhead / trials * 1e3:7.1f} ms/trial", flush=True)
    return overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--engines", nargs="+", default=["serial", "optuna"])
    parser.add_argument("--ray", type=int, default=0, help="trials for the Ray engine (0: none)")
    args = parser.parse_args(argv)
    print(f"# sweep scale: {cpu_name()}, {os.cpu_count()} cores; tiny digits trials", flush=True)
    verdict = 0
    for engine in args.engines:
        options = ["--backend", engine]
        # The fixed part (imports, data, worker start-up, the tables): a sweep of 5.
        fixed = overhead_s(5, options, engine)
        found = {n: overhead_s(n, options, engine) for n in args.sizes}
        per_trial = {n: found[n] / n * 1e3 for n in found}
        marginal = {n: (found[n] - fixed) / (n - 5) * 1e3 for n in found}
        small, large = min(found), max(found)
        constant = marginal[large] <= marginal[small] * NOISE or \
            marginal[large] - marginal[small] <= 1.0
        print(f"{engine}: overhead {per_trial[small]:.1f} ms/trial at {small} trials, "
              f"{per_trial[large]:.1f} at {large} (target <= {TARGET_MS:g}: "
              f"{'met' if max(per_trial.values()) <= TARGET_MS else 'MISSED'}); without "
              f"the fixed {fixed:.1f} s: {marginal[small]:.2f} -> {marginal[large]:.2f} "
              f"ms/trial (x{marginal[large] / marginal[small]:.2f}): "
              f"{'constant' if constant else 'GROWING'}", flush=True)
        verdict |= not constant
    if args.ray:
        cores = os.cpu_count() or 1
        on_optuna = overhead_s(args.ray, ["--workers", str(cores)], f"optuna {cores} workers",
                               cores) / args.ray * 1e3
        on_ray = overhead_s(args.ray, ["--backend", "ray"], "ray 1 cpu/trial",
                            cores) / args.ray * 1e3
        print(f"ray against optuna with {cores} workers at {args.ray} trials: {on_ray:.1f} "
              f"against {on_optuna:.1f} ms/trial of slot time (x{on_ray / on_optuna:.2f})")
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
