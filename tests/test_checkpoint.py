"""Checkpoints: a trial killed after an epoch resumes from it, and ends as an
uninterrupted trial (bit for bit on the CPU, timings apart)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adastudy import checkpoint
from adastudy import spec as specs
from adastudy import train as train_module
from adastudy.train import RecordingReporter, run_trial

#: The command, next to this Python.
SCRIPT = str(Path(sys.executable).with_name("adastudy"))
#: Timings: they differ between any two runs.
TIMINGS = {"wall_time_s", "train_time_s", "samples_per_s"}


def trial(seed: int = 0, **train) -> specs.TrialSpec:
    """adacos-dynamic with dropout (torch's random state matters), momentum and a step
    schedule (the optimiser's and the scheduler's states matter)."""
    return specs.parse({
        "data": {"identities": 20, "images_per_identity": 10, "eval_identities": 10,
                 "val_pairs": 100, "test_pairs": 200, "distractors": 10},
        "model": {"hidden": [32], "embedding_dim": 16, "dropout": 0.2},
        "train": {"epochs": 4, "batch_size": 32, "log_every": 3, "device": "cpu",
                  "schedule": "step", "milestones": [2.5], "checkpoint_every": 1, **train},
        "head": "adacos-dynamic", "seed": seed,
    }, "<trial>", specs.TrialSpec)


class Killed(Exception):
    """Stands for SIGKILL inside one process: the trial stops where it is."""


class KillAfter(RecordingReporter):
    """Stops the trial at its first report past `step`."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def report(self, step, metrics) -> None:
        if step > self.step:
            raise Killed
        super().report(step, metrics)


def without_timings(result) -> dict:
    fields = result.to_dict()
    for key in (*TIMINGS, "resumed_from_epoch", "checkpoint_problem"):
        fields.pop(key)
    fields["metrics"] = {k: v for k, v in fields["metrics"].items() if k not in TIMINGS}
    return fields


def rows_without_timings(rows) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def test_a_killed_trial_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    spec = trial()
    reference_rows = RecordingReporter()
    reference = run_trial(spec, reference_rows)
    steps_per_epoch = reference.steps // 4
    folder = tmp_path / "ckpt"
    with pytest.raises(Killed):  # killed in epoch 3, after epoch 2's checkpoint
        run_trial(spec, KillAfter(2 * steps_per_epoch + 1), checkpoint_dir=folder)
    saved, problem = checkpoint.load(folder, checkpoint.trial_digest(spec))
    assert problem is None and saved["epoch"] == 2 and saved["step"] == 2 * steps_per_epoch
    resumed_rows = RecordingReporter()
    resumed = run_trial(spec, resumed_rows, checkpoint_dir=folder)
    assert resumed.resumed_from_epoch == 2 and resumed.checkpoint_problem is None
    assert without_timings(resumed) == without_timings(reference)
    # The new reporter saw the whole series, the epochs before the kill included.
    assert rows_without_timings(resumed_rows.rows) == rows_without_timings(reference_rows.rows)
    assert math.isfinite(resumed.metrics["verification_accuracy"])


def test_no_checkpoint_is_written_without_asking_or_for_fast_epochs(tmp_path, monkeypatch):
    run_trial(trial(checkpoint_every=0), checkpoint_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    # Unset: only when the first epoch is slow (here: any epoch is, by the threshold).
    run_trial(trial(checkpoint_every=None), KillAfter(10**9), checkpoint_dir=tmp_path / "fast")
    assert not (tmp_path / "fast").exists()
    monkeypatch.setattr(train_module, "AUTO_CHECKPOINT_EPOCH_S", 0.0)
    with pytest.raises(Killed):  # killed in epoch 2 (6 steps an epoch)
        run_trial(trial(checkpoint_every=None), KillAfter(7), checkpoint_dir=tmp_path / "slow")
    saved, _ = checkpoint.load(tmp_path / "slow", checkpoint.trial_digest(
        trial(checkpoint_every=None)))
    assert saved is not None and saved["every"] == 1


def test_every_k_epochs(tmp_path: Path) -> None:
    spec = trial(checkpoint_every=3)
    steps_per_epoch = run_trial(trial(checkpoint_every=0)).steps // 4
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(3 * steps_per_epoch + 1), checkpoint_dir=tmp_path)
    saved, _ = checkpoint.load(tmp_path, checkpoint.trial_digest(spec))
    assert saved["epoch"] == 3  # not 1 or 2


@pytest.mark.parametrize("damage", ["other trial", "truncated", "another format"])
def test_an_unusable_checkpoint_is_reported_and_the_trial_starts_again(tmp_path, damage):
    spec = trial()
    reference = run_trial(spec)
    steps_per_epoch = reference.steps // 4
    if damage == "other trial":
        with pytest.raises(Killed):
            run_trial(trial(seed=5), KillAfter(steps_per_epoch + 1), checkpoint_dir=tmp_path)
        expected = "another trial"
    else:
        with pytest.raises(Killed):
            run_trial(spec, KillAfter(steps_per_epoch + 1), checkpoint_dir=tmp_path)
        path = tmp_path / checkpoint.FILE
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:1000])
            expected = "unreadable checkpoint"
        else:
            import torch

            torch.save({"format": 99, "trial": checkpoint.trial_digest(spec)}, path)
            expected = "not a checkpoint of format 1"
    result = run_trial(spec, checkpoint_dir=tmp_path)
    assert result.resumed_from_epoch is None
    assert expected in result.checkpoint_problem
    assert without_timings(result) == without_timings(reference)


STUDY = """
[study]
name = "ckpt"
[heads.adacos-dynamic]
[data]
identities = 20
images_per_identity = 10
eval_identities = 10
val_pairs = 100
test_pairs = 200
distractors = 10
[model]
hidden = [32]
embedding_dim = 16
dropout = 0.2
[train]
epochs = {epochs}
batch_size = 32
log_every = 3
device = "cpu"
checkpoint_every = 1
"""


def sweep(spec_path: Path, out: Path, engine: str = "serial") -> subprocess.Popen:
    command = [SCRIPT, "sweep", str(spec_path), "--out", str(out), "--backend", engine]
    # Its own process group: the kill takes the sweep and its workers, as a machine's
    # or a scheduler's would.
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)


def only_record(out: Path) -> dict:
    (path,) = (out / "trials").glob("*.json")
    record = json.loads(path.read_text())
    for key in ("started_at", "finished_at", "worker", *TIMINGS, "resumed_from_epoch"):
        record.pop(key, None)
    record["metrics"] = {k: v for k, v in record["metrics"].items() if k not in TIMINGS}
    record["series"] = rows_without_timings(record["series"])
    return record


@pytest.mark.parametrize("engine", ["serial", "optuna"])
def test_sigkill_mid_trial_then_rerun_resumes_from_the_checkpoint(tmp_path: Path,
                                                                   engine: str) -> None:
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(STUDY.format(epochs=60))
    out = tmp_path / "run"
    process = sweep(spec_path, out, engine)
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = list(checkpoints.glob(f"*/{checkpoint.FILE}"))
        if found:
            saved = checkpoint.load(found[0].parent, "?")[0]  # None: digest "?" refused
            assert saved is None
            import torch

            if torch.load(found[0], weights_only=True)["epoch"] >= 2:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the trial finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)  # the group's other processes go too
    assert not list((out / "trials").glob("*.json"))
    done = subprocess.run([SCRIPT, "sweep", str(spec_path),
                           "--out", str(out), "--backend", engine],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = (out / "trials").glob("*.json")
    assert json.loads(path.read_text())["resumed_from_epoch"] >= 2
    assert not list(checkpoints.glob("*/*"))  # removed with the record written
    reference = tmp_path / "reference"
    done = subprocess.run([SCRIPT, "sweep", str(spec_path),
                           "--out", str(reference), "--backend", "serial"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert only_record(out) == only_record(reference)


def test_a_face_trial_resumes_too(tmp_path: Path) -> None:
    from test_faces import study

    base = study(tmp_path, data={"workers": 1})
    spec = base.trial("adacos-dynamic").model_copy(update={"train": base.train.model_copy(
        update={"epochs": 3, "checkpoint_every": 1})})
    reference = run_trial(spec)
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(reference.steps // 3 + 1), checkpoint_dir=tmp_path / "c")
    resumed = run_trial(spec, checkpoint_dir=tmp_path / "c")
    assert resumed.resumed_from_epoch == 1
    assert without_timings(resumed) == without_timings(reference)


@pytest.mark.parametrize("engine", ["serial", "optuna"])
def test_keep_checkpoints_and_save_models(tmp_path: Path, engine: str) -> None:
    import torch

    from adastudy.heads import build_head
    from adastudy.models import build_backbone

    spec_path = tmp_path / "s.toml"
    spec_path.write_text(STUDY.format(epochs=3))
    out = tmp_path / "run"
    done = subprocess.run([SCRIPT, "sweep", str(spec_path), "--out", str(out), "--backend",
                           engine, "--keep-checkpoints", "--save-models"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (record,) = (out / "trials").glob("*.json")
    name = record.name.removesuffix(".json")
    kept = torch.load(out / "checkpoints" / name / checkpoint.FILE, weights_only=True)
    assert kept["epoch"] == 2  # the last epoch writes none: the record follows it
    saved = torch.load(out / "models" / f"{name}.pt", weights_only=True)
    trial_spec = specs.TrialSpec.model_validate_json(saved["trial"])
    model = build_backbone(trial_spec.model, (64,))
    model.load_state_dict(saved["model"])
    head = build_head(trial_spec.head, 20, trial_spec.model.embedding_dim)
    head.load_state_dict(saved["head"])
    assert float(head.current_scale) == pytest.approx(
        json.loads(record.read_text())["metrics"]["final_s"], rel=0.05)


class Raises(RecordingReporter):
    """Raises `error` at the first report past `step`."""

    def __init__(self, step: int, error: BaseException) -> None:
        super().__init__()
        self.step, self.error = step, error

    def report(self, step, metrics) -> None:
        if step > self.step:
            raise self.error
        super().report(step, metrics)


def test_a_failed_trial_loses_its_checkpoint_an_interrupted_one_keeps_it(tmp_path) -> None:
    from adastudy import store
    from adastudy.backends import record_key
    from adastudy.backends.sweep import CHECKPOINTS_DIR, TrialRunner

    spec = trial()
    runner = TrialRunner(tmp_path)
    folder = tmp_path / CHECKPOINTS_DIR / store.record_name(record_key(spec)).removesuffix(
        ".json")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: no record, the checkpoint stays
        runner.execute(spec, Raises(7, KeyboardInterrupt()), None)
    assert store.read_trial_record(tmp_path, record_key(spec)) is None
    assert (folder / checkpoint.FILE).is_file() and not runner.in_trial
    assert runner.execute(spec, Raises(13, ValueError("boom")), None) is None
    record = store.read_trial_record(tmp_path, record_key(spec))
    assert record["state"] == "failed" and record["error"] == "ValueError: boom"
    assert not folder.exists()  # a final state: nothing to resume


@pytest.mark.ray
def test_a_ray_worker_killed_after_a_checkpoint_is_retried_from_it(local_ray, kill_dir,
                                                                    tmp_path):
    """Ray's side of a killed trial: Tune retries the trial, whose runner resumes from
    the run folder's checkpoint; the record is the uninterrupted trial's."""
    from conftest import arm_kill

    from adastudy import spec as specs
    from adastudy.backends import ray as ray_backend

    spec_path = tmp_path / "s.toml"
    spec_path.write_text(STUDY.format(epochs=4))
    marker = arm_kill(kill_dir, after_checkpoint=True)
    summary = ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run")
    assert marker.exists()  # killed just after its epoch-1 checkpoint ...
    assert summary.finished == summary.planned == 1 and summary.problems == []
    (path,) = (tmp_path / "run" / "trials").glob("*.json")
    assert json.loads(path.read_text())["resumed_from_epoch"] == 1  # ... and resumed
    reference = ray_backend.run_sweep(specs.load(spec_path), spec_path,
                                      out=tmp_path / "reference")
    assert reference.finished == 1
    assert only_record(tmp_path / "run") == only_record(tmp_path / "reference")
