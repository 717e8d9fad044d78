"""Sweeps on Optuna: an embedded journal file in the run folder, N worker processes.

The grid (`StudySpec.trials()`) is enqueued into an Optuna study whose storage is the
journal file `RUN_DIR/optuna.journal` (several processes may share it; `optuna.load_study`
and optuna-dashboard read it). Each worker process pops the next waiting trial under a
file lock, runs it with `run_trial`, writes its record to the store, then tells Optuna.
A grid point × seed therefore runs once across all workers.

TPE: configuration k of a searched head is sampled by the shared rule
(`sweep.propose`) from the configurations the head's study `<study>:<head>` has
finished, enqueued there and run with every seed (`sweep.run_configuration`: a seed
with a record is not run again); the study is told the mean.

Resume: running the same command again enqueues only the points without a record. A
trial that was interrupted (Ctrl-C) or left RUNNING by a killed process goes back in
the queue as WAITING (it did not fail, so Optuna and its dashboards do not count it as
FAIL) and runs again; one whose record was written before its process died is told
that record's outcome. The run folder's lock refuses a second sweep on the same folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from adastudy.backends import (
    WORKERS_LOCK,
    SweepStatus,
    SweepSummary,
    hyperparameters,
    run_lock,
    waiting_lock,
)
from adastudy.backends import sweep as skeleton
from adastudy.backends.sweep import DEFAULT_OPTIONS, SweepContext, TrialOptions, TrialRunner
from adastudy.errors import ParameterError
from adastudy.spec import SearchSpec, StudySpec
from adastudy.theory import HEAD_NAMES

__all__ = ["STORAGE_NAME", "OptunaEngine", "SweepStatus", "SweepSummary", "open_study",
           "run_sweep"]

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
    """The TPE study of one searched head, named `<study>:<head>`: its trials are the
    configurations, each enqueued with the parameters the shared rule sampled
    (`sweep.propose`), so its own sampler never chooses."""
    return optuna.create_study(
        storage=_storage(str(run_dir / STORAGE_NAME)), study_name=f"{spec.study.name}:{head}",
        direction=spec.study.direction, load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0))


def _head_history(study: optuna.Study) -> list[tuple[dict[str, float], float]]:
    """The configurations the head's study has finished with a finite score, by number."""
    return [(dict(t.params), float(t.value))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]


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


def _enqueue_missing(study: optuna.Study, plan: skeleton.Plan, index: skeleton.RecordIndex,
                     metric: str) -> int:
    """Settle trials left RUNNING by a dead process (`_settle_stale`); enqueue every
    grid point without a record that is not waiting already."""
    _settle_stale(study, index.records, metric)
    waiting = {
        t.user_attrs.get("key")
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    added = 0
    for key in plan.missing(index):
        trial = plan.grid[key]
        if key in waiting:
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
    run_dir: str, spec_json: str, threads: int, gpus: str | None, parent_pid: int,
    options: TrialOptions = DEFAULT_OPTIONS,
) -> None:
    _die_with_parent(parent_pid)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = _Worker(Path(run_dir), StudySpec.model_validate_json(spec_json), options)
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
    """One worker process: takes the next grid point or TPE configuration, runs it
    (`TrialRunner`: the record is written first), and tells Optuna."""

    def __init__(self, folder: Path, spec: StudySpec,
                 options: TrialOptions = DEFAULT_OPTIONS) -> None:
        self.folder = folder
        self.spec = spec
        self.plan = skeleton.Plan(spec)
        self.study = open_study(folder, spec)
        self.maximize = spec.study.direction == "maximize"
        self.runner = TrialRunner(folder, options=options)
        self.stop = False

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.runner.in_trial:
            raise KeyboardInterrupt
        self.stop = True

    def next_job(self) -> tuple[optuna.Study, optuna.Trial, Callable[[Any], None]] | None:
        """(study, trial, how to run it): a waiting grid point first, then a TPE
        configuration of a searched head with budget left (an interrupted one, waiting
        again, before a new one); None when all is taken."""
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = self.study.ask()
            if trial.user_attrs.get("key") in self.plan.grid:
                return self.study, trial, self.run_point
            self.study.tell(trial, state=TrialState.FAIL)  # not ours: cannot happen
            return None
        for head in self.plan.searched:
            study = open_head_study(self.folder, self.spec, head)
            trials = study.get_trials(deepcopy=False)
            if not any(t.state == TrialState.WAITING for t in trials):
                if _configs_taken(study) >= self.plan.budget:
                    continue
                # Configuration k = the trials so far (a requeued one keeps its number).
                params = skeleton.propose(self.spec, head, len(trials), _head_history(study))
                study.enqueue_trial(params)
            trial = study.ask(skeleton.distributions(self.spec, head))
            return study, trial, functools.partial(self.run_config, study, head)
        return None

    def run_point(self, trial: optuna.Trial) -> None:
        """A grid point × seed, with the pruner watching its validation accuracy."""
        key = trial.user_attrs["key"]
        trial_spec = self.plan.grid[key]
        trial.suggest_categorical("head", HEAD_NAMES)
        trial.suggest_int("seed", trial_spec.seed, trial_spec.seed)
        s, m = hyperparameters(trial_spec)
        for name, value in (("s", s), ("m", m)):
            if value is not None:
                trial.suggest_float(name, value, value)
        result = self.runner.execute(trial_spec, _OptunaReporter(trial, self.maximize),
                                     self.plan.numbers[key])
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
        """Configuration `trial.number` of `head`, every seed; tell Optuna the mean."""
        outcome = skeleton.run_configuration(self.runner, self.spec, head, dict(trial.params),
                                             trial.number)
        trial.set_user_attr("seed_states", list(outcome.states))
        trial.set_user_attr("outcome", outcome.outcome)
        if outcome.outcome == "complete":
            study.tell(trial, outcome.score)
        else:
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


class OptunaEngine:
    """Sweeps on Optuna with `workers` processes on this machine (`--workers`)."""

    name = "optuna"
    trials_run_here = True

    def __init__(self, workers: int = 1) -> None:
        if not (isinstance(workers, int) and workers >= 1):
            raise ParameterError(f"--workers: must be >= 1, got {workers!r}")
        self.workers = workers

    @property
    def slots(self) -> int:
        return self.workers

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OptunaEngine:
        return cls(workers=options.get("--workers", 1))

    @contextlib.contextmanager
    def session(self, spec: StudySpec) -> Iterator[dict[str, Any]]:
        yield {"workers": self.workers, "optuna": optuna.__version__}

    def resume_args(self) -> str:
        return f" --workers {self.workers}" if self.workers > 1 else ""

    def run(self, ctx: SweepContext) -> bool:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _enqueue_missing(open_study(ctx.run_dir, ctx.spec), ctx.plan, ctx.index,
                         ctx.spec.study.metric)
        for head in ctx.plan.searched:  # an interrupted configuration waits again
            _settle_stale(open_head_study(ctx.run_dir, ctx.spec, head))
        return _run_workers(ctx, self.workers)


def run_sweep(
    spec: StudySpec,
    spec_path: Path,
    *,
    out: Path | None = None,
    workers: int = 1,
    progress: Callable[[SweepStatus], None] | None = None,
) -> SweepSummary:
    """Run (or resume) the spec's study on Optuna with `workers` processes
    (`sweep.run_sweep` with an `OptunaEngine`). Returns when every trial has a record,
    or after Ctrl-C (then `interrupted`)."""
    return skeleton.run_sweep(spec, spec_path, OptunaEngine(workers), out=out,
                              progress=progress)


def _run_workers(ctx: SweepContext, workers: int) -> bool:
    """Start the workers and wait for them, showing the live view; True after Ctrl-C."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    spec_json = ctx.spec.model_dump_json()
    processes = [
        context.Process(
            target=_worker_main,
            args=(str(ctx.run_dir), spec_json, threads, gpus, os.getpid(), ctx.options),
            name=f"adastudy-worker-{i}",
        )
        for i, gpus in enumerate(_gpu_sets(workers))
    ]
    for process in processes:
        process.start()
    studies = [open_study(ctx.run_dir, ctx.spec)] + [
        open_head_study(ctx.run_dir, ctx.spec, head) for head in ctx.plan.searched
    ]

    def running() -> list[str]:
        return [
            t.user_attrs.get("key") or f"{study.study_name.split(':')[-1]} (tpe #{t.number})"
            for study in studies
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ]

    try:
        while any(p.is_alive() for p in processes):
            if ctx.progress is not None:
                ctx.view(running())
            time.sleep(0.5)
    except KeyboardInterrupt:
        # The workers got the same SIGINT: they requeue their trial and leave.
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        return True
    return False
