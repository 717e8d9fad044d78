"""adastudy.stats against scipy's reference versions and hand computations: intervals,
their bounds, pairing, the noncentral-F spread of group means, Holm, rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from adastudy import stats


def test_mean_interval_is_the_t_interval_and_its_p_values_match():
    x = [0.31, 0.33, 0.30, 0.35]
    est = stats.mean_estimate(x)
    low, high = sp.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sp.sem(x))
    box = est.interval()
    assert (box.low, box.high) == (pytest.approx(low), pytest.approx(high))
    # A one-sided test at 2.5 % rejects exactly at the interval's ends.
    assert est.p_above(low) == pytest.approx(stats.ALPHA)
    assert est.p_below(high) == pytest.approx(stats.ALPHA)
    assert est.p_above(0.2) == pytest.approx(sp.ttest_1samp(x, 0.2, alternative="greater").pvalue)
    one = stats.mean_interval([0.9, float("nan")])
    assert one.n == 1 and not one.known
    assert math.isnan(stats.mean_estimate([0.9]).p_above(0.5))


def test_a_bounded_mean_uses_the_logit_scale_and_stays_inside_its_bounds():
    x = np.array([0.90, 0.92, 0.97])
    m, se = x.mean(), x.std(ddof=1) / math.sqrt(3)
    half = sp.t.ppf(0.975, 2) * se / (m * (1 - m))
    expit = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    box = stats.mean_interval(x, (0.0, 1.0))
    assert box.low == pytest.approx(expit(math.log(m / (1 - m)) - half))
    assert box.high == pytest.approx(expit(math.log(m / (1 - m)) + half))
    # Near 1 the plain t interval passes 1; the bounded one never does.
    near_one = [0.999, 1.0, 0.990]
    assert stats.mean_interval(near_one).high > 1.0
    bounded = stats.mean_interval(near_one, (0.0, 1.0))
    assert 0.0 < bounded.low < bounded.mean < bounded.high <= 1.0
    # All on the bound: a zero-width interval, and the data decide exactly.
    assert stats.mean_interval([1.0, 1.0], (0.0, 1.0)).text(3) == "1.000 [1.000, 1.000]"
    all_ones = stats.mean_estimate([1.0, 1.0, 1.0], (0.0, 1.0))
    assert all_ones.p_above(0.8) == 0.0 and all_ones.p_below(0.8) == 1.0
    low_rank1 = stats.mean_interval([0.0, 0.02, 0.3], (0.0, 1.0))
    assert low_rank1.low >= 0.0


def test_a_mean_correlation_stays_inside_minus_one_one():
    r = [0.99, 0.999, 0.95]
    plain = stats.mean_interval(r)
    assert plain.high > 1.0  # what the old t interval of ρ values printed
    fisher = stats.correlation_mean(r).interval()
    assert -1.0 < fisher.low < fisher.mean < fisher.high < 1.0
    z = np.arctanh(r)
    assert fisher.mean == pytest.approx(math.tanh(z.mean()))


def test_paired_and_welch_differences_match_scipy():
    a, b = [0.91, 0.93, 0.90, 0.95], [0.85, 0.80, 0.86]
    welch = stats.difference(a, b).interval()
    ref = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    x = {0: 0.80, 1: 0.90, 2: 0.95, 3: 0.70}
    y = {0: 0.79, 1: 0.88, 2: 0.945, 3: 0.69, 9: 0.1}  # seed 9 has no partner: left out
    paired = stats.difference(x, y)
    ref = sp.ttest_rel([x[k] for k in range(4)], [y[k] for k in range(4)]).confidence_interval()
    assert paired.method == "paired t" and paired.n == 4
    box = paired.interval()
    assert (box.low, box.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_pairing_by_seed_sees_what_welch_cannot():
    # Both heads move together with the seed (shared data and initialisation streams);
    # one is better by 0.01 at every seed.
    seed_effect = {0: 0.80, 1: 0.90, 2: 0.95, 3: 0.85}
    a = {k: v + 0.01 + (0.001 if k % 2 else -0.001) for k, v in seed_effect.items()}
    paired = stats.difference(a, seed_effect).interval()
    welch = stats.difference(list(a.values()), list(seed_effect.values())).interval()
    assert paired.low > 0.0  # the paired interval excludes 0
    assert welch.low < 0.0 < welch.high  # Welch's does not
    # A difference of two accuracies is clipped to [−1, 1].
    clipped = stats.difference([1.0, 0.0, 1.0], [0.0, 1.0, 0.0], bounds=(0.0, 1.0)).interval()
    assert -1.0 <= clipped.low and clipped.high <= 1.0


def test_between_sd_is_the_anova_effect_with_a_noncentral_f_interval():
    groups = [[0.80, 0.82, 0.81], [0.90, 0.91, 0.92], [0.85, 0.86, 0.84]]
    est = stats.between_sd(groups)
    f, p = sp.f_oneway(*groups)
    arrays = [np.array(g) for g in groups]
    ms_within = sum(((g - g.mean()) ** 2).sum() for g in arrays) / 6
    means = np.array([g.mean() for g in arrays])
    assert est.value == pytest.approx(math.sqrt(means.var(ddof=1) - ms_within / 3))
    # Against a spread of 0, the test is the ANOVA F test.
    assert est.p_above(0.0) == pytest.approx(p)
    box = est.interval()
    assert box.low < est.value < box.high
    assert est.p_above(box.low) == pytest.approx(stats.ALPHA, abs=1e-6)
    assert est.p_below(box.high) == pytest.approx(stats.ALPHA, abs=1e-6)


def test_between_sd_does_not_grow_with_the_number_of_equal_groups():
    # 30 settings with the same true mean: the best − worst range of their noisy means
    # grows with their number; the noise-corrected spread does not pass 0.005.
    rng = np.random.default_rng(1)
    groups = [0.9 + rng.normal(0, 0.01, 6) for _ in range(30)]
    means = [g.mean() for g in groups]
    assert max(means) - min(means) > 0.01
    est = stats.between_sd(groups)
    assert est.interval().low < 0.005
    assert est.p_above(0.005) > stats.ALPHA


def test_between_sd_covers_the_true_spread_at_least_as_often_as_it_says():
    # Conservative by construction (σ² enters through F and again through the
    # conversion from λ to θ): it must cover at least 95 % of the time.
    rng = np.random.default_rng(7)
    true_means = np.array([0.80, 0.81, 0.83, 0.84])
    theta = float(true_means.std(ddof=1))
    covered = 0
    runs = 200
    for _ in range(runs):
        box = stats.between_sd([m + rng.normal(0, 0.01, 5) for m in true_means]).interval()
        covered += box.low <= theta <= box.high
    assert covered / runs >= 0.95


def test_holm_by_hand_and_nan_is_no_test():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    partial = stats.holm([0.01, math.nan, 0.04])
    assert partial[0] == pytest.approx(0.02) and math.isnan(partial[1])
    assert partial[2] == pytest.approx(0.04)


def test_judge_reads_the_two_one_sided_p_values():
    assert stats.judge(0.001, 0.99) == "supported"
    assert stats.judge(0.99, 0.001) == "not supported"
    assert stats.judge(0.03, 0.97) == "inconclusive"  # 3 % does not pass 2.5 %
    assert stats.judge(math.nan, math.nan) == "inconclusive"


def test_rates_match_scipy():
    for failures, n in ((0, 14), (2, 20), (6, 6)):
        ref = sp.binomtest(failures, n).proportion_ci(0.95, method="exact")
        low, high = stats.clopper_pearson_interval(failures, n)
        assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))
        assert stats.clopper_pearson_upper(failures, n) == pytest.approx(ref.high)
    assert stats.binomial_at_most(0, 17, 0.2) == pytest.approx(
        sp.binomtest(0, 17, 0.2, alternative="less").pvalue)
    assert stats.binomial_at_most(0, 17, 0.2) < stats.ALPHA < stats.binomial_at_most(0, 16, 0.2)


def test_rank_and_partial_correlations():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 4.0])
    y = np.array([1.0, 0.5, 0.7, 0.9, 2.0, 2.0])
    assert stats.spearman(x, y) == pytest.approx(sp.spearmanr(x, y).statistic)
    rng = np.random.default_rng(0)
    step = np.arange(40.0)
    theta = 0.8 - 0.01 * step + rng.normal(0, 0.02, 40)
    follows = np.log(99) / np.cos(theta)  # s computed from θ: shares its movements
    schedule = 7.0 - 0.03 * step + rng.normal(0, 0.01, 40)  # its own trend only
    assert stats.partial_correlation(follows, theta, step) > 0.9
    assert abs(stats.partial_correlation(schedule, theta, step)) < 0.5
    # A residual at rounding level is no signal.
    assert math.isnan(stats.partial_correlation(1.0 + step**2, theta, step))


def test_the_bootstrap_is_seeded_paired_by_seed_and_agrees_with_its_p_values():
    seed_effect = {0: 0.80, 1: 0.90, 2: 0.95, 3: 0.85, 4: 0.88, 5: 0.92}
    better = {k: v + 0.01 + (0.002 if k % 2 else -0.002) for k, v in seed_effect.items()}

    def diff(groups):
        return float(groups[0].mean() - groups[1].mean())

    first = stats.bootstrap([better, seed_effect], diff)
    again = stats.bootstrap([better, seed_effect], diff)
    assert first.interval() == again.interval()  # the same data, the same interval
    box = first.interval()
    assert first.value == pytest.approx(0.01)
    # Paired by seed: the resamples keep each seed's pair, so the spread is the pairs'.
    assert 0.007 <= box.low < box.high <= 0.013
    assert first.p_above(0.0) < stats.ALPHA and first.p_below(0.0) > 0.5
    unpaired = stats.bootstrap([better, {k + 10: v for k, v in seed_effect.items()}], diff)
    assert unpaired.interval().low < 0.0 < unpaired.interval().high
    assert math.isnan(stats.bootstrap([{0: 1.0}, {0: 2.0}], diff).p_above(0.0))
