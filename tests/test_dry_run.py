"""`adastudy sweep SPEC --dry-run`: the plan and a pilot-based estimate, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_study import TINY, planned_keys, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy.backends import dryrun
from adastudy.cli import app

VARIANT = TINY + """
[variants.c40]
data = { identities = 40 }
heads = ["adacos-fixed"]
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    spec_path = write_spec(tmp_path, VARIANT, epochs=2)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert _snapshot(tmp_path) == before and not (tmp_path / "runs").exists()
    data = json.loads(result.stdout)
    plan = {(r["variant"], r["head"]): r["trials"] for r in data["plan"]}
    # cosface: 2 scales x 1 margin x 2 seeds; adacos-fixed: 2 seeds, in both variants.
    assert plan == {("main", "cosface"): 4, ("main", "adacos-fixed"): 2,
                    ("c40", "adacos-fixed"): 2}
    assert data["trials"] == len(planned_keys(spec_path)) == 8
    assert set(data["pilots"]) == {"main", "c40"}
    for variant, pilot in data["pilots"].items():
        assert pilot["variant"] == variant and pilot["trial_s"] > 0 and pilot["data_s"] >= 0
    assert data["estimated_serial_s"] == pytest.approx(
        sum(p["data_s"] for p in data["pilots"].values())
        + sum(r["trials"] * data["pilots"][r["variant"]]["trial_s"] for r in data["plan"]))


def test_the_text_says_it_is_an_estimate(tmp_path):
    spec_path = write_spec(tmp_path, epochs=1)
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--dry-run", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "6 trials to run" in result.stdout and "estimate" in result.stdout
    assert not (tmp_path / "run").exists()


def test_a_resumed_sweep_plans_only_what_is_left(tmp_path):
    spec_path = write_spec(tmp_path, epochs=1)
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(run),
                                    "--json"]).exit_code == 0
    before = _snapshot(run)
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(run),
                                      "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["trials"], data["finished"]) == (0, 6)
    assert data["pilots"] == {} and data["estimated_wall_s"] == 0
    assert _snapshot(run) == before


def test_a_folder_of_another_spec_is_refused_as_the_sweep_would(tmp_path):
    first = write_spec(tmp_path, epochs=1, name="a.toml")
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["sweep", str(first), "--out", str(run),
                                    "--json"]).exit_code == 0
    other = write_spec(tmp_path, epochs=2, name="b.toml")
    result = CliRunner().invoke(app, ["sweep", str(other), "--out", str(run), "--dry-run"])
    assert result.exit_code == 2 and "another spec" in result.stderr
    assert result.stderr.count("\n") == 1


def test_tpe_heads_count_their_sampled_configurations(tmp_path):
    spec_path = write_spec(tmp_path, TINY.replace(
        "s = [16.0, 32.0]\nm = [0.2]", "s = { low = 8, high = 64, log = true }\nm = [0.2]")
        + '\n[search]\nmethod = "tpe"\ntrials = 5\n', epochs=1)
    rows = dryrun.plan(specs.load(spec_path))
    assert [(r.head, r.trials, r.searched) for r in rows] == [
        ("adacos-fixed", 2, False), ("cosface", 10, True)]
