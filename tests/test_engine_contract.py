"""The engine contract: what every engine (serial, Optuna, Ray) must do, one test class
run against each, with the serial engine's run as the reference (the way Optuna tests
its storages). And: a trial reads no other trial's record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import arm_kill
from tiny_study import TINY, planned_keys, write_spec

from adastudy import spec as specs
from adastudy import store
from adastudy.backends import hyperparameters
from adastudy.backends import sweep as skeleton

SCRIPT = str(Path(sys.executable).parent / "adastudy")

#: Columns that differ between two runs of the same trial (time, place, engine).
RUN_COLUMNS = {"wall_time_s", "train_time_s", "samples_per_s", "started_at", "finished_at",
               "worker"}

PRUNED = TINY.replace(
    '[heads.cosface]\ns = [16.0, 32.0]\nm = [0.2]\n\n[heads.adacos-fixed]\n',
    '[heads.normface]\ns = [0.01, 16.0]\n',
).replace('seeds = [0, 1]', 'seeds = [0]') + (
    '\n[search]\npruner = "median"\nstartup_trials = 1\nwarmup_epochs = 0\n')

#: Twelve configurations: past TPE's ten random start-up ones, so the last two depend
#: on what the sampler has seen (the scores of the first ten).
TPE = TINY.replace(
    '[heads.cosface]\ns = [16.0, 32.0]\nm = [0.2]\n',
    '[heads.cosface]\ns = { low = 8.0, high = 32.0, log = true }\nm = { low = 0.1, high = 0.4 }\n',
).replace('seeds = [0, 1]', 'seeds = [0]') + '\n[search]\nmethod = "tpe"\ntrials = 12\nseed = 3\n'


def finished_times(run_dir: Path) -> dict[str, str]:
    return {r["key"]: r["finished_at"] for r in store.read_trial_records(run_dir)[0]}


@dataclass
class Driver:
    """Runs a sweep on one engine, the way its users do."""

    name: str

    def engine(self, one_at_a_time: bool = False, **options: Any) -> Any:
        from adastudy.backends import get_engine

        given = {"optuna": {"--workers": 1 if one_at_a_time else 2},
                 "ray": {"--cpus-per-trial": 2.0 if one_at_a_time else 1.0},
                 "serial": {}}[self.name]
        engine = get_engine(self.name, given)
        for key, value in options.items():
            setattr(engine, key, value)
        return engine

    def run(self, spec_path: Path, out: Path, one_at_a_time: bool = False,
            **options: Any) -> skeleton.SweepSummary:
        import torch

        # Every engine trains a trial with as many threads as it has slots' share of
        # the cores: the serial engine, in this process, is set to match.
        threads = torch.get_num_threads()
        if self.name == "serial" and not one_at_a_time:
            torch.set_num_threads(1)
        try:
            return skeleton.run_sweep(specs.load(spec_path), spec_path,
                                      self.engine(one_at_a_time, **options), out=out)
        finally:
            torch.set_num_threads(threads)

    def kill_mid_trial(self, spec_path: Path, out: Path, kill_dir: Path | None) -> None:
        """SIGKILL the process that runs a trial, after some trials have a record."""
        if self.name == "ray":  # the worker of one trial; no retry, as after a crash
            arm_kill(kill_dir)
            summary = self.run(spec_path, out, max_failures=0)
            assert summary.interrupted and summary.finished == 5
            assert len(summary.problems) == 1 and "run the sweep again" in summary.problems[0]
            return
        command = [SCRIPT, "sweep", str(spec_path), "--out", str(out), "--backend", self.name]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(store.record_names(out)) < 2:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        while time.monotonic() < deadline + 30:  # the workers die a moment later
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


@pytest.fixture(params=["serial", "optuna", pytest.param("ray", marks=pytest.mark.ray)])
def driver(request) -> Driver:
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return Driver(request.param)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """The serial engine's runs of the contract's studies: what every engine must give."""
    root = tmp_path_factory.mktemp("reference")
    serial = Driver("serial")
    runs = {}
    for name, text, one in (("grid", TINY, False), ("tpe", TPE, True)):
        spec_path = write_spec(root, text, name=f"{name}.toml")
        summary = serial.run(spec_path, root / name, one_at_a_time=one)
        assert summary.finished == summary.planned and not summary.interrupted
        runs[name] = root / name
    return runs


class TestEngineContract:
    def test_the_grid_runs_each_point_and_seed_once_with_the_reference_tables(
            self, driver, reference, tmp_path):
        spec_path = write_spec(tmp_path)
        summary = driver.run(spec_path, tmp_path / "run")
        assert summary.planned == summary.finished == 6
        assert not summary.interrupted and summary.problems == []

        ours = pd.read_parquet(tmp_path / "run" / "trials.parquet")
        theirs = pd.read_parquet(reference["grid"] / "trials.parquet")
        assert ours["key"].is_unique and sorted(ours["key"]) == planned_keys(spec_path)
        assert list(ours.columns) == list(theirs.columns)
        ours, theirs = (df.set_index("key").sort_index() for df in (ours, theirs))
        same = [c for c in ours.columns if c not in RUN_COLUMNS]
        pd.testing.assert_frame_equal(ours[same], theirs[same])
        series = pd.read_parquet(tmp_path / "run" / "series.parquet")
        assert list(series.columns) == list(
            pd.read_parquet(reference["grid"] / "series.parquet").columns)

        before = finished_times(tmp_path / "run")  # a rerun finds everything done
        again = driver.run(spec_path, tmp_path / "run")
        assert again.finished == 6 and not again.interrupted
        assert finished_times(tmp_path / "run") == before

    def test_tpe_with_one_slot_samples_the_reference_configurations(
            self, driver, reference, tmp_path):
        spec_path = write_spec(tmp_path, TPE)
        summary = driver.run(spec_path, tmp_path / "run", one_at_a_time=True)
        assert summary.planned == summary.finished == 1 + 12

        def configurations(run: Path) -> list[tuple]:
            trials = pd.read_parquet(run / "trials.parquet")
            searched = trials[trials["head"] == "cosface"].sort_values("number")
            return list(zip(searched["number"], searched["s"], searched["m"], strict=True))

        ours, theirs = configurations(tmp_path / "run"), configurations(reference["tpe"])
        assert [n for n, _, _ in theirs] == list(range(12))
        assert len({(s, m) for _, s, m in theirs}) == 12  # twelve distinct samples
        assert ours == theirs

    def test_pruning_brings_every_trial_to_a_final_state(self, driver, tmp_path):
        spec_path = write_spec(tmp_path, PRUNED, epochs=3)
        summary = driver.run(spec_path, tmp_path / "run", one_at_a_time=True)
        assert summary.finished == summary.planned == 2 and not summary.interrupted
        trials = pd.read_parquet(tmp_path / "run" / "trials.parquet").set_index("key")
        # On this tiny data s = 16 learns slower than s = 0.01 (see test_sweep): it is
        # cut at the first epoch once the other has finished (or, on ASHA, at its rung).
        assert trials.loc["normface|s=0.01|m=-|seed=0", "state"] == "complete"
        assert trials.loc["normface|s=16|m=-|seed=0", "state"] == "pruned"
        assert trials.loc["normface|s=16|m=-|seed=0", "epochs"] == 1
        series = pd.read_parquet(tmp_path / "run" / "series.parquet")
        assert (series["key"] == "normface|s=16|m=-|seed=0").sum() > 0  # its steps kept

    def test_a_trial_that_raises_is_failed_and_the_sweep_goes_on(self, driver, tmp_path):
        # A CNN on feature vectors: every trial raises inside run_trial.
        spec_path = write_spec(tmp_path, TINY.replace("hidden = [32]", 'name = "cnn"'))
        summary = driver.run(spec_path, tmp_path / "run")
        assert summary.finished == summary.planned == 6 and not summary.interrupted
        trials = pd.read_parquet(tmp_path / "run" / "trials.parquet")
        assert set(trials["state"]) == {"failed"}
        assert trials["error"].str.contains("model.name: 'cnn' needs images").all()

    @pytest.mark.slow
    def test_sigkill_then_rerun_loses_nothing_and_repeats_nothing(
            self, driver, tmp_path, request):
        spec_path = write_spec(tmp_path, epochs=4)
        out = tmp_path / "run"
        kill_dir = request.getfixturevalue("kill_dir") if driver.name == "ray" else None
        driver.kill_mid_trial(spec_path, out, kill_dir)
        before = finished_times(out)
        assert 1 <= len(before) < 6

        summary = driver.run(spec_path, out)
        assert summary.finished == summary.planned == 6 and not summary.interrupted
        after = finished_times(out)
        assert sorted(after) == planned_keys(spec_path)
        assert {key: after[key] for key in before} == before  # not run again
        trials = pd.read_parquet(out / "trials.parquet")
        assert trials["key"].is_unique and set(trials["state"]) == {"complete"}
        if driver.name == "ray":  # the interrupted experiment was restored, not redone
            assert sorted(p.name for p in (out / "ray").iterdir()) == ["grid-1"]


# -- a trial reads no other trial's record --------------------------------------------


@pytest.fixture
def record_reads(monkeypatch) -> list[str]:
    """Every record the code reads from now on: the key, or "*" for all of them."""
    reads: list[str] = []
    by_key, by_name, every = (store.read_trial_record, store.read_record_file,
                              store.read_trial_records)

    def read_one(run_dir, key):
        reads.append(key)
        return by_key(run_dir, key)

    def read_file(run_dir, name):
        reads.append(f"file {name}")
        return by_name(run_dir, name)

    def read_all(run_dir):
        reads.append("*")
        return every(run_dir)

    monkeypatch.setattr(store, "read_trial_record", read_one)
    monkeypatch.setattr(store, "read_record_file", read_file)
    monkeypatch.setattr(store, "read_trial_records", read_all)
    return reads


def _folder_with_other_records(tmp_path: Path, text: str = TINY) -> tuple[Any, Path]:
    """A spec and a run folder where every grid trial but the first has a record."""
    spec = specs.load(write_spec(tmp_path, text))
    run = tmp_path / "run"
    plan = skeleton.Plan(spec)
    first, *others = plan.grid
    for key in others:
        trial = plan.grid[key]
        s, m = hyperparameters(trial)
        store.write_trial_record(run, {"key": key, "head": trial.head, "s": s, "m": m,
                                       "seed": trial.seed, "state": "complete"})
    return spec, run


def test_a_trial_on_any_engine_reads_no_other_trials_record(tmp_path, record_reads,
                                                            monkeypatch):
    from adastudy.backends import optuna as on_optuna
    from adastudy.train import RecordingReporter

    spec, run = _folder_with_other_records(tmp_path)
    plan = skeleton.Plan(spec)
    first = next(iter(plan.grid))

    # The runner (serial, and inside the Optuna and Ray workers).
    skeleton.TrialRunner(run).execute(plan.grid[first], RecordingReporter(), 0)
    assert record_reads == []
    # A TPE configuration reads its own seeds' records only.
    skeleton.run_configuration(skeleton.TrialRunner(run), spec, "cosface",
                               {"s": 16.0, "m": 0.2}, 0)
    assert set(record_reads) == {store.trial_key("cosface", 16.0, 0.2, seed, "main")
                                 for seed in spec.study.seeds}
    record_reads.clear()

    # An Optuna worker, in this process: asking for a trial and running it.
    store_path = run / "trials" / store.record_name(first)
    store_path.unlink()
    on_optuna._enqueue_missing(on_optuna.open_study(run, spec), plan,
                               _index(run), spec.study.metric)
    record_reads.clear()
    worker = on_optuna._Worker(run, spec)
    study, trial, job = worker.next_job()
    assert trial.user_attrs["key"] == first
    job(trial)
    assert record_reads == [] and store_path.is_file()


@pytest.mark.ray
def test_a_ray_trial_reads_its_own_record_only(tmp_path, record_reads, monkeypatch):
    from adastudy.backends.ray import trainables

    spec, run = _folder_with_other_records(tmp_path)
    first = next(iter(skeleton.Plan(spec).grid))
    reports: list[dict] = []

    class FakeTune:  # the two calls a trainable makes of Tune
        @staticmethod
        def report(metrics):
            reports.append(metrics)

        @staticmethod
        def get_context():
            return type("Context", (), {"get_trial_id": staticmethod(lambda: "t0")})()

    monkeypatch.setattr(trainables, "tune", FakeTune)
    job = trainables.Job(spec.model_dump_json(), str(run), threads=1, board="none")
    trainables.grid_trainable({"key": first}, job)
    assert record_reads == [first]  # whether it is done already: its own file
    assert reports[-1]["state"] == "complete"
    assert store.read_trial_record(run, first)["state"] == "complete"


def _index(run: Path) -> skeleton.RecordIndex:
    index = skeleton.RecordIndex(run)
    index.refresh()
    return index
