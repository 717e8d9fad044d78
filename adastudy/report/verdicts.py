"""What the report says of the claims: the answer box, the verdict matrix and each
claim's reasons, as plain data (`adastudy.report.model`), and the same numbers as JSON
for `adastudy report --json`. The figures are `content`'s job."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from adastudy import claims, theory
from adastudy.claims import Evidence, Verdict
from adastudy.report.model import AnswerBox, Chip, MatrixRow, Table, VerdictMatrix, VerdictRow
from adastudy.spec import MAIN_VARIANT

__all__ = ["answer_box", "fmt_number", "summary", "verdict_matrix", "verdict_rows"]


def figure_id(base: str, variant: str) -> str:
    """"heatmaps" for the main variant, "heatmaps-c1000" for variant c1000."""
    return base if variant == MAIN_VARIANT else f"{base}-{variant}"


def fmt_number(value: Any, digits: int = 4) -> str:
    """A table cell's number: "-" for None or NaN, integers as they are, floats to
    `digits` significant digits, anything else as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}"
    return str(value)


def verdict_rows(verdicts: list[Verdict], figures: set[str]) -> list[VerdictRow]:
    """Each claim's row; its figure link goes to the variant whose part decided the
    verdict (the first part with the claim's verdict), each part links to its own."""
    def shown(figure: str | None, variant: str) -> str | None:
        """The variant's version of a figure, else the study-wide one, if it is shown."""
        if figure is None:
            return None
        own = figure_id(figure, variant)
        return own if own in figures else figure if figure in figures else None

    rows = []
    for v in verdicts:
        part_figures = [shown(v.figure, p.variant) for p in v.parts]
        deciding = next((i for i, p in enumerate(v.parts) if p.verdict == v.verdict), None)
        link = part_figures[deciding] if deciding is not None else shown(v.figure, MAIN_VARIANT)
        rows.append(VerdictRow(v.claim_id, v.claim, v.verdict, v.reason,
                               {k: fmt_number(val) for k, val in v.numbers.items()},
                               link, parts=[p.text for p in v.parts], basis=v.basis,
                               family=v.family, lead=v.lead, part_figures=part_figures))
    return rows


def _plain(part: claims.Part) -> str:
    return f"{part.estimate:.3g}"


# How each claim's estimate reads in a cell of the verdict matrix (a claim without an
# entry shows its estimate plainly: registering a claim needs nothing here).
_CHIP_FORMAT: dict[str, Callable[[claims.Part], str]] = {
    "C1": lambda p: f"P {p.estimate:.2f}",
    "C2": lambda p: f"P {p.estimate:.2f}",
    "C3": lambda p: f"−{p.estimate:.0f}°",
    "C4": lambda p: f"{p.estimate:+.3f}",
    "C5": lambda p: f"{p.estimate:.0%}",
    "C6": lambda p: f"ρ {p.estimate:.2f}",
    "C7": lambda p: f"{int(round(p.estimate)):+d} steps",
    "C8": lambda p: f"SD {p.estimate:.3f}",
    "C9": lambda p: f"{p.estimate:+.3f}",
    "C10": lambda p: f"{p.n_diverged}/{p.n_runs - p.n_failed}",
}


def _chip(claim_id: str, part: claims.Part) -> Chip:
    text = "–"
    if part.short:
        text = part.short
    elif part.verdict != "not tested" and (claim_id == "C10" or math.isfinite(part.estimate)):
        text = _CHIP_FORMAT.get(claim_id, _plain)(part)
    label = f"vs {part.versus.split()[0]}" if part.versus else ""
    if claim_id == "C4" and part.versus and " " in part.versus:
        label = f"vs best {part.versus.split(' ', 1)[1]}"  # the best scale: "vs best s=8"
    return Chip(part.verdict, text, label, part.text)


def verdict_matrix(ev: Evidence, verdicts: list[Verdict]) -> VerdictMatrix:
    """Claims (rows) against parts (columns: a setting, then a head), every cell the
    chips of the parts that claim has there."""
    order = {v: i for i, v in enumerate(ev.variants())}
    heads = {h: i for i, h in enumerate(theory.HEAD_NAMES)}
    keys = sorted({(p.variant, p.head or "") for v in verdicts for p in v.parts},
                  key=lambda k: (order.get(k[0], len(order)), heads.get(k[1], len(heads))))
    groups: list[tuple[str, int]] = []
    for variant, _ in keys:
        label = ev.setting(variant) if variant in order else variant
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    rows = []
    for v in verdicts:
        cells: list[list[Chip]] = [[] for _ in keys]
        for part in v.parts:
            cells[keys.index((part.variant, part.head or ""))].append(_chip(v.claim_id, part))
        rows.append(MatrixRow(v.claim_id, v.claim, v.verdict, v.basis, cells))
    return VerdictMatrix(groups, [head or "all heads" for _, head in keys], rows)


def _interval(box: tuple[float, float] | None, digits: int = 4) -> str:
    return "" if box is None else f" [{box[0]:.{digits}f}, {box[1]:.{digits}f}]"


_MATCHES = {"supported": "yes", "not supported": "no", "inconclusive": "cannot tell",
            "not tested": "not tested"}


def answer_box(ev: Evidence) -> AnswerBox | None:
    found = claims.answers(ev)
    if not found:
        return None
    headline = next((a for a in found if a.adacos is not None), found[0])
    rows = []
    for a in found:
        if a.adacos is None or a.tuned is None:
            continue
        moved = ("-" if a.worst_tuned is None else
                 f"{a.worst_tuned.mean:.4f} → {a.tuned.mean:.4f}")
        diverged = ", ".join(f"{d['head']} {d['n_diverged']}/{d['n_runs']}"
                             for d in a.divergence if d["n_diverged"]) or "none"
        rows.append([a.setting, f"{a.adacos.label}: {a.adacos.mean:.4f}"
                     f"{_interval(a.adacos.interval)}",
                     f"{a.tuned.label}: {a.tuned.mean:.4f}{_interval(a.tuned.interval)}",
                     f"{a.difference:+.4f}{_interval(a.difference_interval)}",
                     _MATCHES[a.verdict], moved, diverged])
    table = Table(["setting", "untuned AdaCos", "best tuned (chosen on validation)",
                   "AdaCos − tuned", "matches?", "tuning moved", "diverged"], rows) \
        if rows else None
    rates = claims.divergence_sentence(claims.divergence_rates(ev))
    notes = [
        *([rates] if rates else []),
        f"On {ev.metric} ({ev.direction}), the test pairs. Both the AdaCos head and the "
        f"tuned configuration are chosen on the validation pairs ({claims.SELECTION_METRIC}),"
        " then compared on the test pairs, paired over seeds; a seed that diverged or "
        "failed counts at the metric's chance value.",
        f"\"Matches\" (supported) means no worse than the tuned best by more than "
        f"{claims.NEGLIGIBLE:g} with 95 % confidence; \"tuning moved\" is the worst against "
        "the best tuned configuration, both chosen on validation.",
    ]
    return AnswerBox(headline.sentence, table, notes,
                     [a.sentence for a in found if a is not headline])


def summary(ev: Evidence, verdicts: list[Verdict]) -> dict[str, Any]:
    """What `adastudy report --json` prints besides the files: the answer box's numbers
    and each verdict with its parts."""
    return {
        "answer": claims.answer(ev),
        "verdicts": [{"claim": v.claim_id, "verdict": v.verdict, "reason": v.reason,
                      "basis": v.basis, "numbers": v.numbers,
                      "parts": [p.to_json() for p in v.parts]}
                     for v in verdicts],
    }
