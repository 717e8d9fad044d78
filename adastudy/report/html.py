"""A `Report` as one self-contained HTML page: ``index.html``.

The page works offline and from a mail attachment: plotly.js is inlined once, the CSS
is inline, and nothing is loaded by URL (no CDN, web font or remote image). Every
string of the report may come from the run, so all text goes through jinja2 with
autoescaping on, and each figure's JSON is embedded with ``<``, ``>``, ``&``, U+2028
and U+2029 written as ``\\uXXXX``: a study named ``</script><script>...`` stays data.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from adastudy import store
from adastudy.report import model
from adastudy.report.interactive import plotly_figure

__all__ = ["VERDICT_CLASS", "embed_json", "write_html"]

#: CSS class of each verdict's badge (see the colours in `_CSS`).
VERDICT_CLASS = {
    "supported": "badge-supported",
    "not supported": "badge-not-supported",
    "inconclusive": "badge-inconclusive",
    "not tested": "badge-not-tested",
}

_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def write_html(report: model.Report, out_dir: Path) -> Path:
    """Render ``report`` to ``out_dir/index.html`` (``out_dir`` is created when missing).

    Content, in order: the study as title and the subtitle; the answer box (the
    sentence, its numbers, how they were chosen); the verdict matrix (a row per claim,
    a column per part, each cell a coloured chip with its estimate); each claim's
    reasons, collapsible (its parts, the family note, the deciding numbers, a link to
    the figure); each section (heading, paragraphs, tables, figures with title and
    caption); the manifest as JSON.

    The page is written under a temporary name and renamed into place. Returns its path.

    Raises:
        ValueError: two figures share an id (their anchors would collide).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    store.atomic_write_text(path, render_html(report))
    return path


def render_html(report: model.Report) -> str:
    """The page of ``report`` (see `write_html`) as a string."""
    figures = [figure for section in report.sections for figure in section.figures]
    _check_unique_ids(figures)
    specs = {figure.id: plotly_figure(figure) for figure in figures}
    return _template().render(
        report=report,
        verdict_class=VERDICT_CLASS,
        figure_ids=set(specs),
        figure_json={key: embed_json(spec) for key, spec in specs.items()},
        # The div gets the height the figure asks for (+2 for its border): a div with no
        # height gets plotly's 450 px default whatever the number of rows.
        figure_height={key: int(spec["layout"]["height"]) + 2 for key, spec in specs.items()},
        manifest=json.dumps(report.manifest, indent=2, ensure_ascii=False, default=str),
        plotly_js=_plotly_js(),
        css=_CSS,
        loader=_LOADER,
    )


def embed_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element: no NaN (strict
    JSON), and no character that could end the element or confuse the HTML parser."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def _check_unique_ids(figures: list[model.Figure]) -> None:
    seen: set[str] = set()
    for figure in figures:
        if figure.id in seen:
            raise ValueError(f"two figures of the report have the id {figure.id!r}")
        seen.add(figure.id)


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    # The library holds no "</script" today; this keeps it that way if a version does.
    code = re.sub(r"</(script)", r"<\\/\1", get_plotlyjs(), flags=re.IGNORECASE)
    return Markup(code)


@lru_cache(maxsize=1)
def _template() -> Any:
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["embed"] = _markup
    return env.from_string(_TEMPLATE)


def _markup(text: str) -> Any:
    """Mark text that is already safe for its place (escaped JSON, our own CSS and JS)."""
    from markupsafe import Markup

    return Markup(text)


_CSS = """
:root {
  --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --zebra: #f6f8fa; --accent: #0969da;
  --ok: #1a7f37; --bad: #cf222e; --none: #6e7781;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--fg); background: #fff; line-height: 1.5; font-size: 15px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", sans-serif;
}
main { max-width: 1200px; margin: 0 auto; padding: 24px 24px 64px; }
h1 { font-size: 1.9rem; margin: 0.2em 0 0.1em; overflow-wrap: anywhere; }
h2 { font-size: 1.35rem; margin: 2.2em 0 0.6em; padding-bottom: 0.25em;
     border-bottom: 1px solid var(--border); }
h3 { font-size: 1.05rem; margin: 1.6em 0 0.4em; }
.subtitle { color: var(--muted); margin: 0 0 1em; }
nav.toc { font-size: 0.9rem; color: var(--muted); margin: 0.5em 0 1.5em; }
nav.toc a { margin-right: 1em; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 0.5em 0 1.2em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border: 1px solid var(--border); padding: 6px 10px; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; }
section.answer { background: #f3f8ff; border: 1px solid #b6d4fe; border-radius: 8px;
                  padding: 4px 18px 10px; margin-top: 1em; }
section.answer h2 { margin-top: 0.6em; border-bottom: none; }
.answer-sentence { font-size: 1.08rem; font-weight: 600; }
.answer-other { margin-left: 1em; }
.note { color: var(--muted); font-size: 0.86rem; white-space: normal; }
table.answer-table td { min-width: 5em; overflow-wrap: normal; }
table.verdict-matrix th, table.verdict-matrix td { min-width: 76px; }
table.verdict-matrix .claim-col { min-width: 15em; max-width: 22em; }
table.verdict-matrix th.group { text-align: center; white-space: normal; }
table.verdict-matrix th.head { font-weight: 500; font-size: 0.8rem; }
td.part { white-space: nowrap; }
.chip { display: block; margin: 1px 0; padding: 1px 7px; border-radius: 999px;
        color: #fff; font-size: 0.78rem; font-variant-numeric: tabular-nums;
        white-space: nowrap; text-align: center; }
.chip-label { opacity: 0.85; font-size: 0.72rem; }
.basis { color: var(--muted); font-size: 0.8rem; }
details.claim { border: 1px solid var(--border); border-radius: 6px; padding: 6px 12px;
                margin: 8px 0; }
details.claim summary { cursor: pointer; }
ul.parts { margin: 0.4em 0; padding-left: 1.4em; }
ul.parts li { margin: 0.2em 0; overflow-wrap: anywhere; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.cell { white-space: pre-wrap; }
caption { caption-side: top; text-align: left; font-weight: 600;
          font-size: 0.92rem; padding: 10px 0 4px; }
.badge { display: inline-block; padding: 2px 9px; border-radius: 999px; color: #fff;
         font-size: 0.8rem; font-weight: 600; white-space: nowrap; }
.badge-supported { background: var(--ok); }
.badge-not-supported { background: var(--bad); }
.badge-inconclusive { background: #e3a21a; color: #1f2328; }
.badge-not-tested { background: var(--none); }
dl.numbers { display: grid; grid-template-columns: max-content 1fr; gap: 0 10px;
             margin: 6px 0 0; font-size: 0.82rem; color: var(--muted); }
dl.numbers dt { font-weight: 600; }
dl.numbers dd { margin: 0; font-variant-numeric: tabular-nums; }
.reason { white-space: pre-wrap; }
figure { margin: 1em 0 2em; }
figure .plot { width: 100%; border: 1px solid var(--border); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 0.88rem; margin-top: 6px;
             white-space: pre-wrap; overflow-wrap: anywhere; }
figure h3 { margin-top: 0; }
p.figure-note { font-weight: 600; margin: 8px 0 0; }
p { margin: 0.5em 0; white-space: pre-wrap; overflow-wrap: anywhere; }
pre.manifest { background: var(--zebra); border: 1px solid var(--border); border-radius: 6px;
               padding: 12px; overflow-x: auto; font-size: 0.8rem; }
.plot-error { color: var(--bad); padding: 1em; }
@media (max-width: 700px) {
  main { padding: 12px; }
  body { font-size: 14px; }
  th, td { padding: 4px 6px; }
}
"""

# Draws every figure from its JSON block; one broken figure says so in its own div and
# does not stop the others.
_LOADER = """
(function () {
  var config = {responsive: true, displaylogo: false, showLink: false,
                modeBarButtonsToRemove: ["sendDataToCloud", "select2d", "lasso2d"]};
  document.querySelectorAll("script.figure-data").forEach(function (node) {
    var div = document.getElementById(node.getAttribute("data-target"));
    try {
      var spec = JSON.parse(node.textContent);
      Plotly.newPlot(div, spec.data, spec.layout, config).catch(function (err) {
        console.error("figure " + div.id + ": " + err);
      });
    } catch (err) {
      div.textContent = "This figure could not be drawn: " + err;
      div.className += " plot-error";
      console.error("figure " + div.id + ": " + err);
    }
  });
})();
"""

_TEMPLATE = """{% macro matrix_table(matrix, links) -%}
<div class="table-wrap">
<table class="verdict-matrix">
<thead>
<tr><th rowspan="2" class="claim-col">Claim</th><th rowspan="2">Verdict</th>
{% for label, span in matrix.groups %}
<th colspan="{{ span }}" class="group">{{ label }}</th>
{% endfor %}
</tr>
<tr>{% for head in matrix.columns %}<th class="head">{{ head }}</th>{% endfor %}</tr>
</thead>
<tbody>
{% for row in matrix.rows %}
<tr>
<td class="claim-col">{% if links %}<a href="#claim-{{ row.claim_id }}">{% endif -%}
<strong>{{ row.claim_id }}</strong>{% if links %}</a>{% endif %}
{{ row.claim }}
{%- if row.basis != "measured" %} <span class="basis">({{ row.basis }})</span>{% endif -%}
</td>
<td><span class="badge {{ verdict_class.get(row.verdict, 'badge-not-tested') }}">
{{- row.verdict }}</span></td>
{% for cell in row.cells %}
<td class="part">
{%- for chip in cell -%}
<span class="chip {{ verdict_class.get(chip.verdict, 'badge-not-tested') }}"
 title="{{ chip.title }}">
{%- if chip.label %}<span class="chip-label">{{ chip.label }}</span> {% endif -%}
{{ chip.text }}</span>
{%- endfor -%}
</td>
{% endfor %}
</tr>
{% endfor %}
</tbody>
</table>
</div>
{%- endmacro %}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ report.study }} · adastudy report</title>
<style>{{ css | embed }}</style>
<script id="plotly-js">{{ plotly_js }}</script>
</head>
<body>
<main>
<header>
<h1>{{ report.study }}</h1>
{% if report.subtitle %}
<p class="subtitle">{{ report.subtitle }}</p>
{% endif %}
<nav class="toc">
{% if report.answer %}<a href="#answer">Answer</a>{% endif %}
{% if report.matrix or report.verdicts %}<a href="#verdicts">Verdicts</a>{% endif %}
{% for section in report.sections %}
<a href="#{{ section.id }}">{{ section.title }}</a>
{% endfor %}
{% if report.manifest %}<a href="#manifest">Manifest</a>{% endif %}
</nav>
</header>

{% if report.answer %}
<section class="answer" id="answer">
<h2>The answer</h2>
<p class="answer-sentence">{{ report.answer.sentence }}</p>
{% if report.answer.table %}
<div class="table-wrap">
<table class="answer-table">
<thead><tr>
{%- for column in report.answer.table.columns %}<th>{{ column }}</th>{% endfor -%}
</tr></thead>
<tbody>
{% for row in report.answer.table.rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
</div>
{% endif %}
{% for sentence in report.answer.others %}
<p class="answer-other">{{ sentence }}</p>
{% endfor %}
{% for note in report.answer.notes %}
<p class="note">{{ note }}</p>
{% endfor %}
</section>
{% endif %}

{% if report.matrix or report.verdicts %}
<section>
<h2 id="verdicts">Verdicts</h2>
{% if report.matrix and report.matrix.rows %}
{{ matrix_table(report.matrix, True) }}
<p class="note">Each cell is one part of a claim: a setting (C, embedding dimension D,
variant) and a head, with its estimate; hover for the sentence. The parts of a claim form
one family, Holm-corrected; the reasons follow.</p>
{% endif %}
{% if report.verdicts %}
<h2 id="claims">The claims in detail</h2>
{% for row in report.verdicts %}
<details class="claim" id="claim-{{ row.claim_id }}"
{%- if row.verdict != "not tested" %} open{% endif %}>
<summary><strong>{{ row.claim_id }}</strong> {{ row.claim }}
<span class="badge {{ verdict_class.get(row.verdict, 'badge-not-tested') }}">
{{- row.verdict }}</span>
{% if row.basis != "measured" %}<span class="basis">{{ row.basis }}</span>{% endif %}
{%- if row.figure_id and row.figure_id in figure_ids %}
 <a href="#fig-{{ row.figure_id }}">figure</a>{% endif %}
</summary>
{% if row.lead %}<p>{{ row.lead }}</p>{% endif %}
{% if row.parts %}
<ul class="parts">
{% for part in row.parts %}<li>{{ part }}
{%- set part_figure = row.part_figures[loop.index0] if row.part_figures else None %}
{%- if part_figure and part_figure in figure_ids and part_figure != row.figure_id %}
 <a href="#fig-{{ part_figure }}">figure</a>{% endif %}</li>
{% endfor %}
</ul>
{% elif not row.lead %}
<p>{{ row.reason }}</p>
{% endif %}
{% if row.family %}<p class="note">{{ row.family }}</p>{% endif %}
{% if row.numbers %}
<dl class="numbers">
{% for key, value in row.numbers.items() %}
<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}
</dl>
{% endif %}
</details>
{% endfor %}
{% else %}
<p>No claim was evaluated.</p>
{% endif %}
</section>
{% endif %}

{% for section in report.sections %}
<section>
<h2 id="{{ section.id }}">{{ section.title }}</h2>
{% for paragraph in section.paragraphs %}
<p>{{ paragraph }}</p>
{% endfor %}
{% if section.matrix and section.matrix.rows %}{{ matrix_table(section.matrix, False) }}{% endif %}
{% for table in section.tables %}
<div class="table-wrap">
<table>
{% if table.caption %}<caption>{{ table.caption }}</caption>{% endif %}
<thead><tr>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}
<tr>{% for cell in row %}<td class="cell">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
</div>
{% endfor %}
{% for figure in section.figures %}
<figure id="fig-{{ figure.id }}">
<h3>{{ figure.title }}</h3>
<div class="plot" id="plot-{{ figure.id }}" style="height: {{ figure_height[figure.id] }}px">
</div>
<script type="application/json" class="figure-data" data-target="plot-{{ figure.id }}">
{{- figure_json[figure.id] | embed -}}
</script>
{% for note in figure.notes %}
<p class="figure-note">{{ note }}</p>
{% endfor %}
{% if figure.caption %}
<figcaption>{{ figure.caption }}</figcaption>
{% endif %}
</figure>
{% endfor %}
</section>
{% endfor %}

{% if report.manifest %}
<section>
<h2 id="manifest">Run manifest</h2>
{% if report.manifest_summary %}
<table class="manifest-summary"><tbody>
{% for name, value in report.manifest_summary.rows %}
<tr><th scope="row">{{ name }}</th><td>{{ value }}</td></tr>
{% endfor %}
</tbody></table>
{% endif %}
<details class="manifest"><summary>The whole manifest (manifest.json)</summary>
<pre class="manifest">{{ manifest }}</pre>
</details>
</section>
{% endif %}
</main>
<script>{{ loader | embed }}</script>
</body>
</html>
"""
