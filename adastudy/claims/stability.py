"""Where dynamic AdaCos's scale stays put: one cell per setting (C, D) of a study, with
what its runs did and what the theory predicted (claim C10 and the report's stability
map).

A cell holds the adacos-dynamic runs of one variant that ran the paper's method: runs
whose scale `train.adacos_scale_max` clamped are counted apart (a guarded run is not
the method), and runs ended by the stability guard (`train.stability_stop_windows`)
are counted apart from the observed divergences (a predicted run-away, not a seen one).

Two predictions sit beside the outcome:

- the theory's bound with d_eff = D (an untrained head: `adastudy theory --classes C
  --dim D`): the Gaussian approximation of ln B_avg has no fixed point when
  D < d_eff_min(C) = 4 ln(C − 1) (μ = 0, θ_med ≥ 45°);
- the measured statistics: the window with the lowest stability margin d_eff / d_eff_min
  (the same bound at that window's θ_med and μ), and the highest slope of the scale
  update (above 1 while s grows: the run-away's point of no return, exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adastudy import theory
from adastudy.claims.evidence import Evidence, where

__all__ = ["GUARD", "StabilityCell", "cell_runs", "stability_cells"]

#: `diverged_by` of a run the stability guard ended.
GUARD = "stability guard"
HEAD = "adacos-dynamic"


@dataclass(frozen=True)
class StabilityCell:
    """adacos-dynamic in one variant (C classes, embedding dimension D)."""

    variant: str
    num_classes: int
    embedding_dim: int | None
    #: Runs of the paper's method that count (complete or diverged, clamp never bound).
    n_runs: int
    #: Observed divergences among them (non-finite loss, s above 1e4).
    n_diverged: int
    #: Runs the stability guard ended (a predicted run-away; not in n_runs).
    n_guarded: int = 0
    #: Runs whose scale the ceiling clamped (not the paper's method; not in n_runs).
    n_clamped: int = 0
    n_failed: int = 0
    first_diverged_step: int | None = None
    #: The window with the lowest stability margin over the counted runs: its d_eff,
    #: its bound d_eff_min and the margin (NaN: no window logged them).
    lowest_d_eff: float = math.nan
    lowest_d_eff_min: float = math.nan
    lowest_margin: float = math.nan
    #: The highest window-mean slope of the scale update over the counted runs.
    highest_slope: float = math.nan
    #: The theory's bound for an untrained head, d_eff = D (μ = 0, θ_med ≥ 45°).
    bound_at_init: float = math.nan

    @property
    def share_diverged(self) -> float:
        return self.n_diverged / self.n_runs if self.n_runs else math.nan

    @property
    def predicted_unstable_at_init(self) -> bool | None:
        """The theory with d_eff = D: no fixed point (None: D unknown)."""
        if self.embedding_dim is None or not math.isfinite(self.bound_at_init):
            return None
        return self.embedding_dim < self.bound_at_init

    @property
    def label(self) -> str:
        return f"C = {self.num_classes}" + (f", D = {self.embedding_dim}"
                                            if self.embedding_dim else "")


def _column(runs: pd.DataFrame, name: str, default: object) -> pd.Series:
    """A trials column, or `default` for every run of tables written before it."""
    return runs[name] if name in runs else pd.Series(default, index=runs.index)


def cell_runs(ev: Evidence, variant: str) -> dict[str, pd.DataFrame]:
    """The adacos-dynamic runs of a variant, sorted: "counted" (the paper's method,
    complete or diverged as observed), "guarded", "clamped" and "failed"."""
    runs = ev.of(variant, [HEAD])
    clamped = pd.to_numeric(_column(runs, "scale_clamped_steps", 0), errors="coerce") \
        .fillna(0) > 0
    by_guard = (_column(runs, "diverged_by", None) == GUARD) & (runs["state"] == "diverged")
    failed = runs["state"] == "failed"
    return {"counted": runs[~clamped & ~by_guard & ~failed],
            "guarded": runs[~clamped & by_guard], "clamped": runs[clamped & ~failed],
            "failed": runs[failed]}


def _lowest_margin(ev: Evidence, keys: list[str]) -> tuple[float, float, float]:
    """(d_eff, d_eff_min, margin) of the window with the lowest stability margin."""
    best = (math.nan, math.nan, math.nan)
    for key in keys:
        w = ev.windows(key)
        if "stability_margin" not in w or "d_eff" not in w:
            continue
        margin = pd.to_numeric(w["stability_margin"], errors="coerce").to_numpy(float)
        d_eff = pd.to_numeric(w["d_eff"], errors="coerce").to_numpy(float)
        ok = np.isfinite(margin) & np.isfinite(d_eff) & (margin > 0)
        if not ok.any():
            continue
        i = int(np.argmin(np.where(ok, margin, np.inf)))
        if not margin[i] >= best[2]:  # also when best is still NaN
            best = (float(d_eff[i]), float(d_eff[i] / margin[i]), float(margin[i]))
    return best


def _highest_slope(ev: Evidence, keys: list[str]) -> float:
    values = []
    for key in keys:
        w = ev.windows(key)
        if "update_slope" in w:
            values.append(pd.to_numeric(w["update_slope"], errors="coerce").max())
    finite = [float(v) for v in values if pd.notna(v) and math.isfinite(float(v))]
    return max(finite) if finite else math.nan


def stability_cells(ev: Evidence) -> list[StabilityCell]:
    """One cell per variant with adacos-dynamic runs (in `ev.variants()` order)."""
    cells = []
    for variant in ev.variants():
        groups = cell_runs(ev, variant)
        if not any(len(g) for g in groups.values()):
            continue
        C = ev.num_classes(variant, required=False)
        if C is None or C <= 2:
            continue
        D = ev.embedding_dim(variant)
        counted = groups["counted"]
        diverged = counted[counted["state"] == "diverged"]
        steps = pd.to_numeric(diverged["diverged_step"], errors="coerce").dropna()
        keys = [str(k) for k in counted["key"]]
        d_eff, bound, margin = _lowest_margin(ev, keys)
        cells.append(StabilityCell(
            variant=variant, num_classes=C, embedding_dim=D, n_runs=len(counted),
            n_diverged=len(diverged), n_guarded=len(groups["guarded"]),
            n_clamped=len(groups["clamped"]), n_failed=len(groups["failed"]),
            first_diverged_step=int(steps.min()) if len(steps) else None,
            lowest_d_eff=d_eff, lowest_d_eff_min=bound, lowest_margin=margin,
            highest_slope=_highest_slope(ev, keys),
            bound_at_init=theory.min_stable_effective_dim(C)))
    return cells


def on_the_map(cells: list[StabilityCell]) -> tuple[list[StabilityCell], list[StabilityCell]]:
    """The cells a (C, D) map shows, one per (C, D), the first in order (the main
    variant first), and the others (variants on a cell the map already holds, e.g.
    the same C and D without the BN-neck)."""
    shown: dict[tuple[int, int | None], StabilityCell] = {}
    others = []
    for cell in cells:
        key = (cell.num_classes, cell.embedding_dim)
        if key in shown:
            others.append(cell)
        else:
            shown[key] = cell
    return list(shown.values()), others


def _dims(cells: list[StabilityCell]) -> str:
    return ", ".join(f"{c.embedding_dim}" + (f" ({c.n_diverged} of {c.n_runs})"
                                             if c.n_diverged else "") for c in cells)


def _name(cell: StabilityCell, others: list[StabilityCell]) -> str:
    """"C = 4000, D = 64", with the variant's name when the map shows another variant
    at that C and D."""
    return cell.label + (where(cell.variant) if any(c is cell for c in others) else "")


def range_text(cells: list[StabilityCell]) -> str:
    """"C = 100: no divergence at D = 32, 64; C = 10000: diverged at D = 32 (2 of 2),
    no divergence at D = 128; …": where adacos-dynamic held and where it failed, by C."""
    shown, others = on_the_map([c for c in cells if c.n_runs])
    by_c: dict[int, list[StabilityCell]] = {}
    for cell in sorted(shown, key=lambda c: (c.num_classes, c.embedding_dim or 0)):
        by_c.setdefault(cell.num_classes, []).append(cell)
    pieces = []
    for C, row in by_c.items():
        bad = [c for c in row if c.n_diverged]
        good = [c for c in row if not c.n_diverged]
        said = []
        if good:
            said.append(f"no divergence at D = {_dims(good)}")
        if bad:
            said.append(f"diverged at D = {_dims(bad)}")
        pieces.append(f"C = {C}: " + ", ".join(said))
    for cell in others:
        pieces.append(f"{_name(cell, others)}: "
                      + (f"diverged ({cell.n_diverged} of {cell.n_runs})" if cell.n_diverged
                         else "no divergence"))
    return "; ".join(pieces)


def prediction_text(cells: list[StabilityCell]) -> str:
    """How well each prediction named the settings that diverged."""
    cells = [c for c in cells if c.n_runs]
    if not cells:
        return ""
    others = on_the_map(cells)[1]
    diverged = {id(c) for c in cells if c.n_diverged}

    def named(chosen: list[StabilityCell]) -> str:
        ordered = sorted(chosen, key=lambda c: (c.num_classes, c.embedding_dim or 0,
                                                any(o is c for o in others)))
        return "; ".join(_name(c, others) for c in ordered) or "no setting"

    def score(flagged: list[StabilityCell]) -> str:
        ids = {id(c) for c in flagged}
        missed = [c for c in cells if id(c) in diverged and id(c) not in ids]
        said = [f"{len(ids & diverged)} of {len(flagged)} diverged"] if flagged else []
        said += [f"missed: {named(missed)}"] if missed else []
        return named(flagged) + (f" ({'; '.join(said)})" if said else "")

    init = [c for c in cells if c.predicted_unstable_at_init]
    measured = [c for c in cells if c.lowest_margin < 1.0]
    slope = [c for c in cells if c.highest_slope > 1.0]
    return ("Predictions: the theory's bound with d_eff = D (an untrained head, "
            f"d_eff_min = 4 ln(C − 1)) named {score(init)}; the measured d_eff fell below "
            f"its bound (margin < 1) at {score(measured)}; the scale update's slope passed "
            f"1 at {score(slope)}.")
