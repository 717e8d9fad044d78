"""Verdicts on the AdaCos paper's claims C1-C10, decided from a run's tables.

Each claim is registered once (`registry.claim`: its id, text, figure and basis) by a
function from `Evidence` to its parts; `evaluate(run_dir)` gives the ten `Verdict`s in
order, `answer(ev)` the numbers of the report's answer box. A verdict is "supported",
"not supported", "inconclusive" (the data cannot decide: too few seeds, differences
within seed noise) or "not tested" (the study lacks what the claim needs; the reason
says what to add).

How the numbers are judged (the statistics are in `adastudy.stats`, every threshold is
a named constant in `thresholds` with the reason for its value):

- Seeds are the unit of replication, and every run counts: a configuration's seeds that
  diverged or failed enter the accuracy metrics at the metric's chance value (0.5 for
  verification, 0 for rank-1 and TAR), so a loss that diverges loses; pruned runs are
  left out and counted.
- Configurations that share seed indices (same data and initialisation streams) are
  compared by the paired difference over seeds; Welch's interval otherwise. Intervals
  of bounded quantities stay in their bounds (logit or Fisher-z scale).
- Every test is one-sided at 2.5 %, so a verdict agrees with the 95 % interval shown.
- The best tuned configuration of a head is chosen on the validation pairs
  (`SELECTION_METRIC`) and judged on the study's metric (test pairs): choosing and
  judging on the same numbers would flatter the tuned heads. Without a validation score
  the selection is "not tested", never made on the test pairs.
- A claim tested on several parts (variants, heads) treats them as one family: Holm's
  correction over the parts; supported when every part supports it, not supported when
  any part contradicts it. A part whose runs lack the measurement is "not tested", with
  what to change.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adastudy.claims import (  # noqa: F401 (registers)
    curve,
    figures,
    scale,
    stability,
    training,
    tuning,
)
from adastudy.claims.answer_box import (
    Answer,
    answer,
    answers,
    divergence_rates,
    divergence_sentence,
)
from adastudy.claims.curve import SCALE_HEADS, claim_c1, claim_c2, claim_c3, half_angle
from adastudy.claims.evidence import (
    COUNTED_STATES,
    Config,
    Evidence,
    MissingField,
    config_label,
    configs,
    pick_best,
)
from adastudy.claims.registry import CLAIMS, REGISTRY, VERDICTS, Part, Verdict
from adastudy.claims.scale import claim_c4, claim_c5, claim_c6, scale_curve
from adastudy.claims.thresholds import (
    B_FACTOR,
    C7_LEVEL_DEG,
    FAR_ANGLE_DEG,
    HOLD_FRACTION,
    MAX_DIVERGENCE_RATE,
    MIN_SCALES,
    MIN_SPEEDUP,
    MIN_WINDOWS,
    NEGLIGIBLE,
    P_SATURATED,
    RHO_TRACKS,
    RUNAWAY_FACTOR,
    SELECTION_METRIC,
    STRONG_SD,
    TREND_DEGREE,
)
from adastudy.claims.training import FIXED_HEADS, claim_c7, claim_c10, level_column
from adastudy.claims.tuning import claim_c8, claim_c9, versus_best

__all__ = [
    "B_FACTOR", "C7_LEVEL_DEG", "CLAIMS", "COUNTED_STATES", "FAR_ANGLE_DEG", "FIXED_HEADS",
    "HOLD_FRACTION", "MAX_DIVERGENCE_RATE", "MIN_SCALES", "MIN_SPEEDUP", "MIN_WINDOWS",
    "NEGLIGIBLE", "P_SATURATED", "REGISTRY", "RHO_TRACKS", "RUNAWAY_FACTOR", "SCALE_HEADS",
    "SELECTION_METRIC", "STRONG_SD", "TREND_DEGREE", "VERDICTS",
    "Answer", "Config", "Evidence", "MissingField", "Part", "Verdict",
    "answer", "answers", "divergence_rates", "divergence_sentence", "stability",
    "claim_c1", "claim_c2", "claim_c3", "claim_c4", "claim_c5",
    "claim_c6", "claim_c7", "claim_c8", "claim_c9", "claim_c10", "config_label", "configs",
    "evaluate", "evaluate_evidence", "evaluate_tables", "figures", "half_angle",
    "level_column", "pick_best", "scale_curve", "versus_best",
]

# The registry in the claims' order, C1 … C10, whatever order the modules register in.
_ORDER = sorted(REGISTRY, key=lambda claim_id: int(claim_id[1:]))
CLAIMS.update({k: CLAIMS.pop(k) for k in _ORDER})


def evaluate_evidence(ev: Evidence) -> list[Verdict]:
    """The verdicts on C1-C10, in order."""
    return [REGISTRY[claim_id].judge(ev) for claim_id in _ORDER]


def evaluate_tables(
    trials: pd.DataFrame, series: pd.DataFrame, *, metric: str = "verification_accuracy",
    direction: str = "maximize", c7_level_deg: float = C7_LEVEL_DEG,
) -> list[Verdict]:
    """The verdicts on C1-C10, in order, from a run's trials and series tables."""
    return evaluate_evidence(Evidence(trials, series, metric, direction, c7_level_deg))


def evaluate(run_dir: str | Path) -> list[Verdict]:
    """The verdicts on C1-C10 of a run folder (its tables and its spec's settings)."""
    return evaluate_evidence(Evidence.from_run(run_dir))
