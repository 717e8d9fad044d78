"""Baselines of a study, and whether a re-run reproduces one: scheduled checks.

    baseline = make_baseline(run_dir)                   # the versioned format below
    write_baseline(baseline, "baselines/quick.json")
    baseline = load_baseline("baselines/quick.json")    # BaselineError when unusable
    check_baseline(baseline, study)                     # ... or made from another spec
    result = compare(baseline, make_baseline(new_run), study.reproduce, fail_on="both")
    result.failed                                       # what `adastudy reproduce` exits 1 on
    done = reproduce(study, spec_path, baseline, engine, out=...)   # re-run, compare, write

`baseline` is the format, `drift` the comparison, `run` the re-run and `render` its
report (`reproduce-<timestamp>.md`, `.html` and `.json`).

A baseline (`BASELINE_FORMAT`, `BASELINE_VERSION`) is one JSON object:

- `format`, `version`, `created_at`, `adastudy` (its version), `study`, `spec_digest`,
  `spec` (the whole spec), `metric` and `direction` (the study's);
- `run`: the run folder it was made from, when its first sweep started, the engine and
  its details of the last sweep; `environment` and `determinism` (the manifest's:
  versions, device, CPU, the git commit, the package sources' digest, the flags);
- `configurations`: one per (variant, head, s, m), with `key`, `variant`, `head`, `s`,
  `m`, `num_classes`, `embedding_dim`, `seeds` ({seed: {"state", "metrics"}}, every
  final metric of the trials table) and `metrics` ({metric: {"n", "mean", "std"}} over
  the complete seeds);
- `verdicts`: every claim's verdict, with each part's (`claims.evaluate`);
- `subset`: whether the run left out heads, variants or seeds of the study (a re-run's
  snapshot; always false for a baseline of a whole study).

The drift rule. A metric of a configuration drifts when the means differ by more than

    max(abs_tol, k · σ_pooled · sqrt(1/n_base + 1/n_new))

(σ_pooled the seeds' pooled standard deviation; with one seed on each side there is no
spread, and abs_tol alone decides). The difference comes with its 95 % t interval.
Seeds are the unit: a re-run with a new random stream (code that draws in another
order) moves the means by seed noise, which this gate lets through; a baseline edited
by more than the tolerance, or code that trains worse, it does not. A drift is
"improved" or "worse" by the metric's direction ("changed" when it has none, which
always counts). Besides the metrics: seeds that newly diverged, failed or were pruned
(and those that no longer do), configurations on one side only, and, when the re-run
is the whole study, claim verdicts (and parts) that flipped; a verdict has no better or
worse, so a flip always counts. Each finding is attributed: the code changed (another
git commit or package sources), the environment did (versions, device, CPU,
determinism flags, the engine's workers), both, or neither (nondeterminism).
"""

from adastudy.reproduce.baseline import (
    BASELINE_FORMAT,
    BASELINE_VERSION,
    BaselineError,
    check_baseline,
    config_key,
    load_baseline,
    make_baseline,
    write_baseline,
)
from adastudy.reproduce.drift import (
    DEFAULT_ABS_TOL,
    FAIL_ON,
    Attribution,
    Comparison,
    MetricDrift,
    StateChange,
    VerdictFlip,
    attribute,
    compare,
    compared_metrics,
    drift_of,
    environment_diff,
    gate,
)
from adastudy.reproduce.run import Reproduction, reproduce

__all__ = [
    "BASELINE_FORMAT", "BASELINE_VERSION", "DEFAULT_ABS_TOL", "FAIL_ON", "Attribution",
    "BaselineError", "Comparison", "MetricDrift", "Reproduction", "StateChange",
    "VerdictFlip", "attribute", "check_baseline", "compare", "compared_metrics",
    "config_key", "drift_of", "environment_diff", "gate", "load_baseline", "make_baseline",
    "reproduce", "write_baseline",
]
