"""The report renderers on a hand-made `Report`: plotly dict, PNG, Markdown, HTML.

The HTML is also opened in a real headless Chromium (Debian's `chromium`; `.ci/run`
installs it), cut off from the network, to check that it loads without errors, that every
figure is drawn, and that nothing from the run's strings gets executed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from chromium import assert_clean, needs_chromium, probe_page, run_chromium
from PIL import Image

from adastudy import store
from adastudy.report import html as html_report
from adastudy.report import markdown as md_report
from adastudy.report import model
from adastudy.report.interactive import plotly_figure
from adastudy.report.static import save_png

NAN = float("nan")
HOSTILE_STUDY = "<script>alert(1)</script>"
HOSTILE_HEAD = "a|b"
HOSTILE_ERROR = "boom </script><img src=x onerror=alert(2)> in `train()` *x* _y_ [z]"
REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"


# --------------------------------------------------------------------------- the report


def lines_figure() -> model.Figure:
    steps = [0.0, 100.0, 200.0, 300.0, 400.0]
    curve = model.Panel(
        title="θ_med over training",
        x_title="step",
        y_title="θ_med (rad)",
        traces=[
            model.Trace(
                name="adacos-dynamic",
                x=steps,
                y=[1.5, 1.1, 0.9, NAN, 0.7],
                y_low=[1.4, 1.0, 0.8, NAN, 0.6],
                y_high=[1.6, 1.2, 1.0, NAN, 0.8],
            ),
            model.Trace(name=HOSTILE_HEAD, x=steps, y=[1.5, 1.3, 1.2, 1.1, 1.0], dash="dash",
                        color="#d62728", width=2.5),
            model.Trace(name="s $x$ cost", x=steps, y=[1.4, 1.2, 1.0, 0.9, 0.85],
                        mode="lines+markers", dash="dot"),
        ],
        vlines=[model.VLine(x=200.0, label="LR drop")],
        hlines=[model.HLine(y=math.pi / 4, label="θ0 = π/4", dash="dash", color="#333333")],
        x_log=False,
        y_range=(0.0, 1.7),
    )
    board = model.Panel(
        title="Leaderboard <b>bold?</b>",
        x_title="configuration",
        y_title="accuracy",
        traces=[
            model.Trace(
                name="mean ± 95 % CI",
                x=[0.0, 1.0, 2.0],
                y=[0.91, 0.88, NAN],
                mode="markers",
                y_low=[0.89, 0.85, NAN],
                y_high=[0.93, 0.91, NAN],
                x_labels=["adacos-fixed", HOSTILE_HEAD, "cosface s=30 m=0.35"],
            )
        ],
        hlines=[model.HLine(y=0.9, label="paper %{y} {x}")],
    )
    log_panel = model.Panel(
        title="loss (log steps)",
        x_title="step",
        y_title="loss",
        traces=[model.Trace(name="adacos-dynamic", x=[1.0, 10.0, 100.0, 1000.0],
                            y=[4.0, 2.0, 1.0, 0.5])],
        vlines=[model.VLine(x=50.0, label="warm-up ends", dash="solid")],
        x_log=True,
    )
    return model.Figure(
        id="convergence",
        title="Convergence <i>and</i> leaderboard",
        panels=[curve, board, log_panel],
        caption="Bands: 95 % CI over 3 seeds. Error: " + HOSTILE_ERROR,
        columns=2,
    )


def heatmap_figure() -> model.Figure:
    z = [[0.90, 0.92, NAN], [0.88, NAN, 0.95], [0.80, 0.85, 0.93]]
    heat = model.Heatmap(
        x_labels=["0.1", "0.35", "0.5"],
        y_labels=["16", "32", "64"],
        z=z,
        text=[["—" if math.isnan(v) else f"{v:.2f}" for v in row] for row in z],
        colorbar_title="accuracy",
        center=0.91,
        marks={"AdaCos fixed": 0.91, "AdaCos <dynamic>": 0.94},
    )
    plain = model.Heatmap(
        x_labels=["a", "b"], y_labels=["r1", "r2"], z=[[1.0, 2.0], [3.0, NAN]],
        text=[["1", "2"], ["3", ""]], colorbar_title="loss",
    )
    return model.Figure(
        id="heatmap-cosface",
        title="Accuracy over (s, m): CosFace",
        panels=[
            model.Panel(title="CosFace", x_title="m (rad)", y_title="s", heatmap=heat),
            model.Panel(title="no centre", x_title="x", y_title="y", heatmap=plain),
        ],
        caption="Centred on AdaCos fixed.",
    )


def make_report() -> model.Report:
    lines, heat = lines_figure(), heatmap_figure()
    verdicts = [
        model.VerdictRow("C1", "AdaCos fixed matches the best fixed s.", "supported",
                         "within noise of the best", {"Δ": "+0.3 pp", "CI": "[−0.2, 0.8]"},
                         figure_id=lines.id),
        model.VerdictRow("C2", "Dynamic beats fixed.", "not supported",
                         "clearly worse: " + HOSTILE_ERROR, {"Δ": "−2.1 pp"},
                         figure_id=heat.id),
        model.VerdictRow("C3", "θ_med falls below π/4.", "inconclusive",
                         "seed noise too large", {}),
        model.VerdictRow("C4", f"Holds for every C ({HOSTILE_HEAD}).", "not tested",
                         "only one number of classes;\nadd [variants] with other C",
                         {"C": "10", "a|b": "x|y"}),
    ]
    sections = [
        model.Section(
            id="leaderboard",
            title="Leaderboard per head",
            paragraphs=["Mean ± 95 % CI over seeds.", f"Head {HOSTILE_HEAD} ran too."],
            tables=[
                model.Table(
                    columns=["head", "accuracy", "note"],
                    rows=[
                        ["adacos-fixed", "0.91 ± 0.01", ""],
                        [HOSTILE_HEAD, "0.88 ± 0.03", "line one\nline two"],
                    ],
                    caption="Higher is better.",
                )
            ],
            figures=[lines],
        ),
        model.Section(id="heatmaps", title="Heatmaps", figures=[heat]),
        model.Section(
            id="failures",
            title="Failed, diverged and pruned trials",
            tables=[model.Table(columns=["trial", "head", "state", "reason"],
                                rows=[["7", HOSTILE_HEAD, "failed", HOSTILE_ERROR]])],
        ),
    ]
    chip = model.Chip
    matrix = model.VerdictMatrix(
        groups=[("C = 10, D = 16", 2), (f"C = 20 [{HOSTILE_HEAD}]", 1)],
        columns=["adacos-fixed", HOSTILE_HEAD, "adacos-dynamic"],
        rows=[
            model.MatrixRow("C1", verdicts[0].claim, "supported", "analytic and measured",
                            [[chip("supported", "P 0.22")], [], []]),
            model.MatrixRow("C2", verdicts[1].claim, "not supported", "measured",
                            [[chip("supported", "+0.004", "vs cosface", HOSTILE_ERROR),
                              chip("not supported", "−0.030", "vs arcface")],
                             [chip("inconclusive", HOSTILE_HEAD)], []]),
            model.MatrixRow("C3", verdicts[2].claim, "inconclusive", "measured",
                            [[], [], [chip("inconclusive", "ρ 0.40")]]),
            model.MatrixRow("C4", verdicts[3].claim, "not tested", "measured",
                            [[chip("not tested", "–")], [], []]),
        ])
    answer = model.AnswerBox(
        sentence=f"On this data, untuned adacos-dynamic lost to {HOSTILE_HEAD} by 0.03.",
        table=model.Table(["setting", "untuned AdaCos", "best tuned"],
                          [["C = 10", "adacos-dynamic: 0.91", f"{HOSTILE_HEAD}: 0.94"]]),
        notes=["Chosen on validation; " + HOSTILE_ERROR],
        others=["At C = 20 it matched."])
    return model.Report(
        study=HOSTILE_STUDY,
        subtitle="synthetic features, C = 10, 3 seeds",
        verdicts=verdicts,
        sections=sections,
        manifest={"study": HOSTILE_STUDY, "seeds": [0, 1, 2], "note": HOSTILE_ERROR,
                  "versions": {"torch": "2.13.0"}},
        answer=answer,
        matrix=matrix,
    )


@pytest.fixture(scope="module")
def report() -> model.Report:
    return make_report()


# --------------------------------------------------------------------------- interactive


def test_plotly_figure_is_strict_json_with_gaps_for_nan() -> None:
    spec = plotly_figure(lines_figure())
    text = json.dumps(spec, allow_nan=False)  # raises on any NaN or infinity
    assert "NaN" not in text
    data = spec["data"]
    # The first trace: its band, then the line. The band is one closed polygon per run
    # of finite bounds (steps 0-200, then the lone step 400 has no area).
    band, line = data[0], data[1]
    assert band["fill"] == "toself" and band["fillcolor"].startswith("rgba(")
    assert band["x"] == [0.0, 100.0, 200.0, 200.0, 100.0, 0.0]
    assert band["y"] == [1.6, 1.2, 1.0, 0.8, 1.0, 1.4]
    assert line["y"][3] is None and line["customdata"][3] == [None, None]
    assert line["name"] == "adacos-dynamic" and line["line"]["dash"] == "solid"
    hostile = next(t for t in data if t.get("name") == HOSTILE_HEAD)
    assert hostile["line"] == {"color": "#d62728", "width": 2.5, "dash": "dash"}
    markers = next(t for t in data if t.get("mode") == "markers")
    assert markers["x"] == ["adacos-fixed", HOSTILE_HEAD, "cosface s=30 m=0.35"]
    assert markers["error_y"]["array"][:2] == pytest.approx([0.02, 0.03])
    assert markers["error_y"]["array"][2] is None
    layout = spec["layout"]
    assert layout["xaxis2"]["type"] == "category" and layout["xaxis3"]["type"] == "log"
    assert layout["yaxis"]["range"] == [0.0, 1.7]
    # Panels 1 and 2 side by side, panel 3 on the next row.
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]
    assert layout["yaxis3"]["domain"][1] < layout["yaxis"]["domain"][0]
    shapes = {s["name"]: s for s in layout["shapes"]}
    assert shapes["LR drop"]["x0"] == 200.0 and shapes["LR drop"]["yref"] == "y domain"
    assert shapes["θ0 = π/4"]["y0"] == pytest.approx(math.pi / 4)
    # Plotly reads its strings as HTML and hover templates: both are neutralised.
    assert "Leaderboard &lt;b&gt;bold?&lt;/b&gt;" in json.dumps(layout["annotations"])
    assert "paper %&#123;y&#125; &#123;x&#125;" in shapes
    # Lines are named in the legend only: a label on the line prints over the curves.
    assert not any("label" in s for s in layout["shapes"])
    assert all(s["showlegend"] for s in layout["shapes"])


def test_plotly_band_is_one_polygon_per_run_of_finite_bounds() -> None:
    trace = model.Trace(name="t", x=[0, 1, 2, 3, 4, 5], y=[1.0] * 6,
                        y_low=[0.0, 0.0, NAN, 0.5, 0.5, 0.5],
                        y_high=[2.0, 2.0, 2.0, 1.5, 1.5, math.inf])
    spec = plotly_figure(model.Figure(id="f", title="", panels=[model.Panel("p",
                                                                             traces=[trace])]))
    band = spec["data"][0]
    assert band["x"] == [0, 1, 1, 0, None, 3, 4, 4, 3]
    assert band["y"] == [2.0, 2.0, 0.0, 0.0, None, 1.5, 1.5, 0.5, 0.5]


def test_plotly_heatmap_is_centred_and_shows_marks() -> None:
    spec = plotly_figure(heatmap_figure())
    json.dumps(spec, allow_nan=False)
    heat, plain = spec["data"]
    assert heat["type"] == "heatmap"
    # Diverging, white in the middle, red below and blue above (as matplotlib's RdBu).
    scale = heat["colorscale"]
    assert scale[0][1] == "#67001f" and scale[5] == [0.5, "#f7f7f7"] and scale[-1][0] == 1
    assert (heat["zmin"] + heat["zmax"]) / 2 == pytest.approx(0.91)
    # 0.80, the value farthest from the centre, sets both ends of the range.
    assert heat["zmin"] == pytest.approx(0.80) and heat["zmax"] == pytest.approx(1.02)
    assert heat["z"][0][2] is None and heat["z"][1][1] is None
    assert heat["text"][0][0] == "0.90" and heat["texttemplate"] == "%{text}"
    # The font fits the cells (plotly sizes it from the cells' pixels).
    assert "size" not in heat["textfont"]
    # The marks are named under the panel's title, not on the colour bar (two close
    # marks printed over each other there, and ran into the next panel).
    ticktext = heat["colorbar"]["ticktext"]
    assert not any("AdaCos" in t for t in ticktext)
    title = json.dumps(spec["layout"]["annotations"][0]["text"])
    assert "AdaCos fixed 0.9100" in title and "AdaCos &lt;dynamic&gt; 0.9400" in title
    assert plain["colorscale"] == "Viridis" and plain["z"][1][1] is None
    # Each colour bar sits right of its own panel.
    assert heat["colorbar"]["x"] < spec["layout"]["xaxis2"]["domain"][0]


def test_plotly_figure_is_valid_for_plotly() -> None:
    go = pytest.importorskip("plotly.graph_objects")
    for fig in (lines_figure(), heatmap_figure()):
        go.Figure(plotly_figure(fig))  # raises on any property plotly does not know


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize("make", [lines_figure, heatmap_figure])
def test_save_png_writes_a_sensible_image(tmp_path: Path, make) -> None:
    path = save_png(make(), tmp_path / "sub" / "fig.png")
    assert path == tmp_path / "sub" / "fig.png"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 1000 <= width <= 2000 and 400 <= height <= 1500
    assert [p.name for p in path.parent.iterdir()] == ["fig.png"]  # no temporary left


# --------------------------------------------------------------------------- markdown


def table_cells(line: str) -> list[str]:
    """Cells of a pipe-table row, split the way GitHub does (on unescaped pipes)."""
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def test_markdown_links_existing_pngs_and_escapes(tmp_path: Path, report: model.Report) -> None:
    path = md_report.write_markdown(report, tmp_path)
    assert path == tmp_path / "report.md"
    text = path.read_text(encoding="utf-8")
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert sorted(links) == ["figures/convergence.png", "figures/heatmap-cosface.png"]
    for link in links:
        assert (tmp_path / link).stat().st_size > 0
        with Image.open(tmp_path / link) as image:
            image.verify()
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # The answer comes first, then the verdict matrix, each claim's reasons, the sections
    # in order, then the manifest.
    order = [text.index(s) for s in ("## The answer", "| [**C1**](#claim-c1) ",
                                     "### C1:", "Leaderboard per head", "Heatmaps",
                                     "Failed, diverged", "```json")]
    assert order == sorted(order)
    # The matrix has a column per part, and a cell with two parts keeps both in its cell.
    matrix_row = next(line for line in text.splitlines() if line.startswith("| [**C2**]"))
    assert len(table_cells(matrix_row)) == 2 + 3
    assert "🟢 vs cosface: +0.004<br>🔴 vs arcface: −0.030" in matrix_row
    # A pipe in a head name does not add a column, in any table.
    for table_text in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.M):
        lines = table_text.strip().splitlines()
        widths = {len(table_cells(line)) for line in lines}
        assert len(widths) == 1, lines
    failure_row = next(line for line in text.splitlines() if line.startswith("| 7 "))
    assert len(table_cells(failure_row)) == 4
    # A newline in a cell stays inside its row.
    assert "line one<br>line two" in text
    # Backticks and emphasis in an error message are text, not code or italics (the
    # manifest's code block keeps them as they are).
    body = text[: text.index("```json")]
    assert "`" not in body and "&#96;train()&#96;" in body
    assert "\\*x\\*" in body and "\\_y\\_" in body


def test_markdown_removes_stale_pngs_only(tmp_path: Path, report: model.Report) -> None:
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "old-figure.png").write_bytes(b"stale")
    (figures / "notes.txt").write_text("kept")
    (figures / "Not A Figure!.png").write_bytes(b"not ours")
    md_report.write_markdown(report, tmp_path)
    names = sorted(p.name for p in figures.iterdir())
    assert names == ["Not A Figure!.png", "convergence.png", "heatmap-cosface.png", "notes.txt"]


def test_markdown_text_never_starts_a_block_or_breaks_a_cell() -> None:
    assert md_report.md_paragraph("# not a heading\n- not a list\n12. nor this") == (
        "\\# not a heading<br>\n\\- not a list<br>\n12\\. nor this"
    )
    assert md_report.md_cell("a|b\nc`d`") == "a&#124;b<br>c&#96;d&#96;"
    assert md_report.md_cell("") == " "
    assert md_report.md_paragraph("    not code") == "not code"
    assert md_report.md_text("x\\y <b>") == "x\\\\y &lt;b&gt;"


def test_markdown_rejects_unsafe_figure_ids(tmp_path: Path) -> None:
    fig = model.Figure(id="../evil", title="t", panels=[])
    report = model.Report(study="s", subtitle="", verdicts=[],
                          sections=[model.Section(id="a", title="A", figures=[fig])])
    with pytest.raises(ValueError, match="file-safe"):
        md_report.write_markdown(report, tmp_path)
    assert not (tmp_path / "report.md").exists()


# --------------------------------------------------------------------------- html


def test_embedded_json_cannot_close_its_script() -> None:
    text = html_report.embed_json({"s": "</script><!-- & \u2028\u2029"})
    assert text == '{"s":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u2028\\u2029"}'
    assert json.loads(text) == {"s": "</script><!-- & \u2028\u2029"}
    with pytest.raises(ValueError):
        html_report.embed_json({"x": NAN})


def strip_library(text: str) -> str:
    """The page without the inlined plotly.js (its code is not ours to inspect)."""
    start = text.index('<script id="plotly-js">')
    end = text.index("</script>", start)
    return text[:start] + text[end:]


def test_html_is_self_contained_and_escaped(tmp_path: Path, report: model.Report) -> None:
    path = html_report.write_html(report, tmp_path)
    assert path == tmp_path / "index.html"
    text = path.read_text(encoding="utf-8")
    assert text.count('<script id="plotly-js">') == 1
    ours = strip_library(text)
    # The hostile study shows as text and nothing from the run becomes markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ours
    assert "<script>alert(" not in text
    assert "<img" not in ours.lower()
    for match in re.finditer("onerror=", ours):
        before = ours[max(0, match.start() - 20) : match.start()]
        assert "&lt;img" in before or "\\u003cimg" in before, before
    # Offline: no external resource of any kind. (plotly.js holds URLs in its strings,
    # such as its own logo's link, which `displaylogo: false` keeps off the page.)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", ours, flags=re.I)
    assert not re.search(r"<(link|img|iframe|object|embed)\b", ours, flags=re.I)
    assert not re.search(r"<script[^>]*\ssrc\s*=", ours, flags=re.I)
    assert "http://" not in ours and "https://" not in ours
    assert "@import" not in ours and "url(" not in ours
    # Every figure has its div, and the verdicts link to them.
    for figure_id in ("convergence", "heatmap-cosface"):
        assert re.search(rf'<div[^>]*id="plot-{figure_id}"', text)
        assert f'href="#fig-{figure_id}"' in text
    for badge in ("supported", "not-supported", "inconclusive", "not-tested"):
        assert f"badge-{badge}" in ours
    # Order: the answer, the verdict matrix, each claim's reasons, sections, manifest.
    order = [ours.index(s) for s in ('id="answer"', 'class="verdict-matrix"',
                                     'id="claim-C1"', 'id="leaderboard"', 'id="heatmaps"',
                                     'id="failures"', 'id="manifest"')]
    assert order == sorted(order)
    # The matrix: a header cell per setting spanning its heads, a chip per part.
    assert '<th colspan="2" class="group">C = 10, D = 16</th>' in ours
    assert ours.count('class="chip ') == 6
    assert f"On this data, untuned adacos-dynamic lost to {HOSTILE_HEAD} by 0.03." in ours
    # The embedded figure JSON is escaped, and parses back to the plotly dict.
    blocks = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', ours, re.S)
    assert len(blocks) == 2
    for block in blocks:
        assert "<" not in block and ">" not in block and "&" not in block
        json.loads(block)


def test_html_rejects_duplicate_figure_ids(tmp_path: Path) -> None:
    fig = lines_figure()
    report = model.Report(study="s", subtitle="", verdicts=[],
                          sections=[model.Section(id="a", title="A", figures=[fig, fig])])
    with pytest.raises(ValueError, match="convergence"):
        html_report.write_html(report, tmp_path)


# --------------------------------------------------------------------------- chromium

@pytest.mark.slow
@needs_chromium
def test_html_renders_in_headless_chromium(tmp_path: Path, report: model.Report) -> None:
    page = html_report.write_html(report, tmp_path / "report")
    seen, stderr = probe_page(page, tmp_path)
    assert_clean(seen, stderr)  # the hostile study name ran nothing, nothing was fetched
    figures = seen["figures"]
    assert [f["id"] for f in figures] == ["plot-convergence", "plot-heatmap-cosface"]
    for figure in figures:
        assert figure["plotly"], figure
        assert figure["width"] > 300 and figure["height"] > 300, figure
        assert figure["svgWidth"] > 300 and figure["svgHeight"] > 300, figure
        assert figure["traces"] > 0, figure

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-screenshot.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(["--virtual-time-budget=10000", "--hide-scrollbars",
                         f"--screenshot={screenshot}", page.as_uri()],
                        tmp_path / "profile-shot")
    assert screenshot.exists(), shot.stderr[-3000:]
    assert screenshot.stat().st_size > 50_000
    with Image.open(screenshot) as image:
        assert image.size == (1280, 3000)


@pytest.mark.slow
@needs_chromium
def test_no_verdict_matrix_column_collapses_at_1000_px(tmp_path: Path) -> None:
    # Six settings × three heads: more columns than 1,000 px hold at their natural width
    # next to the claims' text; the table scrolls instead of squeezing a column.
    groups = [(f"C = {c}, D = 32 [variant-{c}]", 3) for c in (20, 100, 1000, 4000, 10000, 20000)]
    heads = ["normface", "adacos-fixed", "adacos-dynamic"] * 6
    row = model.MatrixRow("C7", "AdaCos converges faster (θ_med falls sooner) " * 3,
                          "inconclusive", "measured",
                          [[model.Chip("inconclusive", "+12 steps", "vs cosface")]
                           for _ in heads])
    report = model.Report(study="wide", subtitle="", verdicts=[], sections=[],
                          matrix=model.VerdictMatrix(groups, heads, [row] * 10))
    page = html_report.write_html(report, tmp_path / "wide")
    seen, stderr = probe_page(page, tmp_path, width=1000)
    assert_clean(seen, stderr)
    assert len(seen["matrixCells"]) == 1 + 1 + 6 + 18 + 10 * (2 + 18)
    assert min(seen["matrixCells"]) >= 60, sorted(seen["matrixCells"])[:5]


# --------------------------------------------------------------------------- a run's figures
#
# The report's own figures (`content`), of a run folder written as an engine would write
# it, without training: the grids, seeds and AdaCos results of a real CPU study, with
# values where the figures used to overprint (a 5 × 4 grid, AdaCos fixed and dynamic
# 0.003 apart, one normface scale far above the rest in ln B_avg / ln(C − 1)).

GRIDS = {  # head: (scales, margins)
    "cosface": ([4.0, 8.0, 16.0, 32.0, 64.0], [0.05, 0.2, 0.35, 0.5]),
    "arcface": ([4.0, 8.0, 16.0, 32.0, 64.0], [0.1, 0.3, 0.5, 0.7]),
    "normface": ([2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0], [None]),
    "adacos-fixed": ([None], [None]),
    "adacos-dynamic": ([None], [None]),
}
VARIANTS = {  # variant: (C, heads with their grids, AdaCos fixed and dynamic)
    "main": (100, GRIDS, (0.907, 0.909)),
    "images": (100, {"cosface": ([8.0, 32.0], [0.1, 0.35]), "adacos-fixed": ([None], [None]),
                     "adacos-dynamic": ([None], [None])}, (0.777, 0.7743)),
    "c20": (20, {"normface": GRIDS["normface"], "adacos-fixed": ([None], [None])},
            (0.87, 0.87)),
}
SEEDS = 3


def _accuracy(head: str, s: float | None, m: float | None, adacos: tuple[float, float]
              ) -> float:
    """A smooth surface with its best near s = 16, m = 0.2, 0.88 at s = 64, m small,
    around the AdaCos results."""
    if s is None:
        return adacos[0] if head == "adacos-fixed" else adacos[1]
    return adacos[1] + 0.004 - 0.006 * math.log2(s / 16) ** 2 - 0.02 * ((m or 0.2) - 0.2) ** 2


def write_synthetic_run(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    run = folder / "run"
    (run).mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"study": "synthetic", "spec": {
        "study": {"name": "synthetic", "metric": "verification_accuracy"},
        "data": {"name": "synthetic"}}}))
    steps = list(range(10, 110, 10))
    for variant, (C, heads, adacos) in VARIANTS.items():
        for head, (scales, margins) in heads.items():
            for s in scales:
                for m in margins:
                    mean = _accuracy(head, s, m, adacos)
                    for seed in range(SEEDS):
                        # One seed of the largest scale diverged: a "lost" cell.
                        lost = head == "cosface" and s == 64.0 and m == 0.5 and seed == 2
                        test = float(mean + rng.normal(0, 0.003))
                        scale = s if s is not None else 6.5 + 0.5 * rng.random()
                        ratio = (7.0 + rng.random()) if s == 64.0 and head == "normface" \
                            else 1.1 + 0.05 * rng.random()
                        series = [{"step": k, "loss": 3.0 / (1 + k / 20), "s": scale,
                                   "theta_med_rad": 1.4 - 0.8 * k / 100,
                                   "p_target_mean": min(0.99, 0.2 + 0.7 * k / 100),
                                   "ln_b_avg": ratio * math.log(C - 1),
                                   "val_accuracy": test - 0.02 * (1 - k / 100)}
                                  for k in steps]
                        store.write_trial_record(run, {
                            "key": store.trial_key(head, s, m, seed, variant),
                            "number": None, "variant": variant, "num_classes": C,
                            "embedding_dim": 64, "head": head, "s": s, "m": m,
                            "seed": seed, "state": "diverged" if lost else "complete",
                            "steps": steps[-1], "epochs": 1.0, "error": None,
                            "diverged_step": 40 if lost else None,
                            "diverged_reason": "loss is not finite" if lost else None,
                            "metrics": {} if lost else {
                                "verification_accuracy": test,
                                "val_accuracy": float(test + rng.normal(0, 0.002))},
                            "steps_to_theta_med": {}, "series": series[:4] if lost else series})
    store.consolidate(run)
    return run


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("figures"))


@pytest.fixture(scope="module")
def run_figures(synthetic_run) -> dict[str, model.Figure]:
    """Every figure of the report of the synthetic run, by id."""
    from adastudy.report import content

    return {f.id: f for s in content.build(synthetic_run).sections for f in s.figures}


def test_heatmap_cells_hold_the_mean_only_and_the_hover_the_rest(run_figures) -> None:
    for figure_id in ("heatmaps", "heatmaps-images"):
        for panel in run_figures[figure_id].panels:
            heat = panel.heatmap
            cells = [c for row in heat.text for c in row]
            # "0.898 ±0.004 (1 lost)" ran into the next cell: the mean, * and ◆ only.
            assert max(len(c) for c in cells) <= len("0.898*◆"), cells
            assert "±" not in "".join(cells)
            assert all("mean" in c for row in heat.hover for c in row)
    lost = run_figures["heatmaps"].panels[0].heatmap  # cosface s = 64, m = 0.5
    assert lost.text[-1][-1].endswith("*") and "1 diverged" in lost.hover[-1][-1]


def test_the_recommendation_under_the_heatmaps_is_the_pick_of_c9(synthetic_run,
                                                                  run_figures) -> None:
    from adastudy import claims
    from adastudy.claims import Evidence

    ev = Evidence.from_run(synthetic_run)
    c9 = next(v for v in claims.evaluate_evidence(ev) if v.claim_id == "C9")
    for variant, figure_id in (("main", "heatmaps"), ("images", "heatmaps-images")):
        notes = run_figures[figure_id].notes
        heads = [p.heatmap and p.title.split(" ")[0] for p in run_figures[figure_id].panels]
        assert len(notes) == len(heads)
        for head, note in zip(heads, notes, strict=True):
            grid = claims.configs(ev, variant, [head])
            best = claims.pick_best(ev, grid).config
            # The configuration C9 compared AdaCos with, chosen on validation.
            assert best.label in {p.versus for p in c9.parts if p.variant == variant}
            assert note.startswith(f"If you tune {head}: s = {best.s:g}, m = {best.m:g} ◆")

            def val(c):
                return float(np.mean(list(c.outcomes(ev, claims.SELECTION_METRIC).values())))

            plateau = [c for c in grid if c is not best
                       and val(c) >= val(best) - claims.NEGLIGIBLE]
            assert f"{len(plateau)} other configuration" in note
            for c in plateau:
                assert f"s = {c.s:g}, m = {c.m:g} ({val(c):.4f})" in note
            # The chosen cell is marked in the heatmap.
            panel = next(p for p in run_figures[figure_id].panels if p.title.startswith(head))
            marked = [(i, j) for i, row in enumerate(panel.heatmap.text)
                      for j, c in enumerate(row) if "◆" in c]
            assert marked == [(panel.heatmap.y_labels.index(f"{best.m:g}"),
                               panel.heatmap.x_labels.index(f"{best.s:g}"))]


def test_convergence_shows_the_answers_best_and_worst_tuned(synthetic_run,
                                                            run_figures) -> None:
    from adastudy import claims
    from adastudy.claims import Evidence

    ev = Evidence.from_run(synthetic_run)
    answer = claims.answers(ev)[0]
    names = {t.name for p in run_figures["convergence"].panels for t in p.traces}
    assert f"best tuned: {answer.tuned.label}" in names
    assert f"worst: {answer.worst_tuned.label}" in names


def test_ln_b_is_on_a_log_axis_with_distinct_bands(run_figures) -> None:
    panel = run_figures["ln-b-ratio"].panels[0]
    # normface s = 64 sits at 7 to 8: on a linear axis AdaCos and the bands lay flat.
    assert panel.y_log and "log" in panel.y_title
    assert len({h.dash for h in panel.hlines}) == len(panel.hlines) == 3
    from adastudy.report.static import _draw

    figure = _draw(run_figures["ln-b-ratio"])
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()
              if line.get_label().startswith("B =")}
    assert len(styles) == 3 and len(set(styles.values())) == 3, styles


def test_adacos_vs_tuned_has_a_legend_that_says_something(run_figures) -> None:
    panel = run_figures["adacos-vs-tuned"].panels[0]
    assert [t.name for t in panel.traces] == ["untuned AdaCos",
                                              "best tuned (chosen on validation)"]
    assert panel.traces[0].x_labels == ["adacos-fixed", "adacos-dynamic"]
    assert len({t.color for t in panel.traces}) == 2


def _text_boxes(figure) -> list[tuple[str, object]]:
    """Every visible, non-empty text of a drawn matplotlib figure with its box (px)."""
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in figure.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_window_extent(renderer).width]


@pytest.mark.parametrize("figure_id", ["heatmaps", "heatmaps-images"])
def test_png_heatmap_labels_do_not_overprint_and_bars_sit_by_their_panels(
        run_figures, figure_id) -> None:
    from adastudy.report.static import _draw

    figure = _draw(run_figures[figure_id])
    figure.canvas.draw()
    boxes = _text_boxes(figure)
    assert sum(1 for text, _ in boxes if text[:2] in ("0.", "—")) >= 4  # cell labels drawn
    clash = [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
             if box_a.overlaps(box_b) and
             min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 1 and
             min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 1]
    assert clash == []
    for ax in figure.axes:
        if not ax.images:
            continue
        panel = ax.get_window_extent()
        bar = ax.images[0].colorbar.ax.get_window_extent()
        # Right of its own panel, a few pixels off, at the panel's height.
        assert 0 <= bar.x0 - panel.x1 <= 25, (bar.x0, panel.x1)
        assert abs(bar.y0 - panel.y0) < 5 and abs(bar.y1 - panel.y1) < 5
    # The marks are named once under each panel's title, not on the colour bar.
    titles = [ax.get_title() for ax in figure.axes if ax.images]
    assert all("AdaCos fixed" in t and "AdaCos dynamic" in t for t in titles)


@pytest.mark.slow
@needs_chromium
def test_no_label_of_the_figures_overprints_in_chromium_at_1000_px(
        tmp_path: Path, run_figures) -> None:
    from chromium import overlaps, overprinted

    from adastudy.report.interactive import legend_entries

    ids = ["heatmaps", "heatmaps-images", "theory", "ln-b-ratio", "scale-vs-classes",
           "adacos-vs-tuned", "convergence"]
    report = model.Report(study="figures", subtitle="", verdicts=[], sections=[
        model.Section(id="figures", title="Figures", figures=[run_figures[i] for i in ids])])
    page = html_report.write_html(report, tmp_path / "report")
    seen, stderr = probe_page(page, tmp_path, width=1000)
    assert_clean(seen, stderr)
    layouts = seen["layouts"]
    for figure_id in ids:
        texts = layouts[f"plot-{figure_id}"]["texts"]
        assert len(texts) > 10, figure_id
        assert overprinted(texts) == [], figure_id
    # The heatmaps' cell labels are drawn (the font fits the cells; it is not dropped).
    cells = [t for t in layouts["plot-heatmaps"]["texts"] if re.fullmatch(r"0\.\d{3}\*?◆?",
                                                                          t["text"])]
    assert len(cells) == 2 * 20
    # The theory panel: one legend per panel, listing that panel's lines, none scrolled,
    # none over a plotting area.
    theory = layouts["plot-theory"]
    legends = sorted(theory["legends"], key=lambda g: g["x"])
    panels = run_figures["theory"].panels
    assert [g["entries"] for g in legends] == [legend_entries(p) for p in panels]
    for legend in legends:
        assert legend["scrollbar"] == [0, 0], legend
        assert not any(overlaps(legend, area) for area in theory["plots"]), legend
    # The convergence figure's panels show the same configurations: one shared legend.
    assert len(layouts["plot-convergence"]["legends"]) == 1
