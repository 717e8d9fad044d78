"""One trial end to end: every head trains, records what the paper plots, evaluates once;
divergence is a result; the CPU run repeats bit for bit; the reporter can prune."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy import train as train_module
from adastudy.cli import app
from adastudy.data import build_data
from adastudy.heads import HEAD_NAMES, SPREAD_STATISTICS, STATISTICS
from adastudy.spec import DataSpec, ModelSpec, TrainSpec, TrialSpec
from adastudy.train import TRAIN_METRICS, RecordingReporter, run_trial

TINY_DATA = {"identities": 20, "images_per_identity": 8, "eval_identities": 20,
             "eval_images_per_identity": 6, "val_pairs": 100, "test_pairs": 200,
             "distractors": 30, "feature_dim": 16}
TINY_TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.05, "log_every": 2, "warmup_epochs": 0.5}


def tiny(head: str = "cosface", seed: int = 0, **overrides) -> TrialSpec:
    params = {"cosface": {"s": 16.0, "m": 0.2}, "arcface": {"s": 16.0, "m": 0.2},
              "normface": {"s": 16.0}}.get(head, {})
    return TrialSpec(
        data=DataSpec(**TINY_DATA), model=ModelSpec(hidden=(32,), embedding_dim=16),
        train=TrainSpec(**{**TINY_TRAIN, **overrides}), head=head, seed=seed, **params,
    )


@pytest.fixture(scope="module")
def tiny_data():
    return build_data(tiny().data)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_a_tiny_trial_of_every_head_completes_with_every_metric(head, tiny_data):
    reporter = RecordingReporter()
    result = run_trial(tiny(head), reporter, data=tiny_data)
    assert result.state == "complete"
    steps_per_epoch = len(tiny_data.train_labels) // 32
    assert result.steps == 2 * steps_per_epoch
    assert 0.0 <= result.metrics["verification_accuracy"] <= 1.0
    assert result.metrics["verification_accuracy_std"] >= 0.0
    assert 0.0 <= result.metrics["rank1"] <= 1.0
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0
    assert any(k.startswith("tar_at_far_") for k in result.metrics)
    training = [row for row in reporter.rows if "loss" in row]
    # Windows of log_every = 2 steps that restart with each epoch (the last may be short).
    per_epoch = sorted({*range(2, steps_per_epoch + 1, 2), steps_per_epoch})
    expected = [e * steps_per_epoch + j for e in range(2) for j in per_epoch]
    assert [row["step"] for row in training] == expected
    for row in training:
        assert set(TRAIN_METRICS) <= set(row)
        assert all(math.isfinite(row[k]) for k in TRAIN_METRICS
                   if not (head == "softmax" and k in SPREAD_STATISTICS)
                   and not (head != "adacos-dynamic" and k == "update_slope")), row
    assert [row["epoch"] for row in reporter.rows if "val_accuracy" in row] == [1, 2]
    assert set(result.steps_to_theta_med) == {"60", "45", "30"}


def test_dynamic_adacos_starts_at_the_fixed_scale_and_follows_its_rule(tiny_data, monkeypatch):
    built = []
    original = train_module.build_head

    def recording_build_head(*args, **kwargs):
        head = original(*args, **kwargs)
        built.append(head.scale)
        return head

    monkeypatch.setattr(train_module, "build_head", recording_build_head)
    reporter = RecordingReporter()
    run_trial(tiny("adacos-dynamic", log_every=1), reporter, data=tiny_data)
    assert built == [pytest.approx(math.sqrt(2) * math.log(tiny_data.num_classes - 1))]
    # With one step per report, each report's s is ln B_avg (at the previous s) over
    # cos(min(π/4, θ_med)) of that same batch.
    for row in (r for r in reporter.rows if "loss" in r):
        expected = row["ln_b_avg"] / math.cos(min(math.pi / 4, row["theta_med_rad"]))
        assert row["s"] == pytest.approx(expected, rel=1e-5)


def test_an_injected_non_finite_loss_ends_the_trial_as_diverged(tiny_data, monkeypatch):
    original = train_module.build_head

    def poisoned_build_head(*args, **kwargs):
        head = original(*args, **kwargs)
        loss, calls = head.loss, []  # the trainer's loss (and statistics) in one pass

        def loss_with_nan_from_step_4(embeddings, labels):
            value = loss(embeddings, labels)
            calls.append(1)
            return value * float("nan") if len(calls) >= 4 else value

        head.loss = loss_with_nan_from_step_4
        return head

    monkeypatch.setattr(train_module, "build_head", poisoned_build_head)
    reporter = RecordingReporter()
    result = run_trial(tiny("cosface", log_every=3), reporter, data=tiny_data)
    assert result.state == "diverged"
    assert result.diverged_step == 4
    assert "loss" in result.diverged_reason
    assert "verification_accuracy" not in result.metrics
    assert reporter.rows[-1]["step"] == 4


def _comparable(result, reporter):
    timing = {"wall_time_s", "train_time_s", "samples_per_s"}
    out = {k: v for k, v in result.to_dict().items() if k not in timing}
    rows = [{k: v for k, v in row.items() if k != "samples_per_s"} for row in reporter.rows]
    return json.dumps([out, rows], sort_keys=True)


def test_two_runs_with_the_same_seed_are_identical_on_the_cpu():
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)  # the global state must not matter either
        reporter = RecordingReporter()
        result = run_trial(tiny("adacos-dynamic", seed=7), reporter)  # data built each time
        runs.append(_comparable(result, reporter))
    assert runs[0] == runs[1]
    reporter = RecordingReporter()
    other = run_trial(tiny("adacos-dynamic", seed=8), reporter)
    assert _comparable(other, reporter) != runs[0]


def test_a_reporter_that_says_stop_prunes_the_trial_after_validation(tiny_data):
    class Pruner(RecordingReporter):
        def should_stop(self) -> bool:
            return any("val_accuracy" in row for row in self.rows)

    reporter = Pruner()
    result = run_trial(tiny("normface", epochs=3), reporter, data=tiny_data)
    assert result.state == "pruned"
    assert result.epochs == 1
    assert "verification_accuracy" not in result.metrics


def test_statistics_reported_are_the_heads_own(tiny_data):
    reporter = RecordingReporter()
    run_trial(tiny("adacos-fixed"), reporter, data=tiny_data)
    rows = [r for r in reporter.rows if "loss" in r]
    s_f = math.sqrt(2) * math.log(tiny_data.num_classes - 1)
    assert all(row["s"] == pytest.approx(s_f, rel=1e-6) for row in rows)
    assert all(0 <= row["theta_med_rad"] <= math.pi for row in rows)
    assert set(STATISTICS) <= set(rows[0])


@pytest.mark.parametrize("name", ["cosface", "adacos-dynamic"])
def test_a_log_windows_means_are_its_steps_statistics_whatever_their_widths(name):
    # Batches of 9, then 12 (wider: the window's buffer grows), then 5 (padded): the
    # window's means are the means of each step's own statistics, as the head finishes
    # them one batch at a time.
    from adastudy.heads import build_head

    train = TrainSpec(epochs=1, log_every=3)
    head = build_head(name, 30, 8).train()
    window = train_module._LogWindow(train, train_module._ScaleGuards(train, head),
                                     torch.device("cpu"), head.finish_statistics)
    gen = torch.Generator().manual_seed(0)
    losses, statistics, correct = [], [], 0
    for n in (9, 12, 5):
        x = torch.randn(n, 8, generator=gen, requires_grad=True)
        y = torch.randint(0, 30, (n,), generator=gen)
        y[0] = -1
        loss = head.loss(x, y)
        loss.backward()
        window.record(loss, head.correct, head.statistics_rows, n)
        losses.append(float(loss.detach()))
        statistics.append(head.statistics_vector.tolist())
        correct += int(head.correct)
    means = window.close(3, lr=0.1)
    assert means["loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert means["train_accuracy"] == pytest.approx(correct / 26)
    for k, key in enumerate(STATISTICS):
        values = [row[k] for row in statistics]
        if all(math.isnan(v) for v in values):
            assert math.isnan(means[key]), key
        else:
            assert means[key] == pytest.approx(sum(values) / 3, rel=1e-5, abs=1e-6), key


def test_cli_train_prints_a_summary_and_json(tmp_path):
    spec = tmp_path / "tiny.toml"
    lines = ["[data]", *(f"{k} = {v}" for k, v in TINY_DATA.items()),
             "[model]", "hidden = [32]", "embedding_dim = 16",
             "[train]", *(f"{k} = {v}" for k, v in TINY_TRAIN.items())]
    spec.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(spec), "--head", "arcface", "--s", "16",
                                 "--m", "0.3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "verification accuracy" in result.stdout
    assert "rank-1 identification" in result.stdout

    result = runner.invoke(app, ["train", str(spec), "--head", "adacos-fixed", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["state"] == "complete" and payload["head"] == "adacos-fixed"
    assert payload["series"] and "verification_accuracy" in payload["metrics"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--head", "sphereface"], "unknown head"),
        (["--head", "cosface", "--s", "-1"], "s (scale)"),
        (["--head", "arcface", "--m", "3.5"], "m (margin"),
        (["--head", "adacos-fixed", "--s", "10"], "unexpected parameter 's'"),
    ],
)
def test_cli_train_user_errors_are_one_line_exit_2(tmp_path, args, needle):
    spec = tmp_path / "tiny.toml"
    spec.write_text("[train]\nepochs = 1\n")
    result = CliRunner().invoke(app, ["train", str(spec), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr


def test_cli_train_bad_spec_names_file_and_key(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("[train]\nlr = -1\n")
    result = CliRunner().invoke(app, ["train", str(spec)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {spec}: train.lr: must be > 0, got -1"
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "no such spec file" in result.stderr


def test_digits_and_synthetic_images_train_too():
    digits = tiny("adacos-fixed").model_copy(update={"data": DataSpec(
        name="digits", val_pairs=100, test_pairs=200)})
    result = run_trial(digits)
    assert result.state == "complete" and result.metrics["verification_accuracy"] > 0.5

    images = tiny("arcface").model_copy(update={
        "data": DataSpec(**{**TINY_DATA, "form": "images", "image_size": 16}),
        "model": ModelSpec(channels=(8, 16), embedding_dim=16),
        "train": TrainSpec(**{**TINY_TRAIN, "epochs": 1}),
    })
    result = run_trial(images)
    assert result.state == "complete"
    assert 0.0 <= result.metrics["verification_accuracy"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_mixed_precision_trial_on_cuda_keeps_the_head_in_float32(tiny_data):
    reporter = RecordingReporter()
    result = run_trial(tiny("adacos-dynamic", device="cuda", amp=True), reporter, data=tiny_data)
    assert result.state == "complete"
    rows = [r for r in reporter.rows if "loss" in r]
    assert all(math.isfinite(r["s"]) and math.isfinite(r["loss"]) for r in rows)


def test_the_stability_margin_falls_below_one_where_dynamic_adacos_runs_away():
    """C = 4000 with a 32-d embedding (the claims study's run-away setting): the windows
    before the divergence show d_eff below the theory's bound; at C = 100, D = 64 the
    margin stays above 1 once training has settled."""
    study = specs.load(Path(__file__).resolve().parents[1] / "studies" / "claims-cpu.toml")
    runaway = run_trial(study.trial("adacos-dynamic", variant="c4000-d32"),
                        reporter := RecordingReporter())
    assert runaway.state == "diverged"
    windows = [r for r in reporter.rows if "stability_margin" in r]
    # Below 1 in every window: the scale never had a fixed point to settle on.
    assert windows and all(r["stability_margin"] < 1.0 for r in windows)
    assert windows[-1]["d_eff"] < 4 * math.log(3999)  # below the bound (33.2 at 45°)
    stable = run_trial(study.trial("adacos-dynamic"), reporter := RecordingReporter())
    assert stable.state == "complete"
    late = [r for r in reporter.rows if "stability_margin" in r][-5:]
    assert all(r["stability_margin"] > 1.0 for r in late)


def test_without_the_bn_neck_the_mean_cosine_drifts_and_the_runaway_comes_sooner():
    study = specs.load(Path(__file__).resolve().parents[1] / "studies" / "claims-cpu.toml")
    trial = study.trial("adacos-dynamic", variant="c4000-d32")
    found = {}
    for norm in ("batchnorm", "none"):
        spec = trial.model_copy(update={"model": trial.model.model_copy(
            update={"embedding_norm": norm})})
        reporter = RecordingReporter()
        found[norm] = (run_trial(spec, reporter), [r for r in reporter.rows if "d_eff" in r])
    (with_bn, bn_rows), (without, plain_rows) = found["batchnorm"], found["none"]
    assert with_bn.state == without.state == "diverged"
    assert without.diverged_step < with_bn.diverged_step
    assert plain_rows[-1]["cos_nontarget_mean"] > 5 * abs(bn_rows[-1]["cos_nontarget_mean"])


@pytest.mark.parametrize(("norm", "last"), [("batchnorm", torch.nn.BatchNorm1d),
                                            ("none", torch.nn.Identity)])
@pytest.mark.parametrize("shape", [(16,), (3, 16, 16)])
def test_the_embedding_norm_ends_either_backbone(norm, last, shape):
    from adastudy.models import build_backbone

    model = build_backbone(ModelSpec(embedding_norm=norm, channels=(8, 16), hidden=(8,)),
                           shape)
    assert isinstance(list(model.modules())[-1], last)


# -- dynamic AdaCos's guards (train.adacos_scale_max, train.stability_stop_windows) --------

STABILITY = Path(__file__).resolve().parents[1] / "studies" / "stability.toml"


def _with_train(trial: TrialSpec, **train) -> TrialSpec:
    return TrialSpec.model_validate(
        {**trial.model_dump(), "train": {**trial.train.model_dump(), **train}})


@pytest.fixture(scope="module")
def runaway():
    """C = 10,000 with a 32-d embedding: dynamic AdaCos runs away in every seed."""
    trial = specs.load(STABILITY).trial("adacos-dynamic", variant="c10000-d32")
    return trial, build_data(trial.data)


def test_the_early_stop_guard_ends_a_runaway_sooner_on_the_update_slope(runaway):
    trial, data = runaway
    plain = run_trial(trial, data=data)
    assert plain.state == "diverged" and plain.diverged_by == "observed"
    guarded = run_trial(_with_train(trial, stability_stop_windows=2),
                        reporter := RecordingReporter(), data=data)
    assert guarded.state == "diverged" and guarded.diverged_by == "stability guard"
    assert "stability guard" in guarded.diverged_reason
    assert guarded.diverged_step < plain.diverged_step
    windows = [r for r in reporter.rows if "update_slope" in r]
    # It fired on two windows in a row with the slope above 1 and s growing.
    assert windows[-1]["update_slope"] > 1 and windows[-2]["update_slope"] > 1
    assert windows[-1]["s"] > windows[-2]["s"] > windows[-3]["s"]
    assert windows[-1]["s"] < train_module.MAX_SCALE


def test_the_early_stop_guard_spares_a_run_whose_scale_settles():
    # C = 1000, D = 32: d_eff falls below the Gaussian bound (margin ≈ 0.7) while s
    # still grows, yet the scale settles near 24; the slope stays below 1.
    trial = specs.load(STABILITY).trial("adacos-dynamic", variant="c1000-d32")
    result = run_trial(_with_train(trial, stability_stop_windows=2),
                       reporter := RecordingReporter())
    assert result.state == "complete" and result.diverged_by is None
    windows = [r for r in reporter.rows if "update_slope" in r]
    assert min(r["stability_margin"] for r in windows) < 1.0
    assert max(r["update_slope"] for r in windows) < 1.0


def test_the_scale_clamp_binds_is_recorded_and_leaves_fixed_heads_alone(runaway):
    trial, data = runaway
    cap = 20.0
    clamped = run_trial(_with_train(trial, adacos_scale_max=cap),
                        reporter := RecordingReporter(), data=data)
    scales = [r["s"] for r in reporter.rows if "s" in r]
    assert max(scales) == pytest.approx(cap) and clamped.diverged_by is None
    assert clamped.state == "complete"  # the run-away is held at the ceiling
    # Pushed up at every step once it reached the ceiling (in the first window): it
    # bound from that step to the last.
    first = clamped.scale_clamped_first_step
    assert first is not None and 1 < first <= 5 and scales[0] < cap - 1e-3
    assert clamped.scale_clamped_steps == clamped.steps - first + 1
    # CosFace at s = 30 above the same ceiling: the guard is dynamic AdaCos's only.
    fixed = _with_train(trial.model_copy(update={"head": "cosface", "s": 30.0, "m": 0.35}),
                        adacos_scale_max=cap, epochs=1)
    result = run_trial(fixed, reporter := RecordingReporter(), data=data)
    assert result.scale_clamped_steps == 0 and result.scale_clamped_first_step is None
    assert all(r["s"] == pytest.approx(30.0) for r in reporter.rows if "s" in r)


def test_train_amp_chooses_the_autocast_dtype(monkeypatch) -> None:
    from adastudy.errors import ParameterError
    from adastudy.spec import TrainSpec
    from adastudy.train import amp_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for value in (True, "bf16", "fp16", "none", False):
        assert amp_dtype(TrainSpec(amp=value), cpu) is None  # nothing changes on the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype(TrainSpec(amp=True), cuda) == torch.bfloat16
    assert amp_dtype(TrainSpec(amp="bf16"), cuda) == torch.bfloat16
    assert amp_dtype(TrainSpec(amp="fp16"), cuda) == torch.float16
    assert amp_dtype(TrainSpec(amp="none"), cuda) is None
    assert amp_dtype(TrainSpec(amp=False), cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype(TrainSpec(amp=True), cuda) == torch.float16
    with pytest.raises(ParameterError, match="train.amp: 'bf16' was asked for"):
        amp_dtype(TrainSpec(amp="bf16"), cuda)
