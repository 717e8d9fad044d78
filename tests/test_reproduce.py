"""`adastudy baseline` and `adastudy reproduce`: a re-run against its own baseline
reproduces; a baseline edited beyond the tolerance drifts (exit 1, named), within it
does not; flipped verdicts, new divergences and missing configurations fail; bad or
mismatched baselines are one line and exit 2; the attribution names what changed; and
deterministic mode repeats a sweep's tables exactly."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_checks import assert_one_error_line
from tiny_study import TINY, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy import store
from adastudy.cli import app
from adastudy.reproduce import (
    BASELINE_FORMAT,
    BASELINE_VERSION,
    attribute,
    compare,
    config_key,
    drift_of,
    environment_diff,
    load_baseline,
    make_baseline,
)
from adastudy.reproduce.run import confirm_spec, fresh_seeds
from adastudy.spec import ReproduceSection

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
COSFACE = config_key("main", "cosface", 16.0, 0.2)
METRIC = "verification_accuracy"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny study swept once (serial engine), and its baseline file."""
    root = tmp_path_factory.mktemp("reproduce")
    spec_path = write_spec(root, epochs=2)
    run_dir = root / "run"
    done = invoke("sweep", spec_path, "--backend", "serial", "--out", run_dir, "--json")
    assert done.exit_code == 0, done.output
    path = root / "baseline.json"
    done = invoke("baseline", run_dir, "--out", path)
    assert done.exit_code == 0, done.output
    assert "3 configurations, 6 trials" in done.stdout
    return root, spec_path, run_dir, path


def edited(made, tmp_path: Path, edit) -> Path:
    """A copy of the baseline with `edit(baseline)` applied."""
    baseline = json.loads(made[3].read_text())
    edit(baseline)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(baseline))
    return path


def shift(baseline: dict, key: str, metric: str, by: float) -> None:
    """Move one configuration's metric by `by` on every seed (and its mean)."""
    config = next(c for c in baseline["configurations"] if c["key"] == key)
    for run in config["seeds"].values():
        run["metrics"][metric] += by
    config["metrics"][metric]["mean"] += by


def beyond_the_gate(made) -> float:
    """A shift of COSFACE's mean that the gate flags: above 3 standard errors of the
    difference (n = 2 a side, the re-run's spread the baseline's: 3 σ)."""
    config = next(c for c in load_baseline(made[3])["configurations"] if c["key"] == COSFACE)
    return 3 * config["metrics"][METRIC]["std"] + 0.05


def reproduce(made, baseline: Path, out: Path, *extra: str):
    return invoke("reproduce", made[1], "--baseline", baseline, "--out", out,
                  "--backend", "serial", *extra)


# --------------------------------------------------------------------- the baseline


def test_the_baseline_holds_every_seed_metric_verdict_and_the_manifest(made):
    baseline = load_baseline(made[3])
    assert baseline["format"] == BASELINE_FORMAT and baseline["version"] == BASELINE_VERSION
    assert baseline["spec_digest"] == specs.load(made[1]).digest()
    trials = pd.read_parquet(made[2] / "trials.parquet")
    configs = {c["key"]: c for c in baseline["configurations"]}
    assert set(configs) == {COSFACE, config_key("main", "cosface", 32.0, 0.2),
                            "adacos-fixed"}
    row = trials[(trials["head"] == "cosface") & (trials["s"] == 16.0) & (trials["seed"] == 1)]
    one = configs[COSFACE]["seeds"]["1"]
    assert one["state"] == "complete"
    assert one["metrics"][METRIC] == float(row[METRIC].iloc[0])
    assert "wall_time_s" not in one["metrics"]  # timings are no result
    values = [configs[COSFACE]["seeds"][s]["metrics"][METRIC] for s in ("0", "1")]
    summary = configs[COSFACE]["metrics"][METRIC]
    assert summary["n"] == 2 and math.isclose(summary["mean"], sum(values) / 2)
    assert math.isclose(summary["std"], abs(values[0] - values[1]) / math.sqrt(2))
    assert [v["claim"] for v in baseline["verdicts"]] == [f"C{i}" for i in range(1, 11)]
    env = baseline["environment"]
    assert env["torch"] == torch.__version__ and env["code_digest"] == store.code_digest()
    assert baseline["determinism"]["deterministic"] is False
    assert baseline["run"]["engine"]["backend"] == "serial"


def test_baseline_refuses_an_existing_file_and_a_folder_that_is_no_run(made, tmp_path):
    before = made[3].read_bytes()
    assert_one_error_line(invoke("baseline", made[2], "--out", made[3]), "exists", "--force")
    assert made[3].read_bytes() == before
    (tmp_path / "empty").mkdir()
    assert_one_error_line(invoke("baseline", tmp_path / "empty", "--out", tmp_path / "b.json"),
                          "not a run folder")
    assert not (tmp_path / "b.json").exists()


def test_baseline_refuses_a_run_whose_last_sweep_was_interrupted(made, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(made[2], run_dir)
    manifest = store.read_manifest(run_dir)
    manifest["runs"][-1]["interrupted"] = True
    store.write_manifest(run_dir, manifest)
    assert_one_error_line(invoke("baseline", run_dir, "--out", tmp_path / "b.json"),
                          "interrupted")
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda b: b.update(format="something"), "not an adastudy baseline"),
    (lambda b: b.update(version=99), "version 99 is unknown"),
    (lambda b: b.pop("verdicts"), "lacks verdicts"),
    (lambda b: b["configurations"][0]["seeds"]["0"]["metrics"].update(
        verification_accuracy="high"), "not a number"),
    (lambda b: b.update(spec_digest="0" * 64), "made from another spec"),
])
def test_a_bad_or_mismatched_baseline_is_one_line_and_exit_2(made, tmp_path, edit, needle):
    path = edited(made, tmp_path, edit)
    out = tmp_path / "out"
    assert_one_error_line(reproduce(made, path, out), needle)
    assert not out.exists()  # nothing ran, nothing was written


def test_an_unknown_fail_on_is_a_usage_error(made, tmp_path):
    done = reproduce(made, made[3], tmp_path / "o", "--fail-on", "sideways")
    assert_one_error_line(done, "--fail-on")
    assert not (tmp_path / "o").exists()


def test_a_baseline_that_is_not_json_or_absent_is_exit_2(made, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "adastudy-baseline", ')
    assert_one_error_line(reproduce(made, broken, tmp_path / "o"), "not valid JSON")
    assert_one_error_line(reproduce(made, tmp_path / "nope.json", tmp_path / "o"),
                          "no such baseline")


# ------------------------------------------------------------- reproduce, end to end


def test_a_rerun_reproduces_its_own_baseline_bit_for_bit(made, tmp_path):
    out = tmp_path / "out"
    done = reproduce(made, made[3], out, "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["reproduced"] and result["drifts"] == [] and result["flips"] == []
    assert METRIC in result["metrics"] and "val_accuracy" in result["metrics"]
    assert result["comparisons"] == 3 * len(result["metrics"])  # every configuration
    assert result["identical"] == result["comparisons"]  # the CPU repeats a trial exactly
    assert result["attribution"]["cause"] == "neither (nondeterminism)"
    names = sorted(p.name for p in out.iterdir())
    stems = {Path(n).stem for n in names if n.startswith("reproduce-")}
    assert len(stems) == 1
    stem = stems.pop()
    assert {f"{stem}.md", f"{stem}.html", f"{stem}.json"} <= set(names)
    assert (out / result["run_dir"].rsplit("/", 1)[-1] / "trials.parquet").is_file()
    text = (out / f"{stem}.md").read_text()
    assert f"Reproduced: no drift in {result['comparisons']} comparisons" in text
    assert "Every claim's verdict, and every part's, is the baseline's." in text
    assert "Reproduced" in (out / f"{stem}.html").read_text()


def test_a_metric_shifted_beyond_the_tolerance_drifts_and_is_named(made, tmp_path):
    by = beyond_the_gate(made)
    path = edited(made, tmp_path, lambda b: shift(b, COSFACE, METRIC, -by))
    out = tmp_path / "out"
    done = reproduce(made, path, out)
    assert done.exit_code == 1, done.output
    said = " ".join(done.stdout.split())  # rich wraps at 80 columns
    assert ("Drift: 1 metric drift(s) in 1 configuration(s) (cosface s=16 m=0.2: "
            "verification_accuracy improved)") in said
    assert "Attribution: neither (nondeterminism)" in said
    report = next(out.glob("reproduce-*.md")).read_text()
    assert "## Drifts" in report and "cosface s=16 m=0.2" in report and "improved" in report
    # The re-run is better than the edited baseline: --fail-on worse lets it pass.
    done = reproduce(made, path, tmp_path / "out2", "--fail-on", "worse")
    assert done.exit_code == 0, done.output
    assert "1 drift(s) not counted (--fail-on worse" in done.stdout


def test_a_metric_shifted_within_the_tolerance_reproduces(made, tmp_path):
    path = edited(made, tmp_path, lambda b: shift(b, COSFACE, METRIC, 0.002))
    done = reproduce(made, path, tmp_path / "out", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["reproduced"] and result["identical"] == result["comparisons"] - 1


def test_confirm_reruns_the_drifted_configuration_with_fresh_seeds(made, tmp_path):
    # Far beyond the gate, so that fresh seeds (their own noise) drift the same way.
    path = edited(made, tmp_path, lambda b: shift(b, COSFACE, METRIC, +1.0))
    out = tmp_path / "out"
    done = reproduce(made, path, out, "--confirm", "--json")
    assert done.exit_code == 1, done.output
    (drift,) = json.loads(done.stdout)["drifts"]
    assert drift["key"] == COSFACE and drift["direction"] == "worse"
    assert drift["confirmed"] is True and drift["confirm_mean"] is not None
    (confirm_dir,) = out.glob("run-*-confirm")
    trials = pd.read_parquet(confirm_dir / "trials.parquet")
    assert set(trials["seed"]) == {2, 3}  # fresh: the baseline ran seeds 0 and 1
    assert set(trials["head"]) == {"cosface"} and set(trials["s"]) == {16.0}


def test_a_reproduce_subset_runs_only_it_and_leaves_the_verdicts_alone(made, tmp_path):
    spec_path = made[1].with_name("subset.toml")
    spec_path.write_text(made[1].read_text() + '\n[reproduce]\nheads = ["cosface"]\n'
                         'seeds = [1]\nk = 4.0\n'
                         '[reproduce.metrics.final_loss]\nabs_tol = 0.5\n')
    out = tmp_path / "out"
    done = invoke("reproduce", spec_path, "--baseline", made[3], "--out", out, "--backend",
                  "serial", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert not result["verdicts_compared"] and result["missing"] == []
    assert "final_loss" in result["metrics"]
    (run_dir,) = out.glob("run-*")
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert set(trials["head"]) == {"cosface"} and set(trials["seed"]) == {1}


def test_a_reproduce_section_is_checked_like_the_rest_of_the_spec(made, tmp_path):
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(made[1].read_text() + '\n[reproduce]\nheads = ["arcface"]\n')
    assert_one_error_line(invoke("reproduce", spec_path, "--baseline", made[3]),
                          "reproduce.heads", "arcface")
    spec_path.write_text(made[1].read_text() + '\n[reproduce.metrics.nonsense]\nk = 2\n')
    assert_one_error_line(invoke("reproduce", spec_path, "--baseline", made[3], "--out",
                                 tmp_path / "o"), "reproduce.metrics.nonsense")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------ the comparison, in detail


@pytest.fixture(scope="module")
def snapshot(made):
    """The baseline made again from the same run: a re-run that reproduced exactly."""
    return make_baseline(made[2])


GATES = ReproduceSection()


def test_a_flipped_verdict_fails_the_check(made, snapshot):
    baseline = copy.deepcopy(load_baseline(made[3]))
    verdict = baseline["verdicts"][3]
    verdict["verdict"] = "supported" if verdict["verdict"] != "supported" else "inconclusive"
    result = compare(baseline, snapshot, GATES)
    assert result.failed
    assert [(f.claim, f.part) for f in result.flips] == [(verdict["claim"], None)]
    assert not result.failing_drifts
    # A part's verdict alone flipping counts too.
    baseline = copy.deepcopy(load_baseline(made[3]))
    claim = next(v for v in baseline["verdicts"] if v["parts"])
    claim["parts"][0]["verdict"] = "not supported" if claim["parts"][0][
        "verdict"] != "not supported" else "supported"
    flips = compare(baseline, snapshot, GATES).flips
    assert len(flips) == 1 and flips[0].part is not None and flips[0].claim == claim["claim"]


def test_a_new_divergence_and_a_missing_configuration_fail(made, snapshot):
    new = copy.deepcopy(snapshot)
    config = next(c for c in new["configurations"] if c["key"] == COSFACE)
    config["seeds"]["1"]["state"] = "diverged"
    result = compare(load_baseline(made[3]), new, GATES)
    assert result.failed
    assert [(c.key, c.seed, c.new, c.direction) for c in result.states] == [
        (COSFACE, 1, "diverged", "worse")]
    assert not compare(load_baseline(made[3]), new, GATES, fail_on="improved").failed
    # The other way round the divergence is gone: an improvement.
    back = compare(new | {"subset": False}, copy.deepcopy(snapshot), GATES, fail_on="worse")
    assert [c.direction for c in back.states] == ["improved"] and not back.failing_states
    new["configurations"] = [c for c in new["configurations"] if c["key"] != COSFACE]
    result = compare(load_baseline(made[3]), new, GATES)
    assert result.missing == [(COSFACE, "re-run")] and result.failed


def test_the_attribution_names_what_changed(made, snapshot):
    by = beyond_the_gate(made)
    baseline = load_baseline(made[3])
    assert attribute(environment_diff(baseline, snapshot)).cause == "neither (nondeterminism)"
    versions = copy.deepcopy(baseline)
    versions["environment"]["numpy"] = "0.0.1"
    cause = attribute(environment_diff(versions, snapshot))
    assert cause.cause == "environment" and cause.environment == ["numpy"]
    commit = copy.deepcopy(baseline)
    commit["environment"]["git_commit"] = "f" * 40
    cause = attribute(environment_diff(commit, snapshot))
    assert cause.cause == "code" and cause.code == ["git_commit"]
    both = copy.deepcopy(commit)
    both["determinism"]["deterministic"] = True
    assert attribute(environment_diff(both, snapshot)).cause == "code and environment"
    host = copy.deepcopy(baseline)
    host["environment"]["hostname"] = "elsewhere"  # another machine of the same kind
    assert attribute(environment_diff(host, snapshot)).cause == "neither (nondeterminism)"
    # And a drift says it: the comparison carries the attribution.
    shifted = copy.deepcopy(versions)
    shift(shifted, COSFACE, METRIC, by)
    result = compare(shifted, snapshot, GATES)
    assert result.failed and result.attribution.cause == "environment"


def test_the_drift_rule_against_a_hand_computation():
    base, new = {0: 0.90, 1: 0.92, 2: 0.91}, {0: 0.95, 1: 0.97}
    n1, n2 = 3, 2
    s1 = math.sqrt(sum((v - 0.91) ** 2 for v in base.values()) / 2)
    s2 = math.sqrt(sum((v - 0.96) ** 2 for v in new.values()) / 1)
    pooled = math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))
    se = pooled * math.sqrt(1 / n1 + 1 / n2)
    drift = drift_of(METRIC, base, new, GATES, "maximize")
    assert math.isclose(drift.difference, 0.05)
    assert math.isclose(drift.threshold, max(0.005, 3.0 * se))
    assert drift.drifted and drift.direction == "improved"
    t975_df3 = 3.182446305284263
    assert math.isclose(drift.interval[0], 0.05 - t975_df3 * se, rel_tol=1e-6)
    # Noisy seeds widen the gate: the same shift of means is within k σ.
    noisy = drift_of(METRIC, {0: 0.80, 1: 1.0, 2: 0.93}, {0: 0.88, 1: 1.0}, GATES, "maximize")
    assert not noisy.drifted and noisy.threshold > 0.05
    # Without spread, abs_tol alone: a set's own tolerance, and a metric with none.
    gates = ReproduceSection(metrics={METRIC: {"abs_tol": 0.1}})
    assert not drift_of(METRIC, {0: 0.9}, {0: 0.95}, gates, "maximize").drifted
    assert drift_of("final_s", {0: 20.0}, {0: 20.5}, GATES, None).direction == "changed"
    assert drift_of(METRIC, {0: 0.9, 1: 0.9}, {0: 0.9, 1: 0.9}, GATES, "maximize").identical


def test_fresh_seeds_and_the_confirm_spec(made):
    baseline = load_baseline(made[3])
    assert fresh_seeds(baseline, [0, 1], 2) == [2, 3]
    study = specs.load(made[1])
    drift = drift_of(METRIC, {0: 0.5}, {0: 0.9}, GATES, "maximize", key=COSFACE,
                     head="cosface")
    spec = confirm_spec(study, [drift], baseline, [2, 3])
    assert [(t.head, t.s, t.m, t.seed) for t in spec.trials()] == [
        ("cosface", 16.0, 0.2, 2), ("cosface", 16.0, 0.2, 3)]


# --------------------------------------------------------------- deterministic mode


TIMING = ["wall_time_s", "train_time_s", "samples_per_s", "started_at", "finished_at",
          "worker"]


@pytest.mark.slow
def test_deterministic_mode_repeats_the_tables_and_is_recorded(tmp_path, monkeypatch):
    # --deterministic fixes cuBLAS's workspace in the (here: the test's) process; undone
    # after the test, so later manifests in this process record what they would alone.
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    spec_path = write_spec(tmp_path, TINY.replace('[heads.adacos-fixed]',
                                                  '[heads.adacos-dynamic]'), epochs=2)
    tables = []
    for name in ("a", "b"):
        out = tmp_path / name
        done = invoke("sweep", spec_path, "--out", out, "--deterministic", "--json")
        assert done.exit_code == 0, done.output
        trials = pd.read_parquet(out / "trials.parquet").drop(columns=TIMING)
        series = pd.read_parquet(out / "series.parquet")
        series = series.drop(columns=[c for c in series if "per_s" in c])
        tables.append((trials.sort_values("key").reset_index(drop=True),
                       series.sort_values(["key", "step"]).reset_index(drop=True)))
        manifest = store.read_manifest(out)
        assert manifest["determinism"]["deterministic"] is True
        assert manifest["determinism"]["cudnn_benchmark"] is False
        assert manifest["runs"][-1]["determinism"]["use_deterministic_algorithms"] is True
        assert manifest["spec_digest"] == specs.load(spec_path).digest()
    pd.testing.assert_frame_equal(tables[0][0], tables[1][0], check_exact=True)
    pd.testing.assert_frame_equal(tables[0][1], tables[1][1], check_exact=True)


def test_deterministic_mode_holds_during_the_trial_and_is_undone_after():
    from adastudy.train import run_trial

    study = specs.parse(json.loads(json.dumps({"train": {"epochs": 1, "deterministic": True,
                                                         "log_every": 2},
                                               "data": {"identities": 10,
                                                        "images_per_identity": 6,
                                                        "eval_identities": 10,
                                                        "val_pairs": 40, "test_pairs": 40,
                                                        "distractors": 10}})))
    seen = []

    class Probe:
        def report(self, step, metrics):
            seen.append((torch.are_deterministic_algorithms_enabled(),
                         torch.backends.cudnn.benchmark))

        def should_stop(self):
            return False

    assert not torch.are_deterministic_algorithms_enabled()
    run_trial(study.trial("adacos-dynamic"), Probe())
    assert seen and all(on and not bench for on, bench in seen)
    assert not torch.are_deterministic_algorithms_enabled()  # the next trial starts clean


# --------------------------------------------------------------- the committed baseline


def test_the_committed_quick_baseline_is_of_the_quick_study():
    baseline = load_baseline(ROOT / "baselines" / "quick.json")
    assert baseline["spec_digest"] == specs.load(ROOT / "studies" / "quick.toml").digest()
    assert len(baseline["configurations"]) == 24
    assert all(len(c["seeds"]) == 2 for c in baseline["configurations"])


@pytest.mark.slow
def test_reproduce_quick_against_the_committed_baseline(tmp_path):
    """The issue's acceptance: exit 0 here; exit 1 with the diff once a metric is edited."""
    out = tmp_path / "out"
    done = invoke("reproduce", ROOT / "studies" / "quick.toml", "--baseline",
                  ROOT / "baselines" / "quick.json", "--out", out, "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["reproduced"] and result["verdicts_compared"]
    baseline = load_baseline(ROOT / "baselines" / "quick.json")
    shift(baseline, "adacos-dynamic", METRIC, -0.05)
    (run_dir,) = out.glob("run-*")
    comparison = compare(baseline, make_baseline(run_dir),
                         specs.load(ROOT / "studies" / "quick.toml").reproduce)
    assert comparison.failed
    assert [(d.key, d.metric) for d in comparison.failing_drifts] == [("adacos-dynamic",
                                                                       METRIC)]



def test_the_nightly_workflow_runs_the_check_and_keeps_the_report():
    import yaml

    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    (cron,) = triggers["schedule"]
    assert len(cron["cron"].split()) == 5
    steps = flow["jobs"]["reproduce"]["steps"]
    commands = [" ".join(step.get("run", "").split()) for step in steps]
    assert "make setup" in commands
    assert (".venv/bin/adastudy reproduce studies/quick.toml --baseline "
            "baselines/quick.json --out runs/nightly") in commands
    (upload,) = [s for s in steps if "upload-artifact" in s.get("uses", "")]
    assert upload["if"] == "always()"  # the report of a drift is the point
    assert "runs/nightly/reproduce-*" in upload["with"]["path"]


def test_a_drift_that_fresh_seeds_do_not_repeat_is_dismissed(made, snapshot):
    baseline = copy.deepcopy(load_baseline(made[3]))
    shift(baseline, COSFACE, METRIC, beyond_the_gate(made))
    assert compare(baseline, snapshot, GATES).failed
    fresh = copy.deepcopy(baseline)  # fresh seeds that land where the baseline is
    for config in fresh["configurations"]:
        config["seeds"] = {str(int(s) + 2): run for s, run in config["seeds"].items()}
    result = compare(baseline, snapshot, GATES, confirm=fresh)
    (drift,) = [d for d in result.drifts if d.drifted]
    assert drift.confirmed is False and not result.failed
    # Fresh seeds that did not complete neither confirm nor clear it.
    for config in fresh["configurations"]:
        for run in config["seeds"].values():
            run["state"] = "failed"
    result = compare(baseline, snapshot, GATES, confirm=fresh)
    assert result.failed and result.failing_drifts[0].confirmed is None
