"""From a run folder to a `Report`: the verdicts, the tables and the figures' data.

Nothing here draws or writes: the figures are described (`model.Figure`) and the
renderers (`html`, `markdown`) draw them; what the report says of the claims (the
answer box, the verdict matrix, the reasons) comes from `verdicts`. Sections, in
order: leaderboards, heatmaps of the metric over (s, m), where dynamic AdaCos is
stable (claim C10: `report.stability`), convergence curves, the theory panel, measured
P(θ), ln B_avg, s against C (claim C4), AdaCos against the tuned heads, the failed /
diverged / pruned trials, the paper's reported figures. The run manifest closes the
report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adastudy import claims, stats, store, theory
from adastudy.claims import Config, Evidence
from adastudy.claims import figures as fig
from adastudy.claims.evidence import Pick
from adastudy.report.curves import curve
from adastudy.report.model import (
    Figure,
    Heatmap,
    HLine,
    Panel,
    Report,
    Section,
    Table,
    Trace,
    VLine,
)
from adastudy.report.stability import stability_figures
from adastudy.report.verdicts import (
    answer_box,
    figure_id,
    fmt_number,
    summary,
    verdict_matrix,
    verdict_rows,
)
from adastudy.spec import MAIN_VARIANT

__all__ = ["PAPER_RESULTS", "PAPER_BENCHMARKS", "build", "figure_id"]

SECONDARY = "Zhang et al., CVPR 2019, as quoted in secondary sources (not checked in the paper)"
#: The AdaCos paper's reported figures, each with where the value was checked. A report
#: shows them beside the measured ones only when the study's data is that benchmark.
PAPER_RESULTS: list[dict[str, str]] = [
    {"benchmark": "megaface-1", "metric": "rank-1 identification", "head": "adacos-dynamic",
     "value": "97.41 %", "setting": "ResNet-50",
     "provenance": SECONDARY},
    {"benchmark": "ijb-c", "metric": "TAR at FAR = 1e-4 (1:1)", "head": "adacos-dynamic",
     "value": "92.4 %", "setting": "ResNet-50",
     "provenance": SECONDARY},
    {"benchmark": "lfw", "metric": "verification accuracy", "head": "adacos-dynamic",
     "value": "99.73 %", "setting": "trained on CASIA-WebFace",
     "provenance": "widely quoted, not checked against the paper's table"},
    {"benchmark": "lfw", "metric": "verification accuracy", "head": "adacos-fixed",
     "value": "99.63 %", "setting": "trained on CASIA-WebFace",
     "provenance": "widely quoted, not checked against the paper's table"},
]
PAPER_BENCHMARKS = {row["benchmark"] for row in PAPER_RESULTS}

# Colours by role, the same in every figure: AdaCos warm, tuned heads cool.
ROLE_COLOURS = {"adacos-dynamic": "#d62728", "adacos-fixed": "#ff7f0e",
                "best": "#1f77b4", "worst": "#7f7f7f"}
PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]


def _in(variant: str) -> str:
    return "" if variant == MAIN_VARIANT else f" [{variant}]"


# -- leaderboards ----------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _leaderboard_tables(ev: Evidence, sets: list[str] | None = None) -> list[Table]:
    """A table per head and variant, ranked on the test pairs; beside it each
    configuration's validation mean, which is what the claims and the answer choose on,
    with the chosen one marked, so that "best tuned" reads the same everywhere. With
    verification sets (`store.eval_set_names`), a column per set after the mean: the
    set's mean accuracy over the counted seeds."""
    if ev.metric not in ev.trials:
        return []
    sets = list(sets or [])
    board = store.leaderboard(ev.trials, ev.metric, ev.direction)
    if sets:
        board = store.set_means(board, ev.trials, sets)
    order = {v: i for i, v in enumerate(ev.variants())}  # main first, then the variants
    board = board.sort_values("variant", key=lambda v: v.map(order), kind="mergesort")
    selects = claims.SELECTION_METRIC
    tables = []
    for (variant, head), rows in board.groupby(["variant", "head"], sort=False):
        found = claims.configs(ev, variant, [head])
        validation = ({(c.s, c.m): _validation_mean(ev, c) for c in found}
                      if selects in ev.trials else {})
        pick = _pick(ev, found) if len(found) > 1 else None  # one config: nothing chosen
        chosen = pick.config if pick is not None else None
        cells = []
        for row in rows.to_dict(orient="records"):
            ci = ("-" if not math.isfinite(row["ci95_low"])
                  else f"{row['ci95_low']:.4f} – {row['ci95_high']:.4f}")
            other = ", ".join(f"{row[k]} {k.removeprefix('n_')}"
                              for k in ("n_pruned", "n_failed", "n_diverged") if row[k])
            val = next((v for (s, m), v in validation.items()
                        if _same(s, row["s"]) and _same(m, row["m"])), math.nan)
            picked = chosen is not None and _same(chosen.s, row["s"]) and _same(chosen.m, row["m"])
            per_set = [row[store.set_column(name)] for name in sets]
            cells.append([fmt_number(row["s"]), fmt_number(row["m"]), str(row["n"]),
                          "-" if not math.isfinite(row["mean"]) else f"{row['mean']:.4f}",
                          *("-" if not math.isfinite(v) else f"{v:.4f}" for v in per_set),
                          "-" if not math.isfinite(row["std"]) else f"{row['std']:.4f}",
                          ci, "-" if not math.isfinite(val) else
                          f"{val:.4f}" + (" ◆ chosen" if picked else ""), other or "-"])
        tables.append(Table(
            ["s", "m (rad)", "seeds", f"mean {ev.metric}", *sets, "std", "95 % CI",
             f"mean {selects} (selects)", "not counted"],
            cells, caption=f"{head}{_in(variant)}"))
    return tables


def _sets_paragraph(ev: Evidence, sets: list[str]) -> list[str]:
    """What the verification sets' columns are, when the run has some."""
    if not sets:
        return []
    listed = ", ".join(sets)
    columns = (f"each verification set's mean accuracy ({store.set_column('<set>')}) over "
               "the same counted seeds")
    if ev.metric == "verification_accuracy":
        return [f"Verification sets {listed}: a seed's verification_accuracy is the average "
                "of its accuracies on the sets (the AVG column of face papers), and the "
                f"columns {listed} are {columns}."]
    return [f"Verification sets {listed}: the columns {listed} are {columns}."]


# -- heatmaps ------------------------------------------------------------------------------


def _outcomes(ev: Evidence, config: Config) -> np.ndarray:
    """Every seed's value of the study's metric (a diverged run at chance), as the
    claims count them."""
    return np.array(list(config.outcomes(ev, ev.metric).values()), dtype="float64")


def _adacos_means(ev: Evidence, variant: str) -> dict[str, float]:
    out = {}
    for head in theory.ADACOS_HEADS:
        values = [_outcomes(ev, c) for c in claims.configs(ev, variant, [head])]
        if values and len(values[0]):
            out[head] = float(values[0].mean())
    return out


def _validation_mean(ev: Evidence, config: Config) -> float:
    """The mean of `SELECTION_METRIC` over the configuration's seeds, as `pick_best`
    scores it (a diverged run at chance); NaN without one."""
    values = list(config.outcomes(ev, claims.SELECTION_METRIC).values())
    return float(np.mean(values)) if values else math.nan


def _pick(ev: Evidence, found: list[Config]) -> Pick | None:
    """`pick_best` over `found`, the pick of C9 and the answer; None when the runs have
    no validation score at all."""
    if not found or claims.SELECTION_METRIC not in ev.trials:
        return None
    return claims.pick_best(ev, found)


def _setting(config: Config) -> str:
    """"s = 16, m = 0.2" (no head name: the line or the panel names it)."""
    parts = [f"{name} = {value:g}" for name, value in (("s", config.s), ("m", config.m))
             if math.isfinite(value)]
    return ", ".join(parts) or config.label


def _recommendation(ev: Evidence, variant: str) -> list[str]:
    """The lines under the heatmaps: for each margin head, the configuration to use if
    you tune (the one C9 compares AdaCos with: chosen on validation by `pick_best`) and
    the plateau around it, the other configurations within `NEGLIGIBLE` of it on
    validation; then the answer's best tuned head when it is none of these."""
    if claims.SELECTION_METRIC not in ev.trials:
        return []
    selects = claims.SELECTION_METRIC
    overall = _pick(ev, claims.configs(ev, variant, claims.FIXED_HEADS))
    best_overall = overall.config if overall is not None else None
    lines = []
    for head in theory.MARGIN_HEADS:
        grid = claims.configs(ev, variant, [head])
        pick = _pick(ev, grid)
        if pick is None:
            continue
        if pick.config is None:
            lines.append(f"If you tune {head}: no pick ({pick.problem}).")
            continue
        best = pick.config
        best_val = _validation_mean(ev, best)
        test = _outcomes(ev, best)
        near = sorted(((v, c) for c in grid if c is not best
                       and (v := _validation_mean(ev, c)) >= best_val - claims.NEGLIGIBLE),
                      key=lambda item: -item[0])
        plateau = (f"{len(near)} other configuration{'s' if len(near) != 1 else ''} "
                   f"within {claims.NEGLIGIBLE:g} of it on validation (the claims' margin): "
                   + "; ".join(f"{_setting(c)} ({v:.4f})" for v, c in near)
                   if near else f"no other configuration within {claims.NEGLIGIBLE:g} of it "
                                "on validation (the claims' margin)")
        lines.append(
            f"If you tune {head}: {_setting(best)} ◆ (chosen on validation: {selects} "
            f"{best_val:.4f}"
            + (f"; test {ev.metric} {test.mean():.4f}" if len(test) else "")
            + (", the best tuned head of the answer" if best_overall is not None
               and best.label == best_overall.label else "")
            + f"); {plateau}.")
    if best_overall is not None and best_overall.head not in theory.MARGIN_HEADS and lines:
        lines.append(f"The answer's best tuned head over {', '.join(claims.FIXED_HEADS)} is "
                     f"{best_overall.label} ({selects} "
                     f"{_validation_mean(ev, best_overall):.4f}), not in these heatmaps.")
    return lines


def _heatmap_figure(ev: Evidence, variant: str) -> Figure | None:
    marks = _adacos_means(ev, variant)
    center = marks.get("adacos-dynamic", marks.get("adacos-fixed"))
    panels = []
    for head in theory.MARGIN_HEADS:
        every = ev.of(variant, [head], states=store.TRIAL_STATES)
        if every.empty or ev.metric not in every:
            continue
        scales = sorted(set(stats.finite(every["s"])))
        margins = sorted(set(stats.finite(every["m"])))
        if len(scales) * len(margins) < 2:
            continue
        found = claims.configs(ev, variant, [head])
        grid = {(c.s, c.m): c for c in found}
        pick = _pick(ev, found)
        chosen = pick.config if pick is not None else None
        z, text, hover = [], [], []
        for m in margins:
            row_z, row_t, row_h = [], [], []
            for s in scales:
                config = grid.get((s, m))
                values = _outcomes(ev, config) if config is not None else np.array([])
                if len(values):
                    mean = float(values.mean())
                    row_z.append(mean)
                    lost = config.n_diverged + config.n_failed
                    # The cell shows the mean only (a longer label does not fit a cell
                    # on a narrow page); the hover has the rest.
                    row_t.append(f"{mean:.3f}" + ("*" if lost else "")
                                 + ("◆" if config is chosen else ""))
                    row_h.append(
                        f"mean {mean:.4f}"
                        + (f" ± {values.std(ddof=1):.4f} (std)" if len(values) > 1 else "")
                        + f" over {len(values)} seed{'s' if len(values) != 1 else ''}"
                        + (f"; {lost} diverged or failed (at chance)" if lost else "")
                        + (f"; {claims.SELECTION_METRIC} "
                           f"{_validation_mean(ev, config):.4f}"
                           if claims.SELECTION_METRIC in ev.trials else "")
                        + (" ◆ chosen on validation" if config is chosen else ""))
                else:
                    states = every[(every["s"] == s) & (every["m"] == m)]["state"]
                    row_z.append(math.nan)
                    row_t.append("—")
                    row_h.append(", ".join(sorted(set(states))) or "not run")
            z.append(row_z)
            text.append(row_t)
            hover.append(row_h)
        panels.append(Panel(
            title=f"{head}{_in(variant)}", x_title="s", y_title="m (rad)",
            heatmap=Heatmap(
                x_labels=[f"{s:g}" for s in scales], y_labels=[f"{m:g}" for m in margins],
                z=z, text=text, hover=hover, colorbar_title="mean", center=center,
                marks={{"adacos-dynamic": "AdaCos dynamic", "adacos-fixed": "AdaCos fixed"}[k]:
                       v for k, v in marks.items()})))
    if not panels:
        return None
    white = next((k for k, v in marks.items() if v == center), None)
    return Figure(
        figure_id(fig.HEATMAPS, variant), f"{ev.metric} over (s, m){_in(variant)}", panels,
        notes=_recommendation(ev, variant),
        caption=("Mean over seeds in each cell (hover for its std, seeds and validation "
                 "score); * a seed diverged or failed and counts at the metric's chance "
                 "value; ◆ the configuration chosen on validation; — no counted run (hover "
                 "for its state). "
                 + (f"The colour scale is centred on {white} (white): blue cells beat it, "
                    "red cells lose to it; the AdaCos results are named under each panel's "
                    "title and drawn as black lines on the colour bar."
                    if white else "No AdaCos run: the colour scale is plain.")))


# -- convergence ----------------------------------------------------------------------------


def _curve(ev: Evidence, config: Config, column: str, transform=None) -> Trace | None:
    return curve(ev, config.runs["key"], config.label, column, transform)


def _roles(ev: Evidence, variant: str) -> list[tuple[str, Config]]:
    """(role, configuration): both AdaCos heads, and the best and worst fixed-scale
    configurations (chosen on validation, like the claims)."""
    out = [(head, c) for head in theory.ADACOS_HEADS for c in claims.configs(ev, variant,
                                                                             [head])]
    fixed = claims.configs(ev, variant, claims.FIXED_HEADS)
    if fixed and claims.SELECTION_METRIC in ev.trials:
        best = claims.pick_best(ev, fixed).config
        worst = claims.pick_best(ev, fixed, worst=True).config
        if best is not None:
            out.append(("best", best))
            if worst is not None and worst is not best:
                out.append(("worst", worst))
    return out


def _styled(trace: Trace, role: str) -> Trace:
    label = {"best": f"best tuned: {trace.name}", "worst": f"worst: {trace.name}"}.get(
        role, trace.name)
    return Trace(name=label, x=trace.x, y=trace.y, y_low=trace.y_low, y_high=trace.y_high,
                 color=ROLE_COLOURS[role], dash="dash" if role == "worst" else "solid",
                 width=2.4 if role.startswith("adacos") else 1.8)


def _flattens(traces: list[Trace], factor: float = 10.0) -> bool:
    """Whether the highest curve peaks more than `factor` times above every other one
    (on a linear axis it would press them flat at the bottom)."""
    peaks = sorted((max(finite) for t in traces if (finite := [v for v in t.y
                                                               if math.isfinite(v)])),
                   reverse=True)
    return len(peaks) >= 2 and peaks[1] > 0 and peaks[0] > factor * peaks[1]


def _convergence_figure(ev: Evidence, variant: str) -> Figure | None:
    roles = _roles(ev, variant)
    if not roles:
        return None
    specs = [("θ_med (degrees)", "theta_med_rad", np.degrees),
             ("scale s", "s_current", None), ("training loss", "loss", None),
             ("validation accuracy", "val_accuracy", None)]
    panels = []
    for title, column, transform in specs:
        traces = []
        for role, config in roles:
            trace = _curve(ev, config, column, transform)
            if trace is not None:
                traces.append(_styled(trace, role))
        hlines = ([HLine(45.0, "θ0 = 45°")] if column == "theta_med_rad" else [])
        # The scale on a log axis (a large fixed s, 64, or a runaway dynamic scale would
        # flatten the AdaCos scales, about 4 to 10, at the bottom), and the loss when one
        # curve would flatten the others.
        log = (column == "s_current" or (column == "loss" and _flattens(traces))) and \
            all(v > 0 for t in traces for v in t.y if math.isfinite(v))
        if traces:
            panels.append(Panel(title=title, x_title="step",
                                y_title=title + (" (log scale)" if log else ""),
                                traces=traces, hlines=hlines, y_log=log))
    if not panels:
        return None
    return Figure(figure_id(fig.CONVERGENCE, variant), f"Convergence{_in(variant)}", panels,
                  caption=("Mean over seeds at each logged step; the band spans the seeds' "
                           "minimum to maximum. Best and worst fixed configurations are "
                           "chosen on the validation pairs."))


def _ln_b_figure(ev: Evidence, variant: str) -> Figure | None:
    C = ev.num_classes(variant)
    if C is None or C <= 2:
        return None
    traces = []
    for role, config in _roles(ev, variant):
        trace = _curve(ev, config, "ln_b_avg", lambda v: v / math.log(C - 1))
        if trace is not None:
            traces.append(_styled(trace, role))
    if not traces:
        return None
    band = math.log(claims.B_FACTOR) / math.log(C - 1)
    # A log axis when it can be one: the worst fixed scale's ratio (7 to 12) would
    # otherwise set the range and flatten AdaCos and the tolerance band (about 1 ± 0.15)
    # at the bottom. A ratio at or below 0 (B_avg ≤ 1) cannot be on it.
    values = [v for t in traces for v in (t.y + (t.y_low or [])) if math.isfinite(v)]
    log = bool(values) and min(values) > 0 and 1 - band > 0
    return Figure(
        figure_id(fig.LN_B_RATIO, variant),
        f"ln B_avg / ln(C − 1) over training{_in(variant)}",
        [Panel(title=f"C = {C}", x_title="step",
               y_title="ln B_avg / ln(C − 1)" + (" (log scale)" if log else ""), y_log=log,
               traces=traces, hlines=[
                   HLine(1.0, "B = C − 1", dash="solid"),
                   HLine(1 + band, f"B = {claims.B_FACTOR:g}(C − 1)", dash="dash"),
                   HLine(1 - band, f"B = (C − 1)/{claims.B_FACTOR:g}", dash="dot")])],
        columns=1,
        caption=(f"Claim C5: the paper approximates B_i by C − 1 (solid line). Dashed and "
                 f"dotted: B a factor {claims.B_FACTOR:g} above and below it, the tolerance "
                 "of the verdict." + (" The y axis is logarithmic, so that the largest "
                                      "ratio does not flatten the others." if log else "")))


# -- theory and measured P(θ) ------------------------------------------------------------------


THETA_DEG = np.linspace(0.0, 180.0, 181)
#: The y range of a probability panel: a little below 0, so that the y axis' "0" does
#: not print on the x axis' "0" in the corner.
P_RANGE = (-0.04, 1.04)


def _p_curve(name: str, s: float, C: int, m: float = 0.0, head: str = "normface",
             **style: Any) -> Trace:
    p = theory.target_probability(np.radians(THETA_DEG), s=s, num_classes=C, m=m, head=head)
    return Trace(name=name, x=THETA_DEG.tolist(), y=np.asarray(p).tolist(), **style)


def _theory_figure(ev: Evidence) -> Figure | None:
    variant = ev.variants()[0] if ev.variants() else MAIN_VARIANT
    C = ev.num_classes(variant)
    if C is None or C <= 2:
        return None
    every = ev.of(variant, claims.SCALE_HEADS, states=store.TRIAL_STATES)
    scales = sorted(set(stats.finite(every["s"]))) if len(every) else []
    s_f = theory.fixed_scale(C)
    left = [_p_curve(f"s = {s:g}", s, C, color=PALETTE[i % len(PALETTE)])
            for i, s in enumerate(scales)]
    left.append(_p_curve(f"s_f = {s_f:.2f}", s_f, C, color="#000000", dash="dash", width=3.0))
    panels = [Panel(title=f"P(θ), no margin, C = {C}", x_title="θ (degrees)",
                    y_title="P(θ) of the true class", traces=left, y_range=P_RANGE,
                    vlines=[VLine(45.0, "θ0 = π/4")])]
    margin_runs = ev.of(variant, theory.MARGIN_HEADS, states=store.TRIAL_STATES)
    if len(margin_runs):
        margin_scales = sorted(set(stats.finite(margin_runs["s"])))
        s_m = margin_scales[len(margin_scales) // 2] if margin_scales else s_f
        right = [_p_curve("m = 0", s_m, C, color="#000000")]
        for head, dash in (("cosface", "solid"), ("arcface", "dash")):
            margins = sorted(set(stats.finite(margin_runs.loc[margin_runs["head"] == head,
                                                              "m"])))
            for i, m in enumerate(margins):
                right.append(_p_curve(f"{head} m = {m:g}", s_m, C, m=m, head=head,
                                      dash=dash, color=PALETTE[i % len(PALETTE)]))
        panels.append(Panel(title=f"P(θ) with the swept margins, s = {s_m:g}",
                            x_title="θ (degrees)", y_title="P(θ)", traces=right,
                            y_range=P_RANGE, vlines=[VLine(45.0, "θ0 = π/4")]))
    return Figure(fig.THEORY, f"Theory: P(θ) for this study's C = {C}", panels, caption=(
        "The paper's curve P(θ) = e^(s·t(cos θ)) / (e^(s·t(cos θ)) + C − 1), with B ≈ C − 1: "
        "the swept scales, the fixed AdaCos scale s_f = √2 ln(C − 1) (thick dashed), and "
        "the swept margins (claims C1-C3)."))


def _probability_figure(ev: Evidence, variant: str) -> Figure | None:
    C = ev.num_classes(variant)
    fixed = claims.configs(ev, variant, claims.SCALE_HEADS)
    if C is None or C <= 2 or not fixed:
        return None
    small = min(fixed, key=lambda c: (c.s, c.m if math.isfinite(c.m) else 0.0))
    large = max(fixed, key=lambda c: (c.s, -(c.m if math.isfinite(c.m) else 0.0)))
    chosen = [("best", small)] + ([("worst", large)] if large is not small else [])
    chosen += [(head, c) for head in theory.ADACOS_HEADS
               for c in claims.configs(ev, variant, [head])]
    traces = []
    for i, (role, config) in enumerate(chosen):
        points = []
        for key in config.runs["key"]:
            w = ev.windows(key)
            if "p_target_mean" in w:
                points.append(w[["theta_med_rad", "p_target_mean"]])
        if not points:
            continue
        both = pd.concat(points)
        colour = PALETTE[i % len(PALETTE)] if role in ("best", "worst") else ROLE_COLOURS[role]
        traces.append(Trace(name=f"{config.label}: measured", mode="markers",
                            x=np.degrees(both["theta_med_rad"].astype(float)).tolist(),
                            y=both["p_target_mean"].astype(float).tolist(), color=colour))
        if config.head in claims.SCALE_HEADS:
            m = config.m if math.isfinite(config.m) else 0.0
            traces.append(_p_curve(f"{config.label}: theory", config.s, C, m=m,
                                   head=config.head, color=colour, dash="dot"))
    if not traces:
        return None
    return Figure(
        figure_id(fig.PROBABILITY, variant), f"Measured P against theory{_in(variant)}",
        [Panel(title=f"C = {C}", x_title="θ_med (degrees)", y_title="P",
               traces=traces, y_range=P_RANGE,
               vlines=[VLine(claims.FAR_ANGLE_DEG, "45°")],
               hlines=[HLine(claims.P_SATURATED, f"P = {claims.P_SATURATED:g}", dash="dash")])],
        columns=1,
        caption=("Each marker is one logged training window: its median target angle and "
                 "its mean target probability. Dotted: the analytic P(θ) of the smallest "
                 "and the largest swept scale (claims C1 and C2)."))


def _scale_figure(ev: Evidence) -> Figure | None:
    traces, vlines = [], []
    bounds = ev.bounds(ev.metric)
    for i, variant in enumerate(ev.variants()):
        C = ev.num_classes(variant)
        if ev.metric not in ev.trials:
            break
        sweep = [c for c in claims.scale_curve(ev, variant) if len(_outcomes(ev, c))]
        if C is None or C <= 2 or len(sweep) < 2:
            continue
        colour = PALETTE[i % len(PALETTE)]
        boxes = [stats.mean_interval(_outcomes(ev, c), bounds) for c in sweep]
        traces.append(Trace(
            name=f"C = {C}{_in(variant)}", x=[c.s for c in sweep], y=[b.mean for b in boxes],
            y_low=[b.low if b.known else b.mean for b in boxes],
            y_high=[b.high if b.known else b.mean for b in boxes],
            mode="lines+markers", color=colour))
        vlines.append(VLine(theory.fixed_scale(C), f"s_f(C = {C}) = {theory.fixed_scale(C):.2f}",
                            dash="dash", color=colour))
    if not traces:
        return None
    return Figure(fig.SCALE_VS_CLASSES, f"{ev.metric} against the fixed scale s, per C",
                  [Panel(title="no margin (normface)", x_title="s (log scale)",
                         y_title=f"mean {ev.metric}", traces=traces, vlines=vlines,
                         x_log=True)], columns=1,
                  caption=("Claim C4: the band is the 95 % interval over seeds (diverged "
                           "seeds at chance); dashed lines mark s_f = √2 ln(C − 1) for each "
                           "C. s_f is near the best when adacos-fixed, or both grid scales "
                           "around s_f, are within 0.005 of the best scale."))


def _adacos_vs_tuned_figure(ev: Evidence, variant: str) -> Figure | None:
    if ev.metric not in ev.trials:
        return None
    # Two groups, one legend entry each: the untuned AdaCos heads (warm, as in every
    # figure) and each tuned head's configuration chosen on validation (cool).
    groups = {"untuned AdaCos": [(head, claims.configs(ev, variant, [head])[:1])
                                 for head in theory.ADACOS_HEADS],
              "best tuned (chosen on validation)": []}
    for head in ("cosface", "arcface", "normface"):
        pick = _pick(ev, claims.configs(ev, variant, [head]))
        if pick is not None and pick.config is not None:
            groups["best tuned (chosen on validation)"].append(
                (pick.config.label, [pick.config]))
    traces, count = [], 0
    for (group, entries), colour in zip(groups.items(), (ROLE_COLOURS["adacos-dynamic"],
                                                         ROLE_COLOURS["best"]), strict=True):
        names, means, lows, highs = [], [], [], []
        for name, found in entries:
            if not found or not len(_outcomes(ev, found[0])):
                continue
            box = stats.mean_interval(_outcomes(ev, found[0]), ev.bounds(ev.metric))
            names.append(name)
            means.append(box.mean)
            lows.append(box.low if box.known else box.mean)
            highs.append(box.high if box.known else box.mean)
        if names:
            traces.append(Trace(name=group, x=list(range(count, count + len(names))),
                                x_labels=names, y=means, y_low=lows, y_high=highs,
                                mode="markers", color=colour))
            count += len(names)
    if count < 2:
        return None
    return Figure(
        figure_id(fig.ADACOS_VS_TUNED, variant),
        f"AdaCos against the tuned heads{_in(variant)}",
        [Panel(title=f"mean {ev.metric} with its 95 % interval over seeds", y_title=ev.metric,
               traces=traces)],
        columns=1, caption=("Claim C9: each margin head's best configuration is chosen on "
                            "the validation pairs, then compared on the test metric; every "
                            "seed counts (a diverged one at the metric's chance value)."))


# -- problems, paper, summary ---------------------------------------------------------------------


def _text(value: Any) -> str:
    """A table cell's text: "" for a missing value (None, NaN, <NA>)."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) \
        else str(value)


def _problem_table(ev: Evidence) -> Table | None:
    bad = ev.trials[ev.trials["state"] != "complete"]
    if bad.empty:
        return None
    rows = []
    for row in bad.sort_values(["state", "key"]).to_dict(orient="records"):
        reason = _text(row.get("error")) or _text(row.get("diverged_reason")) or (
            "stopped by the pruner" if row["state"] == "pruned" else "")
        if row["state"] == "diverged" and pd.notna(row.get("diverged_step")):
            reason = f"{reason} (step {row['diverged_step']})"
        rows.append([row["key"], row["state"], str(reason or "-")])
    return Table(["trial", "state", "reason"], rows,
                 caption=f"{len(rows)} of {len(ev.trials)} trials did not complete")


def _paper_section(manifest: dict[str, Any]) -> Section:
    data = ((manifest.get("spec") or {}).get("data") or {})
    name = str(data.get("name", "unknown"))
    rows = [[r["benchmark"], r["metric"], r["head"], r["value"], r["setting"], r["provenance"]]
            for r in PAPER_RESULTS]
    if name in PAPER_BENCHMARKS:
        text = (f"The study's data is {name}, one of the paper's benchmarks: its reported "
                "figures are listed for comparison with the leaderboard above.")
    else:
        text = (f"The study's data ({name}) is not one of the paper's benchmarks, so its "
                "numbers are not comparable with the paper's; the reported figures are "
                "listed for reference only.")
    return Section("paper", "The paper's reported figures", [text], [Table(
        ["benchmark", "metric", "head", "reported", "setting", "provenance"], rows)])


def manifest_table(manifest: dict[str, Any]) -> Table | None:
    """The manifest's facts a reader looks for (what ran, where, with which versions), as
    a two-column table; the renderers keep the whole JSON below it, folded."""
    if not manifest:
        return None
    env = manifest.get("environment") or {}
    device = env.get("device") or {}
    gpus = [d.get("name", "?") if isinstance(d, dict) else str(d)
            for d in device.get("devices") or []]
    runs = manifest.get("runs") or []
    interrupted = sum(1 for r in runs if r.get("interrupted"))
    commit = str(env.get("git_commit") or "")
    rows = [
        ["study", f"{manifest.get('study', '-')} (spec {manifest.get('spec_path', '-')}, "
                  f"digest {str(manifest.get('spec_digest', '-'))[:12]})"],
        ["engine", ", ".join(dict.fromkeys(str(r.get("backend", "?")) for r in runs))
         or str(manifest.get("backend", "-"))],
        ["sweep runs", f"{len(runs)}" + (f" ({interrupted} interrupted, resumed)"
                                         if interrupted else "")],
        ["started, ended", f"{manifest.get('started_at', '-')}, "
                           f"{manifest.get('ended_at', '-')}"],
        ["versions", ", ".join(f"{k} {env[k]}" for k in
                               ("python", "torch", "optuna", "ray", "numpy", "pandas")
                               if env.get(k)) or "-"],
        ["device", (f"CUDA {device.get('cuda_version')}: {', '.join(gpus)}" if gpus
                    else "CPU") + (f", {env['cpu_count']} CPU cores" if env.get("cpu_count")
                                   else "")
         + (f" ({env['hostname']})" if env.get("hostname") else "")],
        ["git commit", (commit[:12] + (" with uncommitted changes" if env.get("git_dirty")
                                       else "")) if commit else "not in a git checkout"],
    ]
    return Table(["", ""], rows)


def _present(figures: Iterable[Figure | None]) -> list[Figure]:
    return [f for f in figures if f is not None]


def build(run_dir: Path) -> Report:
    """The report of a run folder: its answer, verdicts, sections and manifest."""
    run_dir = Path(run_dir)
    ev = Evidence.from_run(run_dir)
    trials = ev.trials
    manifest = store.read_manifest(run_dir) or {}
    study = ((manifest.get("spec") or {}).get("study") or {})
    verdicts = claims.evaluate_evidence(ev)
    variants = ev.variants()
    sets = store.eval_set_names(trials, manifest)
    sections = [
        Section("leaderboard", "Leaderboard per head", [
            f"Ranked by {ev.metric} ({ev.direction}) on the test pairs: mean, standard "
            "deviation and t-based 95 % confidence interval over the complete seeds. The "
            f"claims and the answer choose each head's configuration on the validation "
            f"pairs ({claims.SELECTION_METRIC}, ◆ chosen), never by this ranking, so the "
            "chosen one need not be the top row. \"Not counted\": pruned, failed and "
            "diverged runs, left out of these statistics (the claims count a diverged or "
            "failed seed at the metric's chance value)."] + _sets_paragraph(ev, sets),
            tables=_leaderboard_tables(ev, sets)),
        Section("heatmaps", "The metric over (s, m)", figures=_present(
            _heatmap_figure(ev, v) for v in variants)),
        Section("stability", "Where dynamic AdaCos is stable (claim C10)",
                figures=stability_figures(ev)),
        Section("convergence", "Convergence", figures=_present(
            _convergence_figure(ev, v) for v in variants)),
        Section("theory", "Theory", figures=_present([_theory_figure(ev)])
                + _present(_probability_figure(ev, v) for v in variants)),
        Section("ln-b", "B_avg against C − 1 (claim C5)", figures=_present(
            _ln_b_figure(ev, v) for v in variants)),
        Section("scale", "The best fixed scale against s_f (claim C4)",
                figures=_present([_scale_figure(ev)])),
        Section("adacos", "AdaCos against the tuned heads (claim C9)", figures=_present(
            _adacos_vs_tuned_figure(ev, v) for v in variants)),
    ]
    problems = _problem_table(ev)
    sections.append(Section(
        "problems", "Failed, diverged and pruned trials",
        [] if problems else ["Every trial completed."],
        tables=[problems] if problems else []))
    sections.append(_paper_section(manifest))
    sections = [s for s in sections if s.paragraphs or s.tables or s.figures]
    figures = {f.id for s in sections for f in s.figures}
    counts = trials["state"].value_counts().to_dict() if len(trials) else {}
    subtitle = (f"{len(trials)} trials ({', '.join(f'{n} {k}' for k, n in counts.items())})"
                f", metric {ev.metric} ({ev.direction}), run folder {run_dir}")
    return Report(study=str(study.get("name") or run_dir.name), subtitle=subtitle,
                  verdicts=verdict_rows(verdicts, figures), sections=sections,
                  manifest=manifest, manifest_summary=manifest_table(manifest), run_dir=run_dir,
                  answer=answer_box(ev), matrix=verdict_matrix(ev, verdicts),
                  data=summary(ev, verdicts))

