"""Intervals, tests and verdicts: the statistics every claim and every table uses.

An `Estimate` is a quantity measured over replicates (seeds, runs) that can give its
95 % interval and one-sided p-values against any threshold, so that a verdict and the
interval a reader sees always agree: a one-sided test at `ALPHA` = 2.5 % rejects exactly
when the two-sided 95 % interval lies wholly on one side of the threshold.

- Means use Student's t. A bounded quantity (an accuracy, a probability, a share of
  windows in [0, 1]) is estimated on the logit scale (delta method: the standard error
  of the mean divided by m (1 − m)) and mapped back, so its interval stays inside its
  bounds and is asymmetric near them. A mean of correlations uses Fisher's z = atanh(r).
- A difference of two configurations is paired over the seeds both ran (they share the
  data and initialisation streams), Welch's otherwise; its interval is intersected with
  the range the difference can take (which keeps its coverage).
- `between_sd` is the spread of configuration means with the seed noise taken out
  (C8), with the noncentral-F interval of an ANOVA effect size; `bootstrap` gives a
  percentile interval for a statistic with no closed form.
- `holm` adjusts the p-values of the parts of one claim (one family).
- `clopper_pearson_upper` and `binomial_at_most` bound a rate from a count (C10).
- `judge` turns the two one-sided p-values of a part into its verdict.

Degenerate cases are explicit: fewer than two replicates give no interval and NaN
p-values (inconclusive); replicates without any spread give a zero-width interval and
p-values of 0 or 1 (the data decide exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "BetweenSD",
    "Bootstrap",
    "Estimate",
    "Interval",
    "TEstimate",
    "between_sd",
    "binomial_at_most",
    "bootstrap",
    "clopper_pearson_interval",
    "clopper_pearson_upper",
    "correlation_mean",
    "difference",
    "finite",
    "holm",
    "judge",
    "mean_estimate",
    "mean_interval",
    "partial_correlation",
    "spearman",
    "t975",
]

#: Every interval is a two-sided 95 % interval.
CONFIDENCE = 0.95
#: Every test is one-sided at 2.5 %: it rejects exactly when the 95 % interval excludes
#: the threshold on that side (the convention of non-inferiority trials).
ALPHA = (1.0 - CONFIDENCE) / 2

Link = Literal["identity", "logit", "fisher-z"]

#: Two-sided 95 % Student-t quantiles t_{0.975, df}, used when scipy is absent; a df
#: between the entries takes the next smaller one (a slightly wider, safe interval).
_T975 = {
    1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912,
    7: 2.364624, 8: 2.306004, 9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813,
    13: 2.160369, 14: 2.144787, 15: 2.131450, 16: 2.119905, 17: 2.109816, 18: 2.100922,
    19: 2.093024, 20: 2.085963, 25: 2.059539, 30: 2.042272, 40: 2.021075, 60: 2.000298,
    120: 1.979930,
}

# Correlations of exactly ±1 have an infinite Fisher z; this keeps them finite.
_R_MAX = 1.0 - 1e-9


def finite(values: Iterable[Any]) -> np.ndarray:
    """The finite numbers among `values` (None, NaN, <NA>, text and ±inf dropped)."""
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    array = numbers.to_numpy(dtype="float64", na_value=np.nan)
    return array[np.isfinite(array)]


def t975(df: float) -> float:
    """t_{0.975, df}, the two-sided 95 % Student-t quantile: from scipy when installed,
    else from a small table (rounding df down: a slightly wider interval)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, df))
    except ImportError:
        pass
    usable = [d for d in _T975 if d <= df]
    return _T975[max(usable)] if df <= 120 else 1.959964


def _t_sf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.sf(t, df))


# -- intervals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A value (a mean, a difference) with its 95 % interval; NaN bounds when there are
    too few replicates for one."""

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


class Estimate:
    """What every estimate offers: `value`, `n`, `interval()`, and one-sided p-values
    `p_above(c)` (of H0: θ ≤ c; small when θ is above c) and `p_below(c)`."""

    value: float
    n: int
    method: str

    def interval(self) -> Interval:
        raise NotImplementedError

    def p_above(self, threshold: float) -> float:
        raise NotImplementedError

    def p_below(self, threshold: float) -> float:
        raise NotImplementedError


def _to_link(x: float, link: Link, bounds: tuple[float, float] | None) -> float:
    if link == "logit":
        lo, hi = bounds or (0.0, 1.0)
        u = (x - lo) / (hi - lo)
        if u <= 0.0:
            return -math.inf
        if u >= 1.0:
            return math.inf
        return math.log(u / (1.0 - u))
    if link == "fisher-z":
        return math.atanh(max(-_R_MAX, min(_R_MAX, x)))
    return x


def _from_link(z: float, link: Link, bounds: tuple[float, float] | None) -> float:
    if link == "logit":
        lo, hi = bounds or (0.0, 1.0)
        u = 0.5 * (1.0 + math.tanh(z / 2.0)) if math.isfinite(z) else (1.0 if z > 0 else 0.0)
        return lo + (hi - lo) * u
    if link == "fisher-z":
        return math.tanh(z)
    if bounds is not None:
        return min(max(z, bounds[0]), bounds[1])
    return z


@dataclass(frozen=True)
class TEstimate(Estimate):
    """A t-based estimate: `value` on the natural scale; `se` and `df` on the scale of
    `link` ("identity", "logit" for a quantity inside `bounds`, "fisher-z" for a mean
    correlation). `bounds` also clip an identity-link interval (a difference)."""

    value: float
    se: float
    df: float
    n: int
    link: Link = "identity"
    bounds: tuple[float, float] | None = None
    method: str = "t"

    @property
    def _centre(self) -> float:
        return _to_link(self.value, self.link, self.bounds)

    def interval(self) -> Interval:
        if not math.isfinite(self.value):
            return Interval(math.nan, math.nan, math.nan, self.n)
        if not math.isfinite(self.se):
            return Interval(self.value, math.nan, math.nan, self.n)
        if self.se == 0.0 or not math.isfinite(self._centre):
            return Interval(self.value, self.value, self.value, self.n)
        half = t975(self.df) * self.se
        low = _from_link(self._centre - half, self.link, self.bounds)
        high = _from_link(self._centre + half, self.link, self.bounds)
        return Interval(self.value, low, high, self.n)

    def p_above(self, threshold: float) -> float:
        return self._p(threshold, above=True)

    def p_below(self, threshold: float) -> float:
        return self._p(threshold, above=False)

    def _p(self, threshold: float, above: bool) -> float:
        if not math.isfinite(self.value) or not math.isfinite(self.se):
            return math.nan
        centre, c = self._centre, _to_link(threshold, self.link, self.bounds)
        if self.se == 0.0 or not math.isfinite(centre) or not math.isfinite(c):
            # No spread (or a value on its bound): the data decide exactly.
            if self.value == threshold:
                return 1.0
            return 0.0 if (self.value > threshold) == above else 1.0
        t = (centre - c) / self.se
        return _t_sf(t if above else -t, self.df)


def mean_estimate(values: Iterable[Any], bounds: tuple[float, float] | None = None
                  ) -> TEstimate:
    """The mean of `values` with Student's t; on the logit scale when the values are
    known to lie within `bounds` (e.g. (0, 1) for an accuracy)."""
    x = finite(values)
    n = len(x)
    if n == 0:
        return TEstimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return TEstimate(mean, math.nan, math.nan, n, "logit" if bounds else "identity",
                         bounds)
    se = float(x.std(ddof=1)) / math.sqrt(n)
    if bounds is None:
        return TEstimate(mean, se, n - 1, n)
    lo, hi = bounds
    u = (mean - lo) / (hi - lo)
    # Delta method: d logit(u) / du = 1 / (u (1 − u)), in units of the bounded range.
    se_link = se / (hi - lo) / (u * (1.0 - u)) if 0.0 < u < 1.0 else 0.0
    return TEstimate(mean, se_link, n - 1, n, "logit", bounds, method="t, logit scale")


def mean_interval(values: Iterable[Any], bounds: tuple[float, float] | None = None
                  ) -> Interval:
    """Mean with its 95 % interval (t; on the logit scale within `bounds`)."""
    return mean_estimate(values, bounds).interval()


def correlation_mean(values: Iterable[Any]) -> TEstimate:
    """The mean of per-run correlations, averaged and tested on Fisher's z = atanh(r)
    (so its interval stays inside (−1, 1)); `value` is tanh of the mean z."""
    r = finite(values)
    n = len(r)
    if n == 0:
        return TEstimate(math.nan, math.nan, math.nan, 0, "fisher-z")
    z = np.arctanh(np.clip(r, -_R_MAX, _R_MAX))
    value = float(np.tanh(z.mean()))
    if n < 2:
        return TEstimate(value, math.nan, math.nan, n, "fisher-z")
    return TEstimate(value, float(z.std(ddof=1)) / math.sqrt(n), n - 1, n, "fisher-z",
                     method="t, Fisher z")


def difference(
    a: Mapping[Any, float] | Sequence[float] | np.ndarray,
    b: Mapping[Any, float] | Sequence[float] | np.ndarray,
    *,
    b_factor: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> TEstimate:
    """mean(a) − b_factor · mean(b). With mappings (seed → value) that share two or more
    keys: the paired t on the shared keys; otherwise Welch's t on all values. `bounds`
    (of a and b) clip the interval to the range a difference can take."""
    clip = None if bounds is None else (bounds[0] - b_factor * bounds[1],
                                        bounds[1] - b_factor * bounds[0])
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        shared = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
        if len(shared) >= 2:
            d = np.array([a[k] - b_factor * b[k] for k in shared], dtype="float64")
            se = float(d.std(ddof=1)) / math.sqrt(len(d))
            return TEstimate(float(d.mean()), se, len(d) - 1, len(d), bounds=clip,
                             method="paired t")
        a, b = list(a.values()), list(b.values())
    x, y = finite(a), finite(b)
    if len(x) == 0 or len(y) == 0:
        return TEstimate(math.nan, math.nan, math.nan, 0, bounds=clip)
    diff = float(x.mean() - b_factor * y.mean())
    n = min(len(x), len(y))
    if len(x) < 2 or len(y) < 2:
        return TEstimate(diff, math.nan, math.nan, n, bounds=clip, method="Welch t")
    vx, vy = x.var(ddof=1) / len(x), b_factor**2 * y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return TEstimate(diff, 0.0, math.inf, n, bounds=clip, method="Welch t")
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return TEstimate(diff, se, df, n, bounds=clip, method="Welch t")


# -- bootstrap -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap(Estimate):
    """A percentile-bootstrap estimate: `value` from the data, `samples` from the
    resamples. p-values count the resamples on the wrong side of the threshold (with
    the usual +1 so that none is ever exactly 0)."""

    value: float
    samples: np.ndarray
    n: int
    method: str = "percentile bootstrap"

    def interval(self) -> Interval:
        if not math.isfinite(self.value) or len(self.samples) == 0:
            return Interval(self.value, math.nan, math.nan, self.n)
        low, high = np.percentile(self.samples, [2.5, 97.5])
        return Interval(self.value, float(low), float(high), self.n)

    def p_above(self, threshold: float) -> float:
        if len(self.samples) == 0:
            return math.nan
        return (1 + int((self.samples <= threshold).sum())) / (len(self.samples) + 1)

    def p_below(self, threshold: float) -> float:
        if len(self.samples) == 0:
            return math.nan
        return (1 + int((self.samples >= threshold).sum())) / (len(self.samples) + 1)


def bootstrap(
    groups: Sequence[Mapping[Any, float]],
    statistic: Callable[[list[np.ndarray]], float],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> Bootstrap:
    """`statistic` of `groups` (each a mapping seed → value) with a percentile
    bootstrap. When every group has the same seeds, the seeds are resampled together
    (the groups are paired by seed); otherwise each group is resampled on its own. The
    generator is seeded: the same data give the same interval."""
    arrays = [np.array(list(g.values()), dtype="float64") for g in groups]
    n = min((len(a) for a in arrays), default=0)
    value = float(statistic(arrays)) if n else math.nan
    if n < 2:
        return Bootstrap(value, np.array([]), n)
    rng = np.random.default_rng(seed)
    keys = [list(g) for g in groups]
    paired = all(sorted(k, key=str) == sorted(keys[0], key=str) for k in keys)
    samples = np.empty(resamples)
    if paired:
        order = [np.array([g[k] for k in keys[0]], dtype="float64") for g in groups]
        for i in range(resamples):
            pick = rng.integers(0, len(keys[0]), len(keys[0]))
            samples[i] = statistic([a[pick] for a in order])
    else:
        for i in range(resamples):
            samples[i] = statistic([a[rng.integers(0, len(a), len(a))] for a in arrays])
    return Bootstrap(value, samples[np.isfinite(samples)], n)


# -- spread of group means -------------------------------------------------------------------


@dataclass(frozen=True)
class BetweenSD(Estimate):
    """The standard deviation θ = √(Σ(μ_i − μ̄)² / (k − 1)) of k groups' true means,
    from a one-way ANOVA: the estimate √max(0, (MS_between − MS_within) / n0) (the
    spread of the sample means less what seed noise alone gives), an interval and
    p-values from the noncentral F distribution of F = MS_between / MS_within, whose
    noncentrality is λ = n0 (k − 1) θ² / σ², with σ² taken as MS_within (the usual
    interval of an ANOVA effect size, inverted for λ). The interval is conservative: σ²
    enters through F and again through the conversion from λ to θ, so it covers more
    often than 95 % (99 % and more in simulations of 4-20 settings with 5-6 seeds) and
    its tests reject less often than they say: neither verdict comes easier than it
    should."""

    value: float
    f: float
    df_between: int
    df_within: int
    n0: float
    ms_within: float
    n: int
    method: str = "noncentral F"

    def _lam(self, theta: float) -> float:
        return self.n0 * self.df_between * theta**2 / self.ms_within

    def _theta(self, lam: float) -> float:
        return math.sqrt(max(0.0, lam) * self.ms_within / (self.n0 * self.df_between))

    def _sf(self, lam: float) -> float:
        from scipy import stats

        return float(stats.ncf.sf(self.f, self.df_between, self.df_within, lam)) \
            if lam > 0 else float(stats.f.sf(self.f, self.df_between, self.df_within))

    def _solve(self, target: float) -> float:
        """λ with P(F' > f | λ) = target (0 when even λ = 0 exceeds it)."""
        from scipy.optimize import brentq

        if self._sf(0.0) >= target:
            return 0.0
        high = max(1.0, self.f * self.df_between)
        while self._sf(high) < target:
            high *= 2.0
            if high > 1e9:
                return math.inf
        return float(brentq(lambda lam: self._sf(lam) - target, 0.0, high, xtol=1e-10))

    def interval(self) -> Interval:
        if self.ms_within == 0.0:
            return Interval(self.value, self.value, self.value, self.n)
        low = self._theta(self._solve(ALPHA))
        high = self._theta(self._solve(1.0 - ALPHA))
        return Interval(self.value, low, high, self.n)

    def p_above(self, threshold: float) -> float:
        if self.ms_within == 0.0:
            return 0.0 if self.value > threshold else 1.0
        return self._sf(self._lam(threshold))

    def p_below(self, threshold: float) -> float:
        if self.ms_within == 0.0:
            return 0.0 if self.value < threshold else 1.0
        return 1.0 - self._sf(self._lam(threshold))


def between_sd(groups: Sequence[Iterable[Any]]) -> BetweenSD | TEstimate:
    """The spread of the groups' true means (`BetweenSD`); groups need 2 or more
    values each (otherwise: no estimate, NaN)."""
    arrays = [finite(g) for g in groups]
    k = len(arrays)
    sizes = np.array([len(a) for a in arrays])
    if k < 2 or sizes.min() < 2:
        return TEstimate(math.nan, math.nan, math.nan, int(sizes.min()) if k else 0)
    values = np.concatenate(arrays)
    total = len(values)
    grand = values.mean()
    ms_between = sum(len(a) * (a.mean() - grand) ** 2 for a in arrays) / (k - 1)
    ms_within = sum(((a - a.mean()) ** 2).sum() for a in arrays) / (total - k)
    n0 = (total - (sizes**2).sum() / total) / (k - 1)
    value = math.sqrt(max(0.0, (ms_between - ms_within) / n0))
    if ms_within == 0.0:
        means = np.array([a.mean() for a in arrays])
        value = float(means.std(ddof=1))
        return BetweenSD(value, math.inf, k - 1, total - k, n0, 0.0, int(sizes.min()))
    return BetweenSD(value, float(ms_between / ms_within), k - 1, total - k, float(n0),
                     float(ms_within), int(sizes.min()))


# -- correlations ----------------------------------------------------------------------------


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant
    or there are fewer than 3 points."""
    if len(x) < 3:
        return math.nan
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def partial_correlation(x: np.ndarray, y: np.ndarray, t: np.ndarray, degree: int = 3
                        ) -> float:
    """Pearson's correlation of x and y after removing from each a polynomial of the
    given degree in t (least squares): what x and y share beyond a smooth trend in t.
    NaN with too few points (degree + 3) or when a residual is constant."""
    x, y, t = (np.asarray(v, dtype="float64") for v in (x, y, t))
    if len(x) < degree + 3:
        return math.nan
    scale = t.std()
    if scale == 0:
        return math.nan
    basis = np.vander((t - t.mean()) / scale, degree + 1)
    rx = x - basis @ np.linalg.lstsq(basis, x, rcond=None)[0]
    ry = y - basis @ np.linalg.lstsq(basis, y, rcond=None)[0]
    # Residuals at rounding level are no signal: a trend the polynomial fits exactly.
    if rx.std() <= 1e-9 * max(1.0, np.abs(x).max()) or \
            ry.std() <= 1e-9 * max(1.0, np.abs(y).max()):
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


# -- rates -----------------------------------------------------------------------------------


def clopper_pearson_upper(failures: int, n: int, confidence: float = 1.0 - ALPHA) -> float:
    """One-sided upper Clopper-Pearson bound on a rate, from `failures` in `n` runs."""
    if n == 0:
        return 1.0
    if failures >= n:
        return 1.0
    from scipy import stats

    return float(stats.beta.ppf(confidence, failures + 1, n - failures))


def clopper_pearson_interval(failures: int, n: int) -> tuple[float, float]:
    """The two-sided 95 % Clopper-Pearson interval of a rate (its upper end is the
    one-sided 97.5 % bound)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy import stats

    low = 0.0 if failures == 0 else float(stats.beta.ppf(ALPHA, failures, n - failures + 1))
    return (low, clopper_pearson_upper(failures, n))


def binomial_at_most(failures: int, n: int, rate: float) -> float:
    """P(X ≤ failures) for X ~ Binomial(n, rate): the exact one-sided p-value of
    H0: the true rate ≥ `rate`, given `failures` in `n` runs."""
    from scipy import stats

    return float(stats.binom.cdf(failures, n, rate))


# -- families and verdicts -------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN entries are no test and
    stay NaN; they do not count towards the family's size). Reject where the adjusted
    value is below the level: this keeps the chance of any false rejection in the
    family at that level."""
    indexed = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    indexed.sort()
    k = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (k - rank) * p))
        adjusted[i] = running
    return adjusted


def judge(p_for: float, p_against: float, alpha: float = ALPHA) -> str:
    """A part's verdict from its two one-sided p-values: "supported" when the test for
    the claim rejects, "not supported" when the test against it does, "inconclusive"
    otherwise (or when there is no test)."""
    if math.isfinite(p_for) and p_for < alpha:
        return "supported"
    if math.isfinite(p_against) and p_against < alpha:
        return "not supported"
    return "inconclusive"
