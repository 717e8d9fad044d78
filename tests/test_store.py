"""The run folder's result files: records, tables, leaderboard, export, manifest."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adastudy import stats, store
from adastudy.errors import AdastudyError
from adastudy.store import (
    StoreError,
    consolidate,
    environment,
    export,
    leaderboard,
    load_tables,
    read_manifest,
    read_trial_records,
    trial_key,
    write_manifest,
    write_trial_record,
)

T975_2 = 4.302653  # t_{0.975, 2}


def make_record(
    head: str,
    s: float | None,
    m: float | None,
    seed: int,
    state: str = "complete",
    acc: float | None = 0.9,
    number: int = 0,
    **extra,
) -> dict:
    record = {
        "key": trial_key(head, s, m, seed),
        "number": number,
        "head": head,
        "s": None if s is None else float(s),
        "m": None if m is None else float(m),
        "seed": seed,
        "state": state,
        "error": None,
        "steps": 150,
        "epochs": 10.0,
        "wall_time_s": 2.1,
        "train_time_s": 1.2,
        "samples_per_s": 5000.0,
        "metrics": {"final_loss": 0.7, "rank1": 0.3},
        "steps_to_theta_med": {"60": 16, "45": 31, "30": None},
        "diverged_step": None,
        "diverged_reason": None,
        "started_at": "2026-11-28T06:00:00+00:00",
        "finished_at": "2026-11-28T06:00:02+00:00",
        "worker": "pid 1234",
        "series": [
            {"step": 20, "loss": 2.1, "s": 30.0},
            {"step": 15, "val_accuracy": 0.8, "epoch": 1},
        ],
    }
    if acc is not None:
        record["metrics"]["verification_accuracy"] = acc
    record.update(extra)
    return record


def sample_records() -> list[dict]:
    return [
        make_record("cosface", 30, 0.35, 0, acc=0.90, number=0),
        make_record("cosface", 30, 0.35, 1, acc=0.92, number=1),
        make_record("cosface", 30, 0.35, 2, acc=0.97, number=2),
        make_record("cosface", 30, 0.35, 3, state="pruned", acc=None, number=3),
        make_record("arcface", 64, 0.5, 0, acc=0.80, number=4),
        make_record("arcface", 64, 0.5, 1, state="failed", acc=None, number=5,
                    error="RuntimeError: out of memory", metrics={}, series=[]),
        make_record("adacos-dynamic", None, None, 0, acc=0.95, number=6,
                    metrics={"verification_accuracy": 0.95, "tar_at_far_1e-02": 0.6}),
        make_record("adacos-dynamic", None, None, 1, acc=0.93, number=7,
                    metrics={"verification_accuracy": 0.93, "tar_at_far_1e-02": 0.5}),
        make_record("normface", 16, None, 0, state="diverged", acc=None, number=8,
                    diverged_step=40, diverged_reason="loss is not finite",
                    metrics={"final_loss": float("nan")}),
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for record in sample_records():
        write_trial_record(run, record)
    return run


def strict(record: dict) -> dict:
    """What a record reads back as: NaN/inf stored as null."""
    return json.loads(json.dumps(record, allow_nan=True).replace("NaN", "null"))


# ------------------------------------------------------------------------ keys


def test_trial_key_canonical_forms() -> None:
    assert trial_key("cosface", 30, 0.35, 0) == "cosface|s=30|m=0.35|seed=0"
    assert trial_key("cosface", 30.0, 0.35, 0) == trial_key("cosface", 30, 0.35, 0)
    assert trial_key("adacos-dynamic", None, None, 1) == "adacos-dynamic|s=-|m=-|seed=1"
    assert trial_key("cosface", 30, 0.35000000001, 0) != trial_key("cosface", 30, 0.35, 0)
    assert trial_key("arcface", 64, 0.5, 2) == "arcface|s=64|m=0.5|seed=2"
    assert trial_key("arcface", 64, 0.1 + 0.2, 0) == trial_key("arcface", 64, 0.3, 0)
    assert trial_key("softmax", float("nan"), None, 0) == "softmax|s=-|m=-|seed=0"
    # the main variant keeps the key it had before variants existed
    assert trial_key("cosface", 30, 0.35, 0, "main") == "cosface|s=30|m=0.35|seed=0"
    assert trial_key("cosface", 30, 0.35, 0, "c1000") == "cosface|s=30|m=0.35|seed=0|variant=c1000"


def test_slugs_are_safe_unique_and_deterministic() -> None:
    a = store._slug("cosface|s=30|m=0.35|seed=0")
    assert a == store._slug("cosface|s=30|m=0.35|seed=0")
    assert "/" not in a and "|" not in a and not a.startswith(".")
    assert a != store._slug("cosface/s=30/m=0.35/seed=0")  # same sanitised text
    assert len(store._slug("x" * 500)) < 100


# --------------------------------------------------------------------- records


def test_records_read_back_equal(run_dir: Path) -> None:
    records, problems = read_trial_records(run_dir)
    assert problems == []
    expected = sorted((strict(r) for r in sample_records()), key=lambda r: r["key"])
    assert records == expected
    diverged = next(r for r in records if r["state"] == "diverged")
    assert diverged["metrics"]["final_loss"] is None  # NaN stored as null
    for path in (run_dir / "trials").iterdir():  # strict JSON on disk
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))


def test_rewriting_a_record_replaces_it(run_dir: Path) -> None:
    write_trial_record(run_dir, make_record("cosface", 30.0, 0.35, 0, acc=0.5))
    records, _ = read_trial_records(run_dir)
    assert len(records) == len(sample_records())
    record = next(r for r in records if r["key"] == "cosface|s=30|m=0.35|seed=0")
    assert record["metrics"]["verification_accuracy"] == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "running"}, "state 'running'"),
        ({"seed": "0"}, "seed"),
        ({"s": "30"}, "'s'"),
        ({"head": ""}, "head"),
    ],
)
def test_write_validates_the_minimal_fields(tmp_path: Path, change: dict, message: str) -> None:
    record = make_record("cosface", 30, 0.35, 0) | change
    with pytest.raises(StoreError, match=message):
        write_trial_record(tmp_path, record)
    record = make_record("cosface", 30, 0.35, 0)
    del record["state"]
    with pytest.raises(StoreError, match="missing field 'state'"):
        write_trial_record(tmp_path, record)
    assert not (tmp_path / "trials").exists() or not list((tmp_path / "trials").iterdir())
    assert issubclass(StoreError, AdastudyError)


def test_write_accepts_numpy_values(tmp_path: Path) -> None:
    record = make_record("cosface", np.float32(30), np.float64(0.35), np.int64(1))
    record["metrics"]["verification_accuracy"] = np.float32(np.inf)
    record["steps"] = np.int64(150)
    write_trial_record(tmp_path, record)
    (back,), problems = read_trial_records(tmp_path)
    assert problems == []
    assert back["seed"] == 1 and back["s"] == 30.0 and back["steps"] == 150
    assert back["metrics"]["verification_accuracy"] is None


def test_bad_files_are_skipped_and_named(run_dir: Path) -> None:
    folder = run_dir / "trials"
    good = sorted(folder.iterdir())[0]
    (folder / "truncated.json").write_text(good.read_text()[:40])
    (folder / "list.json").write_text("[1, 2]")
    (folder / "nostate.json").write_text(json.dumps({"key": "k", "head": "h", "s": 1,
                                                     "m": None, "seed": 0}))
    (folder / f".{good.name}.123.abcd1234.tmp").write_text('{"key": "half')  # killed writer
    (folder / "notes.txt").write_text("not a record")
    records, problems = read_trial_records(run_dir)
    assert len(records) == len(sample_records())
    assert sorted(problems) == sorted([
        p for p in problems if p.startswith(("trials/truncated.json: not valid JSON",
                                             "trials/list.json: not a JSON object",
                                             "trials/nostate.json: missing field 'state'"))
    ])
    assert len(problems) == 3
    assert all("\n" not in p for p in problems)
    trials, _ = consolidate(run_dir)  # the bad files do not stop the tables either
    assert len(trials) == len(sample_records())


def test_read_of_a_folder_without_records(tmp_path: Path) -> None:
    assert read_trial_records(tmp_path) == ([], [])


# ------------------------------------------------------------------ atomicity


def test_failed_replace_leaves_previous_record_intact(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = trial_key("cosface", 30, 0.35, 0)
    path = run_dir / "trials" / f"{store._slug(key)}.json"
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(StoreError, match="No space left"):
        write_trial_record(run_dir, make_record("cosface", 30, 0.35, 0, acc=0.1))
    with pytest.raises(StoreError):  # a new key: nothing at the final path afterwards
        write_trial_record(run_dir, make_record("softmax", None, None, 9))
    monkeypatch.undo()

    assert path.read_bytes() == before
    new_path = run_dir / "trials" / f"{store._slug(trial_key('softmax', None, None, 9))}.json"
    assert not new_path.exists()
    assert not [p for p in (run_dir / "trials").iterdir() if p.name.endswith(".tmp")]
    records, problems = read_trial_records(run_dir)
    assert problems == [] and len(records) == len(sample_records())


def test_failed_write_mid_file_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store.os, "fsync", broken_fsync)
    with pytest.raises(StoreError):
        write_trial_record(tmp_path, make_record("cosface", 30, 0.35, 0))
    monkeypatch.undo()
    assert list((tmp_path / "trials").iterdir()) == []


# ---------------------------------------------------------------------- tables


def test_consolidate_writes_tables_that_round_trip(run_dir: Path) -> None:
    trials, series = consolidate(run_dir)
    records = sample_records()
    assert len(trials) == len(records)
    fixed = list(store.TRIALS_FIXED_COLUMNS)
    metrics = ["final_loss", "rank1", "tar_at_far_1e-02", "verification_accuracy"]
    levels = [f"steps_to_theta_med_{d}deg" for d in ("60", "45", "30")]
    assert list(trials.columns) == fixed + metrics + levels
    assert trials["key"].tolist() == sorted(r["key"] for r in records)

    for name in ("number", "seed", "steps", "diverged_step", *levels):
        assert trials[name].dtype == "Int64", name
    for name in ("s", "m", "epochs", "wall_time_s", *metrics):
        assert trials[name].dtype == "float64", name

    adacos = trials[trials["head"] == "adacos-dynamic"]
    assert adacos["s"].isna().all() and adacos["m"].isna().all()
    failed = trials[trials["state"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: out of memory"
    assert math.isnan(failed["verification_accuracy"])
    diverged = trials[trials["state"] == "diverged"].iloc[0]
    assert diverged["diverged_step"] == 40 and diverged["diverged_reason"] == "loss is not finite"
    assert trials["steps_to_theta_med_60deg"].iloc[0] == 16
    assert trials["steps_to_theta_med_30deg"].isna().all()

    with_series = [r for r in records if r["series"]]
    assert len(series) == 2 * len(with_series)
    assert list(series.columns) == [
        *store.SERIES_FIXED_COLUMNS, "epoch", "loss", "s_current", "val_accuracy"
    ]
    assert all(series[c].dtype == "float64" for c in ("epoch", "loss", "s_current"))
    assert series["step"].dtype == "Int64" and series["seed"].dtype == "Int64"
    first = series[series["key"] == trial_key("cosface", 30, 0.35, 0)]
    assert first["step"].tolist() == [20, 15]  # record order kept
    assert first["loss"].iloc[0] == 2.1 and math.isnan(first["loss"].iloc[1])

    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "trials.parquet"), trials)
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "series.parquet"), series)


def test_series_field_named_like_a_fixed_column(run_dir: Path) -> None:
    # A series entry's "s" is the head's current scale, the row's "s" the configured one.
    _, series = consolidate(run_dir)
    write_trial_record(run_dir, make_record(
        "adacos-dynamic", None, None, 5, series=[{"step": 10, "s": 12.5}, {"step": 20, "s": 9.0}]
    ))
    _, series = consolidate(run_dir)
    adacos = series[series["key"] == "adacos-dynamic|s=-|m=-|seed=5"]
    assert adacos["s"].isna().all() and adacos["m"].isna().all()  # configured: none
    assert adacos["s_current"].tolist() == [12.5, 9.0]  # the reported dynamic scale
    first = series[series["key"] == trial_key("cosface", 30, 0.35, 0)]
    assert first["s"].tolist() == [30.0, 30.0]


def test_empty_run_tables_have_the_fixed_columns(tmp_path: Path) -> None:
    (tmp_path / "trials").mkdir()
    trials, series = consolidate(tmp_path)
    assert list(trials.columns) == list(store.TRIALS_FIXED_COLUMNS) and trials.empty
    assert list(series.columns) == list(store.SERIES_FIXED_COLUMNS) and series.empty
    pd.testing.assert_frame_equal(load_tables(tmp_path)[0], trials)


def test_load_tables_rebuilds_when_a_newer_record_appears(run_dir: Path) -> None:
    trials, _ = load_tables(run_dir)  # no parquet yet: built and written
    assert (run_dir / "trials.parquet").exists()
    assert len(trials) == len(sample_records())

    stamp = time.time() - 60  # make the tables look old enough to be trusted
    for name in ("trials.parquet", "series.parquet"):
        os.utime(run_dir / name, (stamp, stamp))
    for path in [run_dir / "trials", *(run_dir / "trials").iterdir()]:
        os.utime(path, (stamp - 10, stamp - 10))
    cached, _ = load_tables(run_dir)
    assert (run_dir / "trials.parquet").stat().st_mtime == pytest.approx(stamp)  # not rebuilt
    pd.testing.assert_frame_equal(cached, trials)

    write_trial_record(run_dir, make_record("softmax", None, None, 0, acc=0.5))
    trials2, series2 = load_tables(run_dir)
    assert len(trials2) == len(trials) + 1
    assert "softmax|s=-|m=-|seed=0" in set(trials2["key"])
    assert pd.read_parquet(run_dir / "trials.parquet").shape == trials2.shape


def test_load_tables_rebuilds_a_corrupt_table(run_dir: Path) -> None:
    consolidate(run_dir)
    (run_dir / "trials.parquet").write_bytes(b"not parquet")
    trials, _ = load_tables(run_dir)
    assert len(trials) == len(sample_records())


def test_load_tables_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a run folder"):
        load_tables(tmp_path)


# ------------------------------------------------------------------ leaderboard


def test_leaderboard_statistics_by_hand(run_dir: Path) -> None:
    trials, _ = load_tables(run_dir)
    board = leaderboard(trials, "verification_accuracy")
    assert board["head"].tolist() == ["adacos-dynamic", "cosface", "arcface", "normface"]

    cos = board[board["head"] == "cosface"].iloc[0]
    values = [0.90, 0.92, 0.97]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    # An accuracy: the t interval on the logit scale (delta method), mapped back.
    half = T975_2 * std / math.sqrt(3) / (mean * (1 - mean))
    centre = math.log(mean / (1 - mean))
    assert cos["n"] == 3
    assert cos["mean"] == pytest.approx(mean)
    assert cos["std"] == pytest.approx(std)
    assert cos["ci95_low"] == pytest.approx(1 / (1 + math.exp(-(centre - half))), rel=1e-6)
    assert cos["ci95_high"] == pytest.approx(1 / (1 + math.exp(-(centre + half))), rel=1e-6)
    assert 0.0 < cos["ci95_low"] < mean < cos["ci95_high"] < 1.0
    assert (cos["best"], cos["worst"]) == (0.97, 0.90)
    assert (cos["n_pruned"], cos["n_failed"], cos["n_diverged"]) == (1, 0, 0)
    assert (cos["s"], cos["m"]) == (30.0, 0.35)

    arc = board[board["head"] == "arcface"].iloc[0]
    assert arc["n"] == 1 and arc["mean"] == pytest.approx(0.80)
    assert math.isnan(arc["std"]) and math.isnan(arc["ci95_low"])
    assert arc["n_failed"] == 1

    ada = board[board["head"] == "adacos-dynamic"].iloc[0]
    assert math.isnan(ada["s"]) and math.isnan(ada["m"]) and ada["n"] == 2

    norm = board.iloc[-1]  # no complete trial: last, whatever the direction
    assert norm["n"] == 0 and math.isnan(norm["mean"]) and norm["n_diverged"] == 1


def test_leaderboard_keeps_variants_apart(tmp_path: Path) -> None:
    records = [dict(r) for r in sample_records() if r["head"] == "cosface"]
    for record in records:  # the same configuration again, on other data
        write_trial_record(tmp_path, record)
        other = {**record, "variant": "c1000", "num_classes": 1000,
                 "key": record["key"] + "|variant=c1000",
                 "metrics": {k: v - 0.5 for k, v in (record.get("metrics") or {}).items()}}
        write_trial_record(tmp_path, other)
    trials, series = load_tables(tmp_path)
    assert set(trials["variant"]) == {"main", "c1000"}  # records without one are "main"
    assert set(series["variant"]) == {"main", "c1000"}
    board = leaderboard(trials, "verification_accuracy")
    assert board["variant"].tolist() == ["main", "c1000"]
    main, c1000 = board.iloc[0], board.iloc[1]
    assert main["n"] == c1000["n"] == 3
    assert c1000["mean"] == pytest.approx(main["mean"] - 0.5)


def test_leaderboard_minimize_order(run_dir: Path) -> None:
    trials, _ = load_tables(run_dir)
    board = leaderboard(trials, "verification_accuracy", direction="minimize")
    assert board["head"].tolist() == ["arcface", "cosface", "adacos-dynamic", "normface"]
    cos = board[board["head"] == "cosface"].iloc[0]
    assert (cos["best"], cos["worst"]) == (0.90, 0.97)


def test_leaderboard_t_quantile_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert store.t975(2) == pytest.approx(T975_2)
    assert store.t975(22) == stats._T975[20]
    assert store.t975(1000) == pytest.approx(1.96, abs=1e-3)


def test_leaderboard_errors(run_dir: Path) -> None:
    trials, _ = load_tables(run_dir)
    with pytest.raises(StoreError, match=r"'accuracy'.*available: .*verification_accuracy"):
        leaderboard(trials, "accuracy")
    with pytest.raises(StoreError, match="direction"):
        leaderboard(trials, "rank1", direction="up")


# ------------------------------------------------------------------------ export


def test_export_csv_round_trip(run_dir: Path) -> None:
    trials, series = load_tables(run_dir)
    paths = export(run_dir, "csv")
    assert paths == [run_dir / "export" / "trials.csv", run_dir / "export" / "series.csv"]
    for path, table in zip(paths, (trials, series), strict=True):
        back = pd.read_csv(path)
        assert list(back.columns) == list(table.columns)
        expected = table.astype({c: "float64" for c in table.columns
                                 if str(table[c].dtype) == "Int64"})
        for column in table.columns:
            if pd.api.types.is_numeric_dtype(expected[column]):
                np.testing.assert_allclose(back[column].to_numpy(float),
                                           expected[column].to_numpy(float), equal_nan=True)
            else:
                assert back[column].astype(object).where(back[column].notna(), None).tolist() \
                    == expected[column].astype(object).where(expected[column].notna(),
                                                             None).tolist(), column


def test_export_parquet_round_trip(run_dir: Path, tmp_path: Path) -> None:
    trials, series = load_tables(run_dir)
    out = tmp_path / "elsewhere" / "x"
    paths = export(run_dir, "parquet", out)
    assert paths == [out / "trials.parquet", out / "series.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), trials)
    pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), series)


def test_export_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown format 'xlsx'"):
        export(run_dir, "xlsx")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StoreError, match="cannot write the export"):
        export(run_dir, "csv", blocker / "out")


def test_export_failure_leaves_nothing_partial(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real = pd.DataFrame.to_csv
    calls = []

    def second_fails(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", second_fails)
    with pytest.raises(StoreError, match="No space left"):
        export(run_dir, "csv", out)
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------- manifest


def test_manifest_write_read(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    manifest = {"study": "quick", "spec_hash": "abc", "seeds": [0, 1], "x": float("nan"),
                "out": tmp_path}
    path = write_manifest(tmp_path / "run", manifest)
    assert path == tmp_path / "run" / "manifest.json"
    assert path.read_text().startswith('{\n  "study"')  # indented
    back = read_manifest(tmp_path / "run")
    assert back == {"study": "quick", "spec_hash": "abc", "seeds": [0, 1], "x": None,
                    "out": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp left


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(tmp_path, {"v": 1})
    monkeypatch.setattr(store.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError()))
    with pytest.raises(StoreError):
        write_manifest(tmp_path, {"v": 2})
    monkeypatch.undo()
    assert read_manifest(tmp_path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("text", ['{"study": "qu', "[1, 2]", ""])
def test_corrupt_manifest_raises(tmp_path: Path, text: str) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(StoreError, match="manifest.json"):
        read_manifest(tmp_path)


def test_manifest_makes_a_run_folder(tmp_path: Path) -> None:
    write_manifest(tmp_path, {"study": "empty"})
    trials, series = load_tables(tmp_path)
    assert trials.empty and series.empty


# -------------------------------------------------------------------- environment


def test_environment_has_the_keys() -> None:
    env = environment()
    for key in ("python", "torch", "optuna", "ray", "numpy", "pandas", "platform",
                "hostname", "cpu_count", "device", "git_commit", "git_dirty"):
        assert key in env, key
    assert env["pandas"] == pd.__version__
    assert isinstance(env["device"]["cuda_available"], bool)
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    json.dumps(env)


def test_environment_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(store.importlib.metadata, "version", boom)
    monkeypatch.setattr(store.subprocess, "run", boom)
    monkeypatch.setattr(store.socket, "gethostname", boom)
    env = environment()
    assert env["ray"] == "not installed" and env["hostname"] is None
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_one_record_is_read_from_its_own_file_without_the_others(
        run_dir: Path, monkeypatch) -> None:
    from adastudy import store

    key = "cosface|s=30|m=0.35|seed=0"
    opened: list[str] = []
    real = Path.read_text

    def spy(self: Path, *args, **kwargs):  # noqa: ANN202
        opened.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", spy)
    record = store.read_trial_record(run_dir, key)
    assert record is not None and record["key"] == key
    assert len(opened) == 1 and opened[0].startswith("cosface_s=30_m=0.35_seed=0-")
    assert record == next(r for r in read_trial_records(run_dir)[0] if r["key"] == key)
    assert store.read_trial_record(run_dir, "cosface|s=99|m=0.35|seed=0") is None
    # A damaged file is no record (the sweep then runs the trial again).
    path = run_dir / "trials" / opened[0]
    path.write_text("{not json")
    assert store.read_trial_record(run_dir, key) is None
