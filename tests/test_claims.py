"""The verdicts on C1-C10, on hand-made run folders whose right verdict is known: clearly
better → supported, within seed noise → inconclusive, clearly worse → not supported,
missing data → not tested; and, for every rule, the data that would make it say
"supported" for the wrong reason."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from adastudy import claims, store, theory
from adastudy.claims import Evidence
from adastudy.claims.registry import Outcome, decide, make_part


def record(head: str, s: float | None = None, m: float | None = None, seed: int = 0, *,
           acc: float | None = 0.9, val: float | None = None, variant: str = "main",
           C: int = 100, D: int = 64, state: str = "complete",
           windows: list[dict] | None = None, steps_to: dict | None = None,
           final_p: float | None = None, reason: str | None = None, steps: int = 100,
           diverged_step: int | None = None) -> dict:
    metrics: dict = {}
    if acc is not None:
        metrics["verification_accuracy"] = acc
        metrics["val_accuracy"] = acc if val is None else val
    if final_p is not None:
        metrics["final_p_target_mean"] = final_p
    return {
        "key": store.trial_key(head, s, m, seed, variant), "number": 0, "variant": variant,
        "num_classes": C, "embedding_dim": D, "head": head, "s": s, "m": m, "seed": seed,
        "state": state, "error": None, "steps": steps, "epochs": 5.0, "metrics": metrics,
        "steps_to_theta_med": steps_to or {}, "diverged_reason": reason,
        "diverged_step": diverged_step, "series": windows or [],
    }


def evidence(tmp_path: Path, records: list[dict], metric: str = "verification_accuracy",
             direction: str = "maximize", **kw) -> Evidence:
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    for r in records:
        store.write_trial_record(run, r)
    trials, series = store.load_tables(run)
    return Evidence(trials, series, metric, direction, **kw)


def seeds(head, s=None, m=None, values=(0.9, 0.9, 0.9), **kw) -> list[dict]:
    return [record(head, s, m, seed, acc=value, **kw) for seed, value in enumerate(values)]


def diverged(head, n=3, s=None, m=None, **kw) -> list[dict]:
    return [record(head, s, m, seed, acc=None, state="diverged", diverged_step=57,
                   reason="scale s is not finite or > 1e+04 (s = inf)", **kw)
            for seed in range(n)]


def part(verdict, head: str, variant: str = "main"):
    return next(p for p in verdict.parts if p.head == head and p.variant == variant)


NOISY = (0.88, 0.90, 0.92)  # sd 0.02: the noise of a CPU-scale study


def test_half_angle_is_where_the_curve_crosses_one_half():
    angle = claims.half_angle(16.0, 100, 0.25, "cosface")
    for theta_deg, above in ((angle - 0.02, True), (angle + 0.02, False)):
        p = theory.target_probability(math.radians(theta_deg), s=16.0, num_classes=100,
                                      m=0.25, head="cosface")
        assert (p > 0.5) == above


# -- C9 ---------------------------------------------------------------------------------------


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
    assert part(verdict, "adacos-dynamic").versus == "cosface s=16 m=0.25"
    assert "cosface s=16 m=0.25" in verdict.reason


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


def test_c9_a_missing_validation_score_is_not_tested_never_a_switch_to_test(tmp_path):
    records = tuned_grid() + seeds("adacos-dynamic", values=(0.96, 0.97, 0.98))
    for r in records:
        if r["head"] == "cosface" and r["s"] == 32.0:
            del r["metrics"]["val_accuracy"]
    verdict = claims.claim_c9(evidence(tmp_path, records))
    assert verdict.verdict == "not tested"
    assert "val_accuracy is missing" in verdict.reason and "cosface s=32" in verdict.reason


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
    worse = next(p for p in verdict.parts if p.versus == "arcface s=16 m=0.3")
    assert worse.verdict == "not supported"


def test_c9_a_head_that_diverged_in_every_seed_is_a_part_and_loses(tmp_path):
    # Before: only completed runs entered, so C9 spoke of adacos-fixed alone.
    records = tuned_grid() + seeds("adacos-fixed", values=(0.95, 0.96, 0.97))
    records += diverged("adacos-dynamic")
    verdict = claims.claim_c9(evidence(tmp_path, records))
    dynamic = part(verdict, "adacos-dynamic")
    assert dynamic.verdict == "not supported" and dynamic.n_diverged == 3
    assert "diverged in 3 of 3 seeds" in dynamic.text and "chance, 0.5" in dynamic.text
    assert dynamic.estimate == pytest.approx(0.5 - np.mean(NOISY))
    assert part(verdict, "adacos-fixed").verdict == "supported"
    assert verdict.verdict == "not supported"


def test_c9_pairs_heads_by_seed(tmp_path):
    # The seed moves both heads (shared data and initialisation streams); AdaCos is as
    # good as the tuned head at every seed. Welch's interval would reach −3 points and
    # say "inconclusive"; the paired one is tight.
    base = (0.80, 0.90, 0.95)
    records = (seeds("cosface", 16.0, 0.25, base)
               + seeds("adacos-dynamic", values=tuple(v + 0.002 for v in base)))
    verdict = claims.claim_c9(evidence(tmp_path, records))
    dynamic = part(verdict, "adacos-dynamic")
    assert "paired t" in dynamic.text and dynamic.verdict == "supported"
    assert dynamic.interval[0] > -claims.NEGLIGIBLE


def test_c9_a_family_of_four_parts_is_holm_corrected(tmp_path):
    # adacos-dynamic − cosface: paired differences (−0.02, −0.03, −0.025), one-sided
    # p = 0.010 against "matches": below 2.5 % alone, 0.040 after Holm over 4 parts.
    cosface = (0.90, 0.91, 0.92)
    records = (seeds("cosface", 16.0, 0.25, cosface)
               + seeds("arcface", 16.0, 0.3, (0.70, 0.71, 0.72))
               + seeds("adacos-dynamic", values=(0.88, 0.88, 0.895))
               + seeds("adacos-fixed", values=(0.95, 0.96, 0.97)))
    verdict = claims.claim_c9(evidence(tmp_path, records))
    assert len(verdict.parts) == 4
    alone = next(p for p in verdict.parts if p.head == "adacos-dynamic" and
                 p.versus.startswith("cosface"))
    assert alone.p_against == pytest.approx(0.0101, abs=5e-4)
    assert alone.p_against_adjusted == pytest.approx(4 * alone.p_against)
    assert alone.verdict == "inconclusive" and "after Holm over 4 parts" in alone.text
    assert verdict.verdict == "inconclusive"
    assert "Holm" in verdict.family


def test_the_family_rule_at_the_registry():
    ev = Evidence(store._trials_table([]), store._series_table([]))
    ps = [(0.9, 0.02), (0.001, 0.99), (0.002, 0.99), (0.003, 0.99)]
    parts = [make_part(ev, "main", f"h{i}", "x", p=p) for i, p in enumerate(ps)]
    verdict = decide("C9", Outcome(parts), None, "measured")
    assert [p.verdict for p in verdict.parts] == ["inconclusive", "supported", "supported",
                                                  "supported"]
    alone = decide("C9", Outcome(parts[:1]), None, "measured")
    assert alone.verdict == "not supported"  # the same part, tested alone


# -- C4 ---------------------------------------------------------------------------------------


def scale_sweep(C: int, variant: str, levels: dict[float, float], noise: float = 0.001):
    out = []
    for s, level in levels.items():
        out += seeds("normface", s, None, (level - noise, level, level + noise),
                     variant=variant, C=C)
    return out


PEAKED = {2.0: 0.80, 4.0: 0.95, 8.0: 0.95, 16.0: 0.80, 32.0: 0.70}  # best 4 and 8


def test_c4_needs_two_numbers_of_classes(tmp_path):
    ev = evidence(tmp_path, scale_sweep(100, "main", PEAKED))
    verdict = claims.claim_c4(ev)
    assert verdict.verdict == "not tested" and "variants" in verdict.reason
    assert len(verdict.parts) == 1  # the one C is still shown


@pytest.mark.parametrize(("fixed_level", "expected"), [
    (0.95, "supported"), (0.80, "not supported"), (None, "supported"),
])
def test_c4_asks_whether_s_f_is_among_the_best_scales(tmp_path, fixed_level, expected):
    # s_f(20) = 4.16 and s_f(1000) = 9.77; without adacos-fixed, the grid scales around
    # s_f (4 and 8; 8 and 16) stand for it.
    records = (scale_sweep(20, "c20", {2.0: 0.80, 4.0: 0.95, 8.0: 0.95, 16.0: 0.70})
               + scale_sweep(1000, "main", {4.0: 0.80, 8.0: 0.95, 16.0: 0.95, 32.0: 0.70}))
    if fixed_level is not None:
        for variant, C in (("c20", 20), ("main", 1000)):
            records += seeds("adacos-fixed", values=(fixed_level - 0.001, fixed_level,
                                                     fixed_level + 0.001), variant=variant, C=C)
    verdict = claims.claim_c4(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert verdict.numbers["C = 20 [c20]: s_f"] == pytest.approx(theory.fixed_scale(20), abs=0.01)
    assert verdict.numbers["C = 20 [c20]: scales confidently worse"] == "2, 16"


def test_c4_a_neighbour_of_s_f_far_from_the_best_is_not_supported(tmp_path):
    # The best scale (32) is far from s_f; both grid scales around s_f are much worse.
    far = {2.0: 0.70, 4.0: 0.75, 8.0: 0.80, 16.0: 0.85, 32.0: 0.95}
    verdict = claims.claim_c4(evidence(tmp_path, scale_sweep(20, "c20", far)
                                       + scale_sweep(1000, "main", far)))
    assert verdict.verdict == "not supported"


def test_c4_the_best_grid_scale_next_to_s_f_is_not_enough(tmp_path):
    # Before: when the best scale was s_f's nearest grid scale, the difference was set to
    # 0 ± 0 and the part "supported". Now the other neighbour must be near-best too;
    # here it is far worse, so where s_f falls between them the data cannot say.
    lopsided = {2.0: 0.70, 4.0: 0.95, 8.0: 0.80, 16.0: 0.75}
    verdict = claims.claim_c4(evidence(tmp_path, scale_sweep(20, "c20", lopsided)
                                       + scale_sweep(30, "main", lopsided)))
    assert verdict.verdict == "inconclusive"
    assert all(p.interval[0] < -claims.NEGLIGIBLE for p in verdict.parts)


def test_c4_a_flat_curve_cannot_single_out_s_f(tmp_path):
    # Every scale is as good as the best: "s = 16 always" would pass as well as s_f.
    flat = dict.fromkeys((2.0, 4.0, 8.0, 16.0, 32.0), 0.90)
    verdict = claims.claim_c4(evidence(tmp_path, scale_sweep(20, "c20", flat)
                                       + scale_sweep(1000, "main", flat)))
    assert verdict.verdict == "inconclusive"
    assert "cannot tell s_f from any other choice" in verdict.reason


def test_c4_needs_scales_on_both_sides_of_s_f(tmp_path):
    above_only = {8.0: 0.90, 16.0: 0.95, 32.0: 0.80}  # s_f(20) = 4.16 lies below them
    records = scale_sweep(20, "c20", above_only) + scale_sweep(1000, "main", PEAKED)
    verdict = claims.claim_c4(evidence(tmp_path, records))
    c20 = part(verdict, "adacos-fixed", "c20")
    assert c20.verdict == "not tested" and "one below and one above s_f = 4.16" in c20.text
    assert verdict.verdict == "not tested"  # one C left


def test_c4_scale_sweep_ignores_margin_settings(tmp_path):
    records = (scale_sweep(20, "c20", {2.0: 0.80, 4.0: 0.95, 8.0: 0.95, 16.0: 0.70})
               + scale_sweep(1000, "main", {4.0: 0.80, 8.0: 0.95, 16.0: 0.95, 32.0: 0.70}))
    records += seeds("cosface", 16.0, 0.3, (0.99, 0.99, 0.99), variant="c20", C=20)
    verdict = claims.claim_c4(evidence(tmp_path, records))
    assert verdict.numbers["C = 20 [c20]: best scale"] == "normface s=4"
    assert verdict.verdict == "supported"


# -- C1, C2, C3 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("final_p", "expected"), [
    ((0.30, 0.32, 0.31), "supported"), ((0.95, 0.96, 0.97), "not supported"),
    ((0.5, 0.9, 0.99), "inconclusive"),
])
def test_c1_small_scale_probability(tmp_path, final_p, expected):
    records = [record("normface", 2.0, None, i, final_p=p) for i, p in enumerate(final_p)]
    records += [record("normface", 32.0, None, i, final_p=0.99) for i in range(3)]
    verdict = claims.claim_c1(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert verdict.basis == "analytic and measured" and verdict.reason.startswith("Analytic")
    assert part(verdict, "normface").text.startswith("normface: s = 2:")


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


def test_c1_judges_a_scale_without_a_margin(tmp_path):
    # cosface s=2 m=0.5 caps P(0) lower, but the claim is about s: normface s=4 decides.
    records = [record("cosface", 2.0, 0.5, i, final_p=0.05) for i in range(3)]
    records += [record("normface", 4.0, None, i, final_p=0.30 + i / 100) for i in range(3)]
    verdict = claims.claim_c1(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "s = 4" in verdict.reason
    assert [p.head for p in verdict.parts] == ["normface"]


def windows(theta_deg: list[float], p: list[float], s: list[float] | None = None,
            ln_b: list[float] | None = None, every: int = 10) -> list[dict]:
    out = []
    for i, (theta, prob) in enumerate(zip(theta_deg, p, strict=True)):
        row = {"step": every * (i + 1), "theta_med_rad": math.radians(theta),
               "p_target_mean": prob, "loss": 1.0}
        if s is not None:
            row["s"] = s[i]
        if ln_b is not None:
            row["ln_b_avg"] = ln_b[i]
        out.append(row)
    out.append({"step": every * len(theta_deg), "epoch": 1, "val_accuracy": 0.9})  # eval row
    return out


@pytest.mark.parametrize(("p_far", "expected"), [(0.97, "supported"), (0.5, "not supported")])
def test_c2_large_scale_probability_far_from_the_centre(tmp_path, p_far, expected):
    records = [record("normface", 64.0, None, i,
                      windows=windows([80, 60, 50, 30], [0.3, 0.8, p_far + i / 100, 0.999]))
               for i in range(3)]
    verdict = claims.claim_c2(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert "log-odds" in verdict.reason


def test_c2_picks_by_log_odds_without_a_margin(tmp_path):
    # P(45°) rounds to 1.0 at both s = 48 and s = 64 (a float tie before); the log-odds
    # pick s = 64. A margin configuration with a larger s is not a claim about s.
    records = []
    for s, p_far in ((48.0, 0.5), (64.0, 0.97)):
        records += [record("normface", s, None, i, windows=windows(
            [80, 60, 50, 30], [0.3, 0.8, p_far + i / 100, 0.999])) for i in range(3)]
    records += [record("cosface", 96.0, 0.4, i, windows=windows(
        [80, 60, 50, 30], [0.1, 0.1, 0.1, 0.1])) for i in range(3)]
    C = 100
    rounded = {round(float(theory.target_probability(math.pi / 4, s=s, num_classes=C)), 4)
               for s in (48.0, 64.0)}
    assert rounded == {1.0}
    verdict = claims.claim_c2(evidence(tmp_path, records))
    assert verdict.numbers["largest scale"] == "normface s=64"
    assert verdict.verdict == "supported"


def test_c2_needs_a_window_before_theta_med_falls_below_45(tmp_path):
    records = [record("normface", 64.0, None, i, windows=windows([30, 20], [0.99, 0.99]))
               for i in range(3)]
    verdict = claims.claim_c2(evidence(tmp_path, records))
    assert verdict.verdict == "not tested" and "log_every" in verdict.reason


def test_c3_is_analytic_and_needs_two_margins(tmp_path):
    grid = seeds("cosface", 16.0, 0.1) + seeds("cosface", 16.0, 0.4)
    verdict = claims.claim_c3(evidence(tmp_path, grid))
    assert verdict.verdict == "supported" and verdict.basis == "analytic"
    assert verdict.reason.startswith("Analytic")
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


# -- C5 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "expected"), [(0.1, "supported"), (2.0, "not supported")])
def test_c5_b_avg_against_c_minus_one(tmp_path, offset, expected):
    ln_c = math.log(99)
    records = [record(head, seed=i, windows=windows(
        [80, 60, 40, 30], [0.1, 0.3, 0.5, 0.5], ln_b=[ln_c + offset * (1 + i / 10)] * 4))
        for head in theory.ADACOS_HEADS for i in range(3)]
    verdict = claims.claim_c5(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert {p.head for p in verdict.parts} == set(theory.ADACOS_HEADS)
    assert all(0.0 <= p.interval[0] <= p.interval[1] <= 1.0 for p in verdict.parts)


def test_c5_counts_the_windows_of_diverged_runs(tmp_path):
    # The windows before a run-away are evidence too: B_avg far above C − 1.
    ln_c = math.log(99)
    records = [record("adacos-dynamic", seed=i, acc=None, state="diverged", diverged_step=40,
                      windows=windows([88, 89, 89, 89], [0.01] * 4,
                                      ln_b=[ln_c, ln_c + 3, ln_c + 9, ln_c + 30]))
               for i in range(3)]
    verdict = claims.claim_c5(evidence(tmp_path, records))
    assert verdict.verdict == "not supported" and part(verdict, "adacos-dynamic").n_diverged == 3


def test_c5_without_adacos_is_not_tested(tmp_path):
    assert claims.claim_c5(evidence(tmp_path, seeds("normface", 8.0))).verdict == "not tested"


# -- C6 ---------------------------------------------------------------------------------------


THETA = list(np.linspace(80, 25, 30))  # θ_med falls over 30 logged windows


def c6_runs(scale_of, n: int = 4, **kw) -> list[dict]:
    """Dynamic runs whose θ_med falls with window-to-window wobbles; `scale_of(theta_deg,
    step, rng)` gives each window's s."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        theta = [t + rng.normal(0, 1.5) for t in THETA]
        steps = [10 * (i + 1) for i in range(len(theta))]
        s = [scale_of(t, step, rng) for t, step in zip(theta, steps, strict=True)]
        out.append(record("adacos-dynamic", seed=seed,
                          windows=windows(theta, [0.5] * len(theta), s=s), **kw))
    return out


def adacos_rule(theta_deg, step, rng):
    """s = ln B_avg / cos(min(45°, θ_med)), B_avg a little noisy around C − 1."""
    ln_b = math.log(99) + rng.normal(0, 0.02)
    return ln_b / math.cos(math.radians(min(45.0, theta_deg)))


def test_c6_a_scale_that_follows_theta_med_tracks_it(tmp_path):
    verdict = claims.claim_c6(evidence(tmp_path, c6_runs(adacos_rule)))
    assert verdict.verdict == "supported", verdict.reason
    dynamic = part(verdict, "adacos-dynamic")
    assert dynamic.estimate > 0.8 and dynamic.interval[1] < 1.0


def test_c6_a_fixed_decreasing_schedule_is_not_tracking(tmp_path):
    # s falls with the step, whatever θ_med does: the levels of s and θ_med correlate
    # (ρ ≈ 1 before), their movements beyond the shared trend do not.
    def schedule(theta_deg, step, rng):
        return 7.0 - 0.004 * step + rng.normal(0, 0.02)

    verdict = claims.claim_c6(evidence(tmp_path, c6_runs(schedule)))
    assert verdict.verdict != "supported", verdict.reason
    assert abs(part(verdict, "adacos-dynamic").estimate) < claims.RHO_TRACKS


def test_c6_a_scale_that_rises_while_theta_med_falls_is_not_supported(tmp_path):
    def rises(theta_deg, step, rng):
        return adacos_rule(theta_deg, step, rng) + 0.03 * step

    verdict = claims.claim_c6(evidence(tmp_path, c6_runs(rises)))
    assert verdict.verdict == "not supported", verdict.reason


def test_c6_a_scale_that_ran_away_says_so_instead_of_asking_for_the_head(tmp_path):
    records = [record("adacos-dynamic", seed=i, acc=None, state="diverged", diverged_step=57,
                      reason="scale s is not finite or > 1e+04 (s = inf)",
                      windows=windows([88, 89, 89], [0.01] * 3, s=[6.5, 45.0, 9000.0]))
               for i in range(3)]
    verdict = claims.claim_c6(evidence(tmp_path, records))
    assert verdict.verdict == "not supported"
    assert "ran away in 3 of 3 seeds" in verdict.reason
    assert "s = 45 at step 20 while θ_med = 89°" in verdict.reason
    assert "Needs [heads" not in verdict.reason
    assert part(verdict, "adacos-dynamic").short == "ran away 3/3"


def test_c6_needs_enough_windows_and_says_how_to_log_them(tmp_path):
    records = [record("adacos-dynamic", seed=i, windows=windows(
        [80, 60, 40, 35, 30], [0.1] * 5, s=[6.0, 6.0, 5.8, 5.6, 5.5], every=20))
        for i in range(3)]
    verdict = claims.claim_c6(evidence(tmp_path, records))
    assert verdict.verdict == "not tested"
    assert f"needs {claims.MIN_WINDOWS} logged windows" in verdict.reason
    assert "train.log_every ≤ 3" in verdict.reason


def test_a_part_without_the_measurement_does_not_hide_the_others(tmp_path):
    records = c6_runs(adacos_rule)
    records += [record("adacos-dynamic", seed=i, variant="c20", C=20,
                       windows=windows([80, 70, 60], [0.1] * 3, s=[4.0, 4.1, 4.2]))
                for i in range(3)]
    verdict = claims.claim_c6(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "[c20]" in verdict.reason
    assert part(verdict, "adacos-dynamic", "c20").verdict == "not tested"


# -- C7 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ada_steps", "expected"), [
    ((20, 22, 21), "supported"),       # 60 % fewer steps than the tuned head's 41
    ((80, 82, 81), "not supported"),   # slower
    ((39, 40, 41), "not supported"),   # faster by 2 %: short of MIN_SPEEDUP
    ((20, 60, 45), "inconclusive"),
])
def test_c7_steps_to_the_fixed_level(tmp_path, ada_steps, expected):
    records = [record("cosface", 16.0, 0.25, i, steps_to={"45": 40 + i, "30": 50 + i})
               for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"45": n, "30": 90})
                for i, n in enumerate(ada_steps)]
    verdict = claims.claim_c7(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    assert "θ_med < 45°" in verdict.reason and "30°" not in verdict.reason


def test_c7_the_level_is_fixed_before_the_data_and_can_be_set(tmp_path):
    # At 30° AdaCos is slower; at the default 45° it is faster. The level is not chosen
    # after seeing the data (before: the lowest level every run reached).
    records = [record("cosface", 16.0, 0.25, i, steps_to={"45": 40 + i, "30": 50 + i})
               for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"45": 20 + i, "30": 80 + i})
                for i in range(3)]
    assert claims.claim_c7(evidence(tmp_path, records)).verdict == "supported"
    at_30 = claims.claim_c7(evidence(tmp_path, records, c7_level_deg=30.0))
    assert at_30.verdict == "not supported" and "θ_med < 30°" in at_30.reason


def test_c7_a_run_that_never_reached_the_level_cannot_count_for_adacos(tmp_path):
    records = [record("cosface", 16.0, 0.25, i, steps_to={"45": 50 + i}) for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"45": 10 + i}) for i in range(2)]
    records += [record("adacos-dynamic", seed=2, steps_to={"45": None}, steps=20)]
    verdict = claims.claim_c7(evidence(tmp_path, records))
    assert verdict.verdict == "inconclusive", verdict.reason
    assert "1 adacos-dynamic run(s) never reached it" in verdict.reason
    assert "≥ 14 against 51" in verdict.reason  # the censored mean is a lower bound
    assert part(verdict, "adacos-dynamic").short == ""  # two of its three runs got there


def test_c7_a_level_the_trials_did_not_record_is_not_tested(tmp_path):
    records = [record("cosface", 16.0, 0.25, i, steps_to={"60": 40}) for i in range(3)]
    records += [record("adacos-dynamic", seed=i, steps_to={"60": 20}) for i in range(3)]
    verdict = claims.claim_c7(evidence(tmp_path, records))
    assert verdict.verdict == "not tested"
    assert "steps_to_theta_med_45deg" in verdict.reason and "theta_levels_deg" in verdict.reason


# -- C8 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "noise", "expected"), [
    ((0.80, 0.90, 0.95), 0.002, "supported"),
    ((0.900, 0.9005, 0.9002), 0.0002, "not supported"),
    ((0.88, 0.90, 0.92), 0.05, "inconclusive"),
])
def test_c8_spread_of_the_grid_against_seed_noise(tmp_path, levels, noise, expected):
    records = []
    for (s, m), level in zip(((8.0, 0.1), (16.0, 0.25), (32.0, 0.4)), levels, strict=True):
        records += seeds("cosface", s, m, (level - noise, level, level + noise, level))
    verdict = claims.claim_c8(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason


def test_c8_many_equal_settings_are_not_strong_dependence(tmp_path):
    # 20 settings with one true mean and seed noise: the best − worst range of their
    # means passes 0.01 (strong before), the noise-corrected spread does not.
    rng = np.random.default_rng(3)
    records = []
    for i in range(20):
        records += seeds("cosface", 4.0 * (i + 1), 0.2, tuple(0.9 + rng.normal(0, 0.008, 4)))
    verdict = claims.claim_c8(evidence(tmp_path, records))
    assert verdict.numbers["cosface: best − worst setting mean"] > 0.01
    assert verdict.verdict != "supported", verdict.reason


def test_c8_a_setting_that_never_trains_is_strong_dependence(tmp_path):
    records = seeds("arcface", 16.0, 0.3, NOISY)
    records += [record("arcface", 64.0, 0.8, i, acc=None, state="diverged",
                       reason="loss is not finite") for i in range(3)]
    verdict = claims.claim_c8(evidence(tmp_path, records))
    assert verdict.verdict == "supported" and "s=64 m=0.8 never trained" in verdict.reason


# -- C10 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("runs", "n_diverged", "expected"), [
    (20, 0, "supported"), (20, 1, "not supported"), (6, 0, "inconclusive"),
])
def test_c10_divergence_of_adacos_runs(tmp_path, runs, n_diverged, expected):
    records = [record("adacos-dynamic", seed=i, acc=None if i < n_diverged else 0.9,
                      state="diverged" if i < n_diverged else "complete",
                      reason="s exploded" if i < n_diverged else None) for i in range(runs)]
    verdict = claims.claim_c10(evidence(tmp_path, records))
    assert verdict.verdict == expected, verdict.reason
    if n_diverged:
        assert "s exploded" in verdict.reason


def test_c10_per_head_and_setting_with_the_tested_range(tmp_path):
    # Dynamic AdaCos diverges at C = 4000 with D = 32 only; adacos-fixed (the control)
    # trains everywhere. Before: both heads pooled over every setting into one n. 30
    # runs a setting: 0.8^30 = 0.001 stays below 2.5 % after Holm over the 4 parts.
    records = []
    for variant, C, D in (("main", 100, 64), ("c4000", 4000, 32)):
        records += [record("adacos-fixed", seed=i, variant=variant, C=C, D=D)
                    for i in range(30)]
        if variant == "main":
            records += [record("adacos-dynamic", seed=i, C=C, D=D) for i in range(30)]
        else:
            records += diverged("adacos-dynamic", n=30, variant=variant, C=C, D=D)
    records.append(record("adacos-fixed", seed=99, variant="main", state="failed", acc=None))
    verdict = claims.claim_c10(evidence(tmp_path, records))
    assert verdict.verdict == "not supported"
    assert part(verdict, "adacos-dynamic", "c4000").verdict == "not supported"
    assert part(verdict, "adacos-dynamic").verdict == "supported"
    assert part(verdict, "adacos-fixed", "c4000").verdict == "supported"
    fixed_main = part(verdict, "adacos-fixed")
    assert fixed_main.n_failed == 1 and "1 run failed, not judged" in fixed_main.text
    assert "control" in fixed_main.text
    assert (part(verdict, "adacos-dynamic", "c4000").num_classes,
            part(verdict, "adacos-dynamic", "c4000").embedding_dim) == (4000, 32)
    assert verdict.lead.startswith(
        "Tested range of adacos-dynamic (the paper's method, unguarded): C = 100: no "
        "divergence at D = 64; C = 4000: diverged at D = 32 (30 of 30). Not tested beyond "
        "these settings. ")
    # D = 32 < 4 ln(3999) = 33.2: an untrained head has no fixed point there, and the
    # theory names the setting that diverged (the records log no statistics: no more).
    assert ("the theory's bound with d_eff = D (an untrained head, d_eff_min = 4 ln(C − 1))"
            " named C = 4000, D = 32 (1 of 1 diverged)") in verdict.lead
    assert "margin < 1) at no setting (missed: C = 4000, D = 32)" in verdict.lead


def window(step: int, s: float, margin: float, slope: float, d_eff: float = 30.0) -> dict:
    return {"step": step, "s": s, "theta_med_rad": 1.4, "stability_margin": margin,
            "d_eff": d_eff, "update_slope": slope, "loss": 5.0}


def guarded_run(seed: int, **kw) -> dict:
    r = record("adacos-dynamic", seed=seed, acc=None, state="diverged", diverged_step=40,
               reason="stability guard: the scale update's slope was above 1", **kw)
    r["diverged_by"] = "stability guard"
    return r


def clamped_run(seed: int, **kw) -> dict:
    r = record("adacos-dynamic", seed=seed, **kw)
    r["scale_clamped_steps"], r["scale_clamped_first_step"] = 50, 12
    return r


def test_c10_a_run_the_stability_guard_ended_forbids_stable_without_counting_as_diverged(
        tmp_path):
    # 30 clean runs would be "supported"; one run the guard stopped (a predicted
    # run-away) must not be dropped as if it never ran, nor count as an observed one.
    records = [record("adacos-dynamic", seed=i) for i in range(30)] + [guarded_run(30)]
    verdict = claims.claim_c10(evidence(tmp_path, records))
    dynamic = part(verdict, "adacos-dynamic")
    assert verdict.verdict == dynamic.verdict == "inconclusive", verdict.reason
    assert dynamic.n_diverged == 0 and dynamic.n_runs == 30
    assert "ended by the stability guard" in dynamic.text
    # With an observed divergence beside it, the setting is not stable.
    records.append(record("adacos-dynamic", seed=41, acc=None, state="diverged",
                          reason="s exploded"))
    assert claims.claim_c10(evidence(tmp_path, records)).verdict == "not supported"


def test_c10_leaves_clamped_runs_out_they_are_not_the_paper_method(tmp_path):
    # Every run clamped: nothing of the method to judge, however many runs completed.
    only_clamped = [clamped_run(i) for i in range(30)]
    verdict = claims.claim_c10(evidence(tmp_path, only_clamped))
    assert part(verdict, "adacos-dynamic").verdict == "not tested"
    assert "scale clamped" in part(verdict, "adacos-dynamic").text
    # 30 unclamped clean runs would be "supported" alone; the 5 clamped ones are the
    # runs whose scale climbed: left out of the count, they must not leave a "stable".
    mixed = [record("adacos-dynamic", seed=i) for i in range(30)] + \
        [clamped_run(30 + i) for i in range(5)]
    verdict = claims.claim_c10(evidence(tmp_path, mixed))
    dynamic = part(verdict, "adacos-dynamic")
    assert dynamic.verdict == "inconclusive" and dynamic.n_runs == 30
    assert dynamic.n_diverged == 0
    assert "5 runs with the scale clamped" in dynamic.text
    # A clamp that never bound changes nothing: the runs are the paper's method.
    unbound = [record("adacos-dynamic", seed=i) | {"scale_clamped_steps": 0}
               for i in range(30)]
    assert part(claims.claim_c10(evidence(tmp_path, unbound)),
                "adacos-dynamic").verdict == "supported"


def test_stability_cells_keep_guarded_and_clamped_runs_apart_and_find_the_lowest_margin(
        tmp_path):
    from adastudy.claims.stability import stability_cells

    records = [record("adacos-dynamic", seed=0, C=1000, D=32, windows=[
                   window(5, 14.0, 1.2, 0.5), window(10, 20.0, 0.7, 0.9, d_eff=19.6)]),
               record("adacos-dynamic", seed=1, C=1000, D=32, acc=None, state="diverged",
                      diverged_step=55, reason="s exploded", windows=[
                          window(5, 14.0, 0.9, 1.3, d_eff=25.0)]),
               guarded_run(2, C=1000, D=32), clamped_run(3, C=1000, D=32,
                                                       windows=[window(5, 20.0, 0.1, 2.0)])]
    (cell,) = stability_cells(evidence(tmp_path, records))
    assert (cell.n_runs, cell.n_diverged, cell.n_guarded, cell.n_clamped) == (2, 1, 1, 1)
    assert cell.share_diverged == 0.5 and cell.first_diverged_step == 55
    # The clamped run's margin 0.1 and slope 2.0 are not the method's: left out.
    assert cell.lowest_margin == 0.7 and cell.lowest_d_eff == 19.6
    assert cell.lowest_d_eff_min == pytest.approx(19.6 / 0.7)
    assert cell.highest_slope == 1.3
    assert cell.bound_at_init == pytest.approx(4 * math.log(999))
    assert cell.predicted_unstable_at_init is False  # D = 32 > 27.6


def test_c10_without_adacos_is_not_tested(tmp_path):
    assert claims.claim_c10(evidence(tmp_path, seeds("cosface", 16.0, 0.2))).verdict == \
        "not tested"


# -- every claim, every time ------------------------------------------------------------------


def test_every_claim_gets_a_verdict_in_order_even_on_an_empty_study(tmp_path):
    ev = evidence(tmp_path, [record("softmax", acc=0.5)])
    verdicts = claims.evaluate_tables(ev.trials, ev.series)
    assert [v.claim_id for v in verdicts] == list(claims.CLAIMS)
    assert all(v.verdict in claims.VERDICTS for v in verdicts)
    assert {v.verdict for v in verdicts} == {"not tested"}
    assert all(v.reason for v in verdicts)


def rich_study() -> list[dict]:
    """A study every claim has something to say about."""
    theta = [80, 60, 44, 40, 36, 33, 31, 30]
    records = tuned_grid() + scale_sweep(100, "main", {2.0: 0.8, 4.0: 0.9, 8.0: 0.9,
                                                       16.0: 0.8})
    records += scale_sweep(1000, "c1000", {4.0: 0.8, 8.0: 0.9, 16.0: 0.9, 32.0: 0.8})
    for head in theory.ADACOS_HEADS:
        records += [record(head, seed=i, steps_to={"45": 20}, final_p=0.5, windows=windows(
            theta, [0.5] * 8, s=[6.0] * 8, ln_b=[math.log(99)] * 8)) for i in range(3)]
    return records


@pytest.mark.parametrize(("table", "column"), [
    ("trials", "val_accuracy"), ("trials", "num_classes"), ("trials", "steps"),
    ("series", "ln_b_avg"), ("series", "s_current"), ("series", "p_target_mean"),
    ("trials", "final_p_target_mean"),
])
def test_a_missing_field_is_not_tested_with_its_name_never_an_exception(tmp_path, table,
                                                                       column):
    ev = evidence(tmp_path, rich_study())
    trials = ev.trials.drop(columns=[column]) if table == "trials" else ev.trials
    series = ev.series.drop(columns=[column]) if table == "series" else ev.series
    verdicts = claims.evaluate_tables(trials, series)
    assert [v.claim_id for v in verdicts] == list(claims.CLAIMS)
    named = [v for v in verdicts if column in v.reason or column.removesuffix("_current")
             in v.reason]
    assert named, [v.reason for v in verdicts]
    assert all(v.verdict == "not tested" for v in named
               if "lack the field" in v.reason)


def test_evaluate_reads_the_metric_and_the_c7_level_from_the_manifest(tmp_path):
    run = tmp_path / "run"
    for r in tuned_grid() + seeds("adacos-dynamic", values=(0.96, 0.97, 0.98)):
        r["metrics"]["rank1"] = 1.0 - r["metrics"]["verification_accuracy"]
        r["steps_to_theta_med"] = {"30": 10}
        store.write_trial_record(run, r)
    store.write_manifest(run, {"spec": {"study": {"metric": "rank1", "direction": "maximize"},
                                        "claims": {"c7_level_deg": 30.0}}})
    by_id = {v.claim_id: v for v in claims.evaluate(run)}
    assert "(rank1)" in next(iter(by_id["C9"].numbers)) and by_id["C9"].verdict == \
        "not supported"
    assert "θ_med < 30°" in by_id["C7"].reason


# -- the answer -------------------------------------------------------------------------------


def test_the_answer_says_what_follows(tmp_path):
    matched = claims.answers(evidence(tmp_path, seeds("cosface", 16.0, 0.25, (0.900, 0.901,
                                                                             0.899))
                                      + seeds("cosface", 32.0, 0.4, (0.80, 0.81, 0.79))
                                      + seeds("adacos-dynamic", values=(0.899, 0.9, 0.898))))
    assert len(matched) == 1 and matched[0].verdict == "supported"
    assert "is within 0.005 of the best tuned head, cosface s=16 m=0.25" in matched[0].sentence
    assert "from 0.8000 (cosface s=32 m=0.4) to 0.9000 (cosface s=16 m=0.25)" in \
        matched[0].sentence
    lost = claims.answers(evidence(tmp_path, tuned_grid() + diverged("adacos-dynamic")
                                   + seeds("adacos-fixed", values=(0.5, 0.52, 0.51))))
    assert lost[0].verdict == "not supported" and "lost to the best tuned head" in \
        lost[0].sentence
    assert "Diverged: adacos-dynamic 3 of 3." in lost[0].sentence
    payload = claims.answer(evidence(tmp_path, tuned_grid() + diverged("adacos-dynamic")))
    assert payload["adacos"]["n_diverged"] == 3 and payload["tuned"]["label"] == \
        "cosface s=16 m=0.25"
    assert payload["difference"]["interval"][0] <= payload["difference"]["estimate"]


def test_a_key_error_on_a_field_the_tables_have_is_a_bug_and_shows(tmp_path):
    from adastudy.claims.registry import claim

    @claim("C99", "a claim whose code is wrong", figure=None)
    def broken(ev):
        return {}["verification_accuracy"]  # the column exists: this is a bug

    try:
        with pytest.raises(KeyError):
            broken(evidence(tmp_path, tuned_grid()))
    finally:
        claims.REGISTRY.pop("C99")
        claims.CLAIMS.pop("C99")
