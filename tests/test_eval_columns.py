"""A column per verification set (issue #14, `[eval.<name>]`) in `adastudy show` (table
and --json) and in the report's leaderboards: each set's mean over the counted seeds
after the mean; a run without sets shows exactly what it showed before."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import fmean

import pytest
from test_cli_polish import record, write_run
from typer.testing import CliRunner

from adastudy import store
from adastudy.cli import app
from adastudy.report import content
from adastudy.report.html import write_html
from adastudy.report.markdown import md_cell, render_markdown

SETS = ["lfw", "cfp_fp"]  # the spec's order, not sorted
#: (head, s, m) -> one (lfw, cfp_fp) per seed.
VALUES = {
    ("cosface", 16.0, 0.2): [(0.9012, 0.8100), (0.9034, 0.8300)],
    ("cosface", 32.0, 0.2): [(0.9511, 0.8702), (0.9477, 0.8766)],
    ("adacos-fixed", None, None): [(0.9650, 0.8830), (0.9702, 0.8912)],
}
OLD_SHOW_HEADER = ["head", "s", "m", "n", "mean", "std", "95 % CI", "not counted"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def set_record(head: str, s: float | None, m: float | None, seed: int,
               lfw: float, cfp: float, state: str = "complete") -> dict:
    """A trial of a study with [eval.lfw] and [eval.cfp_fp]: as the trial writes it."""
    return record(head, s, m, seed, (lfw + cfp) / 2, state=state, val_accuracy=0.8,
                  verification_accuracy_std=0.01,
                  verification_accuracy_lfw=lfw, verification_accuracy_lfw_std=0.004,
                  verification_accuracy_cfp_fp=cfp, verification_accuracy_cfp_fp_std=0.012)


def write_set_run(run: Path, sets: list[str] | None = SETS, **study: str) -> Path:
    records = [set_record(head, s, m, seed, lfw, cfp)
               for (head, s, m), seeds in VALUES.items()
               for seed, (lfw, cfp) in enumerate(seeds)]
    # Not counted: a diverged seed's values must not move the means.
    records.append(set_record("cosface", 16.0, 0.2, 7, 0.1, 0.1, state="diverged"))
    write_run(run, records)
    if sets is not None:
        manifest = store.read_manifest(run)
        manifest["spec"]["eval"] = {name: {"path": f"{name}.bin"} for name in sets}
        manifest["spec"]["study"].update(study)
        store.write_manifest(run, manifest)
    return run


def expected(head: str, s: float | None, m: float | None) -> dict[str, float]:
    """Each set's mean over the complete seeds, from the records' values."""
    seeds = VALUES[(head, s, m)]
    return {"lfw": fmean(v[0] for v in seeds), "cfp_fp": fmean(v[1] for v in seeds)}


def show_rows(runner: CliRunner, run: Path, *args: str) -> tuple[str, list[list[str]]]:
    """The table's text and its rows of cells (the header first)."""
    result = runner.invoke(app, ["show", str(run), *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
            for line in result.stdout.splitlines() if line.strip().startswith(("│", "┃"))]
    return result.stdout, rows


def show_json(runner: CliRunner, run: Path, *args: str) -> dict:
    result = runner.invoke(app, ["show", str(run), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config_of(cells: list[str]) -> tuple[str, float | None, float | None]:
    return (cells[0], None if cells[1] == "-" else float(cells[1]),
            None if cells[2] == "-" else float(cells[2]))


# -- the helper ----------------------------------------------------------------------------


def test_set_names_come_from_the_spec_in_its_order_else_from_the_columns(tmp_path) -> None:
    run = write_set_run(tmp_path / "run")
    trials, _ = store.load_tables(run)
    assert store.eval_set_names(trials, store.read_manifest(run)) == ["lfw", "cfp_fp"]
    # Without the manifest's sets: the columns, sorted; neither std is a set.
    assert store.eval_set_names(trials) == ["cfp_fp", "lfw"]
    assert store.eval_set_names(trials, {"spec": {"study": {}}}) == ["cfp_fp", "lfw"]
    # The set that serves validation ([study] selection) is not a test set.
    manifest = {"spec": {"study": {"selection": "lfw"}, "eval": {"lfw": {}, "cfp_fp": {}}}}
    assert store.eval_set_names(trials, manifest) == ["cfp_fp"]
    old, _ = store.load_tables(write_run(tmp_path / "old", [
        record("cosface", 16.0, 0.2, 0, 0.8, verification_accuracy_std=0.01)]))
    assert store.eval_set_names(old, store.read_manifest(tmp_path / "old")) == []


def test_set_means_are_the_leaderboard_per_set_joined_on_the_configuration(tmp_path) -> None:
    trials, _ = store.load_tables(write_set_run(tmp_path / "run"))
    board = store.leaderboard(trials, "verification_accuracy")
    joined = store.set_means(board, trials, [*SETS, "agedb_30"])
    assert list(joined.columns) == [*board.columns, "verification_accuracy_lfw",
                                    "verification_accuracy_cfp_fp",
                                    "verification_accuracy_agedb_30"]
    assert joined[list(board.columns)].equals(board)  # same rows, same order
    for row in joined.to_dict(orient="records"):
        s, m = (None if math.isnan(row[k]) else row[k] for k in ("s", "m"))
        want = expected(row["head"], s, m)
        assert row["verification_accuracy_lfw"] == pytest.approx(want["lfw"])
        assert row["verification_accuracy_cfp_fp"] == pytest.approx(want["cfp_fp"])
        assert math.isnan(row["verification_accuracy_agedb_30"])  # no trial has it


# -- adastudy show ---------------------------------------------------------------------------


def test_show_has_a_column_per_set_after_the_mean(runner, tmp_path) -> None:
    text, rows = show_rows(runner, write_set_run(tmp_path / "run"))
    header, *body = rows
    assert header == ["head", "s", "m", "n", "mean", "lfw", "cfp_fp", "std", "95 % CI",
                      "not counted"]
    assert len(body) == len(VALUES)
    for cells in body:
        want = expected(*config_of(cells))
        assert cells[5:7] == [f"{want['lfw']:.4f}", f"{want['cfp_fp']:.4f}"]
        assert cells[3] == "2"  # the diverged seed is not counted
        assert float(cells[4]) == pytest.approx(fmean(want.values()), abs=5e-5)
    assert "(the average over the 2 sets)" in text
    assert "average over the sets lfw, cfp_fp" in " ".join(text.split())


def test_show_json_has_each_row_s_sets(runner, tmp_path) -> None:
    payload = show_json(runner, write_set_run(tmp_path / "run"))
    assert payload["metric"] == "verification_accuracy"
    for row in payload["leaderboard"]:
        assert list(row["sets"]) == SETS
        want = expected(row["head"], row["s"], row["m"])
        assert row["sets"] == {k: pytest.approx(v) for k, v in want.items()}
        assert not any(k.startswith("verification_accuracy_") for k in row)


def test_show_ranks_by_one_set(runner, tmp_path) -> None:
    run = write_set_run(tmp_path / "run")
    payload = show_json(runner, run, "--metric", "verification_accuracy_cfp_fp")
    assert payload["direction"] == "maximize"
    means = [row["mean"] for row in payload["leaderboard"]]
    assert means == sorted(means, reverse=True)
    assert means == [pytest.approx(row["sets"]["cfp_fp"]) for row in payload["leaderboard"]]
    text, rows = show_rows(runner, run, "--metric", "verification_accuracy_cfp_fp")
    assert rows[0][5:7] == ["lfw", "cfp_fp"]
    assert "average over" not in text  # the mean is one set's, not the sets' average


def test_a_set_the_spec_names_without_values_shows_as_missing(runner, tmp_path) -> None:
    run = write_set_run(tmp_path / "run", [*SETS, "agedb_30"])
    _, rows = show_rows(runner, run)
    assert rows[0][5:8] == ["lfw", "cfp_fp", "agedb_30"]
    assert all(cells[7] == "-" for cells in rows[1:])
    assert all(row["sets"]["agedb_30"] is None
               for row in show_json(runner, run)["leaderboard"])


def test_a_run_without_sets_shows_as_before(runner, tmp_path) -> None:
    run = write_run(tmp_path / "run", [
        record("cosface", 16.0, 0.2, 0, 0.80, verification_accuracy_std=0.01),
        record("cosface", 16.0, 0.2, 1, 0.82, verification_accuracy_std=0.02),
    ])
    text, rows = show_rows(runner, run)
    assert rows[0] == OLD_SHOW_HEADER
    assert "fake: mean verification_accuracy over seeds, highest first" in text
    assert "sets" not in text
    payload = show_json(runner, run)
    assert all("sets" not in row for row in payload["leaderboard"])
    assert list(payload["leaderboard"][0]) == [
        "variant", "head", "s", "m", "n", "mean", "std", "ci95_low", "ci95_high", "best",
        "worst", "n_pruned", "n_failed", "n_diverged"]


# -- the report ------------------------------------------------------------------------------


def leaderboard_section(run: Path):
    built = content.build(run)
    return built, next(s for s in built.sections if s.id == "leaderboard")


def md_tables(markdown: str) -> dict[str, list[list[str]]]:
    """The leaderboard's pipe tables by their caption (the head), as rows of cells (the
    header first)."""
    section = markdown.split("## Leaderboard per head", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[list[str]]] = {}
    caption = None
    for line in section.splitlines():
        if line.startswith("**") and line.endswith("**"):
            caption = line.strip("*")
            tables[caption] = []
        elif caption is not None and line.startswith("|") and not line.startswith("|---"):
            tables[caption].append([c.strip() for c in line.strip("|").split("|")])
    return tables


def test_the_report_leaderboards_have_a_column_per_set(tmp_path) -> None:
    run = write_set_run(tmp_path / "run")
    built, section = leaderboard_section(run)
    assert len(section.tables) == 2  # cosface, adacos-fixed
    markdown = render_markdown(built)
    tables = md_tables(markdown)
    assert sorted(tables) == ["adacos-fixed", "cosface"]
    checked = 0
    for head, (header, *body) in tables.items():
        assert header[3:7] == ["mean verification\\_accuracy", "lfw", "cfp\\_fp", "std"]
        for cells in body:
            s, m = (None if c == "-" else float(c) for c in cells[:2])
            want = expected(head, s, m)
            assert cells[4:6] == [f"{want['lfw']:.4f}", f"{want['cfp_fp']:.4f}"]
            checked += 1
    assert checked == len(VALUES)
    assert "AVG column of face papers" in markdown
    page = write_html(built, tmp_path / "html").read_text()
    assert "<th>lfw</th><th>cfp_fp</th>" in page
    want = expected("adacos-fixed", None, None)
    assert re.search(rf'<td class="cell">{want["lfw"]:.4f}</td><td class="cell">'
                     rf'{want["cfp_fp"]:.4f}</td>', page)


def test_a_report_without_sets_has_the_leaderboard_of_before(tmp_path) -> None:
    run = write_run(tmp_path / "run", [
        record("cosface", 16.0, 0.2, 0, 0.80, val_accuracy=0.7),
        record("cosface", 16.0, 0.2, 1, 0.82, val_accuracy=0.7),
    ])
    built, section = leaderboard_section(run)
    assert len(section.paragraphs) == 1
    assert [t.columns for t in section.tables] == [[
        "s", "m (rad)", "seeds", "mean verification_accuracy", "std", "95 % CI",
        "mean val_accuracy (selects)", "not counted"]]
    header = md_tables(render_markdown(built))["cosface"][0]
    assert header == [md_cell(c) for c in section.tables[0].columns]
    assert "AVG" not in render_markdown(built)


def test_the_report_names_the_sets_for_another_metric(tmp_path) -> None:
    run = write_set_run(tmp_path / "run", metric="verification_accuracy_lfw")
    _, section = leaderboard_section(run)
    assert section.tables[0].columns[3:6] == ["mean verification_accuracy_lfw", *SETS]
    assert section.paragraphs[1] == (
        "Verification sets lfw, cfp_fp: the columns lfw, cfp_fp are each verification "
        "set's mean accuracy (verification_accuracy_<set>) over the same counted seeds.")
