"""Sweeps on Ray Tune: the same trials and tables as the Optuna backend, on one machine
or on a Ray cluster.

Each grid point × seed without a store record is one Tune trial (`tune.grid_search` over
the record keys); with `search.method = "tpe"` each searched head is one more experiment,
driven by Ray's Optuna searcher, in which a trial is one sampled configuration run with
every seed. The trainable calls the same `run_trial` and writes the same store record
(`trials/*.json`) before it tells Tune, so `trials.parquet`, `series.parquet` and the
reports do not care which engine ran. Ray's own experiments live in `RUN_DIR/ray/`.

- **Where**: by default a local Ray started for the sweep, reachable from this machine
  only (loopback), no dashboard, shut down after; `address` ("auto" or "HOST:PORT")
  joins a running cluster and leaves it running. Token authentication: a cluster that
  this machine holds a token for (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or
  `~/.ray/auth_token`) is joined with it, as Ray does for "auto".
- **Pruning**: `search.pruner != "none"` puts an ASHA scheduler on the validation
  accuracy of each epoch. ASHA's "stop" reaches the trial as `should_stop()` at the
  epoch's end, so a cut trial ends as `pruned` and writes its record like an Optuna one.
- **Faults**: a trial whose worker dies is retried (`max_failures`); a trial that raises
  is a `failed` result, as on Optuna. Rerunning the command restores the interrupted
  experiment (`Tuner.restore`) and never repeats a trial that has a record.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from adastudy import store
from adastudy.backends import (
    SWEEP_LOCK,
    WORKERS_LOCK,
    SweepStatus,
    SweepSummary,
    finish_manifest,
    now,
    prepare_run_dir,
    record_key,
    run_lock,
    start_manifest,
    trial_record,
)
from adastudy.errors import AdastudyError
from adastudy.spec import Range, StudySpec, TrialSpec

__all__ = ["EXPERIMENTS_DIR", "RayClusterError", "init_local_ray", "run_sweep"]

#: Ray's experiments inside the run folder: grid-1, grid-2, ..., tpe-<head>-1, ...
EXPERIMENTS_DIR = "ray"
#: Tests only: the path of a marker file; the first trial that finds it absent creates
#: it and SIGKILLs its own worker (a worker that dies mid-trial).
_KILL_ONCE_ENV = "ADASTUDY_RAY_KILL_ONCE"
#: Ray reads this when it is imported: "0" makes a new local node use the loopback
#: address, so that every Ray server of the node listens on 127.0.0.1 only.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The validation accuracy is reported to ASHA under this name, once per epoch.
_PRUNE_METRIC = "val_accuracy"
#: The search metric of a TPE experiment: the mean of the study metric over the seeds.
_SCORE = "score"

log = logging.getLogger(__name__)


class RayClusterError(AdastudyError):
    """The Ray cluster cannot be used: unreachable, refused, or too small for a trial."""


# --------------------------------------------------------------------------- Ray itself


def init_local_ray(*, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a Ray instance on this machine for this process: its servers listen on
    127.0.0.1 only, no dashboard, token authentication on (Ray's default for local
    instances). Shut it down with `ray.shutdown()`."""
    # Ray turns a node address of 127.0.0.1 into the machine's routable address (and
    # then listens on every interface) unless it runs as a single-machine Ray, which
    # the variable below selects: for the child processes (read at their import) and
    # for this one (read at ours, so set on the module as well).
    from ray._private import ray_constants

    saved_env = os.environ.get(_LOOPBACK_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = saved_env


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Hold what is written to file descriptor 2 meanwhile (Ray's C++ client logs each
    refused connection attempt there, twenty lines for a missing token) and write it
    out after a success; after a failure the caller's one-line error stands alone."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            sink.seek(0)
            held = sink.read()
            if held:
                os.write(2, held)
        finally:
            os.close(saved)


def _join_cluster(address: str) -> None:
    """Connect this process to the running cluster at `address` ("auto" or HOST:PORT)."""
    if address != "auto":
        # Ray enables token authentication by itself only for "auto"; a cluster named
        # by its address gets the same treatment: the token this machine holds, if any.
        with contextlib.suppress(ImportError):
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        with _held_stderr():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ray.exceptions.AuthenticationError:
        # With RAY_AUTH_MODE=token and no token Ray raises this (and printed a
        # traceback, exit 1): the same mistake as a missing token without the variable.
        raise RayClusterError(
            f"--address {address}: the cluster uses token authentication and this machine "
            "has no token for it: put it in RAY_AUTH_TOKEN, in the file RAY_AUTH_TOKEN_PATH "
            "names, or in ~/.ray/auth_token"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayClusterError(
            f"--address {address}: cannot join a Ray cluster there ({exc}); check that "
            "`ray start --head` runs there and, if the cluster uses token authentication, "
            "that this machine has its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None


def _probe(address: str) -> None:
    """Fail at once when nothing answers at HOST:PORT (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return  # "auto", or a form that Ray checks itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayClusterError(
            f"--address {address}: nothing answers there ({exc.strerror or exc}); "
            "start the head with `ray start --head --port PORT` or check the address"
        ) from None


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[str]:
    """Ray for the sweep: the caller's if this process is already connected, else the
    cluster at `address` (left running), else a local instance (shut down after).
    Yields which, for the manifest."""
    if address is not None:
        _probe(address)
    if ray.is_initialized():
        if address is not None:
            raise RayClusterError(f"--address {address}: this process is connected to a "
                                  "Ray already; leave --address out to use it")
        yield "this process's Ray"
        return
    if address is None:
        init_local_ray()
    else:
        _join_cluster(address)
    try:
        yield address or "local"
    finally:
        ray.shutdown()  # only disconnects this process from a joined cluster


def _check_request(cpus_per_trial: float, gpus_per_trial: float) -> None:
    if not (math.isfinite(cpus_per_trial) and cpus_per_trial > 0):
        raise RayClusterError(f"--cpus-per-trial: must be > 0, got {cpus_per_trial:g}")
    if not (math.isfinite(gpus_per_trial) and gpus_per_trial >= 0):
        raise RayClusterError(f"--gpus-per-trial: must be >= 0, got {gpus_per_trial:g}")
    if gpus_per_trial > 1 and not float(gpus_per_trial).is_integer():
        raise RayClusterError(
            f"--gpus-per-trial: a share of one GPU (<= 1) or whole GPUs, got {gpus_per_trial:g}"
        )


def _check_cluster_fits(cpus_per_trial: float, gpus_per_trial: float) -> dict[str, float]:
    """The cluster's total resources, after checking that one node can hold a trial
    (Tune would otherwise wait for ever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    most_gpus = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
    most_cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if gpus_per_trial > 0 and most_gpus == 0:
        raise RayClusterError(
            f"--gpus-per-trial {gpus_per_trial:g}: the Ray cluster has no GPU; "
            "leave the option out to train on CPUs"
        )
    if gpus_per_trial > most_gpus:
        raise RayClusterError(
            f"--gpus-per-trial {gpus_per_trial:g}: no node of the Ray cluster has that many "
            f"GPUs (at most {most_gpus:g})"
        )
    if cpus_per_trial > most_cpus:
        raise RayClusterError(
            f"--cpus-per-trial {cpus_per_trial:g}: no node of the Ray cluster has that many "
            f"CPUs (at most {most_cpus:g})"
        )
    return {"CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0), "nodes": len(nodes)}


# ------------------------------------------------------------------------ the trainables


@dataclass(frozen=True)
class _Job:
    """What every trial of a sweep needs, shipped once to the workers."""

    spec_json: str
    run_dir: str  #: absolute
    threads: int
    board: str  #: the name of the pruning board actor
    kill_marker: str | None = None


@functools.lru_cache(maxsize=4)
def _spec_and_plan(spec_json: str) -> tuple[StudySpec, dict[str, TrialSpec], dict[str, int]]:
    spec = StudySpec.model_validate_json(spec_json)
    trials = spec.trials()
    plan = {record_key(t): t for t in trials}
    return spec, plan, {key: i for i, key in enumerate(plan)}


#: Built data sets of this worker process, by their data spec (a reused actor runs many
#: trials; trials of one study may one day differ in their data).
_DATA: dict[str, Any] = {}


def _data_for(trial: TrialSpec) -> Any:
    from adastudy.data import build_data

    key = trial.data.model_dump_json()
    if key not in _DATA:
        if len(_DATA) >= 2:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = build_data(trial.data)
    return _DATA[key]


def _setup_worker(job: _Job) -> None:
    import torch

    torch.set_num_threads(job.threads)
    if job.kill_marker is not None:
        try:
            os.close(os.open(job.kill_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _has_record(run_dir: Path, key: str) -> bool:
    return store.read_trial_record(run_dir, key) is not None


class _TuneReporter:
    """Hands each epoch's validation accuracy to Tune (`ray.tune.report`) and learns
    from the pruning board whether ASHA cut the trial; keeps every report as the series.

    The last epoch is not reported here: the trainable reports it with the final
    metrics, after its record is written."""

    def __init__(self, epochs: int, board: Any, trial_id: str) -> None:
        self.epochs = epochs
        self.board = board
        self.trial_id = trial_id
        self.rows: list[dict[str, float]] = []
        self.pruned = False

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})
        if _PRUNE_METRIC not in metrics or "epoch" not in metrics:
            return
        epoch = int(metrics["epoch"])
        if epoch >= self.epochs:
            return
        tune.report({_PRUNE_METRIC: float(metrics[_PRUNE_METRIC]), "epoch": epoch,
                     "step": step, "state": "running"})
        if self.board is not None:
            self.pruned = ray.get(self.board.is_pruned.remote(self.trial_id))

    def should_stop(self) -> bool:
        return self.pruned


def _execute(job: _Job, trial: TrialSpec, reporter: Any, number: int | None) -> Any:
    """Run one trial and write its record; the result, or None when it raised."""
    from adastudy.train import run_trial

    run_dir = Path(job.run_dir)
    started = now()
    try:
        result = run_trial(trial, reporter, data=_data_for(trial))
    except Exception as exc:  # a trial that raises is a result, not a crash
        store.write_trial_record(run_dir, trial_record(
            trial, None, number=number, started_at=started,
            error=f"{type(exc).__name__}: {exc}", series=reporter.rows,
        ))
        return None
    store.write_trial_record(run_dir, trial_record(
        trial, result, number=number, started_at=started, series=reporter.rows,
    ))
    return result


def _final_report(result: Any, metric: str, **extra: Any) -> dict[str, Any]:
    if result is None:
        return {"state": "failed", _PRUNE_METRIC: math.nan, metric: math.nan, **extra}
    return {
        "state": result.state,
        "epoch": max(1, math.ceil(result.epochs)),
        _PRUNE_METRIC: result.metrics.get("val_accuracy", math.nan),
        metric: result.metrics.get(metric, math.nan),
        **extra,
    }


def _grid_trainable(config: dict[str, Any], job: _Job) -> None:
    """One grid point × seed (`config["key"]`)."""
    _setup_worker(job)
    spec, plan, numbers = _spec_and_plan(job.spec_json)
    key = config["key"]
    run_dir = Path(job.run_dir)
    with run_lock(run_dir, WORKERS_LOCK, shared=True):
        if _has_record(run_dir, key):  # finished before an interruption: not again
            tune.report({"state": "recorded", _PRUNE_METRIC: math.nan})
            return
        trial_id = tune.get_context().get_trial_id()
        board = None
        if spec.search.pruner != "none":
            board = ray.get_actor(job.board)
            ray.get(board.forget.remote(trial_id))  # a retried trial starts afresh
        reporter = _TuneReporter(spec.train.epochs, board, trial_id)
        result = _execute(job, plan[key], reporter, numbers[key])
    tune.report(_final_report(result, spec.study.metric))


def _tpe_trainable(config: dict[str, Any], job: _Job, head: str) -> None:
    """One sampled configuration of `head`, run with every seed; Tune (and its Optuna
    searcher) gets the mean of the study metric over the seeds that completed."""
    from adastudy.train import RecordingReporter

    _setup_worker(job)
    spec, _, _ = _spec_and_plan(job.spec_json)
    run_dir = Path(job.run_dir)
    params = {name: config[name] for name in ("s", "m") if name in config}
    scores, states = [], []
    with run_lock(run_dir, WORKERS_LOCK, shared=True):
        for seed in spec.study.seeds:
            trial = TrialSpec(data=spec.data, model=spec.model, train=spec.train,
                              head=head, seed=seed, **params)
            existing = store.read_trial_record(run_dir, record_key(trial))
            if existing is not None:
                state = existing["state"]
                value = (existing.get("metrics") or {}).get(spec.study.metric)
            else:
                # No number: Tune's searcher trials have none (Optuna's own do).
                result = _execute(job, trial, RecordingReporter(), None)
                state = "failed" if result is None else result.state
                value = None if result is None else result.metrics.get(spec.study.metric)
            states.append(state)
            if state == "complete" and value is not None and math.isfinite(value):
                scores.append(value)
    score = sum(scores) / len(scores) if scores else math.nan
    tune.report({_SCORE: score, "state": ",".join(states)})


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------- pruning: ASHA to should_stop


@ray.remote(num_cpus=0)
class _PruningBoard:
    """The trials ASHA cut, until they have ended as `pruned` by themselves."""

    def __init__(self) -> None:
        self.cut: set[str] = set()

    def cut_trial(self, trial_id: str) -> None:
        self.cut.add(trial_id)

    def forget(self, trial_id: str) -> None:
        self.cut.discard(trial_id)

    def is_pruned(self, trial_id: str) -> bool:
        return trial_id in self.cut


class _PruningASHA(AsyncHyperBandScheduler):
    """ASHA whose "stop" before the last epoch becomes a note on the pruning board: the
    trial reads it right after its report returns (Tune reports synchronously), ends as
    `pruned` and writes its record. A stopped actor would be killed before that."""

    def __init__(self, board: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board = board

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get("epoch", self._max_t) < self._max_t:
            ray.get(ray.get_actor(self.board).cut_trial.remote(trial.trial_id))
            return TrialScheduler.CONTINUE
        return action


def _scheduler(spec: StudySpec, board: str) -> TrialScheduler | None:
    """ASHA in place of Optuna's pruner, on each epoch's validation accuracy (always
    maximised: the Optuna backend prunes lagging accuracy in either direction)."""
    if spec.search.pruner == "none" or spec.train.epochs < 2:
        return None
    grace = max(1, spec.search.warmup_epochs) if spec.search.pruner == "median" else 1
    return _PruningASHA(
        board, time_attr="epoch", metric=_PRUNE_METRIC, mode="max",
        max_t=spec.train.epochs, grace_period=min(grace, spec.train.epochs),
        reduction_factor=3,
    )


# ---------------------------------------------------------------------------- progress

#: The live view of each running sweep, by its absolute run folder: Tune pickles its
#: callbacks into the experiment, so they hold only this key (and find the view of the
#: sweep that restores them).
_VIEWS: dict[str, Callable[[list[str]], None]] = {}


class _ProgressCallback(tune.Callback):
    def __init__(self, run_dir: str, label: str) -> None:
        self.run_dir = run_dir
        self.label = label
        self._last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        view = _VIEWS.get(self.run_dir)
        if view is None or time.monotonic() - self._last < 0.5:
            return
        self._last = time.monotonic()
        view([
            t.config.get("key") or f"{self.label} (tpe #{t.trial_id.rsplit('_', 1)[-1]})"
            for t in trials if t.status == "RUNNING"
        ])


# ---------------------------------------------------------------------------- the sweep


def _finished(spec: StudySpec, plan: dict[str, TrialSpec], records: list[dict]) -> int:
    """Trials finished: grid points with a record, plus seeds × the TPE configurations
    with a record for every seed (up to the budget)."""
    finished = len({r["key"] for r in records} & set(plan))
    for head in spec.searched_heads():
        finished += min(len(_tpe_configs(spec, head, records)), spec.search.trials) * len(
            spec.study.seeds)
    return finished


def _tpe_configs(spec: StudySpec, head: str, records: list[dict]) -> dict[tuple, list[dict]]:
    """The configurations of a searched head that have a record for every seed."""
    by_config: dict[tuple, list[dict]] = {}
    for record in records:
        if record["head"] == head:
            by_config.setdefault((record["s"], record["m"]), []).append(record)
    seeds = set(spec.study.seeds)
    return {c: rs for c, rs in by_config.items() if {r["seed"] for r in rs} >= seeds}


def _tpe_space(spec: StudySpec, head: str) -> dict[str, Any]:
    space: dict[str, Any] = {}
    grid = spec.heads[head]
    for name in ("s", "m"):
        values = getattr(grid, name)
        if isinstance(values, Range):
            sample = tune.loguniform if values.log else tune.uniform
            space[name] = sample(values.low, values.high)
        elif values:
            space[name] = tune.choice(list(values))
    return space


def _experiments(root: Path, phase: str) -> list[Path]:
    """The experiment folders of a phase ("grid", "tpe-<head>"), oldest first."""
    found = []
    for path in root.glob(f"{phase}-*"):
        suffix = path.name[len(phase) + 1:]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def _interrupted(results: Any) -> bool:
    """Tune returned before every trial ended (Ctrl-C)."""
    return results.num_terminated + results.num_errors < len(results)


def _errors(results: Any, label: Callable[[dict], str]) -> list[str]:
    """One line per trial that Tune gave up on (its worker died, or the trainable
    raised outside `run_trial`) after its retries."""
    lines = []
    for result in results:
        if result.error is not None:
            cause = getattr(result.error, "cause", None) or result.error
            reason = (str(cause).strip().splitlines() or [""])[-1][:200]
            lines.append(f"{label(result.config)}: failed on Ray ({type(cause).__name__}: "
                         f"{reason}); run the sweep again to retry it")
    return lines


@dataclass
class _Context:
    spec: StudySpec
    run_dir: Path  #: absolute
    job: _Job
    resources: dict[str, float]
    max_failures: int
    problems: list[str]


def _run_config(ctx: _Context, name: str, label: str) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=str(ctx.run_dir / EXPERIMENTS_DIR),
        failure_config=tune.FailureConfig(max_failures=ctx.max_failures),
        callbacks=[_ProgressCallback(str(ctx.run_dir), label)],
        verbose=0,
    )


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """No experiment banner from Tune (its newer console output prints one at any
    verbosity) and no warning per trial that never started; the sweep shows its own
    progress and problems."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Trials that never started have no result files; Tune warns about each of them.
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis.level
    analysis.setLevel(logging.ERROR)
    try:
        yield
    finally:
        analysis.setLevel(level)
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def _fit(
    ctx: _Context,
    phase: str,
    trainable: Any,
    fresh: Callable[[str], tune.Tuner | None],
    label: Callable[[dict], str],
) -> bool:
    """Resume the phase's latest experiment, if there is one, then start a fresh one
    for what is still missing (`fresh` returns None when nothing is). True after Ctrl-C."""
    root = ctx.run_dir / EXPERIMENTS_DIR
    experiments = _experiments(root, phase)
    if experiments and tune.Tuner.can_restore(str(experiments[-1])):
        tuner = tune.Tuner.restore(
            str(experiments[-1]), trainable=trainable,
            resume_unfinished=True, resume_errored=True,
        )
        with _quiet_tune():
            results = tuner.fit()
        if _interrupted(results):
            return True
        ctx.problems.extend(_errors(results, label))
    name = f"{phase}-{len(experiments) + 1}"
    tuner = fresh(name)
    if tuner is None:
        return False
    with _quiet_tune():
        results = tuner.fit()
    ctx.problems.extend(_errors(results, label))
    return _interrupted(results)


def _resources(ctx: _Context, trainable: Any) -> Any:
    cpus, gpus = ctx.resources["cpus_per_trial"], ctx.resources["gpus_per_trial"]
    return tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus})


def _run_grid(ctx: _Context, plan: dict[str, TrialSpec]) -> bool:
    trainable = _resources(ctx, tune.with_parameters(_grid_trainable, job=ctx.job))

    def fresh(name: str) -> tune.Tuner | None:
        done = {r["key"] for r in store.read_trial_records(ctx.run_dir)[0]}
        missing = [key for key in plan if key not in done]
        if not missing:
            return None
        return tune.Tuner(
            trainable,
            param_space={"key": tune.grid_search(missing)},
            tune_config=tune.TuneConfig(
                scheduler=_scheduler(ctx.spec, ctx.job.board),
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(ctx, name, "grid"),
        )

    return _fit(ctx, "grid", trainable, fresh, lambda config: str(config.get("key")))


def _run_tpe(ctx: _Context, head: str) -> bool:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    spec = ctx.spec
    trainable = _resources(
        ctx, tune.with_parameters(_tpe_trainable, job=ctx.job, head=head))
    space = _tpe_space(spec, head)

    def fresh(name: str) -> tune.Tuner | None:
        records = store.read_trial_records(ctx.run_dir)[0]
        configs = _tpe_configs(spec, head, records)
        left = spec.search.trials - len(configs)
        if left <= 0:
            return None
        # The configurations already run seed the sampler, as in Optuna's own study.
        points, rewards = [], []
        for (s, m), seeds in configs.items():
            values = [(r.get("metrics") or {}).get(spec.study.metric) for r in seeds
                      if r["state"] == "complete"]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                points.append({k: v for k, v in (("s", s), ("m", m)) if k in space})
                rewards.append(sum(values) / len(values))
        searcher = OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=spec.search.seed + len(configs)),
            points_to_evaluate=points or None,
            evaluated_rewards=rewards or None,
        )
        return tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                search_alg=searcher, metric=_SCORE, mode=spec.study.direction[:3],
                num_samples=left, reuse_actors=True, trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(ctx, name, head),
        )

    return _fit(ctx, f"tpe-{head}", trainable, fresh,
                lambda config: f"{head} s={config.get('s')} m={config.get('m')}")


def _board_name(run_dir: Path) -> str:
    return "adastudy-pruning-" + hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]


def run_sweep(
    spec: StudySpec,
    spec_path: Path,
    *,
    out: Path | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_failures: int = 2,
    progress: Callable[[SweepStatus], None] | None = None,
) -> SweepSummary:
    """Run (or resume) the spec's study on Ray Tune; the same records and tables as
    `adastudy.backends.optuna.run_sweep`.

    `address`: None for a local Ray started for the sweep (unless this process is
    connected to Ray already: then that one), "auto" or "HOST:PORT" to join a cluster.
    Each trial holds `cpus_per_trial` CPUs (and as many torch threads, at least 1) and
    `gpus_per_trial` GPUs (a share of one, or whole GPUs); a trial whose worker dies is
    tried `max_failures` more times. Returns when every trial has a record, or after
    Ctrl-C (then `interrupted`).
    """
    _check_request(cpus_per_trial, gpus_per_trial)
    plan = {record_key(t): t for t in spec.trials()}
    planned = len(plan) + len(spec.searched_heads()) * spec.search.trials * len(spec.study.seeds)
    with _ray_session(address) as where:
        cluster = _check_cluster_fits(cpus_per_trial, gpus_per_trial)
        run_dir = prepare_run_dir(spec, spec_path, out)
        folder = run_dir.resolve()
        with run_lock(folder, SWEEP_LOCK):
            with run_lock(folder, WORKERS_LOCK):
                pass  # no trial of an earlier sweep is alive
            manifest = start_manifest(folder, spec, spec_path, "ray", {
                "ray": ray.__version__, "address": where, "cluster": cluster,
                "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
            })

            records, problems = store.read_trial_records(folder)
            interrupted = False
            if _finished(spec, plan, records) < planned:
                interrupted = _run_all(
                    spec, folder, plan, planned, problems, progress,
                    cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                    max_failures=max_failures,
                )
            records, store_problems = store.read_trial_records(folder)
            problems = store_problems + [p for p in problems if p not in store_problems]
            store.consolidate(folder)
            finished = _finished(spec, plan, records)
            interrupted = interrupted or finished < planned
            finish_manifest(folder, manifest, interrupted)
    return SweepSummary(run_dir, planned, finished, interrupted, problems)


def _run_all(
    spec: StudySpec,
    folder: Path,
    plan: dict[str, TrialSpec],
    planned: int,
    problems: list[str],
    progress: Callable[[SweepStatus], None] | None,
    *,
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_failures: int,
) -> bool:
    """The grid, then each searched head; True after Ctrl-C."""
    job = _Job(
        spec_json=spec.model_dump_json(),
        run_dir=str(folder),
        threads=max(1, int(cpus_per_trial)),
        board=_board_name(folder),
        kill_marker=os.environ.get(_KILL_ONCE_ENV),
    )
    ctx = _Context(spec, folder, job, {"cpus_per_trial": cpus_per_trial,
                                       "gpus_per_trial": gpus_per_trial},
                   max_failures, problems)
    board = _PruningBoard.options(name=job.board, get_if_exists=True).remote()
    lock = threading.Lock()

    def view(running: list[str]) -> None:
        if progress is None:
            return
        with lock:
            records = store.read_trial_records(folder)[0]
            progress(SweepStatus(_finished(spec, plan, records), planned, records, running))

    _VIEWS[str(folder)] = view
    try:
        records = store.read_trial_records(folder)[0]
        done = {r["key"] for r in records}
        if any(key not in done for key in plan) and _run_grid(ctx, plan):
            return True
        for head in spec.searched_heads():
            configs = _tpe_configs(spec, head, store.read_trial_records(folder)[0])
            if len(configs) < spec.search.trials and _run_tpe(ctx, head):
                return True
        view([])
        return False
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without saving
        return True
    finally:
        _VIEWS.pop(str(folder), None)
        with contextlib.suppress(Exception):
            ray.kill(board)
