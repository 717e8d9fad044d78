"""What a report holds, as plain data: verdicts, tables, figures and notes.

`adastudy.report.content.build` fills a `Report` from a run folder; the renderers
(`html`, `markdown`) turn it into files. A figure is described once (`Figure`: panels
of line traces or a heatmap) and drawn twice: interactively with plotly in the HTML,
statically with matplotlib beside the Markdown. Every string here may come from the run
(study, head and variant names, error messages): renderers must escape all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["AnswerBox", "CellLine", "Chip", "Figure", "HLine", "Heatmap", "MatrixRow", "Panel",
           "Report", "Section", "Table", "Trace", "VLine", "VerdictMatrix", "VerdictRow"]

Verdict = Literal["supported", "not supported", "inconclusive", "not tested"]


@dataclass(frozen=True)
class Trace:
    """One line (or set of markers) in a lines panel. `y_low` / `y_high`, when given,
    are a band (e.g. a 95 % CI over seeds) drawn around the line, or error bars when
    `mode` is "markers"."""

    name: str
    x: list[float]
    y: list[float]
    mode: Literal["lines", "markers", "lines+markers"] = "lines"
    dash: Literal["solid", "dash", "dot"] = "solid"
    width: float = 1.8
    color: str | None = None  # "#rrggbb"; None: the renderer's palette
    y_low: list[float] | None = None
    y_high: list[float] | None = None
    #: x as category labels instead of numbers (e.g. configuration names).
    x_labels: list[str] | None = None


@dataclass(frozen=True)
class VLine:
    x: float
    label: str
    dash: Literal["solid", "dash", "dot"] = "dot"
    color: str = "#555555"


@dataclass(frozen=True)
class HLine:
    y: float
    label: str
    dash: Literal["solid", "dash", "dot"] = "dot"
    color: str = "#555555"


@dataclass(frozen=True)
class CellLine:
    """A line drawn over a heatmap, in cell coordinates: `x` counts columns and `y` rows
    (cell centres at 0, 1, …; edges at ±0.5), e.g. a theory's boundary between the
    cells it predicts one way and the other. Named in the legend."""

    label: str
    x: list[float]
    y: list[float]
    dash: Literal["solid", "dash", "dot"] = "solid"
    color: str = "#000000"


@dataclass(frozen=True)
class Heatmap:
    """A metric over a grid: `z[i][j]` at row `y_labels[i]`, column `x_labels[j]` (NaN:
    no value). `text[i][j]` is written in the cell (keep it short: the renderers shrink
    the font to fit the smallest cell; a newline starts a second line) and
    `hover[i][j]`, when given, is the cell's longer hover label (e.g. the mean with its
    std and seed count). The colour scale is diverging and centred on `center` (e.g.
    AdaCos's mean; sequential without one); `marks` are reference values inside the
    colour range (e.g. {"AdaCos fixed": 0.93}), named under the panel's title
    and drawn as lines across the colour bar, never as text on it (two close marks
    would print on top of each other)."""

    x_labels: list[str]
    y_labels: list[str]
    z: list[list[float]]
    text: list[list[str]]
    colorbar_title: str
    center: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    hover: list[list[str]] | None = None
    #: Lines over the cells (see `CellLine`).
    lines: list[CellLine] = field(default_factory=list)
    #: A fixed colour range (e.g. (0, 1) for a share); None: the cells' own range.
    z_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    x_title: str = ""
    y_title: str = ""
    traces: list[Trace] = field(default_factory=list)
    heatmap: Heatmap | None = None
    vlines: list[VLine] = field(default_factory=list)
    hlines: list[HLine] = field(default_factory=list)
    x_log: bool = False
    y_range: tuple[float, float] | None = None
    #: A log y axis (for a curve far above the others; say so in `y_title`).
    y_log: bool = False
    #: A second, smaller line under the title (a heatmap with marks gets them there
    #: when this is empty).
    subtitle: str = ""


@dataclass(frozen=True)
class Figure:
    """A figure of one or more panels side by side (`columns` per row). `id` is a
    file-safe name: the static image is `figures/<id>.png`. `notes` are lines shown
    under the figure, above its caption, as text of the page (e.g. the recommendation
    under the heatmaps)."""

    id: str
    title: str
    panels: list[Panel]
    caption: str = ""
    columns: int = 2
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Table:
    """A table: `columns` names, `rows` of cells already formatted as text."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class VerdictRow:
    """One claim's verdict with its reasons, as the report shows it below the matrix
    (see `adastudy.claims.Verdict`). `parts` are each part's sentence, `basis` says
    whether the claim is an analytic check, `family` how its parts were combined."""

    claim_id: str
    claim: str
    verdict: Verdict
    reason: str
    numbers: dict[str, str]
    figure_id: str | None = None
    parts: list[str] = field(default_factory=list)
    basis: str = "measured"
    family: str = ""
    lead: str = ""
    #: The figure that shows each part (aligned with `parts`; None: no figure), so a part
    #: decided on another variant links to that variant's figure.
    part_figures: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class Chip:
    """One part's verdict in a cell of the verdict matrix: a coloured verdict with a
    short estimate (`text`), `label` telling parts of one cell apart ("vs cosface"),
    and `title` the part's whole sentence (shown on hover)."""

    verdict: Verdict
    text: str
    label: str = ""
    title: str = ""


@dataclass(frozen=True)
class MatrixRow:
    claim_id: str
    claim: str
    verdict: Verdict
    basis: str
    #: One list of chips per column of the matrix (empty: the claim has no part there).
    cells: list[list[Chip]]


@dataclass(frozen=True)
class VerdictMatrix:
    """Claims against parts: `groups` are the column groups (a setting: variant, C, D)
    with how many columns each spans, `columns` the heads, in order."""

    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[MatrixRow]


@dataclass(frozen=True)
class AnswerBox:
    """The report's first words: the `sentence` that answers "must I tune s and m?",
    the numbers behind it (`table`), and `notes` on how they were chosen."""

    sentence: str
    table: Table | None = None
    notes: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    """A titled part of the report: paragraphs of text, a verdict matrix, then tables,
    then figures."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    #: A verdict matrix shown in the section (a comparison has one per run).
    matrix: VerdictMatrix | None = None


@dataclass(frozen=True)
class Report:
    """The whole report: the answer box, the verdict matrix, each claim's verdict with
    its reasons, then the sections in order."""

    study: str
    subtitle: str
    verdicts: list[VerdictRow]
    sections: list[Section]
    manifest: dict[str, Any] = field(default_factory=dict)
    answer: AnswerBox | None = None
    matrix: VerdictMatrix | None = None
    #: The answer's and the verdicts' numbers as plain JSON, for scripts
    #: (`adastudy report --json`).
    data: dict[str, Any] = field(default_factory=dict)
    #: The manifest's main facts, shown above the whole (folded) manifest.
    manifest_summary: Table | None = None
    #: The run folder the report was built from (identifies it: see `report.write`).
    run_dir: Path | None = None
    #: What the report is of, when not one run folder (a comparison: its runs); see
    #: `report.run_identity`.
    identity: dict[str, Any] | None = None
