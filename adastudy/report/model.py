"""What a report holds, as plain data: verdicts, tables, figures and notes.

`adastudy.report.content.build` fills a `Report` from a run folder; the renderers
(`html`, `markdown`) turn it into files. A figure is described once (`Figure`: panels
of line traces or a heatmap) and drawn twice: interactively with plotly in the HTML,
statically with matplotlib beside the Markdown. Every string here may come from the run
(study, head and variant names, error messages): renderers must escape all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Figure", "HLine", "Heatmap", "Panel", "Report", "Section", "Table", "Trace",
           "VLine", "VerdictRow"]


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
class Heatmap:
    """A metric over a grid: `z[i][j]` at row `y_labels[i]`, column `x_labels[j]` (NaN:
    no value). `text[i][j]` is written in the cell. The colour scale is diverging and
    centred on `center` (e.g. AdaCos's mean); `marks` are values labelled on the colour
    bar (e.g. {"AdaCos fixed": 0.93})."""

    x_labels: list[str]
    y_labels: list[str]
    z: list[list[float]]
    text: list[list[str]]
    colorbar_title: str
    center: float | None = None
    marks: dict[str, float] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Figure:
    """A figure of one or more panels side by side (`columns` per row). `id` is a
    file-safe name: the static image is `figures/<id>.png`."""

    id: str
    title: str
    panels: list[Panel]
    caption: str = ""
    columns: int = 2


@dataclass(frozen=True)
class Table:
    """A table: `columns` names, `rows` of cells already formatted as text."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class VerdictRow:
    """One claim's verdict, as the report shows it (see `adastudy.claims.Verdict`)."""

    claim_id: str
    claim: str
    verdict: Literal["supported", "not supported", "inconclusive", "not tested"]
    reason: str
    numbers: dict[str, str]
    figure_id: str | None = None


@dataclass(frozen=True)
class Section:
    """A titled part of the report: paragraphs of text, then tables, then figures."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """The whole report: the verdict table first, then the sections in order."""

    study: str
    subtitle: str
    verdicts: list[VerdictRow]
    sections: list[Section]
    manifest: dict[str, Any] = field(default_factory=dict)
