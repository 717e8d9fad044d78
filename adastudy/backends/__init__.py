"""The engines, and what every engine shares: the run folder, its locks, the manifest,
and turning a trial into a record.

An engine is one registration in `ENGINES` (its module, class and the package it
needs); `get_engine(name, options)` imports it only then, so importing adastudy imports
neither Optuna nor Ray. The sweep itself (the plan, the records, the TPE rule, the live
view) is `adastudy.backends.sweep`; an engine implements `sweep.Engine`. The tables and
reports read only the store, so they do not care which engine ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adastudy.errors import AdastudyError, ParameterError
from adastudy.theory import check_head_params

if TYPE_CHECKING:  # the command line imports this module for ENGINES: keep it light
    from adastudy.spec import StudySpec, TrialSpec

__all__ = [
    "SWEEP_LOCK",
    "WORKERS_LOCK",
    "RunFolderError",
    "ENGINES",
    "check_devices",
    "get_engine",
    "require_engine",
    "SweepStatus",
    "SweepSummary",
    "hyperparameters",
    "now",
    "prepare_run_dir",
    "record_key",
    "finish_manifest",
    "run_lock",
    "start_manifest",
    "trial_record",
    "waiting_lock",
]

SWEEP_LOCK = ".sweep.lock"
WORKERS_LOCK = ".workers.lock"


class RunFolderError(AdastudyError):
    """The run folder cannot be used: made from another spec, busy, or not writable."""


@dataclass
class SweepStatus:
    """What a live view shows while a sweep runs."""

    finished: int
    planned: int
    records: list[dict[str, Any]]  #: the store's records so far
    running: list[str]  #: keys of the trials running now


@dataclass
class SweepSummary:
    run_dir: Path
    planned: int
    finished: int
    interrupted: bool
    problems: list[str]


@dataclass(frozen=True)
class EngineEntry:
    """Where an engine lives and what it needs."""

    target: str  #: "module:Class", imported when the engine is chosen
    package: str | None  #: the package it imports (None: none beyond adastudy's own)
    install: str = ""  #: how to get that package
    options: tuple[str, ...] = ()  #: the command-line options it takes


#: The engines, by their `--backend` name: one entry per engine.
ENGINES: dict[str, EngineEntry] = {
    "optuna": EngineEntry("adastudy.backends.optuna:OptunaEngine", "optuna",
                          "pip install optuna", ("--workers",)),
    "ray": EngineEntry("adastudy.backends.ray:RayEngine", "ray",
                       "pip install 'adastudy[ray]' (or 'ray[tune]')",
                       ("--address", "--cpus-per-trial", "--gpus-per-trial")),
    "serial": EngineEntry("adastudy.backends.serial:SerialEngine", None),
}


def require_engine(name: str) -> None:
    """Raise a one-line `ParameterError` naming what to install when engine `name`'s
    package is missing (the engines are imported only when a sweep runs on them)."""
    import importlib.util

    entry = ENGINES[name]
    if entry.package is not None and importlib.util.find_spec(entry.package) is None:
        raise ParameterError(f"--backend {name}: the {name} engine needs the package "
                             f"{entry.package!r}, which is not installed: {entry.install}")


def get_engine(name: str, options: dict[str, Any] | None = None) -> Any:
    """The engine `name` (an `adastudy.backends.sweep.Engine`) for the command line's
    `options` ({"--workers": 2, ...}; None for an option not given). One-line errors:
    an unknown engine, its package missing, an option it does not take, a bad value."""
    import importlib

    if name not in ENGINES:
        raise ParameterError(f"--backend: must be one of {', '.join(ENGINES)}, got {name!r}")
    require_engine(name)
    options = dict(options or {})
    for option, value in options.items():
        if value is None or option in ENGINES[name].options:
            continue
        owners = [n for n, e in ENGINES.items() if option in e.options]
        refusal = getattr(importlib.import_module(ENGINES[name].target.split(":")[0]),
                          "REFUSALS", {}).get(option)
        raise ParameterError(f"{option}: " + (refusal or "only the {0} backend takes it "
                             "(--backend {0})".format(owners[0] if owners else "?")))
    module, cls = ENGINES[name].target.split(":")
    return getattr(importlib.import_module(module), cls).from_options(
        {k: v for k, v in options.items() if v is not None})


def check_devices(spec: StudySpec, *, pilots_only: bool = False) -> None:
    """Refuse, before anything is written, a spec whose trials ask for a device this
    machine lacks (`train.device = "cuda"` without CUDA, more `train.devices` than
    GPUs): each trial would fail. For the
    engines that run trials on this machine (serial, Optuna, a local Ray). With
    `pilots_only` (a dry run), only the variants whose pilot trial runs here: those on
    data on disk are estimated without one (`dryrun`)."""
    import torch

    from adastudy.distributed import devices_problem
    from adastudy.spec import FILE_DATASETS, MAIN_VARIANT

    for name in spec.variant_names():
        data, _, train = spec.variant_sections(name)
        if pilots_only and data.name in FILE_DATASETS:
            continue
        where = "" if name == MAIN_VARIANT else f" (variant {name})"
        if train.device == "cuda" and not torch.cuda.is_available():
            raise ParameterError(f"train.device{where}: 'cuda' was asked for, but CUDA is "
                                 "not available on this machine")
        if (problem := devices_problem(train)) is not None:
            raise ParameterError(f"train.devices{where}: {problem}")


def start_manifest(
    run_dir: Path, spec: StudySpec, spec_path: Path, backend: str, run: dict[str, Any]
) -> dict[str, Any]:
    """Read (or begin) the run folder's manifest, record this machine's environment, the
    determinism flags (`train.determinism_flags`) and a new entry in `runs` (its start,
    the engine, `run`'s details, the determinism flags, the command line),
    write it, and return it for the engine to close with `ended_at`."""
    from adastudy import store

    manifest = store.read_manifest(run_dir) or {
        "study": spec.study.name,
        "spec_path": str(spec_path),
        "spec_digest": spec.digest(),
        "spec": spec.model_dump(mode="json"),
        "backend": backend,
        "started_at": now(),
        "runs": [],
    }
    from adastudy.train import determinism_flags

    manifest["environment"] = store.environment()
    manifest["determinism"] = determinism_flags(spec.train)
    manifest["runs"].append({"started_at": now(), "backend": backend, **run,
                             "determinism": manifest["determinism"], "argv": sys.argv})
    store.write_manifest(run_dir, manifest)
    return manifest


def finish_manifest(run_dir: Path, manifest: dict[str, Any], interrupted: bool) -> None:
    """Close the run that `start_manifest` began: its end, and whether it stopped early."""
    from adastudy import store

    manifest["runs"][-1]["ended_at"] = now()
    manifest["runs"][-1]["interrupted"] = interrupted
    manifest["ended_at"] = now()
    store.write_manifest(run_dir, manifest)


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def prepare_run_dir(spec: StudySpec, spec_path: Path, out: Path | None) -> Path:
    """The run folder for `spec` (default runs/<study.name>), created if needed.

    Refuses (without changing anything) a folder whose manifest holds another spec's
    digest, or a path that is a file or cannot be written.
    """
    from adastudy import store

    run_dir = Path(out) if out is not None else Path("runs") / spec.study.name
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder")
    manifest = store.read_manifest(run_dir) if run_dir.is_dir() else None
    if manifest is not None and manifest.get("spec_digest") != spec.digest():
        raise RunFolderError(
            f"{run_dir}: was made from another spec ({manifest.get('spec_path', '?')}, digest "
            f"{str(manifest.get('spec_digest'))[:12]}); give --out a new folder"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{run_dir}: cannot write there ({exc.strerror})") from None
    return run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path, name: str = SWEEP_LOCK, *, shared: bool = False) -> Iterator[None]:
    """Hold one of the run folder's locks (flock: a killed process releases it, so no
    stale lock survives it). Raises `RunFolderError` when another process holds it.

    The process that runs a sweep holds `SWEEP_LOCK` exclusively; its workers hold
    `WORKERS_LOCK` shared, so a new sweep can tell that workers of an earlier one live.
    """
    with open(run_dir / name, "a+") as handle:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"{run_dir}: another sweep is running in this folder") from None
        yield


@contextlib.contextmanager
def waiting_lock(run_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock that waits its turn (short critical sections between workers)."""
    with open(run_dir / name, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def trial_record(
    trial: TrialSpec,
    result: Any | None,
    *,
    number: int | None,
    started_at: str,
    error: str | None = None,
    series: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The store record of one trial: its `TrialResult`, or `error` when it raised."""
    from adastudy.data import declared_num_classes

    s, m = hyperparameters(trial)
    record: dict[str, Any] = {
        "key": record_key(trial),
        "number": number,
        "variant": trial.variant,
        "num_classes": (result.num_classes if result is not None
                        and result.num_classes is not None else declared_num_classes(trial.data)),
        "embedding_dim": trial.model.embedding_dim,
        "head": trial.head,
        "s": s,
        "m": m,
        "seed": trial.seed,
        "started_at": started_at,
        "finished_at": now(),
        "worker": f"pid {os.getpid()}",
        "series": series or [],
        "error": error,
    }
    if result is None:
        record.update(state="failed", metrics={}, steps_to_theta_med={})
        return record
    fields = result.to_dict()
    for key in ("head", "s", "m", "seed"):
        fields.pop(key)
    record.update(fields)
    return record


def record_key(trial: TrialSpec) -> str:
    """The store key of a trial: every engine names its records (and finds the ones
    already done) with it."""
    from adastudy import store

    s, m = hyperparameters(trial)
    return store.trial_key(trial.head, s, m, trial.seed, trial.variant)


def hyperparameters(trial: TrialSpec) -> tuple[float | None, float | None]:
    """(s, m) that the trial's head uses: its defaults where the grid left them unset,
    None for a parameter the head does not take."""
    values = check_head_params(trial.head, **trial.head_params())
    return values.get("s"), values.get("m")
