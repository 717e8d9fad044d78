"""Sweeps on Optuna: an embedded journal file in the run folder, N worker processes.

The grid (`StudySpec.trials()`) is enqueued into an Optuna study whose storage is the
journal file `RUN_DIR/optuna.journal` (several processes may share it; `optuna.load_study`
and optuna-dashboard read it). Each worker process pops the next waiting trial under a
file lock, runs it with `run_trial`, writes its record to the store, then tells Optuna.
A grid point × seed therefore runs once across all workers.

Resume: running the same command again enqueues only the points without a record, and
fails any trial left RUNNING by a killed process (its point has no record, so it is
enqueued again). The run folder's lock refuses a second sweep on the same folder.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adastudy import store
from adastudy.backends import (
    SWEEP_LOCK,
    WORKERS_LOCK,
    hyperparameters,
    now,
    prepare_run_dir,
    run_lock,
    trial_record,
    waiting_lock,
)
from adastudy.spec import SearchSpec, StudySpec, TrialSpec
from adastudy.theory import HEAD_NAMES

__all__ = ["STORAGE_NAME", "SweepStatus", "SweepSummary", "open_study", "run_sweep"]

STORAGE_NAME = "optuna.journal"
_ASK_LOCK = ".ask.lock"


@dataclass
class SweepStatus:
    """What a live view shows while a sweep runs."""

    finished: int
    planned: int
    records: list[dict[str, Any]]  #: the store's records of this plan's trials
    running: list[str]  #: keys of the trials running now


@dataclass
class SweepSummary:
    run_dir: Path
    planned: int
    finished: int
    interrupted: bool
    problems: list[str]


def open_study(run_dir: Path, spec: StudySpec) -> optuna.Study:
    """The run's Optuna study (created on first use)."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / STORAGE_NAME))
    )
    return optuna.create_study(
        storage=storage,
        study_name=spec.study.name,
        direction=spec.study.direction,
        # Every trial is enqueued with its parameters: the sampler never chooses.
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=_pruner(spec.search, spec.train.epochs),
        load_if_exists=True,
    )


def _pruner(search: SearchSpec, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def _key(trial: TrialSpec) -> str:
    s, m = hyperparameters(trial)
    return store.trial_key(trial.head, s, m, trial.seed)


def _enqueue_missing(study: optuna.Study, plan: dict[str, TrialSpec], done: set[str]) -> int:
    """Fail trials left RUNNING by a dead process; enqueue every point without a record."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    waiting = {
        t.user_attrs.get("key")
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    added = 0
    for key, trial in plan.items():
        if key in done or key in waiting:
            continue
        s, m = hyperparameters(trial)
        params: dict[str, Any] = {"head": trial.head, "seed": trial.seed}
        params.update({k: v for k, v in (("s", s), ("m", m)) if v is not None})
        study.enqueue_trial(params, user_attrs={"key": key})
        added += 1
    return added


class _OptunaReporter:
    """Hands the validation accuracy to Optuna's pruner, one step per epoch."""

    def __init__(self, trial: optuna.Trial, maximize: bool) -> None:
        self.trial = trial
        self.maximize = maximize
        self.rows: list[dict[str, float]] = []

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})
        if "val_accuracy" in metrics and "epoch" in metrics:
            value = metrics["val_accuracy"]
            # The pruner compares in the study's direction; to minimise, report the error.
            self.trial.report(value if self.maximize else 1.0 - value, int(metrics["epoch"]))

    def should_stop(self) -> bool:
        return self.trial.should_prune()


def _die_with_parent(parent_pid: int) -> None:
    """Workers must not outlive the sweep process (a resumed sweep would rerun their
    trials): on Linux the kernel kills them with it; elsewhere they check between trials."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _worker_main(
    run_dir: str, spec_json: str, threads: int, gpus: str | None, parent_pid: int
) -> None:
    _die_with_parent(parent_pid)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    import torch

    from adastudy.data import build_data
    from adastudy.train import run_trial

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(run_dir)
    spec = StudySpec.model_validate_json(spec_json)
    plan = {_key(t): t for t in spec.trials()}
    study = open_study(folder, spec)
    maximize = spec.study.direction == "maximize"
    data = None
    # Ctrl-C reaches the workers too: it abandons a running trial (its point has no
    # record, so a resumed sweep runs it again), but never cuts a record or an Optuna
    # write in half: outside run_trial it only asks the loop to stop.
    phase = {"in_trial": False, "stop": False}

    def on_sigint(signum: int, frame: Any) -> None:
        if phase["in_trial"]:
            raise KeyboardInterrupt
        phase["stop"] = True

    signal.signal(signal.SIGINT, on_sigint)
    with run_lock(folder, WORKERS_LOCK, shared=True):
        while not phase["stop"] and os.getppid() == parent_pid:
            with waiting_lock(folder, _ASK_LOCK):
                if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    return
                trial = study.ask()
            key = trial.user_attrs.get("key")
            if key not in plan:  # not one of ours (cannot happen under the lock)
                study.tell(trial, state=TrialState.FAIL)
                continue
            spec_t = plan[key]
            trial.suggest_categorical("head", HEAD_NAMES)
            trial.suggest_int("seed", spec_t.seed, spec_t.seed)
            s, m = hyperparameters(spec_t)
            for name, value in (("s", s), ("m", m)):
                if value is not None:
                    trial.suggest_float(name, value, value)
            data = data if data is not None else build_data(spec.data)
            reporter = _OptunaReporter(trial, maximize)
            started = now()
            try:
                phase["in_trial"] = True
                result = run_trial(spec_t, reporter, data=data)
            except KeyboardInterrupt:
                phase["in_trial"] = False
                study.tell(trial, state=TrialState.FAIL)
                return
            except Exception as exc:  # a trial that raises is a result, not a crash
                phase["in_trial"] = False
                error = f"{type(exc).__name__}: {exc}"
                store.write_trial_record(folder, trial_record(
                    spec_t, None, number=trial.number, started_at=started, error=error,
                    series=reporter.rows,
                ))
                trial.set_user_attr("outcome", "failed")
                trial.set_user_attr("error", error[:1000])
                study.tell(trial, state=TrialState.FAIL)
                continue
            phase["in_trial"] = False
            store.write_trial_record(folder, trial_record(
                spec_t, result, number=trial.number, started_at=started, series=reporter.rows,
            ))
            trial.set_user_attr("outcome", result.state)
            if result.state == "complete":
                value = result.metrics.get(spec.study.metric, float("nan"))
                study.tell(trial, value)
            elif result.state == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            else:  # diverged: Optuna has no such state
                trial.set_user_attr("diverged_reason", result.diverged_reason)
                study.tell(trial, state=TrialState.FAIL)


def _gpu_sets(workers: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: the GPUs dealt round-robin (None: no GPU)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return [None] * workers
    if workers <= count:
        return [",".join(str(g) for g in range(count) if g % workers == i) for i in range(workers)]
    return [str(i % count) for i in range(workers)]


def run_sweep(
    spec: StudySpec,
    spec_path: Path,
    *,
    out: Path | None = None,
    workers: int = 1,
    progress: Callable[[SweepStatus], None] | None = None,
) -> SweepSummary:
    """Run (or resume) the spec's grid on Optuna with `workers` processes.

    Returns when every point × seed has a record, or after Ctrl-C (then `interrupted`).
    """
    run_dir = prepare_run_dir(spec, spec_path, out)
    plan = {_key(t): t for t in spec.trials()}
    with run_lock(run_dir, SWEEP_LOCK):
        with run_lock(run_dir, WORKERS_LOCK):
            pass  # no worker of an earlier sweep is alive
        manifest = store.read_manifest(run_dir) or {
            "study": spec.study.name,
            "spec_path": str(spec_path),
            "spec_digest": spec.digest(),
            "spec": spec.model_dump(mode="json"),
            "backend": "optuna",
            "started_at": now(),
            "runs": [],
        }
        manifest["environment"] = store.environment()
        manifest["runs"].append({"started_at": now(), "workers": workers, "argv": sys.argv})
        store.write_manifest(run_dir, manifest)

        records, problems = store.read_trial_records(run_dir)
        done = {r["key"] for r in records} & set(plan)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _enqueue_missing(open_study(run_dir, spec), plan, done)

        interrupted = False
        if len(done) < len(plan):
            interrupted = _run_workers(run_dir, spec, plan, workers, progress)
        records, problems = store.read_trial_records(run_dir)
        store.consolidate(run_dir)
        finished = len({r["key"] for r in records} & set(plan))
        # Workers that stopped early (their Ctrl-C, a crash) leave points to resume.
        interrupted = interrupted or finished < len(plan)
        manifest["runs"][-1]["ended_at"] = now()
        manifest["runs"][-1]["interrupted"] = interrupted
        manifest["ended_at"] = now()
        store.write_manifest(run_dir, manifest)
    return SweepSummary(run_dir, len(plan), finished, interrupted, problems)


def _run_workers(
    run_dir: Path,
    spec: StudySpec,
    plan: dict[str, TrialSpec],
    workers: int,
    progress: Callable[[SweepStatus], None] | None,
) -> bool:
    """Start the workers and wait for them, reporting progress; True after Ctrl-C."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    spec_json = spec.model_dump_json()
    processes = [
        context.Process(
            target=_worker_main,
            args=(str(run_dir), spec_json, threads, gpus, os.getpid()),
            name=f"adastudy-worker-{i}",
        )
        for i, gpus in enumerate(_gpu_sets(workers))
    ]
    for process in processes:
        process.start()
    study = open_study(run_dir, spec)

    def report() -> None:
        if progress is None:
            return
        records = [r for r in store.read_trial_records(run_dir)[0] if r["key"] in plan]
        running = [
            t.user_attrs.get("key", "?")
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ]
        progress(SweepStatus(len(records), len(plan), records, running))

    try:
        while any(p.is_alive() for p in processes):
            report()
            time.sleep(0.5)
    except KeyboardInterrupt:
        # The workers got the same SIGINT: they fail their trial in Optuna and leave.
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        return True
    report()
    return False
