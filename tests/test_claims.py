"""The verdicts on C1-C10, on hand-made run folders whose answer is known: clearly
better → supported, within seed noise → inconclusive, clearly worse → not supported,
missing data → not tested; and the statistics against scipy's reference versions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from adastudy import claims, store, theory
from adastudy.claims import Evidence


def record(head: str, s: float | None = None, m: float | None = None, seed: int = 0, *,
           acc: float | None = 0.9, val: float | None = None, variant: str = "main",
           C: int = 100, state: str = "complete", windows: list[dict] | None = None,
           steps_to: dict | None = None, final_p: float | None = None,
           reason: str | None = None) -> dict:
    metrics: dict = {}
    if acc is not None:
        metrics["verification_accuracy"] = acc
        metrics["val_accuracy"] = acc if val is None else val
    if final_p is not None:
        metrics["final_p_target_mean"] = final_p
    return {
        "key": store.trial_key(head, s, m, seed, variant), "number": 0, "variant": variant,
        "num_classes": C, "head": head, "s": s, "m": m, "seed": seed, "state": state,
        "error": None, "steps": 100, "epochs": 5.0, "metrics": metrics,
        "steps_to_theta_med": steps_to or {}, "diverged_reason": reason,
        "series": windows or [],
    }


def evidence(tmp_path: Path, records: list[dict], metric: str = "verification_accuracy",
             direction: str = "maximize") -> Evidence:
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    for r in records:
        store.write_trial_record(run, r)
    trials, series = store.load_tables(run)
    return Evidence(trials, series, metric, direction)


def seeds(head, s=None, m=None, values=(0.9, 0.9, 0.9), **kw) -> list[dict]:
    return [record(head, s, m, seed, acc=value, **kw) for seed, value in enumerate(values)]


NOISY = (0.88, 0.90, 0.92)  # sd 0.02: the noise of a CPU-scale study


# -- statistics against references -----------------------------------------------------


def test_mean_interval_is_the_t_interval():
    x = [0.91, 0.93, 0.90, 0.95]
    got = claims.mean_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert got.mean == pytest.approx(np.mean(x))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    one = claims.mean_interval([0.9, float("nan")])
    assert one.n == 1 and not one.known


def test_difference_interval_is_welchs():
    a, b = [0.91, 0.93, 0.90, 0.95], [0.85, 0.80, 0.86]
    got = claims.difference_interval(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert (got.low, got.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert not claims.difference_interval([0.9], b).known


def test_rank_correlation_and_rate_bound_match_scipy():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 4.0])
    y = np.array([1.0, 0.5, 0.7, 0.9, 2.0, 2.0])
    assert claims._spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    for failures, n in ((0, 14), (2, 20)):
        exact = stats.binomtest(failures, n).proportion_ci(0.90, method="exact").high
        assert claims._clopper_pearson_upper(failures, n) == pytest.approx(exact)


def test_half_angle_is_where_the_curve_crosses_one_half():
    angle = claims.half_angle(16.0, 100, 0.25, "cosface")
    for theta_deg, above in ((angle - 0.02, True), (angle + 0.02, False)):
        p = theory.target_probability(math.radians(theta_deg), s=16.0, num_classes=100,
                                      m=0.25, head="cosface")
        assert (p > 0.5) == above


# -- C9 and the four outcomes ------------------------------------------------------------


def tuned_grid(best=NOISY, other=(0.70, 0.72, 0.71)):
    return seeds("cosface", 16.0, 0.25, best) + seeds("cosface", 32.0, 0.4, other)


@pytest.mark.parametrize(("adacos", "expected"), [
    ((0.96, 0.97, 0.98), "supported"),       # clearly better
    ((0.89, 0.91, 0.90), "inconclusive"),    # within noise of a ±2 pt tuned head
    ((0.80, 0.81, 0.79), "not supported"),   # clearly worse
])
def test_c9_against_the_best_tuned_head(tmp_path, adacos, expected):
    ev = evidence(tmp_path, tuned_grid() + seeds("adacos-dynamic", values=adacos))
    verdict = claims.claim_c9(ev)
    assert verdict.verdict == expected, verdict.reason
    assert "cosface s=16 m=0.25" in verdict.reason  # the best tuned one is the reference


def test_c9_matching_within_the_negligible_margin_is_supported(tmp_path):
    tight = (0.900, 0.901, 0.899)
    ev = evidence(tmp_path, seeds("cosface", 16.0, 0.25, tight)
                  + seeds("adacos-fixed", values=(0.898, 0.899, 0.897)))
    assert claims.claim_c9(ev).verdict == "supported"


def test_c9_picks_the_tuned_head_on_validation_not_on_test(tmp_path):
    # s=32 has the best test accuracy but the worse validation accuracy: the reference
    # must be s=16, which AdaCos beats.
    records = ([record("cosface", 16.0, 0.25, i, acc=0.80 + i / 100, val=0.95) for i in range(3)]
               + [record("cosface", 32.0, 0.25, i, acc=0.99, val=0.90) for i in range(3)]
               + seeds("adacos-dynamic", values=(0.90, 0.91, 0.92)))
    verdict = claims.claim_c9(evidence(tmp_path, records))
    assert "cosface s=16 m=0.25" in verdict.reason and verdict.verdict == "supported"


def test_c9_minimize_direction_flips_better_and_worse(tmp_path):
    ev = evidence(tmp_path, tuned_grid() + seeds("adacos-dynamic", values=(0.70, 0.71, 0.72)),
                  direction="minimize")
    assert claims.claim_c9(ev).verdict == "supported"


def test_c9_one_seed_is_inconclusive_and_missing_heads_not_tested(tmp_path):
    one = evidence(tmp_path, [record("cosface", 16.0, 0.25, acc=0.9),
                              record("adacos-dynamic", acc=0.99)])
    assert claims.claim_c9(one).verdict == "inconclusive"
    none = evidence(tmp_path, tuned_grid())
    verdict = claims.claim_c9(none)
    assert verdict.verdict == "not tested" and "AdaCos" in verdict.reason


def test_c9_any_part_clearly_worse_makes_it_not_supported(tmp_path):
    records = (tuned_grid() + seeds("arcface", 16.0, 0.3, (0.99, 0.99, 0.99))
               + seeds("adacos-dynamic", values=(0.93, 0.935, 0.94)))
    verdict = claims.claim_c9(evidence(tmp_path, records))
    assert verdict.verdict == "not supported"
    assert "arcface s=16 m=0.3" in verdict.reason


# -- C4 -------------------------------------------------------------------------------------


def scale_sweep(C: int, variant: str, best_s: float, scales=(2.0, 4.0, 8.0, 16.0, 32.0)):
    out = []
    for s in scales:
        level = 0.95 if s == best_s else 0.80
        out += seeds("normface", s, None, (level - 0.001, level, level + 0.001),
                     variant=variant, C=C)
    return out


def test_c4_needs_two_numbers_of_classes(tmp_path):
    ev = evidence(tmp_path, scale_sweep(100, "main", 8.0))
    verdict = claims.claim_c4(ev)
    assert verdict.verdict == "not tested" and "variants" in verdict.reason


@pytest.mark.parametrize(("fixed_level", "expected"), [
    (0.95, "supported"), (0.80, "not supported"), (None, "supported"),
])
def test_c4_compares_s_f_with_the_best_scale_at_each_c(tmp_path, fixed_level, expected):
    # s_f(20) = 4.16 and s_f(1000) = 9.77: the best grid scales 4 and 8 are the nearest.
    records = scale_sweep(20, "c20", 4.0) + scale_sweep(1000, "main", 8.0)
    if fixed_level is not None:
        for variant, C in (("c20", 20), ("main", 1000)):
            records += seeds("adacos-fixed", values=(fixed_level - 0.001, fixed_level,
                                                     fixed_level + 0.001), variant=variant, C=C)
    verdict = claims.claim_c4(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert verdict.numbers["C = 20 [c20]: s_f"] == pytest.approx(theory.fixed_scale(20), abs=0.01)


def test_c4_a_best_scale_far_from_s_f_is_not_supported(tmp_path):
    records = scale_sweep(20, "c20", 32.0) + scale_sweep(1000, "main", 32.0)
    assert claims.claim_c4(evidence(tmp_path, records)).verdict == "not supported"


# -- C1, C2, C3 ----------------------------------------------------------------------------


@pytest.mark.parametrize(("final_p", "expected"), [
    ((0.30, 0.32, 0.31), "supported"), ((0.95, 0.96, 0.97), "not supported"),
    ((0.5, 0.9, 0.99), "inconclusive"),
])
def test_c1_small_scale_probability(tmp_path, final_p, expected):
    records = [record("normface", 2.0, None, i, final_p=p) for i, p in enumerate(final_p)]
    records += [record("normface", 32.0, None, i, final_p=0.99) for i in range(3)]
    verdict = claims.claim_c1(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert "normface s=2" in verdict.reason


def test_c1_needs_runs_that_tightened(tmp_path):
    # P stayed low, but so far from the centres (θ_med 70°) that it says nothing of a cap.
    records = [record("normface", 2.0, None, i, final_p=0.05) for i in range(3)]
    for r in records:
        r["metrics"]["final_theta_med_rad"] = math.radians(70.0)
    verdict = claims.claim_c1(evidence(tmp_path, records))
    assert verdict.verdict == "not tested" and "train longer" in verdict.reason


def test_c1_without_a_small_scale_is_not_tested(tmp_path):
    verdict = claims.claim_c1(evidence(tmp_path, seeds("normface", 32.0, None)))
    assert verdict.verdict == "not tested" and "below" in verdict.reason


def windows(theta_deg: list[float], p: list[float], s: list[float] | None = None,
            ln_b: list[float] | None = None) -> list[dict]:
    out = []
    for i, (theta, prob) in enumerate(zip(theta_deg, p, strict=True)):
        row = {"step": 10 * (i + 1), "theta_med_rad": math.radians(theta),
               "p_target_mean": prob, "loss": 1.0}
        if s is not None:
            row["s"] = s[i]
        if ln_b is not None:
            row["ln_b_avg"] = ln_b[i]
        out.append(row)
    out.append({"step": 10 * len(theta_deg), "epoch": 1, "val_accuracy": 0.9})  # an eval row
    return out


@pytest.mark.parametrize(("p_far", "expected"), [(0.97, "supported"), (0.5, "not supported")])
def test_c2_large_scale_probability_far_from_the_centre(tmp_path, p_far, expected):
    records = [record("normface", 64.0, None, i,
                      windows=windows([80, 60, 50, 30], [0.3, 0.8, p_far + i / 100, 0.999]))
               for i in range(3)]
    verdict = claims.claim_c2(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason


def test_c2_needs_a_window_before_theta_med_falls_below_45(tmp_path):
    records = [record("normface", 64.0, None, i, windows=windows([30, 20], [0.99, 0.99]))
               for i in range(3)]
    verdict = claims.claim_c2(evidence(tmp_path, records))
    assert verdict.verdict == "not tested" and "log_every" in verdict.reason


def test_c3_is_analytic_and_needs_two_margins(tmp_path):
    grid = seeds("cosface", 16.0, 0.1) + seeds("cosface", 16.0, 0.4)
    verdict = claims.claim_c3(evidence(tmp_path, grid))
    assert verdict.verdict == "supported"
    angles = verdict.numbers["cosface s=16: θ(P=½) for m = 0, 0.1, 0.4"]
    values = [float(a.rstrip("°")) for a in angles.split(", ")]
    assert values == sorted(values, reverse=True) and len(set(values)) == 3
    single = claims.claim_c3(evidence(tmp_path, seeds("cosface", 16.0, 0.1)))
    assert single.verdict == "not tested"


def test_c3_skips_scales_without_a_crossing_and_counts_reaching_zero(tmp_path):
    # s = 4 at C = 100: P(0) < ½ even without a margin, so it says nothing about shifts;
    # s = 8: a large margin pushes the whole curve below ½ (crossing at 0°).
    grid = [r for s in (4.0, 8.0) for m in (0.1, 0.9) for r in seeds("cosface", s, m)]
    verdict = claims.claim_c3(evidence(tmp_path, grid))
    assert verdict.verdict == "supported", verdict.reason
    assert not any(key.startswith("cosface s=4:") for key in verdict.numbers)
    assert verdict.numbers["cosface s=8: θ(P=½) for m = 0, 0.1, 0.9"].endswith("0.0°")


# -- C5, C6, C7 ----------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "expected"), [(0.1, "supported"), (2.0, "not supported")])
def test_c5_b_avg_against_c_minus_one(tmp_path, offset, expected):
    ln_c = math.log(99)
    records = [record(head, seed=i, windows=windows(
        [80, 60, 40, 30], [0.1, 0.3, 0.5, 0.5], ln_b=[ln_c + offset * (1 + i / 10)] * 4))
        for head in theory.ADACOS_HEADS for i in range(3)]
    verdict = claims.claim_c5(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason


def test_c5_without_adacos_is_not_tested(tmp_path):
    assert claims.claim_c5(evidence(tmp_path, seeds("normface", 8.0))).verdict == "not tested"


@pytest.mark.parametrize(("direction", "expected"), [(+1, "supported"), (-1, "not supported")])
def test_c6_dynamic_scale_tracks_theta_med(tmp_path, direction, expected):
    theta = [80, 60, 44, 40, 36, 33, 31, 30]
    records = []
    for i in range(3):
        s = [6.0 + direction * (t - 30) / 10 + i / 100 for t in theta]
        records.append(record("adacos-dynamic", seed=i,
                              windows=windows(theta, [0.5] * len(theta), s=s)))
    verdict = claims.claim_c6(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason


def test_c6_needs_windows_below_45_degrees(tmp_path):
    records = [record("adacos-dynamic", seed=i, windows=windows([80, 70, 60], [0.1] * 3,
                                                                s=[6.0, 6.1, 6.2]))
               for i in range(3)]
    assert claims.claim_c6(evidence(tmp_path, records)).verdict == "not tested"


def test_a_part_without_the_measurement_does_not_hide_the_others(tmp_path):
    # c20 never logged a window below 45°: not tested there; main decides the claim.
    theta = [80, 60, 44, 40, 36, 33, 31, 30]
    records = [record("adacos-dynamic", seed=i, windows=windows(
        theta, [0.5] * len(theta), s=[6.0 + (t - 30) / 10 + i / 100 for t in theta]))
        for i in range(3)]
    records += [record("adacos-dynamic", seed=i, variant="c20", C=20,
                       windows=windows([80, 70, 60], [0.1] * 3, s=[4.0, 4.1, 4.2]))
                for i in range(3)]
    verdict = claims.claim_c6(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "[c20]" in verdict.reason


@pytest.mark.parametrize(("ada_steps", "expected"), [
    ((20, 22, 21), "supported"),       # 60 % fewer steps than the tuned head's 51
    ((80, 82, 81), "not supported"),   # slower
    ((48, 49, 50), "not supported"),   # faster, but by 4 %: less than MIN_SPEEDUP
    ((30, 60, 45), "inconclusive"),
])
def test_c7_steps_to_a_theta_med_level(tmp_path, ada_steps, expected):
    records = [record("cosface", 16.0, 0.25, i, steps_to={"45": 40 + i, "30": 50 + i})
               for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"45": n - 5, "30": n})
                for i, n in enumerate(ada_steps)]
    verdict = claims.claim_c7(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert "30°" in verdict.reason  # the lowest level every run reached


def test_c7_uses_a_level_every_run_reached(tmp_path):
    records = [record("cosface", 16.0, 0.25, i, steps_to={"45": 40, "30": None})
               for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"45": 20 + i, "30": 25})
                for i in range(3)]
    verdict = claims.claim_c7(evidence(tmp_path, records))
    assert "45°" in verdict.reason and verdict.verdict == "supported"


# -- C8, C10 --------------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "noise", "expected"), [
    ((0.80, 0.90, 0.95), 0.002, "supported"),
    ((0.900, 0.902, 0.901), 0.001, "not supported"),
    ((0.88, 0.90, 0.92), 0.05, "inconclusive"),
])
def test_c8_spread_of_the_grid_against_seed_noise(tmp_path, levels, noise, expected):
    records = []
    for (s, m), level in zip(((8.0, 0.1), (16.0, 0.25), (32.0, 0.4)), levels, strict=True):
        records += seeds("cosface", s, m, (level - noise, level, level + noise))
    verdict = claims.claim_c8(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason


def test_c8_a_setting_that_never_trains_is_strong_dependence(tmp_path):
    records = seeds("arcface", 16.0, 0.3, NOISY)
    records += [record("arcface", 64.0, 0.8, i, acc=None, state="diverged",
                       reason="loss is not finite") for i in range(3)]
    verdict = claims.claim_c8(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "s=64 m=0.8" in verdict.reason


@pytest.mark.parametrize(("runs", "diverged", "expected"), [
    (20, 0, "supported"), (20, 1, "not supported"), (4, 0, "inconclusive"),
])
def test_c10_divergence_of_adacos_runs(tmp_path, runs, diverged, expected):
    records = [record("adacos-dynamic", seed=i, acc=None if i < diverged else 0.9,
                      state="diverged" if i < diverged else "complete",
                      reason="s exploded" if i < diverged else None) for i in range(runs)]
    verdict = claims.claim_c10(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    if diverged:
        assert "s exploded" in verdict.reason


def test_c10_without_adacos_is_not_tested(tmp_path):
    assert claims.claim_c10(evidence(tmp_path, seeds("cosface", 16.0, 0.2))).verdict == \
        "not tested"


# -- every claim, every time -----------------------------------------------------------------


def test_every_claim_gets_a_verdict_in_order_even_on_an_empty_study(tmp_path):
    ev = evidence(tmp_path, [record("softmax", acc=0.5)])
    verdicts = claims.evaluate_tables(ev.trials, ev.series)
    assert [v.claim_id for v in verdicts] == list(claims.CLAIMS)
    assert all(v.verdict in claims.VERDICTS for v in verdicts)
    assert {v.verdict for v in verdicts} == {"not tested"}
    assert all(v.reason for v in verdicts)


def test_evaluate_reads_the_metric_from_the_manifest(tmp_path):
    run = tmp_path / "run"
    for r in tuned_grid() + seeds("adacos-dynamic", values=(0.96, 0.97, 0.98)):
        r["metrics"]["rank1"] = 1.0 - r["metrics"]["verification_accuracy"]
        store.write_trial_record(run, r)
    store.write_manifest(run, {"spec": {"study": {"metric": "rank1",
                                                  "direction": "maximize"}}})
    c9 = {v.claim_id: v for v in claims.evaluate(run)}["C9"]
    assert "(rank1)" in next(iter(c9.numbers)) and c9.verdict == "not supported"


def test_c4_scale_sweep_ignores_margin_settings(tmp_path):
    # A cosface setting with a margin is not part of the s sweep, even when it is best.
    records = scale_sweep(20, "c20", 4.0) + scale_sweep(1000, "main", 8.0)
    records += seeds("cosface", 16.0, 0.3, (0.99, 0.99, 0.99), variant="c20", C=20)
    verdict = claims.claim_c4(evidence(tmp_path, records))
    assert verdict.numbers["C = 20 [c20]: best scale"] == "normface s=4"
    assert verdict.verdict == "supported"


def test_c1_prefers_a_configuration_without_a_margin(tmp_path):
    # cosface s=4 m=0.5 caps P(0) lower, but the claim is about s: normface s=2 decides.
    records = [record("cosface", 4.0, 0.5, i, final_p=0.05) for i in range(3)]
    records += [record("normface", 2.0, None, i, final_p=0.30 + i / 100) for i in range(3)]
    verdict = claims.claim_c1(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "normface s=2" in verdict.reason
