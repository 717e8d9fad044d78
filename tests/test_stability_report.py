"""The report's stability section (claim C10): the map over (C, D), its theory line and
the runs figure, on hand-made run folders whose cells are known."""

from __future__ import annotations

import math

import pytest

from adastudy import store, theory
from adastudy.claims import Evidence
from adastudy.report import content
from adastudy.report.stability import boundary_columns, stability_figures


def _run(head: str, seed: int, variant: str, C: int, D: int, *, diverged: bool = False,
         margin: float = 1.5, slope: float = 0.6) -> dict:
    windows = [{"step": 5 * (i + 1), "s": 15.0 + i, "theta_med_rad": 1.5, "loss": 5.0,
                "d_eff": 30.0 + i, "stability_margin": margin + 0.1 * i,
                "update_slope": slope + 0.01 * i} for i in range(3)]
    metrics = {} if diverged else {"verification_accuracy": 0.9, "val_accuracy": 0.9}
    return {"key": store.trial_key(head, None, None, seed, variant), "number": 0,
            "variant": variant, "num_classes": C, "embedding_dim": D, "head": head,
            "s": None, "m": None, "seed": seed,
            "state": "diverged" if diverged else "complete", "error": None, "steps": 15,
            "epochs": 1.0, "metrics": metrics, "steps_to_theta_med": {},
            "diverged_reason": "scale s is not finite or > 1e+04" if diverged else None,
            "diverged_by": "observed" if diverged else None,
            "diverged_step": 15 if diverged else None, "series": windows}


# (variant, C, D, seeds diverged of 2, lowest margin)
CELLS = [("main", 100, 32, 0, 1.2), ("c100-d128", 100, 128, 0, 2.0),
         ("c4000-d32", 4000, 32, 2, 0.8), ("c4000-d128", 4000, 128, 1, 1.1),
         ("c4000-d32-nobn", 4000, 32, 2, 0.3)]


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    for variant, C, D, bad, margin in CELLS:
        for seed in range(2):
            store.write_trial_record(run, _run("adacos-dynamic", seed, variant, C, D,
                                               diverged=seed < bad, margin=margin,
                                               slope=1.2 if seed < bad else 0.6))
            store.write_trial_record(run, _run("adacos-fixed", seed, variant, C, D))
    store.consolidate(run)
    return run


def test_the_map_holds_one_cell_per_c_and_d_with_the_share_diverged(run_dir):
    ev = Evidence.from_run(run_dir)
    figures = {f.id: f for f in stability_figures(ev)}
    heatmap = figures["stability-map"].panels[0].heatmap
    assert heatmap.y_labels == ["100", "4000"] and heatmap.x_labels == ["32", "128"]
    assert heatmap.z == [[0.0, 0.0], [1.0, 0.5]] and heatmap.z_range == (0.0, 1.0)
    # First line: diverged/seeds; second: the lowest d_eff against its bound.
    assert heatmap.text[1][0].split("\n")[0] == "2/2"
    assert heatmap.text[1][0].split("\n")[1] == f"30 < {30 / 0.8:.0f}"
    assert heatmap.text[0][1].split("\n")[1] == f"30 ≥ {30 / 2.0:.0f}"
    # The variant on a cell the map already shows is named under it, not dropped.
    notes = figures["stability-map"].notes
    assert any("[c4000-d32-nobn]" in n and "2 of 2 seeds diverged" in n for n in notes)
    # The theory's line: per row C, at the column where D = 4 ln(C − 1).
    (line,) = heatmap.lines
    expected = boundary_columns([theory.min_stable_effective_dim(C) for C in (100, 4000)],
                                [32, 128])
    assert line.x == [expected[0], expected[0], expected[1], expected[1]]
    assert line.y == [-0.5, 0.5, 0.5, 1.5]


def test_the_runs_figure_has_scale_margin_and_slope_per_c(run_dir):
    ev = Evidence.from_run(run_dir)
    runs = {f.id: f for f in stability_figures(ev)}["stability-runs"]
    titles = [p.title for p in runs.panels]
    assert titles == [f"{what}, C = {C}" for what in
                      ("scale s", "d_eff / d_eff_min", "slope of the scale update")
                      for C in (100, 4000)]
    names = [t.name for t in runs.panels[1].traces]  # the scale at C = 4000
    assert names == ["D = 32", "D = 32 [c4000-d32-nobn]", "D = 128"]
    # s from 15 to 17: no log axis (it would leave one tick); the margin panels: bound 1.
    assert not runs.panels[0].y_log and [h.y for h in runs.panels[3].hlines] == [1.0]


def test_the_boundary_runs_on_cell_edges_left_of_it_the_dims_below_the_bound():
    dims = [32, 64, 128, 512]
    # 4 ln(C − 1): 18.4 (C = 100), 33.2 (C = 4000), 36.8 (C = 10000), 46.1 (C = 10^5).
    bounds = [theory.min_stable_effective_dim(C) for C in (100, 4000, 10_000, 100_000)]
    assert boundary_columns(bounds, dims) == [-0.5, 0.5, 0.5, 0.5]
    assert boundary_columns([32.0, 33.0, 600.0, math.inf], dims) == [-0.5, 0.5, 3.5, 3.5]


def test_the_report_draws_the_map_and_c10_links_to_it(run_dir):
    report = content.build(run_dir)
    section = next(s for s in report.sections if s.id == "stability")
    assert [f.id for f in section.figures] == ["stability-map", "stability-runs"]
    c10 = next(v for v in report.verdicts if v.claim_id == "C10")
    assert c10.figure_id == "stability-map"
    assert "C = 4000: diverged at D = 32 (2 of 2), 128 (1 of 2)" in c10.reason
    assert report.answer is not None
    assert ("Divergence over the whole study: adacos-fixed none of 10; adacos-dynamic 5 "
            "of 10 runs (50%), in 3 of 5 settings.") in report.answer.notes


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_the_committed_stability_report_shows_the_map_and_the_readme_matches_it():
    folder = REPO / "reports" / "stability"
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert (folder / "figures" / "stability-map.png").is_file()
    assert (folder / "figures" / "stability-runs.png").is_file()
    assert markdown.index("## Where dynamic AdaCos is stable (claim C10)") < \
        markdown.index("## Convergence")
    # The theory's boundary is drawn over the interactive map (a path shape, from the
    # bottom-left corner: C = 100 has no D below its bound).
    import re

    assert 'id="fig-stability-map"' in page
    assert re.search(r'"type": ?"path"', page) and '"path":"M -0.5,-0.5 L' in page
    c10 = re.search(r"^\| \[\*\*C10\*\*\].*? \| \S+ \*\*([a-z ]+)\*\* \|", markdown, re.M)
    assert c10 and c10.group(1) == "not supported"
    rate = re.search(r"adacos-dynamic (\d+) of (\d+) runs \(\d+%\), in (\d+) of (\d+) "
                     r"settings", markdown)
    assert rate, "the answer box states the divergence rate"
    diverged, runs, settings, of = rate.groups()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The stability map"):readme.index("### Comparing runs")]
    assert f"diverged in {diverged} of {runs} runs, in {settings} of {of} settings" in section
    assert "Not tested beyond these settings." in markdown
