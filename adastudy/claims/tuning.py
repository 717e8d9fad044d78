"""C8 and C9: does tuning (s, m) matter, and does untuned AdaCos match the tuned best."""

from __future__ import annotations

import math

import numpy as np

from adastudy import stats, theory
from adastudy.claims import figures
from adastudy.claims.evidence import Config, Evidence, configs, pick_best, where
from adastudy.claims.registry import Outcome, Part, claim, make_part
from adastudy.claims.thresholds import NEGLIGIBLE, STRONG_SD

__all__ = ["claim_c8", "claim_c9", "omega_squared", "versus_best"]


def omega_squared(groups: list[np.ndarray]) -> float:
    """ω² of a one-way ANOVA: the share of the variance the groups explain, corrected
    for the groups' number (descriptive: it says nothing in units of the metric)."""
    values = np.concatenate(groups)
    k, n = len(groups), len(values)
    grand = values.mean()
    ss_between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    if n <= k:
        return math.nan
    ms_within = ss_within / (n - k)
    total = ss_between + ss_within
    return float((ss_between - (k - 1) * ms_within) / (total + ms_within)) if total else 0.0


@claim("C8", "CosFace / ArcFace results depend strongly on s and m", figure=figures.HEATMAPS)
def claim_c8(ev: Evidence) -> Outcome:
    """Per margin head and variant with two or more (s, m) settings: the standard
    deviation of the settings' true means, the spread of their means with the seed
    noise taken out (`stats.between_sd`: one-way ANOVA, noncentral-F interval), every
    run counted (a diverged run at the metric's chance value). Strong when it is at
    least `STRONG_SD` with confidence."""
    parts: list[Part] = []
    numbers: dict = {}
    for variant in ev.variants():
        for head in theory.MARGIN_HEADS:
            grid = configs(ev, variant, [head])
            if len(grid) < 2:
                continue
            outcomes = [c.outcomes(ev, ev.metric) for c in grid]
            tag = f"{head}{where(variant)}"
            if min(len(o) for o in outcomes) < 2:
                parts.append(make_part(ev, variant, head, (
                    "needs 2 or more seeds per setting to tell settings from seed noise"),
                    runs=grid))
                continue
            arrays = [np.array(list(o.values())) for o in outcomes]
            spread = stats.between_sd(arrays)
            means = [float(a.mean()) for a in arrays]
            dead = [c.label.removeprefix(f"{head} ") for c in grid
                    if c.n_runs and c.n_diverged + c.n_failed == c.n_runs]
            numbers.update({
                f"{tag}: SD of the settings' true means": spread.interval().text(4),
                f"{tag}: best − worst setting mean": round(max(means) - min(means), 4),
                f"{tag}: ω²": round(omega_squared(arrays), 3),
                f"{tag}: settings": len(grid),
            })
            text = (f"the {len(grid)} settings' means spread with a standard deviation of "
                    f"{spread.interval().text(4)} beyond seed noise in {ev.metric} (strong "
                    f"from {STRONG_SD:g}; best − worst mean {max(means) - min(means):.4f})"
                    + (f"; {', '.join(dead)} never trained (diverged or failed in every "
                       f"seed, counted at chance)" if dead else ""))
            parts.append(make_part(ev, variant, head, text, estimate=spread,
                                   threshold=STRONG_SD, runs=grid))
    return Outcome(parts, numbers, untested=(
        "Needs cosface or arcface with two or more (s, m) settings."))


def versus_best(ev: Evidence, config: Config, best: Config) -> stats.TEstimate:
    """metric(config) − metric(best) with better positive, paired over shared seeds;
    every run counts (a diverged one at the metric's chance value)."""
    sign = ev.sign
    return stats.difference({k: sign * v for k, v in config.outcomes(ev, ev.metric).items()},
                            {k: sign * v for k, v in best.outcomes(ev, ev.metric).items()},
                            bounds=ev.bounds(ev.metric))


@claim("C9", "AdaCos, untuned, matches or beats the best tuned CosFace / ArcFace",
       figure=figures.ADACOS_VS_TUNED)
def claim_c9(ev: Evidence) -> Outcome:
    """Each AdaCos head against each margin head's best configuration (chosen on
    validation), on the study's metric, paired over seeds: non-inferiority within
    `NEGLIGIBLE`. Every run counts: an AdaCos head that diverged in every seed is a part
    and loses."""
    parts: list[Part] = []
    numbers: dict = {}
    for variant in ev.variants():
        for margin_head in theory.MARGIN_HEADS:
            grid = configs(ev, variant, [margin_head])
            if not grid:
                continue
            pick = pick_best(ev, grid)
            for head in theory.ADACOS_HEADS:
                found = configs(ev, variant, [head])
                if not found:
                    continue
                ada = found[0]
                if pick.config is None:
                    parts.append(make_part(ev, variant, head, f"vs {margin_head}: {pick.problem}",
                                           fixed="not tested", runs=ada))
                    continue
                best = pick.config
                diff = versus_best(ev, ada, best)
                states = "; ".join(t for t in (
                    f"{head} {ada.states_text()}" if ada.states_text() else "",
                    f"{best.label} {best.states_text()}" if best.states_text() else "") if t)
                chance = ev.chance(ev.metric)
                numbers[f"{head}{where(variant)} − {best.label} ({ev.metric})"] = \
                    diff.interval().text(4)
                parts.append(make_part(ev, variant, head, (
                    f"against the best {margin_head}, {best.label} (chosen on validation): "
                    f"difference {diff.interval().text(4)} in {ev.metric} ({diff.method}; "
                    f"matches means above −{NEGLIGIBLE:g})"
                    + (f"; {states} (counted at chance, {chance:g})" if states else "")),
                    estimate=diff, threshold=-NEGLIGIBLE, runs=ada, versus=best.label))
    return Outcome(parts, numbers, untested=(
        "Needs an AdaCos head and a tuned margin head (cosface or arcface grid) in the "
        "same study."))
