"""Results on disk: the only module that reads and writes a run folder's result files.

A sweep runs many trials, in several processes at once, into one run folder, and any of
them may be killed at any moment. So every finished trial is one small JSON record,
written atomically (temp file in the same folder, fsync, `os.replace`), and the tables
are derived from the records, never appended to:

    RUN_DIR/trials/<slug>.json    one record per finished trial (the source of truth)
    RUN_DIR/trials.parquet        one row per record        (rebuilt by `consolidate`)
    RUN_DIR/series.parquet        one row per series entry  (rebuilt by `consolidate`)
    RUN_DIR/manifest.json         versions, spec hash, ... (`write_manifest`)

A killed writer leaves at most a temp file (ignored by the readers) and never a
half-written record; a corrupt record is skipped and named, it does not hide the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adastudy import stats
from adastudy.errors import AdastudyError
from adastudy.spec import MAIN_VARIANT, SET_METRIC_PREFIX, metric_bounds

#: The t quantile lives in `adastudy.stats`; the name stays here for older scripts.
t975 = stats.t975

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "SERIES_FIXED_COLUMNS",
    "TRIALS_FIXED_COLUMNS",
    "TRIAL_STATES",
    "StoreError",
    "consolidate",
    "environment",
    "eval_set_names",
    "export",
    "leaderboard",
    "load_tables",
    "set_column",
    "set_means",
    "read_manifest",
    "read_record_file",
    "record_name",
    "record_names",
    "read_trial_record",
    "read_trial_records",
    "t975",
    "trial_key",
    "write_manifest",
    "write_trial_record",
]

log = logging.getLogger(__name__)


class StoreError(AdastudyError):
    """A run folder or one of its files cannot be used; the message names the file."""


TRIAL_STATES = ("complete", "pruned", "failed", "diverged")

TRIALS_DIR = "trials"
TRIALS_FILE = "trials.parquet"
SERIES_FILE = "series.parquet"
MANIFEST_FILE = "manifest.json"
TEMP_SUFFIX = ".tmp"

#: The fixed columns of the trials table, in order, with their dtypes; the metrics
#: (float, sorted by name) and `steps_to_theta_med_<level>deg` (Int64) follow.
_STR = "str" if int(pd.__version__.split(".")[0]) >= 3 else object
_TRIALS_FIXED: dict[str, Any] = {
    "key": _STR,
    "number": "Int64",
    "variant": _STR,
    "num_classes": "Int64",
    "embedding_dim": "Int64",
    "head": _STR,
    "s": "float64",
    "m": "float64",
    "seed": "Int64",
    "state": _STR,
    "error": _STR,
    "steps": "Int64",
    "epochs": "float64",
    "wall_time_s": "float64",
    "train_time_s": "float64",
    "samples_per_s": "float64",
    "diverged_step": "Int64",
    "diverged_reason": _STR,
    "diverged_by": _STR,
    "scale_clamped_steps": "Int64",
    "scale_clamped_first_step": "Int64",
    "resumed_from_epoch": "Int64",  # a killed trial's checkpoint it resumed from
    "checkpoint_problem": _STR,  # why a checkpoint found could not be used
    "started_at": _STR,
    "finished_at": _STR,
    "worker": _STR,
}
TRIALS_FIXED_COLUMNS = tuple(_TRIALS_FIXED)
_SERIES_FIXED: dict[str, Any] = {
    "key": _STR,
    "variant": _STR,
    "head": _STR,
    "s": "float64",
    "m": "float64",
    "seed": "Int64",
    "step": "Int64",
}
SERIES_FIXED_COLUMNS = tuple(_SERIES_FIXED)
_CONFIG = ["variant", "head", "s", "m"]

# --------------------------------------------------------------------------- keys


def _format_param(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(float(x), ".12g")


def trial_key(
    head: str, s: float | None, m: float | None, seed: int, variant: str = MAIN_VARIANT
) -> str:
    """The canonical key of a trial, e.g. "cosface|s=30|m=0.35|seed=0", and in a study
    variant other than the main one "cosface|s=30|m=0.35|seed=0|variant=c1000".

    `s` and `m` print with 12 significant digits: 30 and 30.0 agree, 0.35 and
    0.35000000001 (11 digits) differ, and float noise such as 0.1 + 0.2 against 0.3
    (17 digits) does not split a configuration. None (or NaN), for a head that takes
    none, prints "-".
    """
    key = f"{head}|s={_format_param(s)}|m={_format_param(m)}|seed={int(seed)}"
    return key if variant == MAIN_VARIANT else f"{key}|variant={variant}"


def _slug(key: str) -> str:
    """A filesystem-safe, unique, deterministic file stem for `key`: the key with every
    character outside [A-Za-z0-9.=-] replaced by "_" (at most 80 of them), then "-" and
    the first 12 hex digits of the key's SHA-256 (so distinct keys never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9.=-]", "_", key)[:80].lstrip(".") or "trial"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return f"{safe}-{digest}"


# ----------------------------------------------------------------- atomic writes


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp(path: Path) -> Path:
    """Create an empty, unique temp file beside `path`: ".<name>.<pid>.<random>.tmp".

    Made with mode 0o666 less the umask (mkstemp's 0o600 would hide the results from the
    other users of a shared run folder).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write `path` via `write(temp)` into a temp file in the same folder, fsync, rename.

    On any failure the temp file is removed and `path` is left as it was. The temp name
    starts with "." and ends with ".tmp", which the readers skip.
    """
    tmp = _new_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    """`value` with NaN/inf as None and numpy scalars/arrays, paths, tuples made plain."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(obj: Any, indent: int | None = None) -> str:
    """Strict JSON of `obj` (`_jsonable` first: NaN and infinities become null)."""
    return json.dumps(_jsonable(obj), allow_nan=False, indent=indent, ensure_ascii=False)


# ------------------------------------------------------------------------ records


def _is_number_or_none(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _record_problem(record: Any) -> str | None:
    """Why `record` is not a valid trial record, or None when it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in ("key", "head", "s", "m", "seed", "state"):
        if name not in record:
            return f"missing field {name!r}"
    if not isinstance(record["key"], str) or not record["key"]:
        return "field 'key' is not a non-empty string"
    if not isinstance(record["head"], str) or not record["head"]:
        return "field 'head' is not a non-empty string"
    for name in ("s", "m"):
        if not _is_number_or_none(record[name]):
            return f"field {name!r} is not a number or null"
    seed = record["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        return "field 'seed' is not an integer"
    if record["state"] not in TRIAL_STATES:
        return f"state {record['state']!r} is not one of {', '.join(TRIAL_STATES)}"
    return None


def write_trial_record(run_dir: Path, record: dict) -> Path:
    """Write one finished trial's record to RUN_DIR/trials/<slug>.json, atomically.

    Checks the minimal fields (key, head, s, m, seed, and state in TRIAL_STATES) first
    and raises StoreError, writing nothing, when one is wrong. NaN and ±inf are stored
    as null (strict JSON). A record with the same key replaces the previous one.
    Returns the record's path.
    """
    run_dir = Path(run_dir)
    clean = _jsonable(record)
    problem = _record_problem(clean)
    if problem is not None:
        key = record.get("key", "?") if isinstance(record, dict) else "?"
        raise StoreError(f"trial record {key!r}: {problem}")
    folder = run_dir / TRIALS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(folder / f"{_slug(clean['key'])}.json", json_text(clean))
    except OSError as e:
        raise StoreError(f"{folder}: cannot write the trial record ({e.strerror or e})") from e


def _record_files(run_dir: Path) -> list[Path]:
    """The record files (no temp or hidden files), sorted by name."""
    folder = Path(run_dir) / TRIALS_DIR
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.suffix == ".json" and not p.name.startswith(".") and p.is_file()
    )


def record_name(key: str) -> str:
    """The file name, inside trials/, of the record of trial `key`."""
    return f"{_slug(key)}.json"


def read_trial_record(run_dir: Path, key: str) -> dict | None:
    """The valid record of the trial `key`, or None: reads its one file (the name
    follows from the key), never the run's other records, so a worker asking whether
    its trial is done costs the same at 10 trials as at 10,000. A file that cannot be
    read, is not valid JSON, lacks a field or holds another key counts as no record."""
    path = Path(run_dir) / TRIALS_DIR / record_name(key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if _record_problem(record) is not None or record.get("key") != key:
        return None
    return record


def record_names(run_dir: Path) -> list[str]:
    """The file names of the run's records (trials/*.json, no temp or hidden files),
    sorted: one directory listing, no file opened. A sweep learns what is finished
    from it and reads only the files it has not seen (`read_record_file`)."""
    folder = Path(run_dir) / TRIALS_DIR
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))


def read_record_file(run_dir: Path, name: str) -> tuple[dict | None, str | None]:
    """(record, None) for a valid record file trials/`name`, else (None, what is wrong,
    e.g. "trials/x.json: not valid JSON (...)"); never raises for a bad file."""
    where = f"{TRIALS_DIR}/{name}"
    try:
        text = (Path(run_dir) / TRIALS_DIR / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{where}: cannot read ({e})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{where}: not valid JSON ({e})"
    problem = _record_problem(record)
    if problem is not None:
        return None, f"{where}: {problem}"
    return record, None


def read_trial_records(run_dir: Path) -> tuple[list[dict], list[str]]:
    """All valid trial records of a run, sorted by key, and one line per skipped file.

    A file that cannot be read, is not valid JSON, or lacks a required field is skipped
    and named in the problems (e.g. "trials/x.json: not valid JSON (...)"); this never
    raises for a bad file. Temp files of interrupted or ongoing writes (".*.tmp") are
    ignored without a problem. When two files hold the same key (a copied file), the
    first by file name wins and the other is named.
    """
    records: dict[str, dict] = {}
    problems: list[str] = []
    for name in record_names(run_dir):
        record, problem = read_record_file(run_dir, name)
        if record is None:
            problems.append(problem)
            continue
        if record["key"] in records:
            problems.append(f"{TRIALS_DIR}/{name}: duplicate key {record['key']!r}, skipped")
            continue
        records[record["key"]] = record
    return [records[k] for k in sorted(records)], problems


# ------------------------------------------------------------------------- tables


def _as_float(x: Any) -> float:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    return math.nan


def _as_int(x: Any) -> int | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return None


def _as_str(x: Any) -> str | None:
    return None if x is None else str(x)


def _column(values: list[Any], dtype: Any) -> pd.Series:
    if dtype == "Int64":
        return pd.Series(pd.array([_as_int(v) for v in values], dtype="Int64"))
    if dtype == "float64":
        return pd.Series([_as_float(v) for v in values], dtype="float64")
    return pd.Series([_as_str(v) for v in values], dtype=dtype)


def _level_sort_key(level: str) -> tuple[int, float, str]:
    try:
        return (0, -float(level), level)
    except ValueError:
        return (1, 0.0, level)


def _fixed_value(record: dict, name: str) -> Any:
    # Records written before study variants existed belong to the main variant.
    return (record.get(name) or MAIN_VARIANT) if name == "variant" else record.get(name)


def _trials_table(records: list[dict]) -> pd.DataFrame:
    metrics = sorted({name for r in records for name in (r.get("metrics") or {})})
    levels = sorted(
        {str(level) for r in records for level in (r.get("steps_to_theta_med") or {})},
        key=_level_sort_key,
    )
    columns: dict[str, pd.Series] = {
        name: _column([_fixed_value(r, name) for r in records], dtype)
        for name, dtype in _TRIALS_FIXED.items()
    }
    for name in metrics:
        if name in columns:  # a metric must not shadow a fixed column
            continue
        columns[name] = _column([(r.get("metrics") or {}).get(name) for r in records], "float64")
    for level in levels:
        values = [(r.get("steps_to_theta_med") or {}).get(level) for r in records]
        columns[f"steps_to_theta_med_{level}deg"] = _column(values, "Int64")
    return pd.DataFrame(columns)


def _series_table(records: list[dict]) -> pd.DataFrame:
    rows: list[tuple[dict, dict]] = [
        (r, entry)
        for r in records
        for entry in (r.get("series") or [])
        if isinstance(entry, dict)
    ]
    fields = sorted({name for _, e in rows for name in e} - {"step"})
    columns: dict[str, pd.Series] = {}
    for name, dtype in _SERIES_FIXED.items():
        source = [e.get(name) if name == "step" else _fixed_value(r, name) for r, e in rows]
        columns[name] = _column(source, dtype)
    for name in fields:
        column = _series_column_name(name)
        if column not in columns:
            columns[column] = _column([e.get(name) for _, e in rows], "float64")
    return pd.DataFrame(columns)


def _series_column_name(field: str) -> str:
    """The series column of an entry's field: the field's name, except that a field
    named like a fixed column (the reported scale "s", above all) becomes "<field>_current",
    since the fixed "s" and "m" are the trial's configured values."""
    return f"{field}_current" if field in _SERIES_FIXED else field


def _build_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    records, problems = read_trial_records(run_dir)
    for problem in problems:
        log.warning("%s: %s", run_dir, problem)
    return _trials_table(records), _series_table(records)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


def consolidate(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild trials.parquet and series.parquet from the records; return (trials, series).

    trials: one row per record; the fixed columns (TRIALS_FIXED_COLUMNS), then one float
    column per metric found in any record (sorted, NaN where absent), then
    `steps_to_theta_med_<level>deg` (Int64, levels from high to low). series: key, head,
    s, m, seed, step, then the union of the series fields (float, sorted), one row per
    entry in record order; s and m are the configured values, so an entry's own "s" (the
    head's scale at that step) is the column "s_current". Both files are written
    atomically, so concurrent readers and writers see either the old or the new table.
    Bad records are skipped (and logged).
    """
    run_dir = Path(run_dir)
    trials, series = _build_tables(run_dir)
    try:
        _write_parquet(trials, run_dir / TRIALS_FILE)
        _write_parquet(series, run_dir / SERIES_FILE)
    except OSError as e:
        raise StoreError(f"{run_dir}: cannot write the tables ({e.strerror or e})") from e
    return trials, series


def _is_run_dir(run_dir: Path) -> bool:
    return (run_dir / MANIFEST_FILE).is_file() or (run_dir / TRIALS_DIR).is_dir()


def _newest_input_mtime(run_dir: Path) -> int:
    """The newest mtime of the records and of trials/ itself (which a deletion changes)."""
    folder = run_dir / TRIALS_DIR
    times = [p.stat().st_mtime_ns for p in _record_files(run_dir)]
    if folder.is_dir():
        times.append(folder.stat().st_mtime_ns)
    return max(times, default=0)


def load_tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (trials, series) tables of a run.

    Read from the parquet files when both exist, can be read, and are newer than every
    record (and than the last change to trials/); otherwise rebuilt from the records and
    written back (when the folder is not writable, the rebuilt tables are still returned).
    Raises StoreError for a folder that is neither a run (no manifest.json or trials/).
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise StoreError(f"{run_dir}: no such folder")
    if not _is_run_dir(run_dir):
        raise StoreError(f"{run_dir}: not a run folder (no manifest.json or trials/)")
    trials_path, series_path = run_dir / TRIALS_FILE, run_dir / SERIES_FILE
    try:
        tables_mtime = min(trials_path.stat().st_mtime_ns, series_path.stat().st_mtime_ns)
        # A tie with a record written in the same clock tick counts as stale.
        fresh = tables_mtime > _newest_input_mtime(run_dir)
    except OSError:  # a table is missing
        fresh = False
    if fresh:
        try:
            return pd.read_parquet(trials_path), pd.read_parquet(series_path)
        except Exception as e:  # a corrupt table (pyarrow's errors have no common base)
            log.warning("%s: rebuilding the tables (%s)", run_dir, e)
    try:
        return consolidate(run_dir)
    except StoreError as e:
        log.warning("%s", e)
        return _build_tables(run_dir)


# ----------------------------------------------------------------------- manifest


def write_manifest(run_dir: Path, manifest: dict) -> Path:
    """Write RUN_DIR/manifest.json atomically as indented strict JSON (NaN → null)."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_FILE
    try:
        text = json_text(manifest, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise StoreError(f"{path}: the manifest is not JSON-serialisable ({e})") from e
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, text)
    except OSError as e:
        raise StoreError(f"{path}: cannot write ({e.strerror or e})") from e


def read_manifest(run_dir: Path) -> dict | None:
    """RUN_DIR/manifest.json as a dict; None when absent; StoreError when corrupt."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: cannot read ({e})") from e
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise StoreError(f"{path}: not a JSON object")
    return manifest


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except Exception:
        return "not installed"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except Exception:  # no git, a timeout, ...: best effort
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _torch_devices() -> dict[str, Any]:
    try:
        import torch

        available = bool(torch.cuda.is_available())
        names = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if available else []
        )
        return {"cuda_available": available, "cuda_version": torch.version.cuda,
                "devices": names}
    except Exception as e:
        return {"cuda_available": False, "cuda_version": None, "devices": [],
                "error": f"{type(e).__name__}: {e}"}


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else `platform.processor()`: float
    results of one program can differ between CPU models (vector units, libraries'
    kernels), so a reproducibility check must know it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def code_digest() -> str:
    """SHA-256 over the adastudy package's Python sources (their paths and bytes): tells
    whether the code that ran differs, with or without git, uncommitted edits included."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict:
    """What a manifest records about where a run ran; best-effort, never raises.

    Keys: python, torch, optuna, ray, numpy, pandas, pyarrow (package versions, read with
    importlib.metadata, so Ray is not imported; "not installed" when absent), platform,
    hostname, cpu_count, cpu_model, device ({cuda_available, cuda_version, devices:
    [names]}), code_digest (`code_digest`), git_commit (HEAD of the checkout that holds
    the adastudy package; None when it is not a git checkout) and git_dirty (tracked
    files modified; None when unknown).
    """
    env: dict[str, Any] = {"python": sys.version.split()[0]}
    for dist in ("torch", "optuna", "ray", "numpy", "pandas", "pyarrow"):
        env[dist] = _version(dist)
    for name, get in (
        ("platform", platform.platform),
        ("hostname", socket.gethostname),
        ("cpu_count", os.cpu_count),
    ):
        try:
            env[name] = get()
        except Exception:
            env[name] = None
    env["cpu_model"] = cpu_model()
    env["device"] = _torch_devices()
    env["code_digest"] = code_digest()
    root = Path(__file__).resolve().parent.parent
    commit = _git(root, "rev-parse", "HEAD")
    env["git_commit"] = commit
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    env["git_dirty"] = None if status is None else bool(status)
    return env


# --------------------------------------------------------------------- statistics


def _config_stats(values: np.ndarray, maximize: bool,
                  bounds: tuple[float, float] | None) -> dict[str, float]:
    n = len(values)
    nan = math.nan
    if n == 0:
        return {"n": 0, "mean": nan, "std": nan, "ci95_low": nan, "ci95_high": nan,
                "best": nan, "worst": nan}
    interval = stats.mean_interval(values, bounds)
    std = float(np.std(values, ddof=1)) if n > 1 else nan
    best, worst = (np.max(values), np.min(values)) if maximize else (np.min(values),
                                                                       np.max(values))
    return {"n": n, "mean": interval.mean, "std": std, "ci95_low": interval.low,
            "ci95_high": interval.high, "best": float(best), "worst": float(worst)}


def leaderboard(trials: pd.DataFrame, metric: str, direction: str = "maximize") -> pd.DataFrame:
    """One row per configuration (variant, head, s, m), best first, by the mean of `metric`.

    Columns: variant ("main" for the main data), head, s, m, n (complete trials with a
    finite value), mean, std (ddof=1; NaN for n = 1), ci95_low / ci95_high
    (the t-based 95 % interval of the mean, see `stats.mean_interval`; NaN for n < 2),
    best / worst (the best and the worst seed's value for `direction`), n_pruned,
    n_failed, n_diverged. Only "complete" trials count towards the statistics. A metric
    that is a share (accuracies, rank-1, TAR: `spec.metric_bounds`) gets its interval on
    the logit scale, so it stays inside [0, 1]. Sorted by
    mean, descending for "maximize" and ascending for "minimize" (ties by head, s, m);
    configurations without a complete value come last.
    """
    if direction not in ("maximize", "minimize"):
        raise StoreError(f"leaderboard: direction {direction!r} is not maximize or minimize")
    if metric not in trials.columns:
        available = [c for c in trials.columns if c not in TRIALS_FIXED_COLUMNS]
        raise StoreError(
            f"leaderboard: no metric {metric!r} in the trials table; available: "
            + (", ".join(available) or "none")
        )
    maximize = direction == "maximize"
    bounds = metric_bounds(metric)
    rows = []
    if "variant" not in trials.columns:  # a table written before study variants
        trials = trials.assign(variant=MAIN_VARIANT)
    for (variant, head, s, m), group in trials.groupby(_CONFIG, dropna=False, sort=True):
        values = pd.to_numeric(
            group.loc[group["state"] == "complete", metric], errors="coerce"
        ).to_numpy(dtype="float64", na_value=np.nan)
        values = values[np.isfinite(values)]
        states = group["state"].value_counts()
        rows.append({
            "variant": variant, "head": head, "s": float(s), "m": float(m),
            **_config_stats(values, maximize, bounds),
            **{f"n_{state}": int(states.get(state, 0)) for state in TRIAL_STATES[1:]},
        })
    columns = ["variant", "head", "s", "m", "n", "mean", "std", "ci95_low", "ci95_high",
               "best", "worst", *(f"n_{state}" for state in TRIAL_STATES[1:])]
    board = pd.DataFrame(rows, columns=columns)
    board["n"] = board["n"].astype("int64")
    board = board.sort_values(
        ["mean", "variant", "head", "s", "m"], ascending=[not maximize, True, True, True, True],
        na_position="last", kind="mergesort",
    )
    return board.reset_index(drop=True)


def set_column(name: str) -> str:
    """The trials-table column of the verification set `name`'s accuracy,
    "verification_accuracy_<name>" (its 10-fold std is that + "_std")."""
    return f"{SET_METRIC_PREFIX}{name}"


def eval_set_names(trials: pd.DataFrame, manifest: dict | None = None) -> list[str]:
    """The verification sets a run was tested on (its `[eval.<name>]` tables), [] for a
    run without them.

    In the spec's order when the manifest's spec names them (`manifest["spec"]["eval"]`),
    less the set that `[study] selection` names (it serves validation, not a test);
    otherwise found from the trials' columns "verification_accuracy_<name>", sorted: not
    the plain "verification_accuracy_std", nor a "<column>_std" beside its "<column>".
    """
    spec = (manifest or {}).get("spec") or {}
    named = spec.get("eval") if isinstance(spec, dict) else None
    if isinstance(named, dict) and named:
        selection = (spec.get("study") or {}).get("selection")
        return [str(name) for name in named if name != selection]
    columns = {str(c) for c in trials.columns}
    names = []
    for column in columns:
        name = column.removeprefix(SET_METRIC_PREFIX)
        if name == column or not name or name == "std":
            continue
        if name.endswith("_std") and column.removesuffix("_std") in columns:
            continue  # the 10-fold std of another set's column
        names.append(name)
    return sorted(names)


def set_means(board: pd.DataFrame, trials: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """`board` (a `leaderboard` of `trials`) with one more column per verification set:
    `set_column(name)`, the mean over the configuration's counted seeds (complete, with a
    value) of that set's accuracy, NaN without one (or when no trial has the set's
    column). Each is `leaderboard(trials, set_column(name))`'s mean, joined on the
    configuration (variant, head, s, m); the rows keep `board`'s order."""
    out = board.copy()
    if "variant" not in trials.columns:  # a table written before study variants
        trials = trials.assign(variant=MAIN_VARIANT)
    for name in names:
        column = set_column(name)
        if column not in trials.columns:
            out[column] = math.nan
            continue
        means = leaderboard(trials, column)[[*_CONFIG, "mean"]].rename(
            columns={"mean": column})
        # pandas joins NaN with NaN: a head without s or m finds its row.
        out = out.merge(means, on=_CONFIG, how="left", validate="one_to_one")
    out.index = board.index
    return out


# ------------------------------------------------------------------------- export


def export(run_dir: Path, fmt: str, out: Path | None = None) -> list[Path]:
    """Write trials.<fmt> and series.<fmt> ("csv" or "parquet") into `out`.

    `out` defaults to RUN_DIR/export/. Both files go to temp files first and are renamed
    only when both are written, so a failure leaves no partial export behind. Returns the
    two paths; StoreError for an unknown format or a folder that cannot be written.
    """
    if fmt not in ("csv", "parquet"):
        raise StoreError(f"export: unknown format {fmt!r} (use csv or parquet)")
    run_dir = Path(run_dir)
    trials, series = load_tables(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    targets = [(trials, out / f"trials.{fmt}"), (series, out / f"series.{fmt}")]

    def writer(df: pd.DataFrame) -> Callable[[Path], None]:
        if fmt == "csv":
            return lambda tmp: df.to_csv(tmp, index=False)
        return lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow")

    temps: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for df, path in targets:
            temps.append(_new_temp(path))
            writer(df)(temps[-1])
        for tmp, (_, path) in zip(temps, targets, strict=True):
            os.replace(tmp, path)
    except OSError as e:
        _remove(temps)
        raise StoreError(f"{out}: cannot write the export ({e.strerror or e})") from e
    except BaseException:
        _remove(temps)
        raise
    _fsync_dir(out)
    return [path for _, path in targets]


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
