"""`train.devices = N`: one trial on N DistributedDataParallel ranks (gloo on the CPU)
equals the 1-process trial of the same global batch; a failing rank fails the trial."""

from __future__ import annotations

import math
import os
import signal
import subprocess

import pytest
import torch
from tiny_study import TINY, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy.distributed import RankError, _GlobalBatchNorm, sync_batchnorm
from adastudy.heads import HEAD_NAMES
from adastudy.spec import TrialSpec
from adastudy.train import RecordingReporter, run_trial

pytestmark = pytest.mark.slow

#: Values a run's timing moves.
TIMING = {"wall_time_s", "train_time_s", "samples_per_s"}


def trial(head: str, devices: int, **overrides) -> TrialSpec:
    values = {
        "head": head, "seed": 0,
        "data": {"identities": 20, "images_per_identity": 16, "eval_identities": 20,
                 "eval_images_per_identity": 4, "val_pairs": 100, "test_pairs": 200,
                 "distractors": 20, "feature_dim": 16},
        "model": {"hidden": [32], "embedding_dim": 16},
        "train": {"epochs": 2, "batch_size": 32, "devices": devices, "log_every": 5},
    }
    for section, update in overrides.items():
        values[section] = {**values[section], **update}
    return TrialSpec.model_validate(values)


def assert_same_trial(one, two, reports_one, reports_two, rel=1e-4):
    assert (two.state, two.steps, two.epochs) == (one.state, one.steps, one.epochs)
    assert two.steps_to_theta_med == one.steps_to_theta_med
    assert two.num_classes == one.num_classes
    assert set(two.metrics) == set(one.metrics)
    for key, value in one.metrics.items():
        if math.isnan(value):
            assert math.isnan(two.metrics[key]), key
        else:
            assert two.metrics[key] == pytest.approx(value, rel=rel, abs=1e-6), key
    assert [step for step, _ in reports_two] == [step for step, _ in reports_one]
    for (_, a), (_, b) in zip(reports_one, reports_two, strict=True):
        for key in set(a) - {"samples_per_s"}:
            if isinstance(a[key], float) and math.isnan(a[key]):
                continue
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), key


def run(spec: TrialSpec, **kwargs):
    reporter = RecordingReporter()
    result = run_trial(spec, reporter, **kwargs)
    return result, [(row["step"], row) for row in reporter.rows]


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_two_gloo_ranks_equal_one_process(head):
    one, reports_one = run(trial(head, 1))
    two, reports_two = run(trial(head, 2))
    assert one.state == "complete"
    assert_same_trial(one, two, reports_one, reports_two)
    # The window's samples are the global batch's: the same throughput units.
    assert two.metrics["final_train_accuracy"] == pytest.approx(
        one.metrics["final_train_accuracy"], abs=1e-9)


def test_two_ranks_of_a_cnn_on_images_equal_one_process():
    images = {"data": {"form": "images", "image_size": 16},
              "model": {"name": "cnn", "channels": [4, 8]}}
    one, reports_one = run(trial("adacos-dynamic", 1, **images))
    two, reports_two = run(trial("adacos-dynamic", 2, **images))
    assert_same_trial(one, two, reports_one, reports_two)


def test_the_global_batchnorm_is_batchnorm_on_one_rank(tmp_path):
    """With a group of one, the sums over ranks are the rank's own: forward, gradients
    and running statistics must be nn.BatchNorm's."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        for reference, shape in ((torch.nn.BatchNorm1d(5), (12, 5)),
                                 (torch.nn.BatchNorm2d(3), (4, 3, 6, 6))):
            torch.manual_seed(0)
            with torch.no_grad():
                reference.weight.normal_()
                reference.bias.normal_()
            ours = sync_batchnorm(torch.nn.Sequential(reference), torch.device("cpu"))[0]
            assert isinstance(ours, _GlobalBatchNorm)
            reference = torch.nn.Sequential(type(reference)(shape[1]))[0]
            reference.load_state_dict(ours.state_dict())
            for _ in range(3):
                x = (torch.randn(*shape) * 3 + 1).requires_grad_(True)
                x2 = x.detach().clone().requires_grad_(True)
                out, expected = ours(x), reference(x2)
                torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
                (out * torch.arange(out.numel()).view_as(out)).sum().backward()
                (expected * torch.arange(out.numel()).view_as(out)).sum().backward()
                torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(ours.weight.grad, reference.weight.grad,
                                           rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours.running_mean, reference.running_mean)
            torch.testing.assert_close(ours.running_var, reference.running_var)
            assert int(ours.num_batches_tracked) == 3
            ours.eval()
            reference.eval()
            x = torch.randn(*shape)
            torch.testing.assert_close(ours(x), reference(x))
    finally:
        torch.distributed.destroy_process_group()


def test_sync_batchnorm_keeps_state_dict_keys_and_frozen_gains():
    from adastudy.models import get_backbone

    model = get_backbone("iresnet18", 32)
    keys = list(model.state_dict())
    synced = sync_batchnorm(model, torch.device("cpu"))
    assert list(synced.state_dict()) == keys
    assert not synced.features.weight.requires_grad  # insightface's frozen gain
    assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
                   for m in synced.modules())


def test_a_rank_that_fails_before_training_fails_the_trial_with_its_error(tmp_path):
    from face_files import tiny_jpeg, write_bin, write_recordio

    (tmp_path / "train").mkdir()
    rec, _ = write_recordio(tmp_path / "train", [(i % 4, tiny_jpeg(i, (16, 16)))
                                                   for i in range(40)])
    lfw = write_bin(tmp_path / "lfw.bin", [tiny_jpeg(i, (16, 16)) for i in range(40)],
                    [i % 2 == 0 for i in range(20)])
    spec = TrialSpec.model_validate({
        "head": "cosface", "seed": 0,
        "data": {"name": "recordio", "path": str(rec), "image_size": 16, "workers": 0,
                 "val_identities": 2, "val_pairs": 20},
        "eval": {"lfw": {"path": str(lfw)}},
        "model": {"name": "cnn", "channels": [4], "embedding_dim": 8},
        "train": {"epochs": 1, "batch_size": 8, "devices": 2},
    })
    from adastudy.data import build_trial_data

    data = build_trial_data(spec)  # rank 0 is handed its data; rank 1 reads the spec's
    moved = spec.model_copy(update={"data": spec.data.model_copy(
        update={"path": str(tmp_path / "moved" / "train.rec")})})
    with pytest.raises(RankError, match=r"rank 1 failed \(exit 1\): .*data.path: .*no such"):
        run_trial(moved, data=data)


def test_a_rank_killed_during_training_fails_the_trial(tmp_path):
    class KillRankOne(RecordingReporter):
        def report(self, step, metrics):
            super().report(step, metrics)
            if step == 5:  # the first window: rank 1 is training
                children = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f",
                                           "adastudy.distributed"],
                                          capture_output=True, text=True).stdout.split()
                assert children
                for pid in children:
                    os.kill(int(pid), signal.SIGKILL)

    with pytest.raises(RankError, match=r"rank 1 failed \(exit -9\)"):
        run_trial(trial("adacos-dynamic", 2, train={"epochs": 4}), KillRankOne())


def test_more_devices_than_gpus_is_one_line_before_anything_is_written(
        tmp_path, monkeypatch):
    from cli_checks import assert_one_error_line

    from adastudy.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    text = TINY.replace("[train]", '[train]\ndevice = "cuda"\ndevices = 2')
    spec_path = write_spec(tmp_path, text)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out", str(out)])
    assert_one_error_line(result, "train.devices", "2 ranks need 2 GPUs, this machine has 1")
    assert not out.exists()


def test_batch_size_must_split_into_the_ranks():
    with pytest.raises(specs.SpecError, match="train.batch_size: 30 does not split into "
                                              "train.devices = 4"):
        specs.parse({"train": {"batch_size": 30, "devices": 4}})


def test_devices_keeps_old_digests_at_one():
    assert specs.parse({"train": {"devices": 1}}).digest() == specs.parse({}).digest()
    assert specs.parse({"train": {"devices": 2}}).digest() != specs.parse({}).digest()


def test_a_two_rank_trial_in_an_optuna_sweep_records_like_a_one_rank_one(tmp_path):
    import pandas as pd

    from adastudy.backends import optuna as optuna_backend

    results = {}
    for devices in (1, 2):
        text = TINY.replace("[train]", f"[train]\ndevices = {devices}").replace(
            "seeds = [0, 1]", "seeds = [0]").replace("s = [16.0, 32.0]", "s = [16.0]")
        spec_path = write_spec(tmp_path, text, epochs=2, name=f"d{devices}.toml")
        out = tmp_path / f"run{devices}"
        summary = optuna_backend.run_sweep(specs.load(spec_path), spec_path, out=out,
                                           workers=1)
        assert summary.finished == summary.planned == 2 and summary.problems == []
        results[devices] = pd.read_parquet(out / "trials.parquet").sort_values("head")
    one, two = results[1], results[2]
    assert list(two["state"]) == ["complete", "complete"]
    for column in ("verification_accuracy", "final_loss", "final_s"):
        assert list(two[column]) == pytest.approx(list(one[column]), rel=1e-4), column


def test_a_two_rank_trial_resumes_from_its_checkpoint_on_every_rank(tmp_path):
    spec = trial("adacos-dynamic", 2, train={"epochs": 3, "checkpoint_every": 1})
    whole, reports_whole = run(spec)

    class Interrupt(RecordingReporter):
        def report(self, step, metrics):
            super().report(step, metrics)
            if step == 25:  # in epoch 3, after epoch 2's checkpoint
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, Interrupt(), checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck").is_dir()
    resumed, reports_resumed = run(spec, checkpoint_dir=tmp_path / "ck")
    assert resumed.resumed_from_epoch == 2 and resumed.checkpoint_problem is None
    assert_same_trial(whole, resumed, reports_whole, reports_resumed, rel=1e-6)


@pytest.mark.ray
def test_a_two_rank_trial_on_ray_holds_two_cpus_and_completes(local_ray, tmp_path):
    from adastudy import store
    from adastudy.backends import ray as ray_backend
    from adastudy.backends.ray.session import RayClusterError

    text = TINY.replace("[train]", "[train]\ndevices = 2").replace(
        "seeds = [0, 1]", "seeds = [0]").replace("s = [16.0, 32.0]", "s = [16.0]")
    spec_path = write_spec(tmp_path, text, epochs=2)
    summary = ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run")
    assert summary.finished == summary.planned == 2 and summary.problems == []
    records, _ = store.read_trial_records(tmp_path / "run")
    assert {r["state"] for r in records} == {"complete"}
    manifest = store.read_manifest(tmp_path / "run")
    assert (manifest["runs"][-1]["cpus_per_trial"], manifest["runs"][-1]["ranks_per_trial"]) \
        == (1.0, 2)
    # A third CPU per rank does not fit a 2-CPU node: one line, before Tune waits.
    with pytest.raises(RayClusterError, match=r"train.devices = 2 ranks x --cpus-per-trial 2: "
                                        "no node of the Ray cluster has that many CPUs"):
        ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run2",
                              cpus_per_trial=2.0)
