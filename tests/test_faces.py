"""Face data on disk as a trial's data: the DataLoader source, held-out validation,
`[eval.<name>]` sets, corrupt samples, and the spec sections that ask for them."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from face_files import write_bin, write_folder, write_pairs, write_recordio
from PIL import Image

from adastudy import spec as specs
from adastudy.data import DataError, build_trial_data
from adastudy.data.faces import build_faces, default_workers, load_eval_set
from adastudy.train import run_trial

SIZE = 16


def face(identity: int, sample: int) -> bytes:
    """A 16 x 16 PNG (lossless, so a decoded pixel is known exactly): an identity's
    pattern, its left and right halves different (a flip shows), plus a little noise."""
    rng = np.random.default_rng(1000 * identity + 7)
    pattern = rng.integers(0, 200, size=(SIZE, SIZE, 3))
    noise = np.random.default_rng(identity * 31 + sample).integers(0, 40, size=(SIZE, SIZE, 3))
    out = io.BytesIO()
    Image.fromarray((pattern + noise).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_faces(folder: Path, identities: int = 8, per: int = 6, broken: tuple[int, ...] = ()
                ) -> Path:
    """A RecordIO training set (insightface layout, meta record) of `identities` x `per`
    images; the images at the positions in `broken` are not images."""
    images = []
    for identity in range(identities):
        for sample in range(per):
            data = face(identity, sample)
            if len(images) in broken:
                data = b"not an image at all"
            images.append((identity, data))
    folder.mkdir(parents=True, exist_ok=True)
    rec, _ = write_recordio(folder, images)
    return rec


def write_pair_bin(path: Path, first_identity: int, pairs: int = 20) -> Path:
    """A verification .bin of `pairs` pairs over identities never trained on: in each of
    10 folds, same pairs first, then different pairs."""
    images, issame = [], []
    per_fold = pairs // 10
    for fold in range(10):
        for p in range(per_fold):
            same = p < per_fold // 2
            a = first_identity + (fold + p) % 5
            b = a if same else first_identity + (fold + p + 1) % 5
            images += [face(a, 100 + 2 * p), face(b, 101 + 2 * p)]
            issame.append(same)
    return write_bin(path, images, issame)


def study(tmp_path: Path, **overrides) -> specs.StudySpec:
    data = {"name": "recordio", "path": str(write_faces(tmp_path)), "image_size": SIZE,
            "workers": 0, "val_identities": 2, "val_pairs": 20}
    data.update(overrides.pop("data", {}))
    return specs.parse({
        "study": {"name": "faces", **overrides.pop("study", {})},
        "heads": {"cosface": {"s": [8.0], "m": [0.2]}, "adacos-dynamic": {}},
        "data": data,
        "model": {"name": "cnn", "channels": [8, 16], "embedding_dim": 16},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "log_every": 2, "device": "cpu"},
        "eval": overrides.pop("eval", {
            "lfw": {"path": str(write_pair_bin(tmp_path / "lfw.bin", 100))},
            "cfp_fp": {"path": str(write_pair_bin(tmp_path / "cfp_fp.bin", 200))},
        }),
        **overrides,
    })


def epoch_batches(source, seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(source.batches(8, seed, epoch, torch.device("cpu")))


# -- the training source ------------------------------------------------------------------


def test_a_trial_on_recordio_with_two_eval_sets(tmp_path: Path) -> None:
    spec = study(tmp_path)
    trial = spec.trial("cosface", s=8.0, m=0.2)
    result = run_trial(trial)
    assert result.state == "complete"
    metrics = result.metrics
    lfw, cfp = metrics["verification_accuracy_lfw"], metrics["verification_accuracy_cfp_fp"]
    assert 0.0 <= lfw <= 1.0 and 0.0 <= cfp <= 1.0
    assert "verification_accuracy_lfw_std" in metrics
    assert metrics["verification_accuracy"] == pytest.approx((lfw + cfp) / 2, abs=1e-15)
    assert "verification_accuracy_std" not in metrics  # a std over two sets would mix them
    assert not {"rank1", "tar_at_far_1e-02"} & set(metrics)  # embedded-only metrics
    assert math.isfinite(metrics["val_accuracy"])
    assert metrics["corrupt_samples"] == 0
    # Two of the 8 identities are held out for validation: 6 classes, 36 images.
    assert result.num_classes == 6
    assert result.steps == 2 * (36 // 8)


def test_one_eval_set_gives_the_mean_its_own_values(tmp_path: Path) -> None:
    spec = study(tmp_path, eval={"lfw": {"path": str(write_pair_bin(tmp_path / "l.bin", 100))}})
    metrics = run_trial(spec.trial("adacos-dynamic")).metrics
    assert metrics["verification_accuracy"] == metrics["verification_accuracy_lfw"]
    assert metrics["verification_accuracy_std"] == metrics["verification_accuracy_lfw_std"]


def test_batches_are_the_same_with_0_and_2_workers(tmp_path: Path) -> None:
    spec = study(tmp_path)
    serial = build_trial_data(spec.trial("cosface", s=8.0, m=0.2)).source
    parallel_spec = spec.model_copy(update={"data": spec.data.model_copy(update={"workers": 2})})
    parallel = build_trial_data(parallel_spec.trial("cosface", s=8.0, m=0.2)).source
    assert parallel.workers == 2 and serial.workers == 0
    for epoch in (0, 1):
        a, b = epoch_batches(serial, 3, epoch), epoch_batches(parallel, 3, epoch)
        assert len(a) == len(b) == 36 // 8
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Asked again (and out of order), an epoch gives the same batches; another seed or
    # epoch another order.
    again = epoch_batches(serial, 3, 1)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(again, a, strict=True))
    assert not torch.equal(epoch_batches(serial, 4, 1)[0][0], a[0][0])
    assert not torch.equal(epoch_batches(serial, 3, 0)[0][0], a[0][0])


def test_batches_hold_normalised_flipped_training_images(tmp_path: Path) -> None:
    spec = study(tmp_path)
    data = build_trial_data(spec.trial("cosface", s=8.0, m=0.2))
    source = data.source
    held = set(range(8)) - set()  # identities, to be narrowed to the trained ones below
    originals = {(i, s): pixels(face(i, s)) for i in range(8) for s in range(6)}
    seen_flipped = seen_plain = 0
    trained_identities = set()
    for x, y in epoch_batches(source, 0, 0):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, SIZE, SIZE)
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
        for image, label in zip(x, y, strict=True):
            hwc = ((image.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)
            match = [k for k, v in originals.items() if np.array_equal(v, hwc)]
            mirrored = [k for k, v in originals.items() if np.array_equal(v[:, ::-1], hwc)]
            assert len(match) + len(mirrored) == 1
            seen_plain += bool(match)
            seen_flipped += bool(mirrored)
            identity = (match or mirrored)[0][0]
            trained_identities.add((identity, int(label)))
    assert seen_flipped and seen_plain  # random flips, both ways
    # Each identity keeps one class; the held-out ones never appear.
    identities = {i for i, _ in trained_identities}
    assert len(identities) == 6 and len({c for _, c in trained_identities}) == 6
    assert held - identities == set(range(8)) - identities  # two identities held out
    # The flips follow data.flip.
    plain = build_faces(spec.data.model_copy(update={"flip": False}), spec.eval).source
    for x, _ in epoch_batches(plain, 0, 0):
        for image in x:
            hwc = ((image.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)
            assert any(np.array_equal(v, hwc) for v in originals.values())


def test_holdout_validation_uses_only_held_out_identities(tmp_path: Path) -> None:
    spec = study(tmp_path)
    data = build_trial_data(spec.trial("adacos-dynamic"))
    trained = set()
    for x, _ in epoch_batches(data.source, 0, 0):
        trained |= {x[i].numpy().tobytes() for i in range(x.shape[0])}
    val = data.val
    assert len(val) == 20 and int(val.issame.sum()) == 10
    from adastudy.data.base import normalize_images

    for image in normalize_images(val.inputs):
        as_bytes = image.numpy().tobytes()
        assert as_bytes not in trained
        assert torch.flip(image, dims=[-1]).numpy().tobytes() not in trained
    assert set(data.eval_sets) == {"lfw", "cfp_fp"}


def test_a_named_selection_set_validates_and_is_no_test_set(tmp_path: Path) -> None:
    spec = study(tmp_path, study={"selection": "cfp_fp"})
    trial = spec.trial("adacos-dynamic")
    assert trial.validation_source() == "cfp_fp" and trial.test_sets() == ["lfw"]
    data = build_trial_data(trial)
    assert set(data.eval_sets) == {"lfw"}
    assert len(data.val) == 20
    assert data.source.num_classes == 8  # nothing held out
    metrics = run_trial(trial, data=data).metrics
    assert "verification_accuracy_cfp_fp" not in metrics
    assert metrics["verification_accuracy"] == metrics["verification_accuracy_lfw"]


def test_an_image_folder_trains_too(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "faces", {
        f"person_{i}": [face(i, s) for s in range(5)] for i in range(6)})
    spec = study(tmp_path, data={"name": "folder", "path": str(root)})
    result = run_trial(spec.trial("adacos-dynamic"))
    assert result.state == "complete" and result.num_classes == 4
    assert "verification_accuracy_lfw" in result.metrics


def test_a_pairs_txt_eval_set(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "lfw", {
        f"p{i}": [face(50 + i, s) for s in range(4)] for i in range(4)})
    same = [(f"p{i}", 1, 2) for i in range(4)] * 5
    different = [(f"p{i}", 1, f"p{(i + 1) % 4}", 3) for i in range(4)] * 5
    pairs_file = write_pairs(tmp_path / "pairs.txt", same, different)
    pairs = load_eval_set("lfw", pairs_file, str(root), SIZE)
    assert len(pairs) == 40 and int(pairs.issame.sum()) == 20
    assert pairs.inputs.dtype == torch.uint8 and pairs.inputs.shape[1:] == (3, SIZE, SIZE)
    # The left image of the first pair is p0's image 1 (pairs.txt counts from 1).
    first = pairs.inputs[pairs.left[0]].permute(1, 2, 0).numpy()
    assert np.array_equal(first, pixels(face(50, 0)))


# -- corrupt samples ------------------------------------------------------------------------


def test_corrupt_samples_are_skipped_and_counted_up_to_max_corrupt(tmp_path: Path) -> None:
    rec = write_faces(tmp_path / "set", broken=(0, 13))
    # Validation from an [eval] set: every identity trains, both broken images with them.
    base = study(tmp_path, data={"path": str(rec), "max_corrupt": 2},
                 study={"selection": "lfw"})
    result = run_trial(base.trial("adacos-dynamic"))
    assert result.state == "complete"
    assert result.metrics["corrupt_samples"] == 2  # distinct samples, over both epochs
    # 48 samples in 6 batches of 8, two of them one sample short: the steps stay.
    assert result.steps == 2 * 6
    strict = base.model_copy(update={"data": base.data.model_copy(update={"max_corrupt": 1})})
    with pytest.raises(DataError, match=r"set/train.rec: 2 corrupt training samples, more "
                                        r"than data.max_corrupt = 1; the first: .*record"):
        run_trial(strict.trial("adacos-dynamic"))


def test_the_default_max_corrupt_is_a_thousandth(tmp_path: Path) -> None:
    data = build_trial_data(study(tmp_path).trial("adacos-dynamic"))
    assert data.source.max_corrupt == 0  # 36 samples: floor(0.036)
    assert default_workers() >= 0


def test_an_undecodable_test_image_is_an_error(tmp_path: Path) -> None:
    path = write_bin(tmp_path / "bad.bin", [face(1, 1), b"junk"] * 10, [True] * 10)
    with pytest.raises(DataError, match=r"bad.bin: image 1 \(pair 0\): cannot decode"):
        load_eval_set("bad", path, None, SIZE)


def test_missing_data_is_one_error_naming_it(tmp_path: Path) -> None:
    spec = study(tmp_path, data={"path": str(tmp_path / "nowhere.rec")})
    with pytest.raises(DataError, match="nowhere.rec: no such file"):
        build_trial_data(spec.trial("adacos-dynamic"))
    too_many = study(tmp_path, data={"val_identities": 7})
    with pytest.raises(DataError, match="data.val_identities: 7 held-out identities"):
        build_trial_data(too_many.trial("adacos-dynamic"))


# -- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({"data": {"name": "digits", "identities": 50}}, "data.identities: unknown key"),
        ({"data": {"name": "recordio"}}, "data.path: required key is missing"),
        ({"data": {"name": "recordio", "path": "x.rec", "spread": 1.0}},
         "data.spread: unknown key"),
        ({"data": {"name": "recordio", "path": "x.rec"}},
         "data.name: 'recordio' needs an [eval.<name>] verification set"),
        ({"eval": {"lfw": {"path": "lfw.bin"}}},
         "eval.lfw: verification sets on disk need face images on disk"),
        ({"data": {"name": "folder", "path": "f"}, "eval": {"std": {"path": "a.bin"}}},
         "eval.std: a set's name is"),
        ({"data": {"name": "folder", "path": "f"}, "eval": {"lfw": {"path": "a.bin"}},
          "study": {"selection": "agedb"}}, "study.selection: must be 'auto', 'holdout'"),
        ({"data": {"name": "folder", "path": "f"}, "eval": {"lfw": {"path": "a.bin"}},
          "study": {"selection": "lfw"}}, "needs an [eval.<name>] verification set to test"),
        ({"data": {"name": "folder", "path": "f"}, "eval": {"lfw": {"path": "a.bin"}},
          "study": {"metric": "rank1"}}, "study.metric: 'rank1' needs the impostor"),
        ({"data": {"name": "folder", "path": "f"}, "eval": {"lfw": {"path": "a.bin"}},
          "study": {"metric": "verification_accuracy_cfp"}},
         "study.metric: 'verification_accuracy_cfp' names no test set"),
    ],
)
def test_bad_face_specs_are_one_line_errors(tables, expected) -> None:
    with pytest.raises(specs.SpecError) as err:
        specs.parse(tables, "x.toml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_relative_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "x.toml").write_text(
        '[data]\nname = "recordio"\npath = "../data/train.rec"\n'
        '[eval.lfw]\npath = "lfw.bin"\nimages = "/abs/images"\n')
    spec = specs.load(folder / "x.toml")
    assert spec.data.path == str(tmp_path / "data" / "train.rec")
    assert spec.eval["lfw"].path == str(folder / "lfw.bin")
    assert spec.eval["lfw"].images == "/abs/images"
    trial = spec.trial("adacos-dynamic")
    assert trial.eval == spec.eval and trial.validation_source() == "holdout"


def test_a_metric_of_one_eval_set_can_rank_the_study(tmp_path: Path) -> None:
    spec = study(tmp_path, study={"metric": "verification_accuracy_lfw"})
    assert spec.study.metric == "verification_accuracy_lfw"
    assert specs.DataSpec(name="recordio", path="x").name == "recordio"


# -- a study on face data, on both engines ------------------------------------------------


FACE_STUDY = """
[study]
name = "faces"
seeds = [0, 1]

[heads.cosface]
s = [8.0]
m = [0.2]

[heads.adacos-dynamic]

[data]
name = "recordio"
path = "set/train.rec"
image_size = 16
workers = {workers}
val_identities = 2
val_pairs = 20

[model]
name = "cnn"
channels = [8, 16]
embedding_dim = 16

[train]
epochs = 1
batch_size = 8
log_every = 2
device = "cpu"

[eval.lfw]
path = "lfw.bin"

[eval.cfp_fp]
path = "cfp_fp.bin"
"""


@pytest.fixture(params=["optuna", pytest.param("ray", marks=pytest.mark.ray)])
def engine_name(request):
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return request.param


def test_a_face_study_sweeps_with_one_column_per_eval_set(tmp_path: Path, engine_name) -> None:
    from test_engine_contract import Driver

    from adastudy import store

    write_faces(tmp_path / "set")
    write_pair_bin(tmp_path / "lfw.bin", 100)
    write_pair_bin(tmp_path / "cfp_fp.bin", 200)
    spec_path = tmp_path / "faces.toml"
    # Optuna's worker process decodes with a DataLoader worker of its own.
    spec_path.write_text(FACE_STUDY.format(workers=1 if engine_name == "optuna" else 0))
    out = tmp_path / "run"
    summary = Driver(engine_name).run(spec_path, out, one_at_a_time=True)
    assert not summary.interrupted and summary.finished == 4
    trials, _ = store.load_tables(out)
    assert sorted(trials["state"]) == ["complete"] * 4
    for column in ("verification_accuracy_lfw", "verification_accuracy_cfp_fp",
                   "verification_accuracy_lfw_std", "verification_accuracy"):
        assert trials[column].notna().all(), column
    mean = (trials["verification_accuracy_lfw"] + trials["verification_accuracy_cfp_fp"]) / 2
    np.testing.assert_allclose(trials["verification_accuracy"], mean, rtol=0, atol=1e-12)
    assert (trials["num_classes"] == 6).all()
    assert (trials["corrupt_samples"] == 0).all()


def test_a_sweep_with_missing_data_stops_before_writing(tmp_path: Path) -> None:
    from cli_checks import assert_one_error_line
    from typer.testing import CliRunner

    from adastudy.cli import app

    write_faces(tmp_path / "set")
    write_pair_bin(tmp_path / "lfw.bin", 100)
    spec_path = tmp_path / "faces.toml"
    text = FACE_STUDY.format(workers=0)
    for broken, expected in (
        (text.replace('path = "set/train.rec"', 'path = "gone/train.rec"'),
         "data.path: " + str(tmp_path / "gone" / "train.rec") + ": not found"),
        (text, "eval.cfp_fp.path: " + str(tmp_path / "cfp_fp.bin") + ": no such file"),
    ):
        spec_path.write_text(broken)
        before = sorted(p.name for p in tmp_path.iterdir())
        result = CliRunner().invoke(app, ["sweep", str(spec_path), "--out",
                                          str(tmp_path / "run")])
        assert_one_error_line(result, expected)
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_train_runs_one_face_trial_and_shows_each_set(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from adastudy.cli import app

    write_faces(tmp_path / "set")
    write_pair_bin(tmp_path / "lfw.bin", 100)
    write_pair_bin(tmp_path / "cfp_fp.bin", 200)
    spec_path = tmp_path / "faces.toml"
    spec_path.write_text(FACE_STUDY.format(workers=0))
    result = CliRunner().invoke(app, ["train", str(spec_path), "--head", "cosface", "--s",
                                      "8", "--m", "0.2"])
    assert result.exit_code == 0, result.output
    for row in ("lfw: verification accuracy", "cfp_fp: verification accuracy",
                "verification accuracy, mean of the 2 sets", "corrupt samples skipped"):
        assert row in result.stdout, row
    assert "rank-1" not in result.stdout


def test_a_trial_spec_on_files_needs_a_test_set() -> None:
    data = {"name": "recordio", "path": "x.rec"}
    with pytest.raises(specs.SpecError, match="needs an \\[eval.<name>\\] verification set"):
        specs.parse({"data": data}, "<trial>", specs.TrialSpec)
    with pytest.raises(specs.SpecError, match="selection: must be 'auto', 'holdout'"):
        specs.parse({"data": data, "eval": {"lfw": {"path": "l.bin"}}, "selection": "x"},
                    "<trial>", specs.TrialSpec)
    trial = specs.parse({"data": data, "eval": {"lfw": {"path": "l.bin"}}}, "<trial>",
                        specs.TrialSpec)
    assert trial.validation_source() == "holdout" and trial.test_sets() == ["lfw"]


def test_a_tpe_search_on_face_data_scores_configurations_on_the_sets(tmp_path: Path) -> None:
    from test_engine_contract import Driver

    from adastudy import store

    write_faces(tmp_path / "set")
    write_pair_bin(tmp_path / "lfw.bin", 100)
    write_pair_bin(tmp_path / "cfp_fp.bin", 200)
    text = FACE_STUDY.format(workers=0).replace(
        "[heads.cosface]\ns = [8.0]\nm = [0.2]\n\n[heads.adacos-dynamic]\n",
        "[heads.cosface]\ns = { low = 4.0, high = 16.0 }\nm = [0.2]\n\n"
        "[search]\nmethod = \"tpe\"\ntrials = 2\n")
    spec_path = tmp_path / "faces.toml"
    spec_path.write_text(text)
    summary = Driver("serial").run(spec_path, tmp_path / "run")
    assert summary.finished == 4  # 2 configurations x 2 seeds
    trials, _ = store.load_tables(tmp_path / "run")
    assert trials["verification_accuracy_cfp_fp"].notna().all()
    assert sorted(trials["number"].unique()) == [0, 1]
