"""`adastudy compare`: several run folders in one report, the first the baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from chromium import assert_clean, needs_chromium, probe_page
from tiny_study import write_spec
from typer.testing import CliRunner

from adastudy import store
from adastudy.cli import app


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny study trained one epoch (a) and two epochs (b): "A against B"."""
    folder = tmp_path_factory.mktemp("compare")
    runs = []
    for name, epochs in (("a", 1), ("b", 2)):
        spec = write_spec(folder, epochs=epochs, name=f"{name}.toml")
        run = folder / name
        result = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(run), "--json"])
        assert result.exit_code == 0, result.output
        runs.append(run)
    return runs[0], runs[1]


def _best_mean(trials: pd.DataFrame, head: str, metric: str) -> tuple[str, float]:
    """The head's configuration with the best mean validation accuracy (ties: smaller
    s) and its mean test metric, computed here from the table."""
    rows = trials[(trials["head"] == head) & (trials["state"] == "complete")]
    by = rows.groupby(["s", "m"], dropna=False)
    val = by["val_accuracy"].mean().reset_index()
    val = val.sort_values(["val_accuracy", "s"], ascending=[False, True])
    s, m = val.iloc[0]["s"], val.iloc[0]["m"]
    def same(column: pd.Series, value: float) -> pd.Series:
        return (column == value) | (column.isna() & pd.isna(value))

    chosen = rows[same(rows["s"], s) & same(rows["m"], m)]
    return f"{s:g}", float(chosen[metric].mean())


def test_compare_two_runs_writes_one_report_with_the_deltas(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(Path(p).name for p in data["files"]) == ["index.html", "report.md"]
    assert data["baseline"] == "a" and [r["label"] for r in data["runs"]] == ["a", "b"]
    assert len(data["verdicts"]) == 10
    for row in data["verdicts"]:
        assert row["changed"] == (row["verdicts"]["a"] != row["verdicts"]["b"])
    ta, _ = store.load_tables(a)
    tb, _ = store.load_tables(b)
    best = {row["head"]: row for row in data["best"]}
    assert set(best) == {"cosface", "adacos-fixed"}
    for head, row in best.items():
        s_a, mean_a = _best_mean(ta, head, "verification_accuracy")
        s_b, mean_b = _best_mean(tb, head, "verification_accuracy")
        assert row["runs"]["a"]["mean"] == pytest.approx(mean_a)
        assert row["runs"]["b"]["mean"] == pytest.approx(mean_b)
        assert row["delta"]["b"]["value"] == pytest.approx(mean_b - mean_a)
        low, high = row["delta"]["b"]["interval"]
        assert low <= mean_b - mean_a <= high
        if head == "cosface":
            assert f"s={s_a}" in row["runs"]["a"]["config"]
    text = (out / "report.md").read_text()
    assert "## Verdict matrix: a" in text and "## Verdict matrix: b" in text
    assert "| b − a |" in text or "b − a" in text
    page = (out / "index.html").read_text()
    assert page.count('class="verdict-matrix"') == 2
    source = json.loads((out / "source.json").read_text())
    assert [r["run_dir"] for r in source["runs"]] == [str(a.resolve()), str(b.resolve())]


def test_a_comparison_refuses_another_report_in_its_folder(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp"
    assert CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out),
                                    "--format", "md"]).exit_code == 0
    # The same comparison replaces itself; the other order is another comparison.
    assert CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out),
                                    "--format", "md"]).exit_code == 0
    refused = CliRunner().invoke(app, ["compare", str(b), str(a), "--out", str(out)])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert not (out / "index.html").exists()


def test_the_default_folder_is_beside_the_first_run(two_runs, tmp_path):
    a, b = (tmp_path / "x" / "a", tmp_path / "y" / "b")
    shutil.copytree(two_runs[0], a)
    shutil.copytree(two_runs[1], b)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "compare-a-vs-b" / "report.md").is_file()


def test_two_folders_of_one_name_are_told_apart(two_runs, tmp_path):
    a, b = (tmp_path / "one" / "quick", tmp_path / "two" / "quick")
    shutil.copytree(two_runs[0], a)
    shutil.copytree(two_runs[1], b)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out",
                                      str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in json.loads(result.stdout)["runs"]] == ["one/quick",
                                                                       "two/quick"]


@pytest.mark.parametrize(("which", "message"), [
    ("one", "two or more run folders"),
    ("twice", "given twice"),
    ("missing", "no such folder"),
    ("metric", "different metrics"),
])
def test_bad_comparisons_are_one_line_and_write_nothing(two_runs, tmp_path, which, message):
    a, b = two_runs
    args = {"one": [a], "twice": [a, a], "missing": [a, tmp_path / "nope"]}.get(which)
    if which == "metric":
        other = tmp_path / "rank1"
        shutil.copytree(b, other)
        manifest = store.read_manifest(other)
        manifest["spec"]["study"]["metric"] = "rank1"
        store.write_manifest(other, manifest)
        args = [a, other]
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["compare", *map(str, args), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_a_changed_verdict_is_flagged(two_runs, tmp_path):
    """Make run b's adacos-fixed diverge in every seed: C10 must then change."""
    a, b = two_runs
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    trials, series = store.load_tables(broken)
    fixed = trials["head"] == "adacos-fixed"
    trials.loc[fixed, "state"] = "diverged"
    trials.loc[fixed, "diverged_reason"] = "loss is not finite"
    trials.loc[fixed, "diverged_step"] = 3
    trials.loc[fixed, "verification_accuracy"] = np.nan
    trials.to_parquet(broken / "trials.parquet")
    result = CliRunner().invoke(app, ["compare", str(a), str(broken), "--out",
                                      str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    c10 = next(r for r in data["verdicts"] if r["claim"] == "C10")
    assert c10["verdicts"]["broken"] == "not supported" and c10["changed"]
    fixed_row = next(r for r in data["best"] if r["head"] == "adacos-fixed")
    # Every seed diverged: it counts at chance (0.5), as in the claims.
    assert fixed_row["runs"]["broken"]["mean"] == pytest.approx(0.5)


@needs_chromium
def test_the_comparison_page_renders_cleanly_in_chromium(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp"
    assert CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(out),
                                    "--format", "html"]).exit_code == 0
    seen, stderr = probe_page(out / "index.html", tmp_path, width=1000)
    assert_clean(seen, stderr)
    # Two verdict matrices (one per run), none of whose columns collapsed.
    assert seen["matrixCells"] and min(seen["matrixCells"]) > 30
