"""C1-C3: the shape of the target-probability curve P(θ) that s and m set.

C1 and C3 are first analytic checks of the paper's formula (with B ≈ C − 1); C1 and C2
then ask whether trained runs behave as the formula says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from adastudy import stats, theory
from adastudy.claims import figures
from adastudy.claims.evidence import Config, Evidence, configs, where
from adastudy.claims.registry import Outcome, Part, claim, make_part
from adastudy.claims.thresholds import FAR_ANGLE_DEG, P_SATURATED
from adastudy.spec import MAIN_VARIANT

__all__ = ["SCALE_HEADS", "claim_c1", "claim_c2", "claim_c3", "half_angle", "margin_free"]

SCALE_HEADS = ("normface", "cosface", "arcface")  # heads with a swept fixed scale s


def margin_free(ev: Evidence, variant: str) -> list[Config]:
    """The configurations of a fixed scale without a margin (normface, or a margin
    head at m = 0): the claims about s are judged on these, so that a margin's own
    reshaping of P(θ) never counts as the scale's."""
    return [c for c in configs(ev, variant, SCALE_HEADS) if c.margin_free]


def _settings(ev: Evidence) -> Iterator[tuple[str, int, list[Config]]]:
    """Each variant with C > 2 and a fixed scale without a margin: the settings where a
    claim about s can be tested."""
    for variant in ev.variants():
        C = ev.num_classes(variant)
        plain = margin_free(ev, variant)
        if C is not None and C > 2 and plain:
            yield variant, C, plain


#: What C1 and C2 need, when no setting of the study has it.
_NEEDS_SCALE = ("Needs a fixed scale without a margin: add [heads.normface] with a list of "
                "s values.")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@claim("C1", "a small fixed s caps P(θ=0) below 1", figure=figures.PROBABILITY,
       basis="analytic and measured")
def claim_c1(ev: Evidence) -> Outcome:
    """Analytic: P(0) = e^s / (e^s + C − 1) < 1 at every finite s, and the smallest swept
    margin-free scale caps it below `P_SATURATED`. Measured: that configuration's
    trained runs (which must have tightened, θ_med < 45° at the end) keep their mean
    target probability below `P_SATURATED` (logit-scale interval)."""
    parts: list[Part] = []
    numbers: dict = {}
    for variant, C, plain in _settings(ev):
        small = min(plain, key=lambda c: c.s)
        cap = float(theory.target_probability(0.0, s=small.s, num_classes=C, head="normface"))
        if cap >= P_SATURATED:
            needed = math.log(P_SATURATED / (1 - P_SATURATED) * (C - 1))
            parts.append(make_part(ev, variant, small.head, (
                f"no swept scale caps P(0) below {P_SATURATED:g} at C = {C}: add a normface "
                f"scale below {needed:.1f}"), fixed="not tested", runs=small))
            continue
        # Optional: records without it are judged on P alone.
        theta_end = stats.mean_interval(np.degrees(small.values("final_theta_med_rad",
                                                                optional=True)))
        if theta_end.n and theta_end.mean >= FAR_ANGLE_DEG:
            # A low P from runs whose samples never came near their centres says nothing
            # about a cap at θ = 0: it may be poor training.
            parts.append(make_part(ev, variant, small.head, (
                f"s = {small.s:g}: its runs ended with θ_med = {theta_end.mean:.0f}° ≥ "
                f"{FAR_ANGLE_DEG:.0f}°, too far from the centres to show a cap at θ = 0; "
                "train longer"), fixed="not tested", runs=small))
            continue
        measured = stats.mean_estimate(small.values("final_p_target_mean"), (0.0, 1.0))
        numbers.update({
            f"C{where(variant)}": C, f"smallest scale{where(variant)}": small.label,
            f"analytic P(0){where(variant)}": round(cap, 4),
            f"measured mean P, end of training{where(variant)}": measured.interval().text(3),
        })
        parts.append(make_part(ev, variant, small.head, (
            f"s = {small.s:g}: analytic P(0) = {cap:.3f} < {P_SATURATED:g}; the trained runs' "
            f"mean target probability at the end of training was "
            f"{measured.interval().text(3)} (under {P_SATURATED:g} supports the cap)"),
            estimate=measured, threshold=P_SATURATED, supports="below", runs=small))
    return Outcome(parts, numbers, untested=_NEEDS_SCALE, lead=(
        "Analytic check of P(0) = e^s / (e^s + C − 1) at the smallest swept scale "
        "without a margin, then the measured target probability of its runs."))


@claim("C2", "a large fixed s keeps P ≈ 1 far from the class centre (weak supervision)",
       figure=figures.PROBABILITY)
def claim_c2(ev: Evidence) -> Outcome:
    """The margin-free configuration with the largest analytic log-odds of P at θ0 = 45°
    (s cos 45° − ln(C − 1); log-odds, so that no two scales tie on a rounded P = 1.0),
    which must reach logit(`P_SATURATED`); in its runs, the mean target probability of
    the last training window whose θ_med is still ≥ 45° must be ≥ `P_SATURATED`,
    compared on the log-odds scale."""
    parts: list[Part] = []
    numbers: dict = {}
    far = math.radians(FAR_ANGLE_DEG)
    for variant, C, plain in _settings(ev):
        odds = {c.label: c.s * math.cos(far) - math.log(C - 1) for c in plain}
        large = max(plain, key=lambda c: odds[c.label])
        if odds[large.label] < _logit(P_SATURATED):
            needed = (_logit(P_SATURATED) + math.log(C - 1)) / math.cos(far)
            parts.append(make_part(ev, variant, large.head, (
                f"no swept scale gives P(45°) ≥ {P_SATURATED:g} at C = {C}: add a normface "
                f"scale above {needed:.1f}"), fixed="not tested", runs=large))
            continue
        ev.series_column("p_target_mean")
        values = []
        for key in large.complete["key"]:
            windows = ev.windows(key)
            early = windows[windows["theta_med_rad"] >= far]
            if len(early) and "p_target_mean" in early:
                values.append(early["p_target_mean"].iloc[-1])
        measured = stats.mean_estimate(values, (0.0, 1.0))
        numbers.update({
            f"largest scale{where(variant)}": large.label,
            f"analytic log-odds of P(45°){where(variant)}": round(odds[large.label], 2),
            f"measured mean P while θ_med ≥ 45°{where(variant)}": measured.interval().text(3),
        })
        if measured.n == 0:
            parts.append(make_part(ev, variant, large.head, (
                f"s = {large.s:g}: θ_med was below 45° at the first logged window; log more "
                "often (train.log_every)"), fixed="not tested", runs=large))
            continue
        parts.append(make_part(ev, variant, large.head, (
            f"s = {large.s:g}: analytic log-odds of P(45°) = {odds[large.label]:.1f} "
            f"(P = {P_SATURATED:g} is {_logit(P_SATURATED):.1f}); while the median sample was "
            f"still ≥ 45° from its centre, the runs' mean target probability was "
            f"{measured.interval().text(3)} (compared on the log-odds scale)"),
            estimate=measured, threshold=P_SATURATED, supports="above", runs=large))
    return Outcome(parts, numbers, untested=_NEEDS_SCALE)


def half_angle(s: float, num_classes: int, m: float, head: str) -> float:
    """The angle (degrees) where the analytic P(θ) first falls to 1/2, on a 0.01° grid:
    0 when P(0) is already ≤ 1/2 (the whole curve lies left of any angle), 180 when P
    never falls that low."""
    theta_deg = np.linspace(0.0, 180.0, 18001)
    p = np.asarray(theory.target_probability(
        np.radians(theta_deg), s=s, num_classes=num_classes, m=m, head=head))
    below = np.nonzero(p <= 0.5)[0]
    return 180.0 if len(below) == 0 else float(theta_deg[below[0]])


@claim("C3", "a larger margin m shifts P(θ) to smaller angles", figure=figures.THEORY,
       basis="analytic")
def claim_c3(ev: Evidence) -> Outcome:
    """Analytic: for each margin head with at least two swept margins, at each swept
    scale and the main variant's C, the angle where P = 1/2 must fall as m grows (until
    it reaches θ = 0). One part per margin head."""
    variant = ev.variants()[0] if ev.variants() else MAIN_VARIANT
    C = ev.num_classes(variant)
    parts: list[Part] = []
    numbers: dict = {}
    for head in theory.MARGIN_HEADS:
        runs = ev.of(variant, [head], states=("complete", "diverged", "failed", "pruned"))
        margins = sorted(set(stats.finite(runs["m"]))) if len(runs) else []
        if C is None or C <= 2 or len(margins) < 2:
            continue
        broken, shifts = [], []
        for s in sorted(set(stats.finite(runs["s"]))):
            angles = [half_angle(s, C, m, head) for m in [0.0, *margins]]
            if angles[0] == 0.0:  # P(0) ≤ ½ even without a margin: no crossing to move
                continue
            numbers[f"{head} s={s:g}: θ(P=½) for m = 0, {', '.join(f'{m:g}' for m in margins)}"] \
                = ", ".join(f"{a:.1f}°" for a in angles)
            # Each larger margin must move the crossing left, until it reaches θ = 0.
            if all(b < a or a == b == 0.0 for a, b in itertools.pairwise(angles)):
                shifts.append(angles[0] - angles[-1])
            else:
                broken.append(f"s={s:g}")
        if not shifts and not broken:
            continue
        text = (f"at C = {C}, the angle of P = ½ falls with every larger margin at "
                f"{len(shifts)} of {len(shifts) + len(broken)} swept scales"
                + (f"; not at {', '.join(broken)}" if broken else "")
                + (f" (by {min(shifts):.1f}° to {max(shifts):.1f}° from m = 0 to "
                   f"m = {margins[-1]:g})" if shifts else ""))
        part = make_part(ev, variant, head, text,
                         fixed="not supported" if broken else "supported")
        parts.append(replace(part, estimate=min(shifts) if shifts else math.nan))
    return Outcome(parts, numbers, untested=(
        "No margin head swept two or more margins at a scale where P(0) > ½: give cosface "
        "or arcface a list of m values."), lead=(
        "Analytic check of the paper's P(θ) with B = C − 1 (no training run is "
        "involved)."))
