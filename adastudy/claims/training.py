"""C7 and C10: how AdaCos trains: how fast θ_med falls, and whether it stays stable."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pandas as pd

from adastudy import stats, theory
from adastudy.claims import figures, stability
from adastudy.claims.evidence import Config, Evidence, configs, pick_best, where
from adastudy.claims.registry import Outcome, Part, claim, make_part, runs
from adastudy.claims.thresholds import MAX_DIVERGENCE_RATE, MIN_SPEEDUP

__all__ = ["FIXED_HEADS", "claim_c10", "claim_c7", "level_column"]

FIXED_HEADS = ("normface", "cosface", "arcface")


def level_column(level_deg: float) -> str:
    """The trials-table column of the first step with θ_med below `level_deg`."""
    return f"steps_to_theta_med_{level_deg:g}deg"


def _times(config: Config, column: str, horizon: int) -> tuple[dict[int, float], int]:
    """seed → steps to the level, and how many runs never reached it. A run that did
    not reach it counts with the steps it trained (a diverged run with `horizon`, the
    variant's longest run): a lower bound on its time, so a part with such a run is
    never judged in its favour."""
    times: dict[int, float] = {}
    censored = 0
    for run in config.runs.to_dict(orient="records"):  # a level like 37.5 is no identifier
        if run["state"] == "failed":
            continue
        if pd.notna(run[column]):
            times[int(run["seed"])] = float(run[column])
            continue
        censored += 1
        complete = run["state"] == "complete" and pd.notna(run["steps"])
        times[int(run["seed"])] = float(run["steps"] if complete else horizon)
    return times, censored


def _mean_steps(times: dict[int, float], censored: int) -> str:
    """"41", or "≥ 1250" when runs that never reached the level make it a lower bound."""
    if not times:
        return "n/a"
    mean = f"{sum(times.values()) / len(times):.0f}"
    return f"≥ {mean}" if censored else mean


@claim("C7", "AdaCos converges faster (θ_med falls sooner)", figure=figures.CONVERGENCE)
def claim_c7(ev: Evidence) -> Outcome:
    """Steps until θ_med first falls below the level fixed before the data are seen
    (`Evidence.c7_level_deg`, default 45°), for each AdaCos head against the best tuned
    fixed-scale configuration (chosen on validation), paired over seeds: AdaCos is
    faster when steps(AdaCos) − (1 − `MIN_SPEEDUP`) · steps(tuned) < 0 with confidence.
    Runs that never reached the level count with the steps they trained (a lower bound):
    such an AdaCos run forbids "supported", such a tuned run forbids "not supported"."""
    level = ev.c7_level_deg
    column = level_column(level)
    if column not in ev.trials:
        return Outcome([], untested=(
            f"The trials did not record when θ_med first fell below {level:g}° ({column}): "
            f"add {level:g} to train.theta_levels_deg, or set [claims] c7_level_deg to one of "
            "the recorded levels."))
    parts: list[Part] = []
    numbers: dict = {}
    for variant in ev.variants():
        candidates = configs(ev, variant, FIXED_HEADS)
        every = ev.of(variant, states=("complete",))
        horizon = int(every["steps"].max()) if len(every) and every["steps"].notna().any() \
            else 0
        for head in theory.ADACOS_HEADS:
            found = configs(ev, variant, [head])
            if not found or not candidates:
                continue
            pick = pick_best(ev, candidates)
            if pick.config is None:
                parts.append(make_part(ev, variant, head, pick.problem or "",
                                       fixed="not tested", runs=found[0]))
                continue
            best = pick.config
            ada, ada_late = _times(found[0], column, horizon)
            tuned, tuned_late = _times(best, column, horizon)
            d = stats.difference(ada, tuned, b_factor=1.0 - MIN_SPEEDUP)
            p_for = math.nan if ada_late else d.p_below(0.0)
            p_against = math.nan if tuned_late else d.p_above(0.0)
            late = "; ".join(t for t in (
                f"{ada_late} {head} run(s) never reached it" if ada_late else "",
                f"{tuned_late} tuned run(s) never reached it" if tuned_late else "") if t)
            mean_ada = _mean_steps(ada, ada_late)
            mean_tuned = _mean_steps(tuned, tuned_late)
            numbers[f"{head}{where(variant)}: steps to θ_med < {level:g}°, AdaCos / tuned"] = (
                f"{mean_ada} / {mean_tuned}")
            never = {(True, True): "neither reached it", (True, False): "AdaCos never did",
                     (False, True): "tuned never did", (False, False): ""}[
                (bool(ada) and len(ada) == ada_late, bool(tuned) and len(tuned) == tuned_late)]
            parts.append(make_part(ev, variant, head, (
                f"steps to θ_med < {level:g}°: {mean_ada} against {mean_tuned} for "
                f"{best.label} (chosen on validation); AdaCos − {1 - MIN_SPEEDUP:g} × tuned = "
                f"{d.interval().text(1)} steps ({d.method}; faster by {MIN_SPEEDUP:.0%} "
                f"means below 0)" + (f"; {late}" if late else "")),
                estimate=d, threshold=0.0, supports="below", runs=found[0],
                versus=best.label, p=(p_for, p_against)))
            if never:  # a side none of whose runs got there: its steps are only a bound
                parts[-1] = replace(parts[-1], short=never)
    return Outcome(parts, numbers, untested=(
        "Needs an AdaCos head and a fixed-scale head (normface, cosface or arcface) in the "
        "same study."), lead=f"Level fixed before the data: θ_med < {level:g}°.")


@claim("C10", "AdaCos training is stable", figure=figures.STABILITY_MAP)
def claim_c10(ev: Evidence) -> Outcome:
    """Per AdaCos head and setting (variant: C and embedding dimension): any observed
    divergence (a non-finite loss or an exploding s) contradicts stability there; with
    none, the setting is stable when its runs bound the divergence rate below
    `MAX_DIVERGENCE_RATE` (exact binomial, one-sided 97.5 %). adacos-fixed, whose scale
    is constant and cannot run away, is the control. Failed runs (errors) are counted,
    not judged; pruned runs do not count. Guarded runs are not the paper's method and
    are never judged as it: a run whose scale `train.adacos_scale_max` clamped, or that
    the stability guard ended (a predicted run-away, not an observed one), is not
    counted, and forbids "stable" without counting as a divergence ("inconclusive"):
    those are the runs whose scale climbed, and the others alone would flatter it."""
    parts: list[Part] = []
    numbers: dict = {}
    for variant in ev.variants():
        for head in theory.ADACOS_HEADS:
            found = configs(ev, variant, [head])
            if not found:
                continue
            groups = stability.cell_runs(ev, variant) if head == "adacos-dynamic" else {
                "counted": found[0].runs[found[0].runs["state"] != "failed"],
                "guarded": found[0].runs.iloc[0:0], "clamped": found[0].runs.iloc[0:0],
                "failed": found[0].runs[found[0].runs["state"] == "failed"]}
            config = replace(found[0], runs=pd.concat([groups["counted"], groups["failed"]]))
            n, k = len(groups["counted"]), config.n_diverged
            guarded, clamped = len(groups["guarded"]), len(groups["clamped"])
            role = " (control: its scale is constant)" if head == "adacos-fixed" else ""
            aside = "".join((
                f"; {runs(config.n_failed)} failed, not judged" if config.n_failed else "",
                f"; {runs(clamped)} with the scale clamped (train.adacos_scale_max), "
                "not the paper's method, not judged" if clamped else "",
                f"; {runs(guarded)} ended by the stability guard (a predicted run-away, "
                "not an observed one)" if guarded else ""))
            bare = ev.setting(variant, tag=False)
            if n == 0:
                parts.append(make_part(ev, variant, head, f"no run to judge{aside}",
                                       fixed="not tested", runs=config))
                continue
            upper = stats.clopper_pearson_upper(k, n)
            estimate = stats.TEstimate(k / n, math.nan, math.nan, n, method="exact binomial")
            if k:
                bad = config.runs[config.runs["state"] == "diverged"]
                # One reason each, without the value it diverged at ("(s = 1.1e4)").
                reasons = sorted({re.sub(r" \(s = [^)]*\)", "", r)
                                  for r in bad["diverged_reason"].dropna().astype(str)})
                steps = bad["diverged_step"].dropna()
                text = (f"{bare}{role}: {k} of {runs(n)} diverged "
                        f"({'; '.join(reasons) or 'no reason recorded'}"
                        + (f", from step {int(steps.min())}" if len(steps) else "") + ")")
                part = make_part(ev, variant, head, text + aside, estimate=estimate,
                                 fixed="not supported", runs=config)
            elif guarded or clamped:
                # The guarded runs are the ones whose scale climbed: judging the others
                # alone would call the method stable by leaving out its worst runs.
                part = make_part(ev, variant, head, (
                    f"{bare}{role}: none of {runs(n)} unguarded runs diverged, but a guard "
                    "held the scale of the others, so whether they would have run away "
                    "is unknown: stability cannot be confirmed" + aside),
                    estimate=estimate, fixed="inconclusive", runs=config)
            else:
                none = "the one run did not diverge" if n == 1 else f"none of {n} runs diverged"
                text = (f"{bare}{role}: {none}; rate < {upper:.2f} "
                        f"(97.5 %), stable means < {MAX_DIVERGENCE_RATE:g}")
                part = make_part(ev, variant, head, text + aside, estimate=estimate,
                                 runs=config, p=(stats.binomial_at_most(0, n, MAX_DIVERGENCE_RATE),
                                                 math.nan))
            parts.append(replace(part, interval=stats.clopper_pearson_interval(k, n),
                                 threshold=MAX_DIVERGENCE_RATE))
            numbers[f"{head}{where(variant)}: diverged"] = f"{k} of {n}"
    others = ev.trials[ev.trials["head"].isin(FIXED_HEADS)
                       & ev.trials["state"].isin(["complete", "diverged"])]
    if len(others):
        numbers["fixed-scale runs diverged"] = (f"{int((others['state'] == 'diverged').sum())} "
                                                f"of {len(others)}")
    cells = stability.stability_cells(ev)
    tested = stability.range_text(cells)
    lead = " ".join(t for t in (
        f"Tested range of adacos-dynamic (the paper's method, unguarded): {tested}. "
        "Not tested beyond these settings." if tested else "",
        stability.prediction_text(cells)) if t)
    return Outcome(parts, numbers, untested="Needs AdaCos runs.", lead=lead)
