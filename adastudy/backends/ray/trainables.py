"""What runs inside a Tune trial: one grid point × seed, or one TPE configuration with
every seed. Both run the trial with the skeleton's `TrialRunner` (record first, then
Tune is told) and never read another trial's record."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from adastudy import store
from adastudy.backends import WORKERS_LOCK, run_lock
from adastudy.backends.ray.pruning import PRUNE_METRIC
from adastudy.backends.sweep import Plan, TrialOptions, TrialRunner, run_configuration
from adastudy.spec import StudySpec

__all__ = ["SCORE", "Job", "grid_trainable", "tpe_trainable", "trial_dirname"]

#: The search metric of a TPE experiment: the mean of the study metric over the seeds.
SCORE = "score"


@dataclass(frozen=True)
class Job:
    """What every trial of a sweep needs, shipped once to the workers."""

    spec_json: str
    run_dir: str  #: absolute
    threads: int
    board: str  #: the name of the pruning board actor
    options: TrialOptions = TrialOptions()


@functools.lru_cache(maxsize=4)
def _spec_and_plan(spec_json: str) -> tuple[StudySpec, Plan]:
    spec = StudySpec.model_validate_json(spec_json)
    return spec, Plan(spec)


@functools.lru_cache(maxsize=4)
def _runner(run_dir: str, options: TrialOptions) -> TrialRunner:
    """One runner per worker process and run folder: a reused actor keeps its data."""
    return TrialRunner(Path(run_dir), options=options)


def _setup_worker(job: Job) -> None:
    import torch

    torch.set_num_threads(job.threads)


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
        if PRUNE_METRIC not in metrics or "epoch" not in metrics:
            return
        epoch = int(metrics["epoch"])
        if epoch >= self.epochs:
            return
        tune.report({PRUNE_METRIC: float(metrics[PRUNE_METRIC]), "epoch": epoch,
                     "step": step, "state": "running"})
        if self.board is not None:
            self.pruned = ray.get(self.board.is_pruned.remote(self.trial_id))

    def should_stop(self) -> bool:
        return self.pruned


def _final_report(result: Any, metric: str) -> dict[str, Any]:
    if result is None:
        return {"state": "failed", PRUNE_METRIC: math.nan, metric: math.nan}
    return {
        "state": result.state,
        "epoch": max(1, math.ceil(result.epochs)),
        PRUNE_METRIC: result.metrics.get("val_accuracy", math.nan),
        metric: result.metrics.get(metric, math.nan),
    }


def grid_trainable(config: dict[str, Any], job: Job) -> None:
    """One grid point × seed (`config["key"]`)."""
    _setup_worker(job)
    spec, plan = _spec_and_plan(job.spec_json)
    key = config["key"]
    run_dir = Path(job.run_dir)
    with run_lock(run_dir, WORKERS_LOCK, shared=True):
        # Finished before an interruption (its own record file only): not again.
        if store.read_trial_record(run_dir, key) is not None:
            tune.report({"state": "recorded", PRUNE_METRIC: math.nan})
            return
        trial_id = tune.get_context().get_trial_id()
        board = None
        if spec.search.pruner != "none":
            board = ray.get_actor(job.board)
            ray.get(board.forget.remote(trial_id))  # a retried trial starts afresh
        reporter = _TuneReporter(spec.train.epochs, board, trial_id)
        result = _runner(job.run_dir, job.options).execute(plan.grid[key], reporter,
                                                           plan.numbers[key])
    tune.report(_final_report(result, spec.study.metric))


def tpe_trainable(config: dict[str, Any], job: Job, head: str) -> None:
    """Configuration `config["number"]` of `head`, every seed (`run_configuration`: a
    seed with a record is not run again); Tune gets the mean of the study metric."""
    _setup_worker(job)
    spec, _ = _spec_and_plan(job.spec_json)
    params = {name: config[name] for name in ("s", "m") if name in config}
    with run_lock(Path(job.run_dir), WORKERS_LOCK, shared=True):
        outcome = run_configuration(_runner(job.run_dir, job.options), spec, head, params,
                                    config["number"])
    tune.report({SCORE: outcome.score, "state": ",".join(outcome.states)})


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
