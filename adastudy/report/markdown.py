"""A `Report` as GitHub-flavoured Markdown: ``report.md`` and ``figures/<id>.png``.

Every string from the run is escaped (`md_text`, `md_cell`): HTML-special characters and
table pipes become entities, Markdown's inline marks get a backslash, so a head named
``a|b`` stays in its cell and an error message with ``<script>`` or backticks shows as
written. The figures are PNGs drawn by `adastudy.report.static`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from adastudy import store
from adastudy.report import model
from adastudy.report.static import save_png

__all__ = ["FIGURE_ID", "VERDICT_MARK", "md_cell", "md_text", "write_markdown"]

#: The figure ids this renderer writes as ``figures/<id>.png``; only PNGs whose stem
#: matches are ever removed as stale.
FIGURE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: A coloured mark before each verdict, the colours of the HTML badges.
VERDICT_MARK = {
    "supported": "🟢",
    "not supported": "🔴",
    "inconclusive": "🟠",
    "not tested": "⚪",
}

_INLINE_ESCAPES = {
    "\\": "\\\\",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "&#124;",  # an entity, not "\|": it can never split a table cell
    "`": "&#96;",
    "*": "\\*",
    "_": "\\_",
    "[": "\\[",
    "]": "\\]",
    "~": "\\~",
}
_INLINE = re.compile("[\\\\&<>|`*_\\[\\]~]")
# What would start a heading, list, quote or rule when at the start of a line.
_BLOCK_START = re.compile(r"^([#+=-])")
# An ordered list item: the backslash goes before the "." or ")" (not before a digit,
# which CommonMark would show as a backslash).
_LIST_NUMBER = re.compile(r"^(\d+)([.)])")


def write_markdown(report: model.Report, out_dir: Path) -> Path:
    """Render ``report`` to ``out_dir/report.md`` with its figures in ``out_dir/figures``.

    Content, in order: title and subtitle; the answer box; the verdict matrix; each
    claim's reasons (parts, family note, numbers); each section (heading,
    paragraphs, pipe tables, figures as ``![title](figures/<id>.png)`` with caption); the
    manifest in a ``json`` code block. PNGs left in ``figures/`` by an earlier report and
    not linked by this one are removed (only files named like a figure id, ``*.png``).

    Every file is written under a temporary name and renamed into place. Returns the path
    of ``report.md``.

    Raises:
        ValueError: a figure id that is not file-safe, or two figures with one id.
    """
    figures = [figure for section in report.sections for figure in section.figures]
    ids = [figure.id for figure in figures]
    for figure_id in ids:
        if not FIGURE_ID.fullmatch(figure_id):
            raise ValueError(f"figure id {figure_id!r} is not a file-safe name "
                             f"(expected {FIGURE_ID.pattern})")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"two figures of the report share the id {duplicates[0]!r}")

    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    for figure in figures:
        save_png(figure, figures_dir / f"{figure.id}.png")
    path = out_dir / "report.md"
    store.atomic_write_text(path, render_markdown(report))
    for png in figures_dir.glob("*.png"):  # nothing when the folder does not exist
        if FIGURE_ID.fullmatch(png.stem) and png.stem not in ids:
            png.unlink(missing_ok=True)
    return path


def render_markdown(report: model.Report) -> str:
    """The text of ``report.md`` (figures linked, not drawn)."""
    figure_ids = {figure.id for section in report.sections for figure in section.figures}
    out: list[str] = [f"# {md_text(report.study)}", ""]
    if report.subtitle:
        out += [md_paragraph(report.subtitle), ""]

    if report.answer:
        out += _answer(report.answer)
    if report.matrix or report.verdicts:
        out += _verdicts(report, figure_ids)
    for section in report.sections:
        out += [f"## {md_text(section.title)}", ""]
        for paragraph in section.paragraphs:
            out += [md_paragraph(paragraph), ""]
        if section.matrix and section.matrix.rows:
            out += _matrix(section.matrix, links=False)
        for table in section.tables:
            if table.caption:  # above its table: it names what follows
                out += [f"**{md_text(table.caption).strip()}**", ""]
            out += _pipe_table([md_cell(c) for c in table.columns],
                               [[md_cell(c) for c in row] for row in table.rows])
            out.append("")
        for figure in section.figures:
            # GitHub keeps the anchor (as "user-content-fig-…") and follows "#fig-…".
            out += [f'<a id="fig-{figure.id}"></a>', "", f"### {md_text(figure.title)}", "",
                    f"![{md_text(figure.title)}](figures/{figure.id}.png)", ""]
            for note in figure.notes:  # e.g. the recommendation under the heatmaps
                out += [f"**{md_text(note).strip()}**", ""]
            if figure.caption:
                out += [f"*{md_text(figure.caption).strip()}*", ""]
    if report.manifest:
        out += _manifest(report)
    return "\n".join(out)


def _verdicts(report: model.Report, figure_ids: set[str]) -> list[str]:
    out = ["## Verdicts", ""]
    if report.matrix and report.matrix.rows:
        out += _matrix(report.matrix)
        out += ["*Each cell is one part of a claim: a setting (C, embedding dimension D, "
                "variant) and a head, with its estimate. The parts of a claim form one "
                "family, Holm-corrected; the reasons follow.*", ""]
    if report.verdicts:
        out += ["## The claims in detail", ""]
        for row in report.verdicts:
            out += _claim_details(row, figure_ids)
    else:
        out += ["No claim was evaluated.", ""]
    return out


def _manifest(report: model.Report) -> list[str]:
    manifest = json.dumps(report.manifest, indent=2, ensure_ascii=False, default=str)
    # Literal inside the fence already, but a viewer that ignores fences (or a reader
    # grepping for "<script") should not meet run-derived markup either; "\u003c" is
    # the same JSON string.
    manifest = re.sub("[<>&]", lambda m: f"\\u{ord(m.group()):04x}", manifest)
    fence = "`" * max(3, _longest_backtick_run(manifest) + 1)  # a "```" inside cannot close it
    out = ["## Run manifest", ""]
    if report.manifest_summary:
        out += _pipe_table(["what", "value"], [[md_cell(c) for c in row]
                                               for row in report.manifest_summary.rows])
        out.append("")
    # Folded (GitHub renders <details> and the fence inside it): it is long.
    out += ["<details><summary>The whole manifest (manifest.json)</summary>", "",
            f"{fence}json", manifest, fence, "", "</details>", ""]
    return out


def _answer(box: model.AnswerBox) -> list[str]:
    out = ["## The answer", "", f"> **{md_text(box.sentence)}**", ""]
    if box.table:
        out += _pipe_table([md_cell(c) for c in box.table.columns],
                           [[md_cell(c) for c in row] for row in box.table.rows])
        out.append("")
    for sentence in box.others:
        out += [f"- {md_text(sentence)}"]
    if box.others:
        out.append("")
    for note in box.notes:
        out += [f"*{md_text(note).strip()}*", ""]
    return out


def _matrix(matrix: model.VerdictMatrix, links: bool = True) -> list[str]:
    """The verdict matrix as a pipe table; a column's header names its setting and head
    (pipe tables have one header row). `links`: claim ids link to their details."""
    settings = [label for label, span in matrix.groups for _ in range(span)]
    columns = ["Claim", "Verdict", *(f"{md_cell(head)}<br>{md_cell(setting)}"
                                     for setting, head in zip(settings, matrix.columns,
                                                              strict=True))]
    rows = []
    for row in matrix.rows:
        basis = "" if row.basis == "measured" else f" ({md_cell(row.basis)})"
        cells = []
        for cell in row.cells:
            cells.append("<br>".join(
                f"{VERDICT_MARK.get(chip.verdict, '⚪')} "
                + (f"{md_cell(chip.label)}: " if chip.label else "") + md_cell(chip.text)
                for chip in cell) or " ")
        claim_id = (f"[**{md_cell(row.claim_id)}**](#claim-{row.claim_id.lower()})"
                    if links else f"**{md_cell(row.claim_id)}**")
        rows.append([f"{claim_id} {md_cell(row.claim)}{basis}",
                     f"{VERDICT_MARK.get(row.verdict, '⚪')} **{md_cell(row.verdict)}**",
                     *cells])
    return [*_pipe_table(columns, rows), ""]


def _claim_details(row: model.VerdictRow, figure_ids: set[str]) -> list[str]:
    mark = VERDICT_MARK.get(row.verdict, "⚪")
    out = [f'<a id="claim-{row.claim_id.lower()}"></a>', "",
           f"### {md_text(row.claim_id)}: {md_text(row.claim)}", "",
           f"{mark} **{md_text(row.verdict)}**"
           + ("" if row.basis == "measured" else f" ({md_text(row.basis)})")
           + (f" · [figure](#fig-{row.figure_id})"
              if row.figure_id and row.figure_id in figure_ids else ""), ""]
    if row.lead:
        out += [md_paragraph(row.lead), ""]
    if row.parts:
        figures = row.part_figures or [None] * len(row.parts)
        out += [f"- {md_text(part)}" + (
            f" · [figure](#fig-{figure})" if figure and figure in figure_ids
            and figure != row.figure_id else "")
            for part, figure in zip(row.parts, figures, strict=True)] + [""]
    elif not row.lead:
        out += [md_paragraph(row.reason), ""]
    if row.family:
        out += [f"*{md_text(row.family).strip()}*", ""]
    if row.numbers:
        out += [f"- {md_text(k)}: {md_text(v)}" for k, v in row.numbers.items()] + [""]
    return out


def md_text(text: str) -> str:
    """``text`` shown literally inline: entities for HTML-special characters, pipes and
    backticks; backslashes before emphasis, link and strike-through marks; a line break
    becomes a space (a heading or a link text is one line)."""
    return _INLINE.sub(lambda m: _INLINE_ESCAPES[m.group()], _one_line(str(text), " "))


def md_cell(text: str) -> str:
    """``text`` inside a pipe-table cell: as `md_text`, with line breaks as ``<br>``."""
    escaped = _INLINE.sub(lambda m: _INLINE_ESCAPES[m.group()], str(text))
    return _one_line(escaped, "<br>").strip() or " "


def md_paragraph(text: str) -> str:
    """``text`` as a paragraph that keeps its line breaks; no line of it starts a heading,
    list or quote."""
    lines = re.split(r"\r\n|\r|\n", str(text))
    escaped = []
    for line in lines:
        # Leading spaces dropped: four of them would make the line a code block.
        line = _INLINE.sub(lambda m: _INLINE_ESCAPES[m.group()], line.lstrip())
        line = _LIST_NUMBER.sub(r"\1\\\2", _BLOCK_START.sub(r"\\\1", line))
        escaped.append(line)
    return "<br>\n".join(escaped)


def _one_line(text: str, joiner: str) -> str:
    return re.sub(r"\r\n|\r|\n", joiner, text)


def _pipe_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    width = max([len(columns), *(len(row) for row in rows)])
    # A short row would shift GitHub's columns; pad every row to the header's width.
    head = [*columns, *[" "] * (width - len(columns))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * width]
    for row in rows:
        cells = [*row, *[" "] * (width - len(row))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall("`+", text)), default=0)


