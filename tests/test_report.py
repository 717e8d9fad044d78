"""`adastudy report` on a real (small) run folder: every claim gets a verdict, every
figure the Markdown links to exists, failed and diverged trials do not stop it, text
from the run is escaped, and bad input changes nothing on disk."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from chromium import ARTIFACTS, assert_clean, needs_chromium, probe_page, run_chromium
from typer.testing import CliRunner

from adastudy import claims, store
from adastudy import report as reports
from adastudy.cli import app
from adastudy.report import content

SPEC = """
[study]
name = "tiny-report"
seeds = [0, 1]

[heads.cosface]
s = [8.0, 32.0]
m = [0.1, 0.4]

[heads.normface]
s = [2.0, 8.0, 32.0]

[heads.adacos-fixed]

[heads.adacos-dynamic]

[data]
identities = 20
images_per_identity = 8
eval_identities = 20
eval_images_per_identity = 6
val_pairs = 100
test_pairs = 200
distractors = 20
feature_dim = 16

[model]
hidden = [32]
embedding_dim = 16

[train]
epochs = 2
batch_size = 32
lr = 0.05
log_every = 2

[variants.c40]
data = { identities = 40 }
heads = ["normface", "adacos-fixed"]
"""

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real sweep, plus a failed and a diverged trial written as an engine would."""
    folder = tmp_path_factory.mktemp("report")
    spec_path = folder / "tiny.toml"
    spec_path.write_text(SPEC)
    run = folder / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    base = {"number": None, "variant": "main", "num_classes": 20, "s": 64.0, "m": 0.9,
            "steps": 3, "epochs": 0.1, "metrics": {}, "steps_to_theta_med": {},
            "series": []}
    store.write_trial_record(run, {
        **base, "key": store.trial_key("arcface", 64.0, 0.9, 0), "head": "arcface", "seed": 0,
        "state": "failed", "error": f"RuntimeError: {HOSTILE} | `x` </td>"})
    store.write_trial_record(run, {
        **base, "key": store.trial_key("arcface", 64.0, 0.9, 1), "head": "arcface", "seed": 1,
        "state": "diverged", "diverged_step": 3, "diverged_reason": "loss is not finite"})
    store.consolidate(run)
    return run


def test_every_claim_gets_a_verdict_with_its_evidence(run_dir):
    report = content.build(run_dir)
    assert [v.claim_id for v in report.verdicts] == list(claims.CLAIMS)
    assert all(v.verdict in claims.VERDICTS and v.reason for v in report.verdicts)
    figures = {f.id for s in report.sections for f in s.figures}
    assert {"heatmaps", "convergence", "theory", "probability", "ln-b-ratio",
            "scale-vs-classes", "adacos-vs-tuned", "convergence-c40"} <= figures
    assert all(v.figure_id is None or v.figure_id in figures for v in report.verdicts)
    # the two numbers of classes make C4 testable; variant c40 has no margin head
    by_id = {v.claim_id: v for v in report.verdicts}
    assert by_id["C4"].verdict != "not tested"
    assert "heatmaps-c40" not in figures


def test_the_heatmap_is_the_leaderboard_over_s_and_m(run_dir):
    report = content.build(run_dir)
    heatmap = next(f for s in report.sections for f in s.figures if f.id == "heatmaps")
    panel = heatmap.panels[0].heatmap
    assert panel.x_labels == ["8", "32"] and panel.y_labels == ["0.1", "0.4"]
    trials, _ = store.load_tables(run_dir)
    board = store.leaderboard(trials, "verification_accuracy")
    row = board[(board["head"] == "cosface") & (board["s"] == 32.0) & (board["m"] == 0.1)]
    assert panel.z[0][1] == pytest.approx(float(row["mean"].iloc[0]))
    assert set(panel.marks) == {"AdaCos fixed", "AdaCos dynamic"}


def test_the_problem_table_lists_failed_and_diverged_trials_with_reasons(run_dir):
    report = content.build(run_dir)
    problems = next(s for s in report.sections if s.id == "problems").tables[0]
    reasons = {row[1]: row[2] for row in problems.rows}
    assert HOSTILE in reasons["failed"]
    assert reasons["diverged"] == "loss is not finite (step 3)"


def test_report_command_writes_html_and_markdown(run_dir, tmp_path):
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(Path(p).name for p in payload["files"]) == ["index.html", "report.md"]
    assert [v["claim"] for v in payload["verdicts"]] == list(claims.CLAIMS)
    # The answer box's numbers, and every verdict's parts, for scripts.
    answer = payload["answer"]
    assert answer["sentence"].startswith("On this data (C = 20, D = 16)")
    assert answer["adacos"]["head"] in ("adacos-fixed", "adacos-dynamic")
    assert answer["tuned"]["head"] in ("normface", "cosface")
    low, high = answer["difference"]["interval"]
    assert low <= answer["difference"]["estimate"] <= high
    assert {a["variant"] for a in answer["variants"]} == {"main", "c40"}
    keys = {"head", "variant", "num_classes", "embedding_dim", "verdict", "estimate",
            "interval", "n_runs", "n_diverged"}
    parts = [p for v in payload["verdicts"] for p in v["parts"]]
    assert parts and all(keys <= set(p) for p in parts)
    c10 = next(v for v in payload["verdicts"] if v["claim"] == "C10")
    assert {(p["head"], p["variant"]) for p in c10["parts"]} == {
        ("adacos-fixed", "main"), ("adacos-dynamic", "main"), ("adacos-fixed", "c40")}
    assert all(p["embedding_dim"] == 16 and p["n_runs"] == 2 for p in c10["parts"])
    assert {p["num_classes"] for p in c10["parts"]} == {20, 40}

    markdown = (out / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", markdown)
    assert len(links) >= 8
    for link in links:
        assert (out / link).is_file() and (out / link).stat().st_size > 1000, link
    assert HOSTILE not in markdown  # the failed trial's error is escaped

    page = (out / "index.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # offline: no external script, stylesheet or image (plotly.js itself is inlined; URLs
    # inside its code, for geo maps that a report never draws, are never fetched)
    assert not re.search(r"""<(script|link|img)[^>]*(src|href)\s*=\s*["']?https?:""", page)


def test_a_study_named_like_a_script_shows_as_text(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = store.read_manifest(run)
    manifest["spec"]["study"]["name"] = HOSTILE
    store.write_manifest(run, manifest)
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "o"),
                                      "--format", "html"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "o" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert not (tmp_path / "o" / "report.md").exists()  # only the format asked for


def test_the_default_folder_is_inside_the_run_whatever_the_study_is_called(run_dir, tmp_path,
                                                                         monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = store.read_manifest(run)
    manifest["spec"]["study"]["name"] = "../../etc/x"
    store.write_manifest(run, manifest)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", str(run), "--format", "md"])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("report.md"))
    assert written == [Path("run/report/report.md")]
    source = json.loads((run / "report" / "source.json").read_text())
    assert source["run_dir"] == str(run.resolve())
    assert source["spec_digest"] == manifest["spec_digest"]


def _two_runs_of_one_study(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two run folders of the same study (same name, same spec), started at two times."""
    first, second = tmp_path / "a" / "quick", tmp_path / "b" / "quick"
    shutil.copytree(run_dir, first)
    shutil.copytree(run_dir, second)
    manifest = store.read_manifest(second)
    manifest["started_at"] = "2030-01-01T00:00:00+00:00"
    store.write_manifest(second, manifest)
    return first, second


def test_reports_of_two_runs_of_one_study_do_not_mix(run_dir, tmp_path):
    first, second = _two_runs_of_one_study(run_dir, tmp_path)
    shared = tmp_path / "reports"
    md = ["--format", "md"]  # the folder logic does not depend on the format
    assert CliRunner().invoke(app, ["report", str(first), "--out", str(shared),
                                    *md]).exit_code == 0
    before = {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()}
    # The same run again may replace its own report without --force (checked before
    # the report is built: `preflight`).
    assert reports.preflight(first, shared) == shared
    refused = CliRunner().invoke(app, ["report", str(second), "--out", str(shared)])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1
    assert "holds the report of run" in refused.stderr and "--force" in refused.stderr
    assert {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()} == before
    assert json.loads((shared / "source.json").read_text())["run_dir"] == str(first.resolve())
    forced = CliRunner().invoke(app, ["report", str(second), "--out", str(shared), "--force",
                                      *md])
    assert forced.exit_code == 0, forced.output
    assert json.loads((shared / "source.json").read_text())["run_dir"] == str(second.resolve())
    # A moved run folder is still the same run (its spec digest and start time).
    moved = tmp_path / "moved"
    shutil.move(str(second), moved)
    assert reports.preflight(moved, shared) == shared
    with pytest.raises(reports.ReportError, match="holds the report of run"):
        reports.preflight(first, shared)


def test_a_folder_with_a_report_of_unknown_origin_is_refused(run_dir, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "index.html").write_text("an old report")
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 2 and "unknown run" in result.stderr
    assert (out / "index.html").read_text() == "an old report"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "pdf"], "--format: choose from html, md"),
    (["--format", ""], "--format: choose from html, md"),
])
def test_bad_options_are_one_line_and_write_nothing(run_dir, tmp_path, args, message):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert not (tmp_path / "o").exists()


def test_an_output_path_that_is_a_file_is_one_line(run_dir, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(target)])
    assert result.exit_code == 2 and "not a folder" in result.stderr
    assert target.read_text() == "keep"


@pytest.mark.slow
@needs_chromium
def test_the_real_report_renders_offline_in_chromium(run_dir, tmp_path):
    out = tmp_path / "rep"
    reports.render(run_dir, out, "html")
    seen, stderr = probe_page(out / "index.html", tmp_path)
    assert_clean(seen, stderr)
    figures = {f.id for s in content.build(run_dir).sections for f in s.figures}
    assert sorted(f["id"] for f in seen["figures"]) == sorted(f"plot-{i}" for i in figures)
    for figure in seen["figures"]:
        assert figure["plotly"] and figure["svgWidth"] > 300 and figure["svgHeight"] > 200, \
            figure
        assert figure["traces"] > 0, figure
    # At a 1,000 px window no column of the verdict matrix collapses.
    (tmp_path / "narrow").mkdir()
    narrow, _ = probe_page(out / "index.html", tmp_path / "narrow", width=1000)
    assert len(narrow["matrixCells"]) > 30
    assert min(narrow["matrixCells"]) >= 60, sorted(narrow["matrixCells"])[:5]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-real-screenshot.png"
    screenshot.unlink(missing_ok=True)
    run_chromium(["--virtual-time-budget=10000", "--hide-scrollbars",
                  f"--screenshot={screenshot}", (out / "index.html").as_uri()],
                 tmp_path / "profile-shot")
    assert screenshot.is_file() and screenshot.stat().st_size > 50_000


REPO = Path(__file__).resolve().parents[1]


def test_the_committed_worked_example_opens_with_the_answer_and_the_readme_matches_it():
    markdown = (REPO / "reports" / "claims-cpu" / "report.md").read_text(encoding="utf-8")
    page = (REPO / "reports" / "claims-cpu" / "index.html").read_text(encoding="utf-8")
    assert markdown.index("## The answer") < markdown.index("## Verdicts") < \
        markdown.index("## The claims in detail") < markdown.index("## Leaderboard")
    assert page.index('id="answer"') < page.index('class="verdict-matrix"') < \
        page.index('id="claim-C1"')
    verdicts = dict(re.findall(r"^\| \[\*\*(C\d+)\*\*\].*? \| \S+ \*\*([a-z ]+)\*\* \|",
                               markdown, flags=re.M))
    assert list(verdicts) == list(claims.CLAIMS)
    # The README's summary of the worked example says the same verdict for each claim.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = readme[readme.index("What it found:"):readme.index("What changed from")]
    said: dict[str, str] = {}
    for block in re.split(r"^- \*\*", found, flags=re.M)[1:]:
        verdict = block.split(".**", 1)[0].lower()
        for claim_id in re.findall(r"\((C\d+)\b", block) + re.findall(r"^  - (C\d+):", block,
                                                                        flags=re.M):
            said.setdefault(claim_id, verdict)
    assert said == verdicts


def test_a_claim_registered_without_a_chip_format_still_gets_its_chip(tmp_path):
    from adastudy.claims import Part
    from adastudy.report.verdicts import _chip

    chip = _chip("C99", Part("main", "adacos-fixed", "x", verdict="supported", estimate=0.1234))
    assert (chip.verdict, chip.text) == ("supported", "0.123")


def test_a_verdict_links_to_the_figure_of_the_variant_that_decided_it():
    from adastudy.claims import Part, Verdict
    from adastudy.report.verdicts import verdict_rows

    parts = (Part("main", "adacos-dynamic", "fine here", verdict="supported"),
             Part("c1000", "adacos-dynamic", "fails here", verdict="not supported"),
             Part("images", "adacos-dynamic", "no figure there", verdict="supported"))
    verdict = Verdict("C5", "not supported", "why", figure="ln-b", parts=parts)
    shown = {"ln-b", "ln-b-c1000"}
    [row] = verdict_rows([verdict], shown)
    assert row.figure_id == "ln-b-c1000"           # the part that decided it
    assert row.part_figures == ["ln-b", "ln-b-c1000", "ln-b"]  # images falls back to main
    [row] = verdict_rows([verdict], set())
    assert row.figure_id is None and row.part_figures == [None, None, None]
    from adastudy.report.markdown import _claim_details

    lines = _claim_details(verdict_rows([verdict], shown)[0], shown)
    assert any("**not supported**" in ln and "(#fig-ln-b-c1000)" in ln for ln in lines)
    assert "- fine here · [figure](#fig-ln-b)" in lines
    assert "- fails here" in lines  # its figure is the claim's own link already


def test_the_manifest_reads_as_a_table_with_the_json_folded(run_dir, tmp_path):
    reports.render(run_dir, tmp_path / "r", "html,md")
    text = (tmp_path / "r" / "report.md").read_text()
    manifest = text.split("## Run manifest", 1)[1]
    table, folded = manifest.split("<details>", 1)
    for row in ("| study |", "| versions |", "| device |", "| git commit |"):
        assert row in table
    assert "torch 2" in table and '"spec_digest"' not in table
    assert '"spec_digest"' in folded
    page = (tmp_path / "r" / "index.html").read_text()
    assert '<table class="manifest-summary">' in page
    assert re.search(r'<details class="manifest"><summary>[^<]*</summary>\s*<pre', page)
    assert "../shared" not in text and "../shared" not in page


def test_the_leaderboard_marks_the_configuration_chosen_on_validation(run_dir):
    from adastudy.claims import Evidence, configs, pick_best

    report = content.build(run_dir)
    [table] = [t for s in report.sections if s.id == "leaderboard" for t in s.tables
               if t.caption == "cosface"]
    marked = [row for row in table.rows if any("◆ chosen" in cell for cell in row)]
    ev = Evidence.from_run(run_dir)
    chosen = pick_best(ev, configs(ev, "main", ["cosface"])).config
    assert len(marked) == 1
    assert (marked[0][0], marked[0][1]) == (f"{chosen.s:g}", f"{chosen.m:g}")
