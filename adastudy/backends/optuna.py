"""Sweeps on Optuna: an embedded journal file in the run folder, N worker processes.

The grid (`StudySpec.trials()`) is enqueued into an Optuna study whose storage is the
journal file `RUN_DIR/optuna.journal` (several processes may share it; `optuna.load_study`
and optuna-dashboard read it). Each worker process pops the next waiting trial under a
file lock, runs it with `run_trial`, writes its record to the store, then tells Optuna.
A grid point × seed therefore runs once across all workers.

Resume: running the same command again enqueues only the points without a record. A
trial that was interrupted (Ctrl-C) or left RUNNING by a killed process goes back in
the queue as WAITING (it did not fail, so Optuna and its dashboards do not count it as
FAIL) and runs again; one whose record was written before its process died is told
that record's outcome. The run folder's lock refuses a second sweep on the same folder.
"""

from __future__ import annotations

import ctypes
import functools
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adastudy import store
from adastudy.backends import (
    SWEEP_LOCK,
    WORKERS_LOCK,
    SweepStatus,
    SweepSummary,
    finish_manifest,
    hyperparameters,
    now,
    prepare_run_dir,
    record_key,
    run_lock,
    start_manifest,
    trial_record,
    waiting_lock,
)
from adastudy.spec import SearchSpec, StudySpec, TrialSpec
from adastudy.theory import HEAD_NAMES

__all__ = ["STORAGE_NAME", "SweepStatus", "SweepSummary", "open_study", "run_sweep"]

STORAGE_NAME = "optuna.journal"
_ASK_LOCK = ".ask.lock"
#: Outcomes of trials that ended (a result), as opposed to ones whose process died.
_FINAL_FAILURES = ("failed", "diverged")


@functools.cache
def _storage(path: str) -> optuna.storages.JournalStorage:
    """One storage object per journal file and process (it caches the replayed log)."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def open_study(run_dir: Path, spec: StudySpec) -> optuna.Study:
    """The run's Optuna study of the grid (created on first use)."""
    return optuna.create_study(
        storage=_storage(str(run_dir / STORAGE_NAME)),
        study_name=spec.study.name,
        direction=spec.study.direction,
        # Every trial is enqueued with its parameters: the sampler never chooses.
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=_pruner(spec.search, spec.train.epochs),
        load_if_exists=True,
    )


def open_head_study(run_dir: Path, spec: StudySpec, head: str) -> optuna.Study:
    """The TPE study of one searched head, named `<study>:<head>`. Its sampler's seed
    is the search seed plus the trials so far: the same sequence on a rerun, and two
    workers asking in turn never draw the same start-up point."""
    storage = _storage(str(run_dir / STORAGE_NAME))
    name = f"{spec.study.name}:{head}"
    study = optuna.create_study(
        storage=storage, study_name=name, direction=spec.study.direction, load_if_exists=True
    )
    seed = spec.search.seed + len(study.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.TPESampler(seed=seed)
    )


def _configs_taken(study: optuna.Study) -> int:
    """TPE configurations that count against the budget: finished or running (a trial
    failed because its process died does not count: it is sampled anew)."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and t.user_attrs.get("outcome") in _FINAL_FAILURES)
        for t in study.get_trials(deepcopy=False)
    )


def _pruner(search: SearchSpec, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def _requeue(study: optuna.Study, trial_id: int) -> None:
    """Put an interrupted trial back in the queue (WAITING), so that Optuna and its
    dashboards do not count it as a failure: it did not fail, it was stopped, and a
    resumed sweep runs it (the same trial, its parameters kept) again.

    Optuna has no "interrupted" state, and `Study.tell` takes only COMPLETE, PRUNED or
    FAIL; the storage's `set_trial_state_values` moves a RUNNING trial to WAITING. The
    trial's user attribute `interruptions` counts the times this happened. What the
    interrupted run reported to the pruner stays (a rerun reports the same steps again,
    which Optuna ignores: the trial is seeded, so the values are the same)."""
    attrs = study._storage.get_trial(trial_id).user_attrs
    study._storage.set_trial_user_attr(trial_id, "interruptions",
                                       int(attrs.get("interruptions", 0)) + 1)
    study._storage.set_trial_state_values(trial_id, TrialState.WAITING)


def _settle_stale(study: optuna.Study, records: dict[str, dict[str, Any]] | None = None,
                  metric: str | None = None) -> None:
    """Settle the trials left RUNNING by a process that died (no worker is alive now):
    one whose grid point has a record (the process died between writing it and telling
    Optuna) is told that record's outcome; any other goes back in the queue
    (`_requeue`), as it was interrupted, not failed."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = (records or {}).get(trial.user_attrs.get("key"))
        if record is None:
            _requeue(study, trial._trial_id)
            continue
        state = record.get("state")
        study._storage.set_trial_user_attr(trial._trial_id, "outcome", state)
        if state == "complete" and metric is not None:
            value = (record.get("metrics") or {}).get(metric)
            study.tell(trial.number, math.nan if value is None else value)
        elif state == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
        else:  # failed or diverged: a result, as in run_point
            study.tell(trial.number, state=TrialState.FAIL)


def _enqueue_missing(study: optuna.Study, plan: dict[str, TrialSpec], done: set[str],
                     records: dict[str, dict[str, Any]] | None = None,
                     metric: str | None = None) -> int:
    """Settle trials left RUNNING by a dead process (`_settle_stale`); enqueue every
    point without a record that is not waiting already."""
    _settle_stale(study, records, metric)
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
        # The variant is an attribute, not a parameter: Optuna requires one parameter
        # to have the same choices in every trial of a study.
        study.enqueue_trial(params, user_attrs={"key": key, "variant": trial.variant})
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
            with warnings.catch_warnings():  # a requeued trial reports its epochs again
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                self.trial.report(value if self.maximize else 1.0 - value,
                                  int(metrics["epoch"]))

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

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = _Worker(Path(run_dir), StudySpec.model_validate_json(spec_json))
    # Ctrl-C reaches the workers too: it abandons a running trial (its point has no
    # record, so a resumed sweep runs it again), but never cuts a record or an Optuna
    # write in half: outside run_trial it only asks the loop to stop.
    signal.signal(signal.SIGINT, worker.on_sigint)
    with run_lock(worker.folder, WORKERS_LOCK, shared=True):
        while not worker.stop and os.getppid() == parent_pid:
            with waiting_lock(worker.folder, _ASK_LOCK):
                job = worker.next_job()
            if job is None:
                return
            owner, trial, run = job
            try:
                run(trial)
            except KeyboardInterrupt:  # stopped, not failed: back in the queue
                _requeue(owner, trial._trial_id)
                return


class _Worker:
    """One worker process: takes the next grid point or TPE configuration, runs it,
    records it in the store, and tells Optuna."""

    def __init__(self, folder: Path, spec: StudySpec) -> None:
        self.folder = folder
        self.spec = spec
        self.plan = {record_key(t): t for t in spec.trials()}
        self.study = open_study(folder, spec)
        self.maximize = spec.study.direction == "maximize"
        self.data: dict[str, Any] = {}  # built datasets by DataSpec (JSON): one per variant
        self.in_trial = False
        self.stop = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.in_trial:
            raise KeyboardInterrupt
        self.stop = True

    def next_job(self) -> tuple[optuna.Study, optuna.Trial, Callable[[Any], None]] | None:
        """(study, trial, how to run it): a waiting grid point first, then a TPE
        configuration of a searched head with budget left; None when all is taken."""
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = self.study.ask()
            if trial.user_attrs.get("key") in self.plan:
                return self.study, trial, self.run_point
            self.study.tell(trial, state=TrialState.FAIL)  # not ours: cannot happen
            return None
        for head in self.spec.searched_heads():
            study = open_head_study(self.folder, self.spec, head)
            if _configs_taken(study) < self.spec.search.trials:
                trial = study.ask()
                return study, trial, functools.partial(self.run_config, study, head)
        return None

    def execute(self, trial_spec: TrialSpec, reporter: Any, number: int) -> Any:
        """Run one trial and write its record; the result, or None when it raised."""
        from adastudy.data import build_data
        from adastudy.train import run_trial

        data_key = trial_spec.data.model_dump_json()
        if data_key not in self.data:
            self.data[data_key] = build_data(trial_spec.data)
        started = now()
        try:
            self.in_trial = True
            result = run_trial(trial_spec, reporter, data=self.data[data_key])
        except Exception as exc:  # a trial that raises is a result, not a crash
            self.in_trial = False
            store.write_trial_record(self.folder, trial_record(
                trial_spec, None, number=number, started_at=started,
                error=f"{type(exc).__name__}: {exc}", series=reporter.rows,
            ))
            return None
        finally:
            self.in_trial = False
        store.write_trial_record(self.folder, trial_record(
            trial_spec, result, number=number, started_at=started, series=reporter.rows,
        ))
        return result

    def run_point(self, trial: optuna.Trial) -> None:
        """A grid point × seed, with the pruner watching its validation accuracy."""
        trial_spec = self.plan[trial.user_attrs["key"]]
        trial.suggest_categorical("head", HEAD_NAMES)
        trial.suggest_int("seed", trial_spec.seed, trial_spec.seed)
        s, m = hyperparameters(trial_spec)
        for name, value in (("s", s), ("m", m)):
            if value is not None:
                trial.suggest_float(name, value, value)
        result = self.execute(trial_spec, _OptunaReporter(trial, self.maximize), trial.number)
        if result is None:
            trial.set_user_attr("outcome", "failed")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        trial.set_user_attr("outcome", result.state)
        if result.state == "complete":
            self.study.tell(trial, result.metrics.get(self.spec.study.metric, math.nan))
        elif result.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:  # diverged: Optuna has no such state
            trial.set_user_attr("diverged_reason", result.diverged_reason)
            self.study.tell(trial, state=TrialState.FAIL)

    def run_config(self, study: optuna.Study, head: str, trial: optuna.Trial) -> None:
        """A TPE configuration of `head`: sample (s, m), run every seed, tell the mean.
        No pruning here: the seeds of one configuration run one after the other."""
        from adastudy.spec import Range
        from adastudy.train import RecordingReporter

        grid = self.spec.heads[head]
        params = {}
        for name in ("s", "m"):
            values = getattr(grid, name)
            if isinstance(values, Range):
                params[name] = trial.suggest_float(name, values.low, values.high, log=values.log)
            elif values:
                params[name] = trial.suggest_categorical(name, list(values))
        scores, states = [], []
        for seed in self.spec.study.seeds:
            trial_spec = TrialSpec(
                data=self.spec.data, model=self.spec.model, train=self.spec.train,
                head=head, seed=seed, **params,
            )
            result = self.execute(trial_spec, RecordingReporter(), trial.number)
            states.append("failed" if result is None else result.state)
            if result is not None and result.state == "complete":
                scores.append(result.metrics.get(self.spec.study.metric, math.nan))
        trial.set_user_attr("seed_states", states)
        finite = [v for v in scores if math.isfinite(v)]
        if finite:
            trial.set_user_attr("outcome", "complete")
            study.tell(trial, sum(finite) / len(finite))
        else:
            diverged = all(state == "diverged" for state in states)
            trial.set_user_attr("outcome", "diverged" if diverged else "failed")
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
    plan = {record_key(t): t for t in spec.trials()}
    with run_lock(run_dir, SWEEP_LOCK):
        with run_lock(run_dir, WORKERS_LOCK):
            pass  # no worker of an earlier sweep is alive
        manifest = start_manifest(run_dir, spec, spec_path, "optuna", {"workers": workers})

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        records, problems = store.read_trial_records(run_dir)
        by_key = {r["key"]: r for r in records}
        _enqueue_missing(open_study(run_dir, spec), plan, set(by_key), by_key,
                         spec.study.metric)
        for head in spec.searched_heads():  # a TPE configuration: its seeds run again
            _settle_stale(open_head_study(run_dir, spec, head))

        count = functools.partial(_count_finished, run_dir, spec, plan)
        planned = len(plan) + (
            len(spec.searched_heads()) * spec.search.trials * len(spec.study.seeds)
        )
        interrupted = False
        if count(records) < planned:
            interrupted = _run_workers(run_dir, spec, workers, progress, count, planned)
        records, problems = store.read_trial_records(run_dir)
        store.consolidate(run_dir)
        finished = count(records)
        # Workers that stopped early (their Ctrl-C, a crash) leave points to resume.
        interrupted = interrupted or finished < planned
        finish_manifest(run_dir, manifest, interrupted)
    return SweepSummary(run_dir, planned, finished, interrupted, problems)


def _count_finished(
    run_dir: Path, spec: StudySpec, plan: dict[str, TrialSpec], records: list[dict[str, Any]]
) -> int:
    """Trials finished so far: grid points with a record, plus seeds × the TPE
    configurations that ended (up to the budget)."""
    finished = len({r["key"] for r in records} & set(plan))
    for head in spec.searched_heads():
        study = open_head_study(run_dir, spec, head)
        ended = sum(
            t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.user_attrs.get("outcome") in _FINAL_FAILURES)
            for t in study.get_trials(deepcopy=False)
        )
        finished += min(ended, spec.search.trials) * len(spec.study.seeds)
    return finished


def _run_workers(
    run_dir: Path,
    spec: StudySpec,
    workers: int,
    progress: Callable[[SweepStatus], None] | None,
    count: Callable[[list[dict[str, Any]]], int],
    planned: int,
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
    studies = [open_study(run_dir, spec)] + [
        open_head_study(run_dir, spec, head) for head in spec.searched_heads()
    ]

    def report() -> None:
        if progress is None:
            return
        records = store.read_trial_records(run_dir)[0]
        running = [
            t.user_attrs.get("key") or f"{study.study_name.split(':')[-1]} (tpe #{t.number})"
            for study in studies
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ]
        progress(SweepStatus(count(records), planned, records, running))

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
