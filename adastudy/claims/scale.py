"""C4-C6: the AdaCos scale: s_f against the best fixed scale, the approximation
B ≈ C − 1 it rests on, and the dynamic scale's tracking of θ_med."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from adastudy import stats, theory
from adastudy.claims import figures
from adastudy.claims.curve import margin_free
from adastudy.claims.evidence import Config, Evidence, MissingField, configs, pick_best, where
from adastudy.claims.registry import Outcome, Part, claim, make_part
from adastudy.claims.thresholds import (
    B_FACTOR,
    HOLD_FRACTION,
    MIN_SCALES,
    MIN_WINDOWS,
    NEGLIGIBLE,
    RHO_TRACKS,
    RUNAWAY_FACTOR,
    TREND_DEGREE,
)
from adastudy.claims.tuning import versus_best

__all__ = ["claim_c4", "claim_c5", "claim_c6", "scale_curve"]


def scale_curve(ev: Evidence, variant: str) -> list[Config]:
    """The sweep of s without a margin in a variant, one configuration per scale
    (normface first where several heads ran the same scale), in order of s."""
    by_scale: dict[float, Config] = {}
    for c in sorted(margin_free(ev, variant), key=lambda c: (c.head != "normface", -c.n_runs)):
        by_scale.setdefault(c.s, c)
    return [by_scale[s] for s in sorted(by_scale)]


@claim("C4", "s_f = √2 ln(C−1) is near the best fixed scale, for any number of classes C",
       figure=figures.SCALE_VS_CLASSES)
def claim_c4(ev: Evidence) -> Outcome:
    """For each C, the curve of the metric against s without a margin (at least
    `MIN_SCALES` scales, one on each side of s_f): the best scale is chosen on
    validation; a scale is near-best when its difference from the best (paired over
    seeds, on the test metric) is above −`NEGLIGIBLE` with confidence. s_f is near-best
    when adacos-fixed (s = s_f) is, or, without it, when both grid scales around s_f are
    (for a curve with one peak, everything between two near-best scales is too). A
    sweep in which no scale is confidently far from the best cannot tell s_f from any
    other rule, and supports nothing. Needs two or more values of C."""
    parts: list[Part] = []
    numbers: dict = {}
    tested: set[int] = set()
    for variant in ev.variants():
        C = ev.num_classes(variant)
        if C is None or C <= 2:
            continue
        curve = scale_curve(ev, variant)
        if not curve:
            continue
        s_f = theory.fixed_scale(C)
        below = [c for c in curve if c.s < s_f]
        above = [c for c in curve if c.s > s_f]
        if len(curve) < MIN_SCALES or not below or not above:
            parts.append(make_part(ev, variant, "adacos-fixed", (
                f"C = {C}: the sweep without a margin has s = "
                f"{', '.join(f'{c.s:g}' for c in curve)}; it needs {MIN_SCALES} or more "
                f"scales with one below and one above s_f = {s_f:.2f}"), fixed="not tested"))
            continue
        pick = pick_best(ev, curve)
        if pick.config is None:
            parts.append(make_part(ev, variant, "adacos-fixed", f"C = {C}: {pick.problem}",
                                   fixed="not tested"))
            continue
        best = pick.config
        tested.add(C)
        near, far, unsure = [], [], []
        for c in curve:
            d = versus_best(ev, c, best)
            if c is best or d.p_above(-NEGLIGIBLE) < stats.ALPHA:
                near.append(c.s)
            elif d.p_below(-NEGLIGIBLE) < stats.ALPHA:
                far.append(c.s)
            else:
                unsure.append(c.s)
        fixed = configs(ev, variant, ["adacos-fixed"])
        if fixed:
            reference = fixed[0]
            estimate = versus_best(ev, reference, best)
            p_for = estimate.p_above(-NEGLIGIBLE)
            p_against = estimate.p_below(-NEGLIGIBLE)
            how = f"adacos-fixed (s = s_f) − best = {estimate.interval().text(4)}"
            runs: list[Config] = [reference]
        else:
            lower, upper = below[-1], above[0]
            sides = [(versus_best(ev, c, best), c) for c in (lower, upper)]
            # Both neighbours must be near-best (or both far): an intersection-union test.
            p_for = max(d.p_above(-NEGLIGIBLE) for d, _ in sides)
            p_against = max(d.p_below(-NEGLIGIBLE) for d, _ in sides)
            estimate = min((d for d, _ in sides), key=lambda d: d.value)
            how = (f"no adacos-fixed run: the grid scales around s_f, s = {lower.s:g} and "
                   f"{upper.s:g}, stand for it; " + "; ".join(
                       f"s={c.s:g} − best = {d.interval().text(4)}" for d, c in sides))
            runs = [lower, upper]
        if not far:
            p_for = math.nan  # a flat curve: the data cannot single out any scale
        where_c = f"C = {C}{where(variant)}"
        numbers.update({
            f"{where_c}: s_f": round(s_f, 2), f"{where_c}: best scale": best.label,
            f"{where_c}: best s / s_f": round(best.s / s_f, 2),
            f"{where_c}: scales within {NEGLIGIBLE:g} of the best":
                ", ".join(f"{s:g}" for s in near) or "none",
            f"{where_c}: scales confidently worse": ", ".join(f"{s:g}" for s in far) or "none",
        })
        text = (f"C = {C}: best {best.label} (chosen on validation), s_f = {s_f:.2f}; "
                f"near-best scales (within {NEGLIGIBLE:g}, 95 %): "
                f"{', '.join(f'{s:g}' for s in near) or 'none'}; confidently worse: "
                f"{', '.join(f'{s:g}' for s in far) or 'none'}"
                + (f"; undecided: {', '.join(f'{s:g}' for s in unsure)}" if unsure else "")
                + f"; {how}"
                + ("" if far else "; no swept scale is confidently worse than the best, so "
                   "this sweep cannot tell s_f from any other choice"))
        parts.append(make_part(ev, variant, "adacos-fixed", text, estimate=estimate,
                               threshold=-NEGLIGIBLE, runs=runs, versus=best.label,
                               p=(p_for, p_against)))
    needs = ("Needs a sweep of s without a margin (normface, at least "
             f"{MIN_SCALES} scales around s_f) at two or more numbers of classes: add "
             "[variants.<name>] with other data.identities, e.g. "
             "data = { identities = 1000 }.")
    if len(tested) < 2:
        # One C cannot say "for any C": the parts stay, the claim is not tested.
        parts = [replace(p, fixed="not tested") for p in parts]
        return Outcome(parts, numbers, untested=needs, lead=needs)
    return Outcome(parts, numbers, untested=needs)


@claim("C5", "B_i ≈ C − 1 during training", figure=figures.LN_B_RATIO)
def claim_c5(ev: Evidence) -> Outcome:
    """In each AdaCos head's runs of each variant (diverged runs included, up to their
    divergence), the share of logged training windows with B_avg within a factor
    `B_FACTOR` of C − 1 must be at least `HOLD_FRACTION` (mean over runs, logit-scale
    interval)."""
    parts: list[Part] = []
    numbers: dict = {}
    tolerance = math.log(B_FACTOR)
    for variant in ev.variants():
        C = ev.num_classes(variant)
        if C is None or C <= 2:
            continue
        for head in theory.ADACOS_HEADS:
            found = configs(ev, variant, [head])
            if not found:
                continue
            config = found[0]
            shares, log_ratios = [], []
            for key in config.runs["key"]:
                windows = ev.windows(key)
                if windows.empty:
                    continue
                if "ln_b_avg" not in windows:
                    raise MissingField("ln_b_avg", "series")
                gap = windows["ln_b_avg"] - math.log(C - 1)
                shares.append(float((gap.abs() <= tolerance).mean()))  # NaN, inf: outside
                log_ratios.extend(gap.tolist())
            if not shares:
                parts.append(make_part(ev, variant, head, "no logged training window",
                                       fixed="not tested", runs=config))
                continue
            share = stats.mean_estimate(shares, (0.0, 1.0))
            finite = np.asarray([g for g in log_ratios if math.isfinite(g)])
            spread = np.exp(np.clip(np.percentile(finite, [5, 50, 95]), -700, 700)) \
                if len(finite) else np.array([math.inf] * 3)
            tag = f"{head}{where(variant)}"
            numbers.update({
                f"{tag}: share of windows with B_avg/(C−1) in [½, 2]": share.interval().text(3),
                f"{tag}: B_avg/(C−1), 5th/50th/95th percentile":
                    ", ".join(f"{v:.3g}" for v in spread),
            })
            parts.append(make_part(ev, variant, head, (
                f"C = {C}: B_avg was within a factor {B_FACTOR:g} of C − 1 in "
                f"{share.interval().text(3)} of the logged windows (median ratio "
                f"{spread[1]:.3g}; holds from {HOLD_FRACTION:g})"
                + (f"; {config.states_text()}" if config.states_text() else "")),
                estimate=share, threshold=HOLD_FRACTION, runs=config))
    return Outcome(parts, numbers, untested=(
        "Needs AdaCos runs with logged training windows: add [heads.adacos-fixed] or "
        "[heads.adacos-dynamic]."))


def _runaway(ev: Evidence, run, windows, s_f: float | None) -> str | None:
    """How the scale of one dynamic run ran away, or None: a window with θ_med ≥ 45°
    whose s exceeds `RUNAWAY_FACTOR` · s_f, or a divergence of the scale itself."""
    high = windows[windows["theta_med_rad"] >= theory.THETA0_RAD]
    if s_f is not None and len(high):
        over = high[~(high["s_current"] <= RUNAWAY_FACTOR * s_f)]  # NaN and inf count
        if len(over):
            first = over.iloc[0]
            return (f"seed {run.seed}: s = {first['s_current']:.3g} at step {int(first['step'])} "
                    f"while θ_med = {math.degrees(first['theta_med_rad']):.0f}°")
    reason = str(run.diverged_reason or "")
    if run.state == "diverged" and "scale" in reason:
        step = "" if run.diverged_step is None or run.diverged_step != run.diverged_step \
            else f" at step {int(run.diverged_step)}"
        return f"seed {run.seed}: {reason}{step}"
    return None


@claim("C6", "the dynamic scale tracks θ_med: it falls as training tightens the classes",
       figure=figures.CONVERGENCE)
def claim_c6(ev: Evidence) -> Outcome:
    """Tracking, not a shared trend: over each dynamic run's logged windows with
    θ_med < 45° (where s(t) = ln B_avg / cos θ_med depends on θ_med; at least
    `MIN_WINDOWS`), the partial correlation of s and θ_med beyond a cubic trend in the
    step (what they share besides both falling with training) must reach `RHO_TRACKS`
    (Fisher-z mean over runs), and s must have fallen over those windows. A scale that
    ran away (above `RUNAWAY_FACTOR` · s_f while θ_med ≥ 45°, or diverged) in any run
    contradicts the claim for that setting."""
    parts: list[Part] = []
    numbers: dict = {}
    for variant in ev.variants():
        found = configs(ev, variant, ["adacos-dynamic"])
        if not found:
            continue
        config = found[0]
        C = ev.num_classes(variant)
        s_f = theory.fixed_scale(C) if C is not None and C > 2 else None
        runaways, rhos, falls, spans = [], [], [], []
        for run in config.runs.itertuples(index=False):
            windows = ev.windows(run.key)
            if windows.empty:
                continue
            if "s_current" not in windows:
                raise MissingField("s_current", "series")
            problem = _runaway(ev, run, windows, s_f)
            if problem:
                runaways.append(problem)
                continue
            tight = windows[windows["theta_med_rad"] < theory.THETA0_RAD]
            spans.append((len(tight), int(tight["step"].iloc[-1] - tight["step"].iloc[0])
                          if len(tight) > 1 else 0))
            if len(tight) < MIN_WINDOWS:
                continue
            rho = stats.partial_correlation(tight["s_current"].to_numpy(),
                                            tight["theta_med_rad"].to_numpy(),
                                            tight["step"].to_numpy(), TREND_DEGREE)
            if math.isfinite(rho):
                rhos.append(rho)
                falls.append(float(tight["s_current"].iloc[0] - tight["s_current"].iloc[-1]))
        tag = f"adacos-dynamic{where(variant)}"
        if runaways:
            numbers[f"{tag}: runs whose s ran away"] = f"{len(runaways)} of {config.n_runs}"
            parts.append(make_part(ev, variant, "adacos-dynamic", (
                f"s ran away in {len(runaways)} of {config.n_runs} seeds instead of following "
                f"θ_med ({'; '.join(runaways[:3])}{' …' if len(runaways) > 3 else ''})"),
                fixed="not supported", runs=config))
            parts[-1] = replace(parts[-1], short=f"ran away {len(runaways)}/{config.n_runs}")
            continue
        if not rhos:
            most = max((n for n, _ in spans), default=0)
            span = max((s for _, s in spans), default=0)
            advice = ("θ_med never fell below 45°: train longer" if most == 0 else
                      f"log more often: train.log_every ≤ {max(1, span // (MIN_WINDOWS + 2))} "
                      f"gives {MIN_WINDOWS} windows over the {span} steps below 45°")
            parts.append(make_part(ev, variant, "adacos-dynamic", (
                f"needs {MIN_WINDOWS} logged windows with θ_med < 45° per run, had at most "
                f"{most}; {advice}"), fixed="not tested", runs=config))
            continue
        track = stats.correlation_mean(rhos)
        fall = stats.mean_estimate(falls)
        # For: both hold (intersection-union). Against: either fails (Bonferroni of two).
        p_for = max(track.p_above(RHO_TRACKS), fall.p_above(0.0))
        p_against = min(1.0, 2 * min(track.p_below(RHO_TRACKS), fall.p_below(0.0)))
        numbers.update({f"{tag}: partial ρ(s, θ_med | step)": track.interval().text(3),
                        f"{tag}: fall of s while θ_med < 45°": fall.interval().text(2)})
        parts.append(make_part(ev, variant, "adacos-dynamic", (
            f"over the windows with θ_med < 45°, s and θ_med moved together beyond their "
            f"shared trend (partial correlation given a cubic in the step: ρ = "
            f"{track.interval().text(3)}, tracks from {RHO_TRACKS:g}), and s fell by "
            f"{fall.interval().text(2)} ({len(rhos)} runs)"),
            estimate=track, threshold=RHO_TRACKS, runs=config, p=(p_for, p_against)))
    return Outcome(parts, numbers, untested="Needs [heads.adacos-dynamic].")
