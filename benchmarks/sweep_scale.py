"""What an engine costs per trial, and whether that cost grows with the study's size.

    python benchmarks/sweep_scale.py                            # 500 and 5,000 trials
    python benchmarks/sweep_scale.py --sizes 200 2000 --ray 200  # smaller, and Ray

A study of tiny trials (digits, one epoch, a small MLP, one seed per trial: the grid
is `seeds = [0 .. n-1]` of one cosface point) runs through the real command line into
a fresh folder, on the serial and the Optuna engine (one worker), at each size. The
engine's overhead per trial is the sweep's wall time (times the trials at once) minus
the sum of its trials' own wall times (`wall_time_s` of each record), divided by the
trials: process start-up,
data building, the store, the journal, the live view, consolidation. Targets: at most
20 ms per trial, and the same at the largest size as at the smallest (within noise):
constant, not growing. `--ray N` adds the Ray engine at N trials (one CPU per trial, as
many at once as cores: its overhead per trial is against that of Optuna with as many
workers, measured in the same run).
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
theta_levels_deg = []
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


def overhead_ms(trials: int, options: list[str], label: str, slots: int = 1) -> float:
    """The slot-seconds of the sweep not spent inside a trial, per trial, in ms: with
    `slots` trials at once, (wall × slots − the trials' own time) / trials."""
    wall, own, recorded = sweep(trials, options)
    assert recorded == trials, f"{label}: {recorded} of {trials} trials recorded"
    per_trial = (wall * slots - own) / trials * 1e3
    print(f"{label:<24} {trials:>6} trials  wall {wall:8.1f} s  trials' own {own:8.1f} s"
          f"  overhead {per_trial:7.1f} ms/trial")
    return per_trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--engines", nargs="+", default=["serial", "optuna"])
    parser.add_argument("--ray", type=int, default=0, help="trials for the Ray engine (0: none)")
    args = parser.parse_args(argv)
    print(f"# sweep scale: {cpu_name()}, {os.cpu_count()} cores; tiny digits trials")
    verdict = 0
    for engine in args.engines:
        found = {n: overhead_ms(n, ["--backend", engine], engine) for n in args.sizes}
        small, large = found[min(found)], found[max(found)]
        constant = large <= small * NOISE or large - small <= 2.0
        print(f"{engine}: overhead {small:.1f} -> {large:.1f} ms/trial from {min(found)} to "
              f"{max(found)} trials (x{large / small:.2f}): "
              f"{'constant' if constant else 'GROWING'}; target <= {TARGET_MS:g} ms: "
              f"{'met' if max(small, large) <= TARGET_MS else 'MISSED'}")
        verdict |= not constant
    if args.ray:
        cores = os.cpu_count() or 1
        on_optuna = overhead_ms(args.ray, ["--workers", str(cores)], f"optuna {cores} workers",
                                cores)
        on_ray = overhead_ms(args.ray, ["--backend", "ray"], "ray 1 cpu/trial", cores)
        print(f"ray against optuna with {cores} workers: {on_ray - on_optuna:+.1f} ms/trial "
              f"(x{on_ray / on_optuna:.2f})")
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
