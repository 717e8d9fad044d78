"""`adastudy sweep SPEC --dry-run`: the plan and a pilot-based estimate, nothing written."""

from __future__ import annotations

import json
import math
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


STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_forward_multiply_adds_match_insightfaces_figures():
    # arcface_torch's README lists 2.6, 6.3 and 12.1 GFLOPs (multiply-adds) for r18,
    # r50 and r100 and 0.45 G for mbf, at 112 x 112.
    face = (3, 112, 112)
    for name, published in (("iresnet18", 2.6), ("iresnet50", 6.3), ("iresnet100", 12.1),
                            ("mobilefacenet", 0.45)):
        counted = dryrun.forward_gmacs(specs.ModelSpec(name=name), face)
        assert counted == pytest.approx(published, rel=0.03), name


def test_casia_dry_run_plans_gpu_hours_without_its_data(tmp_path, monkeypatch):
    """The paper's study on a machine without CASIA-WebFace or a GPU: the plan and the
    GPU-hours from data.expected_images, nothing read, nothing written."""
    monkeypatch.chdir(tmp_path)
    spec_path = STUDIES / "casia-lfw.toml"
    study = specs.load(spec_path)
    assert not Path(study.data.path).exists()  # the user's data is not here
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # cosface and arcface 2 x 3 each, both AdaCos heads, 3 seeds.
    assert data["trials"] == (2 * 3 + 2 * 3 + 2) * 3 == 42
    pilot = data["pilots"]["main"]
    assert (pilot["basis"], pilot["images"], pilot["images_from"]) == (
        "reference", 490_623, "data.expected_images")
    per_trial_h = 34 * 490_623 * pilot["gmacs"] / dryrun.REFERENCE_GPU_GMACS_PER_S / 3600
    assert data["estimated_gpu_hours"] == pytest.approx(42 * per_trial_h)
    assert not (tmp_path / "runs").exists()
    text = CliRunner().invoke(app, ["sweep", str(spec_path), "--dry-run"])
    assert text.exit_code == 0, text.output
    assert "42 trials" in text.stdout and "GPU-hours" in text.stdout
    assert "not measured here" in text.stdout


def test_data_on_disk_is_counted_and_wins_over_expected_images(tmp_path):
    from face_files import tiny_jpeg, write_bin, write_recordio

    rec, _ = write_recordio(tmp_path, [(i % 3, tiny_jpeg(i)) for i in range(12)])
    lfw = write_bin(tmp_path / "lfw.bin", [tiny_jpeg(i) for i in range(40)], [True] * 20)
    study = specs.parse({
        "data": {"name": "recordio", "path": str(rec), "expected_images": 999},
        "eval": {"lfw": {"path": str(lfw)}}, "model": {"name": "mobilefacenet"},
        "train": {"epochs": 2}, "heads": {"adacos-fixed": {}}})
    found = dryrun.estimate(study)
    pilot = found.pilots["main"]
    assert (pilot.images, pilot.images_from) == (12, "disk")
    assert found.gpu_hours == pytest.approx(
        2 * 12 * pilot.gmacs / dryrun.REFERENCE_GPU_GMACS_PER_S / 3600)
    # Missing files and no expected_images: the plan stands, the hours are unknown.
    unknown = specs.parse({**study.model_dump(mode="json"), "data": {
        "name": "recordio", "path": str(tmp_path / "absent.rec")}})
    assert math.isnan(dryrun.estimate(unknown).gpu_hours)


def test_expected_images_is_not_in_the_digest():
    base = {"data": {"name": "recordio", "path": "/x/train.rec"},
            "eval": {"lfw": {"path": "/x/lfw.bin"}}}
    hinted = {**base, "data": {**base["data"], "expected_images": 5}}
    assert specs.parse(base).digest() == specs.parse(hinted).digest()


def test_gpu_synthetic_is_iresnet18_on_112_px_synthetic_images():
    study = specs.load(STUDIES / "gpu-synthetic.toml")
    trial = study.trial("adacos-dynamic", seed=0)
    assert (trial.model.name, trial.model.embedding_dim) == ("iresnet18", 512)
    assert (trial.data.name, trial.data.form, trial.data.image_size) == (
        "synthetic", "images", 112)
    assert (trial.train.device, trial.train.amp) == ("cuda", "bf16")
    samples = len(study.heads) * trial.train.epochs * (
        trial.data.identities * trial.data.images_per_identity)
    assert samples == 1_200_000  # what its header's "about 10 minutes" is sized on
