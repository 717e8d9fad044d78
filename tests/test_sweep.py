"""`adastudy sweep` on Optuna: every grid point × seed exactly once, across workers and
across a SIGKILL; failures and prunes are results; bad input changes nothing on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from tiny_study import TINY, planned_keys, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy import store
from adastudy.cli import app

SCRIPT = str(Path(sys.executable).parent / "adastudy")

def keys_of(run_dir: Path) -> list[str]:
    records, problems = store.read_trial_records(run_dir)
    assert problems == []
    return sorted(r["key"] for r in records)


def test_a_small_sweep_runs_every_point_and_seed_once(tmp_path):
    spec_path = write_spec(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["planned"] == summary["finished"] == (2 * 1 + 1) * 2

    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 6 and trials["key"].is_unique
    assert set(trials["state"]) == {"complete"}
    assert sorted(trials["key"]) == planned_keys(spec_path)
    series = pd.read_parquet(out / "series.parquet")
    assert set(series["key"]) == set(trials["key"]) and "theta_med_rad" in series

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec_digest"] == specs.load(spec_path).digest()
    assert {"python", "torch", "optuna"} <= set(manifest["environment"])

    study = optuna.load_study(
        study_name="tiny",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal"))),
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["key"] for t in complete) == planned_keys(spec_path)
    assert all(t.params["head"] in ("cosface", "adacos-fixed") for t in complete)

    # Running it again finds nothing to do and repeats nothing.
    again = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name="tiny", storage=study._storage).trials) == 6

    shown = CliRunner().invoke(app, ["show", str(out), "--json"])
    board = json.loads(shown.stdout)["leaderboard"]
    assert {row["head"] for row in board} == {"cosface", "adacos-fixed"}
    assert all(row["n"] == 2 for row in board)

    exported = CliRunner().invoke(app, ["export", str(out), "--format", "csv"])
    assert exported.exit_code == 0, exported.output
    again_trials = pd.read_csv(out / "export" / "trials.csv")
    assert sorted(again_trials["key"]) == sorted(trials["key"])


def test_two_workers_share_the_grid_without_duplicates(tmp_path):
    spec_path = write_spec(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["sweep", str(spec_path), "--out", str(out), "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert keys_of(out) == planned_keys(spec_path)
    workers = {r["worker"] for r in store.read_trial_records(out)[0]}
    assert len(workers) == 2  # both processes took trials
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_finishes_each_point_once(tmp_path):
    # Trials long enough (a few tenths of a second each) and polls short enough that the
    # kill lands with some trials done and some not, however fast the loop gets.
    spec_path = write_spec(tmp_path, epochs=12)
    out = tmp_path / "run"
    command = [SCRIPT, "sweep", str(spec_path), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = list((out / "trials").glob("*.json")) if (out / "trials").exists() else []
        if len(records) >= 2:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    first = keys_of(out)
    assert 2 <= len(first) < 6

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert keys_of(out) == planned_keys(spec_path)
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["key"].is_unique and set(trials["state"]) == {"complete"}
    # The trial that was running at the kill is failed in Optuna and ran again. The kill
    # comes right after a record appears, so it can also fall between that record and
    # Optuna's tell: then the trial is failed in Optuna but not run again (its record
    # is the result), and Optuna counts one COMPLETE fewer.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    states = [t.state.name for t in optuna.load_study(study_name="tiny", storage=storage).trials]
    assert set(states) <= {"COMPLETE", "FAIL"} and states.count("FAIL") <= 1
    assert states.count("COMPLETE") in (6, 6 - states.count("FAIL"))


def test_a_trial_that_raises_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    # A CNN on feature vectors: every trial raises inside run_trial.
    spec_path = write_spec(tmp_path, TINY.replace("hidden = [32]", 'name = "cnn"'))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 6 and set(trials["state"]) == {"failed"}
    assert trials["error"].str.contains("model.name: 'cnn' needs images").all()
    shown = CliRunner().invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and "6 failed" not in shown.stdout  # per configuration
    assert "2 failed" in shown.stdout


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("[heads.cosface]", "[heads.sphereface]"), "heads.sphereface: unknown head"),
        (("s = [16.0, 32.0]", "s = [16.0, -1.0]"), "heads.cosface.s: s (scale) must be"),
        (("m = [0.2]", "m = [3.5]"), "heads.cosface.m: m (margin"),
        (("m = [0.2]", "m = []"), "heads.cosface.m: must not be empty"),
        (("[heads.adacos-fixed]", "[heads.adacos-fixed]\ns = [3.0]"),
         "heads.adacos-fixed.s: adacos-fixed takes no s"),
        (("seeds = [0, 1]", "seedz = [0, 1]"), "study.seedz: unknown key"),
        (("seeds = [0, 1]", "seeds = [0, 0]"), "study.seeds: must not repeat"),
        (("[data]", "[claims]\nc7_level_deg = 95\n\n[data]"),
         "claims.c7_level_deg: must lie in (0, 90) degrees, got 95"),
        (("[data]", "[claims]\nc7_level_deg = 40\n\n[data]"),
         "claims.c7_level_deg: 40 is not one of train.theta_levels_deg (60, 45, 30)"),
    ],
)
def test_bad_specs_stop_with_one_line_and_leave_the_run_folder_alone(tmp_path, edit, needle):
    good = write_spec(tmp_path)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["sweep", str(good), "--out", str(out)]).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    bad = write_spec(tmp_path, TINY.replace(*edit), name="bad.toml")
    result = CliRunner().invoke(app, ["sweep", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_run_folder_of_another_spec_or_a_missing_spec_is_refused(tmp_path):
    good = write_spec(tmp_path)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["sweep", str(good), "--out", str(out)]).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    other = write_spec(tmp_path, TINY.replace("lr = 0.05", "lr = 0.01"), name="other.toml")
    result = CliRunner().invoke(app, ["sweep", str(other), "--out", str(out)])
    assert result.exit_code == 2 and "was made from another spec" in result.stderr
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "no such spec file" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["sweep", str(good), "--out", str(blocker)])
    assert result.exit_code == 2 and "not a folder" in result.stderr
    result = CliRunner().invoke(app, ["sweep", str(good), "--out", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot write there" in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_quick_study_spec_is_valid_and_its_grid_is_as_documented():
    quick = specs.load(Path(__file__).resolve().parents[1] / "studies" / "quick.toml")
    heads = [t.head for t in quick.trials()]
    assert heads.count("cosface") == 9 * 2 and heads.count("arcface") == 9 * 2
    assert heads.count("normface") >= 3 * 2
    assert heads.count("adacos-fixed") == heads.count("adacos-dynamic") == 2


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_prints_the_resume_command_and_the_rerun_finishes(tmp_path):
    spec_path = write_spec(tmp_path, epochs=6)
    out = tmp_path / "run"
    command = [SCRIPT, "sweep", str(spec_path), "--out", str(out)]
    # Its own process group, as a terminal's Ctrl-C reaches the command and its workers.
    # SIGINT's default action restored: a test runner started in the background (as CI
    # may be) hands its children SIGINT ignored, which a terminal's user never has.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        (out / "trials").exists() and any((out / "trials").glob("*.json"))
    ):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"resume with  adastudy sweep {spec_path} --out {out}" in stderr
    assert "Traceback" not in stderr
    finished = keys_of(out)
    assert 1 <= len(finished) < 6

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert keys_of(out) == planned_keys(spec_path)


def test_a_hyperband_pruner_runs_the_grid_to_a_final_state_for_every_point(tmp_path):
    text = TINY + '\n[search]\npruner = "hyperband"\n'
    spec_path = write_spec(tmp_path, text, epochs=3)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["key"]) == planned_keys(spec_path)
    assert set(trials["state"]) <= {"complete", "pruned"}
    pruned = trials[trials["state"] == "pruned"]
    assert (pruned["epochs"] < 3).all()


TPE = TINY.replace(
    '[heads.cosface]\ns = [16.0, 32.0]\nm = [0.2]\n',
    '[heads.cosface]\ns = { low = 8.0, high = 32.0, log = true }\nm = { low = 0.1, high = 0.4 }\n',
) + '\n[search]\nmethod = "tpe"\ntrials = 3\nseed = 7\n'


def test_a_tpe_search_samples_its_budget_of_configurations_each_with_every_seed(tmp_path):
    spec_path = write_spec(tmp_path, TPE)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["planned"] == summary["finished"] == 3 * 2 + 2  # TPE + adacos grid

    trials = pd.read_parquet(out / "trials.parquet")
    cosface = trials[trials["head"] == "cosface"]
    assert len(cosface) == 6 and set(cosface["state"]) == {"complete"}
    assert cosface["s"].between(8.0, 32.0).all() and cosface["m"].between(0.1, 0.4).all()
    configs = cosface.groupby(["s", "m"])["seed"].apply(sorted)
    assert len(configs) == 3 and all(seeds == [0, 1] for seeds in configs)
    assert len(trials[trials["head"] == "adacos-fixed"]) == 2

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    head_study = optuna.load_study(study_name="tiny:cosface", storage=storage)
    assert [t.state.name for t in head_study.trials] == ["COMPLETE"] * 3
    for t in head_study.trials:  # each told the mean over its seeds
        rows = cosface[(cosface["s"] == t.params["s"]) & (cosface["m"] == t.params["m"])]
        assert t.value == pytest.approx(rows["verification_accuracy"].mean())

    again = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name="tiny:cosface", storage=storage).trials) == 3
    assert len(pd.read_parquet(out / "trials.parquet")) == 8


def test_the_tpe_sequence_is_repeatable_with_its_seed(tmp_path):
    sampled = []
    for run in ("a", "b"):
        spec_path = write_spec(tmp_path, TPE.replace("seeds = [0, 1]", "seeds = [0]"),
                               name=f"{run}.toml")
        out = tmp_path / run
        assert CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out)]).exit_code == 0
        trials = pd.read_parquet(out / "trials.parquet")
        sampled.append(sorted(trials.loc[trials["head"] == "cosface", "s"]))
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (TINY.replace("s = [16.0, 32.0]", "s = { low = 8.0, high = 32.0 }"),
         "heads.cosface.s: a range needs search.method = 'tpe'"),
        (TPE.replace("high = 32.0", "high = 4.0"), "heads.cosface.s.high: must be > low (8)"),
        (TPE.replace("low = 8.0", "low = -1.0"), "heads.cosface.s: s (scale) must be"),
        (TPE.replace("trials = 3", "trials = 0"), "search.trials: must be >= 1, got 0"),
    ],
)
def test_bad_tpe_specs_are_one_line_errors(tmp_path, text, needle):
    result = CliRunner().invoke(app, ["sweep", str(write_spec(tmp_path, text))])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and needle in result.stderr


def test_a_variant_runs_its_heads_again_on_its_own_data(tmp_path):
    text = TINY + """
[variants.c30]
data = { identities = 30 }
heads = ["adacos-fixed"]

[variants.c40]
data = { identities = 40 }
heads = ["adacos-fixed"]
"""
    spec_path = write_spec(tmp_path, text)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["key"]) == planned_keys(spec_path)
    c30 = trials[trials["variant"] == "c30"]
    assert len(c30) == 2 and set(c30["head"]) == {"adacos-fixed"}
    assert set(c30["num_classes"]) == {30}
    assert set(trials.loc[trials["variant"] == "main", "num_classes"]) == {20}
    # the same head on other data is another row of the leaderboard, not pooled seeds
    board = json.loads(result.stdout)["leaderboard"]
    fixed = [(row["variant"], row["n"]) for row in board if row["head"] == "adacos-fixed"]
    assert sorted(fixed) == [("c30", 2), ("c40", 2), ("main", 2)]
    show = CliRunner().invoke(app, ["show", str(out)])
    assert "adacos-fixed @c30" in show.stdout
