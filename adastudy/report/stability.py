"""The report's stability section (claim C10): where dynamic AdaCos's scale ran away.

- The map: one cell per (C, D) with adacos-dynamic runs, coloured by the share of its
  seeds that diverged, with the lowest measured d_eff against its bound, and the
  theory's boundary for an untrained head (d_eff = D) drawn over it.
- The runs: per C, the scale s(t), the stability margin d_eff / d_eff_min and the
  scale update's slope over training, one line per D (mean over the seeds, the band
  spanning them), against the bound (1) in both.

The cells and the predictions are `adastudy.claims.stability`'s, the ones C10 reasons
with; here they are only laid out.
"""

from __future__ import annotations

import math

from adastudy import theory
from adastudy.claims import Evidence
from adastudy.claims import figures as fig
from adastudy.claims.evidence import where
from adastudy.claims.stability import StabilityCell, cell_runs, on_the_map, stability_cells
from adastudy.report.curves import curve
from adastudy.report.model import CellLine, Figure, Heatmap, HLine, Panel, Trace

__all__ = ["boundary_columns", "stability_figures"]

#: At most this many C side by side in the runs figure (one column each).
MAX_COLUMNS = 4


def boundary_columns(bounds: list[float], dims: list[int]) -> list[float]:
    """Where the theory's boundary crosses each row of a map whose columns are `dims`
    (ascending): on the edge after the last column with D below the row's bound, so
    that the cells left of it are the ones predicted to have no fixed point (from −0.5,
    none, to n − 0.5, all). On cell edges, never through a cell's label."""
    return [sum(1 for d in dims if d < bound) - 0.5 for bound in bounds]


def _hover(cell: StabilityCell) -> str:
    lines = [f"adacos-dynamic: {cell.n_diverged} of {cell.n_runs} seeds diverged"
             + (f" (from step {cell.first_diverged_step})"
                if cell.first_diverged_step is not None else "")]
    if math.isfinite(cell.lowest_margin):
        lines.append(f"lowest measured d_eff {cell.lowest_d_eff:.1f} against its bound "
                     f"d_eff_min {cell.lowest_d_eff_min:.1f} (margin {cell.lowest_margin:.2f})")
    if math.isfinite(cell.highest_slope):
        lines.append(f"highest slope of the scale update {cell.highest_slope:.2f}")
    lines.append(f"untrained head (d_eff = D): bound {cell.bound_at_init:.1f}, "
                 + ("no fixed point" if cell.predicted_unstable_at_init else "a fixed point"))
    extra = [f"{cell.n_guarded} ended by the stability guard" if cell.n_guarded else "",
             f"{cell.n_clamped} clamped (not counted)" if cell.n_clamped else "",
             f"{cell.n_failed} failed" if cell.n_failed else ""]
    if any(extra):
        lines.append("; ".join(e for e in extra if e))
    return "\n".join(lines)


def _map(cells: list[StabilityCell]) -> Figure | None:
    shown, others = on_the_map([c for c in cells if c.n_runs])
    dims = sorted({c.embedding_dim for c in shown if c.embedding_dim is not None})
    classes = sorted({c.num_classes for c in shown})
    if len(shown) < 2 or not dims:
        return None
    grid = {(c.num_classes, c.embedding_dim): c for c in shown}
    z, text, hover = [], [], []
    for C in classes:
        row_z, row_t, row_h = [], [], []
        for D in dims:
            cell = grid.get((C, D))
            if cell is None:
                row_z.append(math.nan)
                row_t.append("—")
                row_h.append("not run")
                continue
            row_z.append(cell.share_diverged)
            second = ""
            if math.isfinite(cell.lowest_margin):
                sign = "<" if cell.lowest_margin < 1 else "≥"
                second = f"\n{cell.lowest_d_eff:.0f} {sign} {cell.lowest_d_eff_min:.0f}"
            row_t.append(f"{cell.n_diverged}/{cell.n_runs}{second}")
            row_h.append(_hover(cell))
        z.append(row_z)
        text.append(row_t)
        hover.append(row_h)
    # The theory's boundary for an untrained head: left of it, D < 4 ln(C − 1).
    xs = boundary_columns([theory.min_stable_effective_dim(C) for C in classes], dims)
    line_x, line_y = [], []
    for i, x in enumerate(xs):
        line_x += [x, x]
        line_y += [i - 0.5, i + 0.5]
    notes = [f"Not on the map (the map shows another variant at its C and D): "
             f"{c.label}{where(c.variant)}: {c.n_diverged} of {c.n_runs} seeds diverged"
             + (f" from step {c.first_diverged_step}" if c.first_diverged_step is not None
                else "")
             + (f"; lowest d_eff {c.lowest_d_eff:.1f} against {c.lowest_d_eff_min:.1f}"
                if math.isfinite(c.lowest_margin) else "")
             + (f"; highest update slope {c.highest_slope:.2f}"
                if math.isfinite(c.highest_slope) else "") + "." for c in others]
    guarded = [c for c in cells if c.n_guarded or c.n_clamped]
    if guarded:
        notes.append("Guarded runs are not on the map (not the paper's method): "
                     + "; ".join(f"{c.label}{where(c.variant)}: "
                                 + ", ".join(t for t in (
                                     f"{c.n_guarded} ended by the stability guard"
                                     if c.n_guarded else "",
                                     f"{c.n_clamped} with the scale clamped"
                                     if c.n_clamped else "") if t) for c in guarded) + ".")
    panel = Panel(
        title="adacos-dynamic: share of seeds that diverged", x_title="embedding dimension D",
        y_title="classes C",
        subtitle="each cell: diverged/seeds; lowest d_eff against its bound d_eff_min",
        heatmap=Heatmap(
            x_labels=[str(d) for d in dims], y_labels=[str(c) for c in classes], z=z,
            text=text, hover=hover, colorbar_title="share diverged", z_range=(0.0, 1.0),
            lines=[CellLine("theory, untrained head (d_eff = D): no fixed point left of "
                            "the line", line_x, line_y)]))
    return Figure(fig.STABILITY_MAP, "Where dynamic AdaCos is stable", [panel], columns=1,
                  notes=notes, caption=(
                      "Claim C10. Each cell is one setting (C classes, D-dimensional "
                      "embedding): its colour is the share of adacos-dynamic's seeds that "
                      "diverged (s above 1e4 or a non-finite loss); first line, diverged/"
                      "seeds; second line, the lowest measured effective dimension d_eff "
                      "= 1/Var(non-target cosines) over the training windows against its "
                      "bound d_eff_min = 2k² ln(C − 1)/(1 − kμ)² at that window (below it, "
                      "the Gaussian approximation of ln B_avg has no fixed point for the "
                      "scale). The black line is the same bound for an untrained head, "
                      "whose d_eff is D (4 ln(C − 1) at μ = 0, θ_med ≥ 45°): what "
                      "`adastudy theory --classes C --dim D` says before training. "
                      "Training lowers d_eff below D, so the line is optimistic; hover a "
                      "cell for the highest slope of the scale update (above 1 while s "
                      "grows, s cannot come back)."))


def _runs(cells: list[StabilityCell], ev: Evidence) -> Figure | None:
    counted = [c for c in cells if c.n_runs]
    if not counted:
        return None
    others = on_the_map(counted)[1]
    classes = sorted({c.num_classes for c in counted})[:MAX_COLUMNS]
    rows = [("scale s", "s_current", True, []),
            ("d_eff / d_eff_min", "stability_margin", True,
             [HLine(1.0, "bound: d_eff = d_eff_min", dash="dash")]),
            ("slope of the scale update", "update_slope", False,
             [HLine(1.0, "slope 1: past it, s runs away", dash="dot")])]
    panels = []
    for title, column, log, hlines in rows:
        for C in classes:
            traces: list[Trace] = []
            for cell in sorted((c for c in counted if c.num_classes == C),
                               key=lambda c: (c.embedding_dim or 0, c.variant)):
                keys = [str(k) for k in cell_runs(ev, cell.variant)["counted"]["key"]]
                name = (f"D = {cell.embedding_dim}" if cell.embedding_dim else cell.variant) \
                    + (where(cell.variant) if any(o is cell for o in others) else "")
                trace = curve(ev, keys, name, column)
                if trace is not None:
                    traces.append(trace)
            if not traces:
                continue
            panels.append(Panel(title=f"{title}, C = {C}", x_title="step",
                                y_title=title + (" (log scale)" if log and _wide(traces)
                                                 else ""),
                                traces=traces, hlines=hlines, y_log=log and _wide(traces)))
    if not panels:
        return None
    return Figure(fig.STABILITY_RUNS, "Dynamic AdaCos over training, per C and D", panels,
                  columns=min(len(classes), MAX_COLUMNS), caption=(
                      "One line per setting: the mean over its seeds at each logged window, "
                      "the band spanning the seeds (a run that diverged ends where it "
                      "did). Top: the scale (log axis). Middle: the stability margin d_eff "
                      "/ d_eff_min, below 1 (dashed) where the Gaussian approximation "
                      "gives the scale no fixed point (log axes where a panel spans more "
                      "than a factor 10). Bottom: the slope of the scale "
                      "update s ↦ k ln B_avg(s) at the window's s, exact: ln B_avg is "
                      "convex in s, so above 1 (dotted) while s grows, s grows without "
                      "bound for those cosines."))


def _wide(traces: list[Trace], factor: float = 10.0) -> bool:
    """Whether the traces span more than `factor` (all positive): a log axis then keeps
    a run-away (s to 1e4) or an untrained head's margin (20) from flattening the rest."""
    values = [v for t in traces for v in t.y if math.isfinite(v)]
    return bool(values) and min(values) > 0 and max(values) > factor * min(values)


def stability_figures(ev: Evidence) -> list[Figure]:
    """The map and the runs figure, each when the study has what it shows."""
    cells = stability_cells(ev)
    return [f for f in (_map(cells), _runs(cells, ev)) if f is not None]
