"""Verdicts on the AdaCos paper's claims C1-C10, decided from a run's tables.

Each claim has one function, `claim_c1` ... `claim_c10`, from a `Evidence` (the trials
and series tables, the study's metric) to a `Verdict`: "supported", "not supported",
"inconclusive" (the data cannot decide: too few seeds, differences within seed noise)
or "not tested" (the study lacks what the claim needs; the reason says what to add).

How the numbers are judged:

- Seeds are the unit of replication. A configuration's result is the mean over its
  seeds with a t-based 95 % confidence interval; two configurations are compared by the
  Welch 95 % interval of the difference of their means. With one seed there is no
  interval, and a comparison is inconclusive.
- The best tuned configuration of a head is chosen on the validation pairs
  (`SELECTION_METRIC`) and then compared on the study's metric (test pairs): choosing
  and judging on the same numbers would flatter the tuned heads (winner's curse).
- A claim tested on several parts (variants of the study, both AdaCos heads, both margin
  heads) is supported when every tested part supports it, not supported when any part
  contradicts it, and inconclusive otherwise. A part whose runs lack the measurement the
  claim needs (training too short to tighten the classes, too few logged windows) is
  "not tested", with what to change.
- Every threshold is a named constant below, with the reason for its value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adastudy import store, theory
from adastudy.spec import MAIN_VARIANT

__all__ = [
    "ALPHA",
    "B_FACTOR",
    "CLAIMS",
    "FAR_ANGLE_DEG",
    "HOLD_FRACTION",
    "MAX_DIVERGENCE_RATE",
    "MIN_SPEEDUP",
    "MIN_WINDOWS",
    "NEGLIGIBLE",
    "P_SATURATED",
    "RHO_TRACKS",
    "SELECTION_METRIC",
    "STRONG_SPREAD",
    "VERDICTS",
    "Evidence",
    "Verdict",
    "evaluate",
    "evaluate_tables",
]

VERDICTS = ("supported", "not supported", "inconclusive", "not tested")

CLAIMS: dict[str, str] = {
    "C1": "a small fixed s caps P(θ=0) below 1",
    "C2": "a large fixed s keeps P ≈ 1 far from the class centre (weak supervision)",
    "C3": "a larger margin m shifts P(θ) to smaller angles",
    "C4": "s_f = √2 ln(C−1) is near the best fixed scale, for any number of classes C",
    "C5": "B_i ≈ C − 1 during training",
    "C6": "the dynamic scale tracks θ_med: it falls as training tightens the classes",
    "C7": "AdaCos converges faster (θ_med falls sooner)",
    "C8": "CosFace / ArcFace results depend strongly on s and m",
    "C9": "AdaCos, untuned, matches or beats the best tuned CosFace / ArcFace",
    "C10": "AdaCos training is stable",
}

# -- thresholds -------------------------------------------------------------------------

#: Confidence of every interval, and the significance level of the C8 test of whether
#: configurations differ more than seeds do: the conventional 95 % / 5 %.
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE

#: The metric selecting each head's best tuned configuration: the validation pairs,
#: never the test pairs that the claims are judged on.
SELECTION_METRIC = "val_accuracy"

#: Differences of the study's metric smaller than this do not count as worse (C4, C9):
#: half a point of verification accuracy. Results of one recipe move by that much from
#: seed to seed at CPU scale, and published face-recognition tables treat smaller gaps
#: as ties; "matches" in C9 means "no worse than this".
NEGLIGIBLE = 0.005

#: C8: "strongly" means the grid's best and worst configurations differ by at least
#: this much (two negligible differences: a gap a practitioner would tune for).
STRONG_SPREAD = 2 * NEGLIGIBLE

#: C1 / C2: a mean target probability of at least 0.9 counts as "≈ 1": at P = 0.9 the
#: cross-entropy gradient on the target logit (1 − P) has fallen to a tenth of its
#: start, i.e. the sample has stopped pulling.
P_SATURATED = 0.9

#: C2: "far from the centre" means beyond θ0 = π/4, the angle where fixed AdaCos puts
#: the strongest supervision; a head that already gives P ≈ 1 there supervises weakly.
FAR_ANGLE_DEG = math.degrees(theory.THETA0_RAD)

#: C5: B_avg counts as ≈ C − 1 within a factor of 2. Through s = ln B / cos θ a factor
#: of 2 in B moves the AdaCos scale by √2 ln 2 ≈ 1, less than one unit of s.
B_FACTOR = 2.0
#: C5: the approximation "holds during training" when it holds at this fraction of the
#: logged training windows.
HOLD_FRACTION = 0.8

#: C6: Spearman's rank correlation between s(t) and θ_med(t) counts as "tracks" from
#: 0.3 on, the conventional lower edge of a moderate correlation.
RHO_TRACKS = 0.3
#: C6: fewer logged windows (with θ_med below π/4, where s depends on it) than this give
#: no usable correlation.
MIN_WINDOWS = 4

#: C7: "faster" means reaching the θ_med level in at least 10 % fewer steps than the
#: tuned head: a smaller gain is within what a change of learning-rate schedule gives,
#: and would not change anyone's choice of loss.
MIN_SPEEDUP = 0.10

#: C10: "stable" needs no divergence, and enough runs that the one-sided 95 %
#: Clopper-Pearson bound on the divergence rate is below 20 % (at least 14 runs).
MAX_DIVERGENCE_RATE = 0.2

FIXED_HEADS = ("normface", "cosface", "arcface")
SCALE_HEADS = ("normface", "cosface", "arcface")  # heads with a swept fixed scale s


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict: `numbers` are the values that decided it (floats, ints or
    short strings), `figure` the id of the report figure that shows the evidence."""

    claim_id: str
    verdict: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    figure: str | None = None

    @property
    def claim(self) -> str:
        return CLAIMS[self.claim_id]


@dataclass(frozen=True)
class Evidence:
    """What the claims read: the run's tables and what the study ranks trials by."""

    trials: pd.DataFrame
    series: pd.DataFrame
    metric: str = "verification_accuracy"
    direction: str = "maximize"

    @property
    def sign(self) -> float:
        """+1 when larger values of the metric are better, −1 otherwise."""
        return 1.0 if self.direction == "maximize" else -1.0

    def variants(self) -> list[str]:
        if "variant" not in self.trials or self.trials.empty:
            return [MAIN_VARIANT] if not self.trials.empty else []
        names = list(dict.fromkeys(self.trials["variant"].fillna(MAIN_VARIANT)))
        return sorted(names, key=lambda v: (v != MAIN_VARIANT, v))

    def of(self, variant: str, heads: Iterable[str] | None = None,
           complete: bool = True) -> pd.DataFrame:
        """Trials of one variant (and heads), the complete ones unless told otherwise."""
        df = self.trials
        if "variant" in df:
            df = df[df["variant"].fillna(MAIN_VARIANT) == variant]
        if heads is not None:
            df = df[df["head"].isin(list(heads))]
        if complete:
            df = df[df["state"] == "complete"]
        return df

    def num_classes(self, variant: str) -> int | None:
        df = self.of(variant, complete=False)
        if "num_classes" not in df or df["num_classes"].dropna().empty:
            return None
        return int(df["num_classes"].dropna().iloc[0])

    def windows(self, key: str) -> pd.DataFrame:
        """The logged training windows of one trial (rows with training statistics),
        in step order."""
        if "theta_med_rad" not in self.series:  # no trial logged training statistics
            return pd.DataFrame({"step": [], "theta_med_rad": []})
        rows = self.series[(self.series["key"] == key) & self.series["theta_med_rad"].notna()]
        return rows.sort_values("step", kind="mergesort")


# -- statistics ---------------------------------------------------------------------------


def _finite(values: Iterable[Any]) -> np.ndarray:
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    array = numbers.to_numpy(dtype="float64", na_value=np.nan)
    return array[np.isfinite(array)]


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) with its 95 % interval; NaN bounds when there
    are too few values for one."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, digits: int = 4) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        if not self.known:
            return f"{self.mean:.{digits}f} (n = {self.n}, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def mean_interval(values: Iterable[Any]) -> Interval:
    """Mean with the t-based 95 % interval (NaN bounds for fewer than 2 values)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = store.t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def difference_interval(a: Iterable[Any], b: Iterable[Any]) -> Interval:
    """mean(a) − mean(b) with Welch's 95 % interval (NaN bounds when either side has
    fewer than 2 values). Two sets without any spread give a zero-width interval."""
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(x.mean() - y.mean())
    n = min(len(x), len(y))
    if len(x) < 2 or len(y) < 2:
        return Interval(diff, math.nan, math.nan, n)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Interval(diff, diff, diff, n)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = store.t975(df) * se
    return Interval(diff, diff - half, diff + half, n)


def _clopper_pearson_upper(failures: int, n: int) -> float:
    """One-sided 95 % upper bound on a rate after `failures` in `n` trials."""
    if failures >= n:
        return 1.0
    from scipy import stats

    return float(stats.beta.ppf(CONFIDENCE, failures + 1, n - failures))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _judge_at_least(interval: Interval, margin: float) -> str:
    """Non-inferiority of a difference (better is positive): supported when its whole
    interval lies above −margin, not supported when it lies below, else inconclusive."""
    if not interval.known:
        return "inconclusive"
    if interval.low > -margin:
        return "supported"
    if interval.high < -margin:
        return "not supported"
    return "inconclusive"


def _combine(parts: list[tuple[str, str]]) -> str:
    tested = [verdict for verdict, _ in parts if verdict != "not tested"]
    if not tested:
        return "not tested"
    if "not supported" in tested:
        return "not supported"
    if all(verdict == "supported" for verdict in tested):
        return "supported"
    return "inconclusive"


def _reason(parts: list[tuple[str, str]]) -> str:
    return " ".join(text for _, text in parts)


# -- configurations ------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def config_label(head: str, s: Any, m: Any) -> str:
    """"cosface s=16 m=0.25", "normface s=8", "adacos-dynamic"."""
    parts = [head]
    if s is not None and not (isinstance(s, float) and math.isnan(s)):
        parts.append(f"s={s:g}")
    if m is not None and not (isinstance(m, float) and math.isnan(m)):
        parts.append(f"m={m:g}")
    return " ".join(parts)


def _in(variant: str) -> str:
    return "" if variant == MAIN_VARIANT else f" [{variant}]"


@dataclass(frozen=True)
class Config:
    head: str
    s: float
    m: float
    runs: pd.DataFrame  # its complete trials

    @property
    def label(self) -> str:
        return config_label(self.head, self.s, self.m)

    def values(self, column: str) -> np.ndarray:
        if column not in self.runs:
            return np.array([])
        return _finite(self.runs[column])


def configs(ev: Evidence, variant: str, heads: Iterable[str]) -> list[Config]:
    """The configurations (head, s, m) of `heads` in a variant, with their complete runs."""
    df = ev.of(variant, heads)
    out = []
    for (head, s, m), runs in df.groupby(["head", "s", "m"], dropna=False, sort=True):
        out.append(Config(str(head), float(s), float(m), runs))
    return out


def best_config(ev: Evidence, variant: str, heads: Iterable[str]) -> Config | None:
    """The configuration a user would pick: the best mean of `SELECTION_METRIC` (the
    validation pairs) over its seeds, falling back to the study's metric when the
    validation metric is missing."""
    return pick_best(ev, configs(ev, variant, heads))


def pick_best(ev: Evidence, candidates: list[Config]) -> Config | None:
    """The best of `candidates` on `SELECTION_METRIC` (see `best_config`)."""
    candidates = [c for c in candidates if len(c.values(ev.metric))]
    if not candidates:
        return None
    column = SELECTION_METRIC if all(len(c.values(SELECTION_METRIC)) for c in candidates) \
        else ev.metric
    sign = 1.0 if column == SELECTION_METRIC else ev.sign
    return max(candidates, key=lambda c: (sign * float(c.values(column).mean()), -c.s))


# -- the claims ---------------------------------------------------------------------------


def claim_c1(ev: Evidence) -> Verdict:
    """A small fixed s caps P(θ=0) below 1: pick the swept configuration whose analytic
    P(0) is lowest; its trained runs' mean target probability (last training window)
    must stay below `P_SATURATED`."""
    parts, numbers = [], {}
    for variant in ev.variants():
        C = ev.num_classes(variant)
        fixed = [c for c in configs(ev, variant, SCALE_HEADS)]
        if C is None or C <= 2 or not fixed:
            parts.append(("not tested", f"No fixed-scale head ran{_in(variant)}."))
            continue
        caps = {c.label: float(theory.target_probability(
            0.0, s=c.s, num_classes=C, m=0.0 if math.isnan(c.m) else c.m, head=c.head))
            for c in fixed}
        # The claim is about s: a configuration without a margin, when one qualifies,
        # keeps the margin's own lowering of P out of the evidence.
        plain = [c for c in fixed if math.isnan(c.m) or c.m == 0.0]
        capped_plain = [c for c in plain if caps[c.label] < P_SATURATED]
        small = min(capped_plain or fixed, key=lambda c: caps[c.label])
        if caps[small.label] >= P_SATURATED:
            needed = math.log(P_SATURATED / (1 - P_SATURATED) * (C - 1))
            parts.append(("not tested", (
                f"No swept scale caps P(0) below {P_SATURATED:g} at C = {C}{_in(variant)}: "
                f"add a normface scale below {needed:.1f}.")))
            continue
        theta_end = mean_interval(np.degrees(small.values("final_theta_med_rad")))
        if theta_end.n and theta_end.mean >= FAR_ANGLE_DEG:
            # A low P from runs whose samples never came near their centres says nothing
            # about a cap at θ = 0: it may be poor training.
            parts.append(("not tested", (
                f"{small.label}{_in(variant)}: its runs ended with θ_med = "
                f"{theta_end.mean:.0f}° ≥ {FAR_ANGLE_DEG:.0f}°, too far from the centres to "
                "show a cap at θ = 0; train longer.")))
            continue
        measured = mean_interval(small.values("final_p_target_mean"))
        numbers.update({
            f"C{_in(variant)}": C, f"smallest-cap configuration{_in(variant)}": small.label,
            f"analytic P(0){_in(variant)}": round(caps[small.label], 4),
            f"measured mean P (end of training){_in(variant)}": measured.text(3),
        })
        if not measured.known:
            verdict = "inconclusive"
            text = (f"{small.label}{_in(variant)}: P(0) = {caps[small.label]:.3f} in theory; "
                    f"measured {measured.text(3)}: needs at least 2 seeds.")
        elif measured.high < P_SATURATED:
            verdict = "supported"
            text = (f"{small.label}{_in(variant)}: P(0) ≤ {caps[small.label]:.3f} in theory, "
                    f"and the trained runs' mean target probability stayed at "
                    f"{measured.text(3)}, below {P_SATURATED:g}.")
        elif measured.low >= P_SATURATED:
            verdict = "not supported"
            text = (f"{small.label}{_in(variant)}: the trained runs reached a mean target "
                    f"probability of {measured.text(3)}, not capped below {P_SATURATED:g} "
                    f"(theory: {caps[small.label]:.3f}; B fell below C − 1).")
        else:
            verdict = "inconclusive"
            text = (f"{small.label}{_in(variant)}: measured {measured.text(3)} straddles "
                    f"{P_SATURATED:g}.")
        parts.append((verdict, text))
    return Verdict("C1", _combine(parts), _reason(parts), numbers, "probability")


def claim_c2(ev: Evidence) -> Verdict:
    """A large fixed s keeps P ≈ 1 far from the centre: the swept configuration with the
    highest analytic P at θ0 = π/4; in its runs, the mean target probability in the last
    training window whose θ_med is still ≥ π/4 must be ≥ `P_SATURATED`."""
    parts, numbers = [], {}
    far = math.radians(FAR_ANGLE_DEG)
    for variant in ev.variants():
        C = ev.num_classes(variant)
        fixed = configs(ev, variant, SCALE_HEADS)
        if C is None or not fixed:
            parts.append(("not tested", f"No fixed-scale head ran{_in(variant)}."))
            continue
        at_far = {c.label: float(theory.target_probability(
            far, s=c.s, num_classes=C, m=0.0 if math.isnan(c.m) else c.m, head=c.head))
            for c in fixed}
        large = max(fixed, key=lambda c: at_far[c.label])
        if at_far[large.label] < P_SATURATED:
            parts.append(("not tested", (
                f"No swept scale gives P(45°) ≥ {P_SATURATED:g} at C = {C}{_in(variant)}: "
                "add larger scales to a fixed head's grid.")))
            continue
        values = []
        for key in large.runs["key"]:
            windows = ev.windows(key)
            early = windows[windows["theta_med_rad"] >= far]
            if len(early) and "p_target_mean" in early:
                values.append(early["p_target_mean"].iloc[-1])
        measured = mean_interval(values)
        numbers.update({
            f"largest-scale configuration{_in(variant)}": large.label,
            f"analytic P(45°){_in(variant)}": round(at_far[large.label], 4),
            f"measured mean P while θ_med ≥ 45°{_in(variant)}": measured.text(3),
        })
        if measured.n == 0:
            parts.append(("not tested", (
                f"{large.label}{_in(variant)}: θ_med was below 45° at the first logged "
                "window; log more often (train.log_every).")))
        elif not measured.known:
            parts.append(("inconclusive", f"{large.label}{_in(variant)}: one seed only."))
        elif measured.low >= P_SATURATED:
            parts.append(("supported", (
                f"{large.label}{_in(variant)}: while the median sample was still ≥ 45° from "
                f"its centre, the mean target probability was already {measured.text(3)}.")))
        elif measured.high < P_SATURATED:
            parts.append(("not supported", (
                f"{large.label}{_in(variant)}: while θ_med ≥ 45°, the mean target "
                f"probability was {measured.text(3)}, below {P_SATURATED:g}.")))
        else:
            parts.append(("inconclusive", (
                f"{large.label}{_in(variant)}: {measured.text(3)} straddles "
                f"{P_SATURATED:g}.")))
    return Verdict("C2", _combine(parts), _reason(parts), numbers, "probability")


def half_angle(s: float, num_classes: int, m: float, head: str) -> float:
    """The angle (degrees) where the analytic P(θ) first falls to 1/2, on a 0.01° grid:
    0 when P(0) is already ≤ 1/2 (the whole curve lies left of any angle), 180 when P
    never falls that low."""
    theta_deg = np.linspace(0.0, 180.0, 18001)
    p = np.asarray(theory.target_probability(
        np.radians(theta_deg), s=s, num_classes=num_classes, m=m, head=head))
    below = np.nonzero(p <= 0.5)[0]
    return 180.0 if len(below) == 0 else float(theta_deg[below[0]])


def claim_c3(ev: Evidence) -> Verdict:
    """A larger m shifts P(θ) to smaller angles (analytic): for each margin head with at
    least two swept margins, at each swept scale and the main variant's C, the angle of
    P = 1/2 must fall as m grows."""
    variant = ev.variants()[0] if ev.variants() else MAIN_VARIANT
    C = ev.num_classes(variant)
    parts, numbers = [], {}
    for head in theory.MARGIN_HEADS:
        runs = ev.of(variant, [head], complete=False)
        margins = sorted(set(_finite(runs["m"]))) if len(runs) else []
        if C is None or len(margins) < 2:
            continue
        for s in sorted(set(_finite(runs["s"]))):
            angles = [half_angle(s, C, m, head) for m in [0.0, *margins]]
            if angles[0] == 0.0:  # P(0) ≤ ½ even without a margin: no crossing to move
                continue
            numbers[f"{head} s={s:g}: θ(P=½) for m = 0, {', '.join(f'{m:g}' for m in margins)}"] \
                = ", ".join(f"{a:.1f}°" for a in angles)
            # Each larger margin must move the crossing left, until it reaches θ = 0.
            falls = all(b < a or a == b == 0.0 for a, b in itertools.pairwise(angles))
            if falls:
                parts.append(("supported", ""))
            else:
                parts.append(("not supported", (
                    f"{head} s={s:g}: the angle of P = ½ does not fall with m.")))
    if not parts:
        return Verdict("C3", "not tested", (
            "No margin head swept two or more margins at a scale where P(0) > ½: give "
            "cosface or arcface a list of m values."), numbers, "theory")
    verdict = _combine(parts)
    reason = _reason(parts).strip()
    if verdict == "supported":
        reason = (f"Analytic, at C = {C}: at every swept scale, each larger margin moves the "
                  "angle where P(θ) = ½ to a smaller angle (numbers: those angles).")
    return Verdict("C3", verdict, reason, numbers, "theory")


def claim_c4(ev: Evidence) -> Verdict:
    """s_f is near the best fixed scale for any C: for each number of classes with a
    swept scale (normface, or a margin head at m = 0; at least 3 scales), the result at
    s_f (adacos-fixed, else the grid scale nearest s_f) must be no worse than the best
    scale's by more than `NEGLIGIBLE`. Needs two or more values of C."""
    by_classes: dict[int, list[str]] = {}
    for variant in ev.variants():
        C = ev.num_classes(variant)
        if C is not None and C > 2:
            by_classes.setdefault(C, []).append(variant)
    parts, numbers = [], {}
    tested_classes = []
    for C, variants in sorted(by_classes.items()):
        for variant in variants:
            sweep = [c for c in configs(ev, variant, SCALE_HEADS)
                     if c.head == "normface" or c.m == 0.0]
            if len({c.s for c in sweep}) < 3:
                continue
            tested_classes.append(C)
            s_f = theory.fixed_scale(C)
            best = pick_best(ev, sweep)
            fixed = configs(ev, variant, ["adacos-fixed"])
            if fixed and len(fixed[0].values(ev.metric)):
                reference, how = fixed[0], "adacos-fixed (s = s_f)"
            else:
                reference = min(sweep, key=lambda c: abs(math.log(c.s / s_f)))
                how = f"the grid scale nearest s_f, {reference.label}"
            if best is None:
                continue
            if reference is best:  # the grid's best scale is s_f's nearest neighbour
                diff = Interval(0.0, 0.0, 0.0, len(best.runs))
            else:
                diff = difference_interval(ev.sign * reference.values(ev.metric),
                                           ev.sign * best.values(ev.metric))
            verdict = _judge_at_least(diff, NEGLIGIBLE)
            where = f"C = {C}{_in(variant)}"
            numbers.update({
                f"{where}: s_f": round(s_f, 2), f"{where}: best scale": best.label,
                f"{where}: best s / s_f": round(best.s / s_f, 2),
                f"{where}: {ev.metric} at s_f − best": diff.text(4),
            })
            parts.append((verdict, (
                f"{where}: best {best.label} (chosen on validation), s_f = {s_f:.2f}; "
                f"{how} − best = {diff.text(4)} ({verdict}).")))
    if len(set(tested_classes)) < 2:
        return Verdict("C4", "not tested", (
            "Needs a sweep of s (normface, at least 3 scales) at two or more numbers of "
            "classes: add [variants.<name>] with other data.identities, e.g. "
            "data = { identities = 1000 }."), numbers, "scale-vs-classes")
    return Verdict("C4", _combine(parts), _reason(parts), numbers, "scale-vs-classes")


def claim_c5(ev: Evidence) -> Verdict:
    """B_i ≈ C − 1 during training: in the AdaCos runs (whose scale rests on it), the
    share of logged training windows with B_avg within a factor `B_FACTOR` of C − 1
    must be at least `HOLD_FRACTION` (mean over runs, with its interval)."""
    parts, numbers = [], {}
    tolerance = math.log(B_FACTOR)
    for variant in ev.variants():
        C = ev.num_classes(variant)
        runs = ev.of(variant, theory.ADACOS_HEADS)
        if C is None or C <= 2 or runs.empty:
            continue
        shares, ratios = [], []
        for key in runs["key"]:
            windows = ev.windows(key)
            if windows.empty or "ln_b_avg" not in windows:
                continue
            gap = (windows["ln_b_avg"] - math.log(C - 1)).abs()
            shares.append(float((gap <= tolerance).mean()))
            ratios.extend(np.exp(windows["ln_b_avg"] - math.log(C - 1)).tolist())
        if not shares:
            continue
        share = mean_interval(shares)
        if share.known:  # a share lies in [0, 1], whatever the t interval says
            share = Interval(share.mean, max(0.0, share.low), min(1.0, share.high), share.n)
        spread = np.percentile(ratios, [5, 50, 95])
        numbers.update({
            f"share of windows with B_avg/(C−1) in [½, 2]{_in(variant)}": share.text(3),
            f"B_avg/(C−1), 5th/50th/95th percentile{_in(variant)}":
                ", ".join(f"{v:.2f}" for v in spread),
        })
        where = f"C = {C}{_in(variant)}"
        if not share.known:
            parts.append(("inconclusive", f"{where}: one AdaCos run only."))
        elif share.low >= HOLD_FRACTION:
            parts.append(("supported", (
                f"{where}: B_avg stayed within a factor {B_FACTOR:g} of C − 1 in "
                f"{share.text(3)} of the logged windows.")))
        elif share.high < HOLD_FRACTION:
            parts.append(("not supported", (
                f"{where}: B_avg was within a factor {B_FACTOR:g} of C − 1 in only "
                f"{share.text(3)} of the windows (median ratio {spread[1]:.2f}).")))
        else:
            parts.append(("inconclusive", f"{where}: share {share.text(3)} straddles "
                                          f"{HOLD_FRACTION:g}."))
    if not parts:
        return Verdict("C5", "not tested", (
            "Needs AdaCos runs with logged training windows: add [heads.adacos-fixed] or "
            "[heads.adacos-dynamic]."), numbers, "ln-b-ratio")
    return Verdict("C5", _combine(parts), _reason(parts), numbers, "ln-b-ratio")


def claim_c6(ev: Evidence) -> Verdict:
    """The dynamic scale tracks θ_med: over the logged windows where θ_med < π/4 (where
    s(t) depends on it), Spearman's correlation of s(t) with θ_med(t) per dynamic run;
    its mean must reach `RHO_TRACKS` with an interval above 0."""
    parts, numbers = [], {}
    for variant in ev.variants():
        runs = ev.of(variant, ["adacos-dynamic"])
        if runs.empty:
            continue
        rhos, drops = [], []
        for key in runs["key"]:
            windows = ev.windows(key)
            if "s_current" not in windows:
                continue
            tight = windows[windows["theta_med_rad"] < theory.THETA0_RAD]
            if len(tight) < MIN_WINDOWS:
                continue
            rho = _spearman(tight["s_current"].to_numpy(), tight["theta_med_rad"].to_numpy())
            if math.isfinite(rho):
                rhos.append(rho)
                drops.append(float(tight["s_current"].iloc[0] - tight["s_current"].iloc[-1]))
        where = f"adacos-dynamic{_in(variant)}"
        if not rhos:
            parts.append(("not tested", (
                f"{where}: fewer than {MIN_WINDOWS} logged windows with θ_med < 45°; "
                "train longer or log more often.")))
            continue
        rho = mean_interval(rhos)
        drop = mean_interval(drops)
        numbers.update({f"Spearman ρ(s, θ_med){_in(variant)}": rho.text(3),
                        f"fall of s while θ_med < 45°{_in(variant)}": drop.text(2)})
        if not rho.known:
            parts.append(("inconclusive", f"{where}: ρ = {rho.mean:.2f} from one run."))
        elif rho.mean >= RHO_TRACKS and rho.low > 0:
            parts.append(("supported", (
                f"{where}: s(t) moved with θ_med(t) (Spearman ρ = {rho.text(3)}); s fell "
                f"by {drop.text(2)} while the classes tightened.")))
        elif rho.high < RHO_TRACKS:
            parts.append(("not supported", (
                f"{where}: s(t) did not follow θ_med(t) (ρ = {rho.text(3)}).")))
        else:
            parts.append(("inconclusive", f"{where}: ρ = {rho.text(3)}."))
    if not parts:
        return Verdict("C6", "not tested", "Needs [heads.adacos-dynamic].", numbers,
                       "convergence")
    return Verdict("C6", _combine(parts), _reason(parts), numbers, "convergence")


def _level_columns(trials: pd.DataFrame) -> list[tuple[float, str]]:
    out = []
    for column in trials.columns:
        if column.startswith("steps_to_theta_med_") and column.endswith("deg"):
            try:
                out.append((float(column[len("steps_to_theta_med_"):-3]), column))
            except ValueError:
                continue
    return sorted(out)  # lowest angle (hardest level) first


def claim_c7(ev: Evidence) -> Verdict:
    """AdaCos converges faster: steps until θ_med first falls below a level, at the
    lowest level every compared run reached, for each AdaCos head against the best
    tuned fixed configuration; supported when AdaCos needs fewer steps beyond noise."""
    parts, numbers = [], {}
    levels = _level_columns(ev.trials)
    for variant in ev.variants():
        best = best_config(ev, variant, FIXED_HEADS)
        for head in theory.ADACOS_HEADS:
            ada = configs(ev, variant, [head])
            if not ada or best is None:
                continue
            where = f"{head}{_in(variant)} vs {best.label}"
            usable = [(deg, col) for deg, col in levels
                      if len(ada[0].values(col)) == len(ada[0].runs)
                      and len(best.values(col)) == len(best.runs)]
            if not usable:
                parts.append(("inconclusive", f"{where}: no θ_med level was reached by "
                                              "every run."))
                continue
            deg, column = usable[0]
            diff = difference_interval(ada[0].values(column), best.values(column))
            # Faster by at least MIN_SPEEDUP of the tuned head's steps, i.e. the
            # difference in steps (AdaCos − tuned; better is negative) at most −margin.
            margin = MIN_SPEEDUP * float(best.values(column).mean())
            verdict = _judge_at_least(Interval(-diff.mean, -diff.high, -diff.low, diff.n),
                                      -margin) if diff.known else "inconclusive"
            numbers[f"{where}: steps to θ_med < {deg:g}°, AdaCos − tuned"] = diff.text(1)
            parts.append((verdict, (
                f"{where}: {diff.text(1)} steps to θ_med < {deg:g}° (tuned: "
                f"{best.values(column).mean():.0f}; faster means ≥ {margin:.1f} fewer) "
                f"({verdict}).")))
    if not parts:
        return Verdict("C7", "not tested", (
            "Needs an AdaCos head and a fixed-scale head (normface, cosface or arcface) "
            "in the same study."), numbers, "convergence")
    return Verdict("C7", _combine(parts), _reason(parts), numbers, "convergence")


def claim_c8(ev: Evidence) -> Verdict:
    """CosFace / ArcFace depend strongly on s and m: per margin head with two or more
    configurations, the spread of configuration means against seed noise (one-way
    ANOVA). Strong: spread ≥ `STRONG_SPREAD` and p < `ALPHA`, or a configuration that
    diverged or failed in every seed while others trained."""
    from scipy import stats

    parts, numbers = [], {}
    for variant in ev.variants():
        for head in theory.MARGIN_HEADS:
            every = ev.of(variant, [head], complete=False)
            groups = every.groupby(["s", "m"], dropna=False)
            if groups.ngroups < 2:
                continue
            dead = [f"s={s:g} m={m:g}" for (s, m), g in groups if (g["state"] != "complete")
                    .all() and g["state"].isin(["diverged", "failed"]).any()]
            done = configs(ev, variant, [head])
            values = [c.values(ev.metric) for c in done]
            values = [v for v in values if len(v)]
            where = f"{head}{_in(variant)}"
            if dead and values:
                numbers[f"{where}: configurations that never trained"] = ", ".join(dead)
                parts.append(("supported", (
                    f"{where}: {', '.join(dead)} diverged or failed in every seed while "
                    "other settings trained.")))
                continue
            if len(values) < 2 or min(len(v) for v in values) < 2:
                parts.append(("inconclusive", f"{where}: needs 2 or more seeds per setting."))
                continue
            means = [float(v.mean()) for v in values]
            spread = max(means) - min(means)
            p_value = float(stats.f_oneway(*values).pvalue)
            widest = max(mean_interval(v).high - mean_interval(v).mean for v in values)
            numbers.update({f"{where}: best − worst setting": round(spread, 4),
                            f"{where}: ANOVA p": f"{p_value:.2g}",
                            f"{where}: settings": len(values)})
            if spread >= STRONG_SPREAD and p_value < ALPHA:
                verdict, text = "supported", (
                    f"{where}: the {len(values)} settings span {spread:.4f} in {ev.metric}, "
                    f"beyond seed noise (ANOVA p = {p_value:.2g}).")
            elif spread < STRONG_SPREAD and (p_value < ALPHA or widest < STRONG_SPREAD):
                verdict, text = "not supported", (
                    f"{where}: the settings span only {spread:.4f} (< {STRONG_SPREAD:g}) in "
                    f"{ev.metric}.")
            else:
                verdict, text = "inconclusive", (
                    f"{where}: spread {spread:.4f}, ANOVA p = {p_value:.2g}: seed noise too "
                    "large to tell.")
            parts.append((verdict, text))
    if not parts:
        return Verdict("C8", "not tested", (
            "Needs cosface or arcface with two or more (s, m) settings."), numbers, "heatmaps")
    return Verdict("C8", _combine(parts), _reason(parts), numbers, "heatmaps")


def claim_c9(ev: Evidence) -> Verdict:
    """AdaCos matches or beats the best tuned CosFace / ArcFace: each AdaCos head
    against each margin head's best configuration (chosen on validation), on the study's
    metric; non-inferiority within `NEGLIGIBLE`."""
    parts, numbers = [], {}
    for variant in ev.variants():
        for margin_head in theory.MARGIN_HEADS:
            best = best_config(ev, variant, [margin_head])
            if best is None:
                continue
            for head in theory.ADACOS_HEADS:
                ada = configs(ev, variant, [head])
                if not ada or not len(ada[0].values(ev.metric)):
                    continue
                diff = difference_interval(ev.sign * ada[0].values(ev.metric),
                                           ev.sign * best.values(ev.metric))
                verdict = _judge_at_least(diff, NEGLIGIBLE)
                where = f"{head}{_in(variant)} − {best.label}"
                numbers[f"{where} ({ev.metric})"] = diff.text(4)
                parts.append((verdict, f"{where}: {diff.text(4)} ({verdict})."))
    if not parts:
        return Verdict("C9", "not tested", (
            "Needs an AdaCos head and a tuned margin head (cosface or arcface grid) in the "
            "same study."), numbers, "adacos-vs-tuned")
    return Verdict("C9", _combine(parts), _reason(parts), numbers, "adacos-vs-tuned")


def claim_c10(ev: Evidence) -> Verdict:
    """AdaCos training is stable: no AdaCos run diverged (NaN loss or an exploding s),
    over all seeds and variants, in enough runs to bound the rate below
    `MAX_DIVERGENCE_RATE`. Failed runs (errors) and pruned runs do not count."""
    every = ev.trials[ev.trials["head"].isin(theory.ADACOS_HEADS)]
    judged = every[every["state"].isin(["complete", "diverged"])]
    if judged.empty:
        return Verdict("C10", "not tested", "Needs AdaCos runs.", {}, None)
    n, diverged = len(judged), int((judged["state"] == "diverged").sum())
    upper = _clopper_pearson_upper(diverged, n)
    others = ev.trials[ev.trials["head"].isin(FIXED_HEADS)
                       & ev.trials["state"].isin(["complete", "diverged"])]
    numbers = {"AdaCos runs": n, "diverged": diverged,
               "95 % upper bound on the rate": round(upper, 3),
               "fixed-scale runs diverged": f"{int((others['state'] == 'diverged').sum())} "
                                            f"of {len(others)}"}
    if diverged:
        reasons = sorted(set(judged.loc[judged["state"] == "diverged", "diverged_reason"]
                             .dropna().astype(str)))
        return Verdict("C10", "not supported", (
            f"{diverged} of {n} AdaCos runs diverged ({'; '.join(reasons) or 'no reason'})."),
            numbers, None)
    if upper <= MAX_DIVERGENCE_RATE:
        return Verdict("C10", "supported", (
            f"None of {n} AdaCos runs diverged (rate < {upper:.2f} at 95 %)."), numbers, None)
    return Verdict("C10", "inconclusive", (
        f"None of {n} AdaCos runs diverged, but {n} runs bound the rate only below "
        f"{upper:.2f}; {MAX_DIVERGENCE_RATE:g} needs more seeds or variants."), numbers, None)


CLAIM_FUNCTIONS: dict[str, Callable[[Evidence], Verdict]] = {
    "C1": claim_c1, "C2": claim_c2, "C3": claim_c3, "C4": claim_c4, "C5": claim_c5,
    "C6": claim_c6, "C7": claim_c7, "C8": claim_c8, "C9": claim_c9, "C10": claim_c10,
}


def evaluate_tables(
    trials: pd.DataFrame, series: pd.DataFrame, *, metric: str = "verification_accuracy",
    direction: str = "maximize",
) -> list[Verdict]:
    """The verdicts on C1-C10, in order, from a run's trials and series tables."""
    ev = Evidence(trials, series, metric, direction)
    return [function(ev) for function in CLAIM_FUNCTIONS.values()]


def evaluate(run_dir: str | Path) -> list[Verdict]:
    """The verdicts on C1-C10 of a run folder (its tables and its spec's metric)."""
    trials, series = store.load_tables(Path(run_dir))
    study = ((store.read_manifest(Path(run_dir)) or {}).get("spec") or {}).get("study") or {}
    return evaluate_tables(trials, series, metric=study.get("metric", "verification_accuracy"),
                           direction=study.get("direction", "maximize"))
