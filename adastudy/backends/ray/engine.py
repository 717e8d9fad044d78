"""The Ray engine's orchestration: Tune experiments for the grid and for each searched
head, restored after an interruption, with the live view and the errors Tune reports."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune

from adastudy.backends import SweepStatus, SweepSummary
from adastudy.backends import sweep as skeleton
from adastudy.backends.ray.pruning import PruningBoard, board_name, scheduler
from adastudy.backends.ray.search import SharedRuleSearcher
from adastudy.backends.ray.session import check_cluster_fits, check_request, ray_session
from adastudy.backends.ray.trainables import (
    SCORE,
    Job,
    grid_trainable,
    tpe_trainable,
    trial_dirname,
)
from adastudy.backends.sweep import SweepContext
from adastudy.spec import StudySpec

__all__ = ["EXPERIMENTS_DIR", "REFUSALS", "RayEngine", "run_sweep"]

#: Ray's experiments inside the run folder: grid-1, grid-2, ..., tpe-<head>-1, ...
EXPERIMENTS_DIR = "ray"

#: Why the Ray engine refuses an option another engine takes.
REFUSALS = {"--workers": "the ray backend runs as many trials at once as the cluster "
                         "holds; set --cpus-per-trial / --gpus-per-trial instead"}


class RayEngine:
    """Sweeps on Ray Tune, on a local Ray (`address` None) or a cluster ("auto",
    "HOST:PORT"). Each trial holds `cpus_per_trial` CPUs (and as many torch threads,
    at least 1) and `gpus_per_trial` GPUs, times `train.devices` for a trial of
    several ranks (one bundle: they run on one node); a trial whose worker dies is
    tried `max_failures` more times."""

    name = "ray"
    slots = 1  # unknown before the session: the cluster decides

    def __init__(self, address: str | None = None, cpus_per_trial: float = 1.0,
                 gpus_per_trial: float = 0.0, max_failures: int = 2) -> None:
        check_request(cpus_per_trial, gpus_per_trial)
        self.address = address
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.ranks = 1  # the study's largest train.devices, set by `session`
        self.max_failures = max_failures
        self.capacity = 1

    @property
    def trials_run_here(self) -> bool:
        return self.address is None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RayEngine:
        return cls(address=options.get("--address"),
                   cpus_per_trial=options.get("--cpus-per-trial", 1.0),
                   gpus_per_trial=options.get("--gpus-per-trial", 0.0))

    @contextlib.contextmanager
    def session(self, spec: StudySpec) -> Iterator[dict[str, Any]]:
        # A trial of train.devices = N ranks holds N times the resources of one, as one
        # bundle (its ranks are processes it starts on its machine).
        self.ranks = max(spec.variant_sections(v)[2].devices for v in spec.variant_names())
        with ray_session(self.address) as where:
            cluster = check_cluster_fits(self.cpus_per_trial, self.gpus_per_trial,
                                         self.ranks)
            # Trials at once: the TPE experiments ask no more configurations than this.
            fits = [cluster["CPU"] / (self.cpus_per_trial * self.ranks)]
            if self.gpus_per_trial > 0:
                fits.append(cluster["GPU"] / (self.gpus_per_trial * self.ranks))
            self.capacity = max(1, int(min(fits)))
            yield {"ray": ray.__version__, "address": where, "cluster": cluster,
                   "cpus_per_trial": self.cpus_per_trial,
                   "gpus_per_trial": self.gpus_per_trial, "ranks_per_trial": self.ranks}

    def resume_args(self) -> str:
        args = " --backend ray"
        if self.address is not None:
            args += f" --address {self.address}"
        if self.cpus_per_trial != 1.0:
            args += f" --cpus-per-trial {self.cpus_per_trial:g}"
        if self.gpus_per_trial != 0.0:
            args += f" --gpus-per-trial {self.gpus_per_trial:g}"
        return args

    def run(self, ctx: SweepContext) -> bool:
        """The grid, then each searched head; True after Ctrl-C."""
        job = Job(spec_json=ctx.spec.model_dump_json(), run_dir=str(ctx.run_dir),
                  threads=max(1, int(self.cpus_per_trial * self.ranks)),
                  board=board_name(ctx.run_dir),
                  options=ctx.options)
        board = PruningBoard.options(name=job.board, get_if_exists=True).remote()
        lock = threading.Lock()

        def view(running: list[str]) -> None:
            with lock:
                ctx.view(running)

        _VIEWS[str(ctx.run_dir)] = view
        try:
            if ctx.plan.missing(ctx.index) and self._run_grid(ctx, job):
                return True
            for head in ctx.plan.searched:
                ctx.index.refresh()
                done = sum(c.complete(ctx.plan.seeds)
                           for c in ctx.plan.configurations(head, ctx.index))
                if done < ctx.plan.budget and self._run_tpe(ctx, job, head):
                    return True
            return False
        except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without saving
            return True
        finally:
            _VIEWS.pop(str(ctx.run_dir), None)
            with contextlib.suppress(Exception):
                ray.kill(board)

    # ------------------------------------------------------------------ experiments

    def _trainable(self, trainable: Any) -> Any:
        return tune.with_resources(trainable, {"cpu": self.cpus_per_trial * self.ranks,
                                               "gpu": self.gpus_per_trial * self.ranks})

    def _run_config(self, ctx: SweepContext, name: str, label: str) -> tune.RunConfig:
        return tune.RunConfig(
            name=name,
            storage_path=str(ctx.run_dir / EXPERIMENTS_DIR),
            failure_config=tune.FailureConfig(max_failures=self.max_failures),
            callbacks=[_ProgressCallback(str(ctx.run_dir), label)],
            verbose=0,
        )

    def _run_grid(self, ctx: SweepContext, job: Job) -> bool:
        """The grid's missing trials: the latest interrupted experiment restored (ASHA
        keeps its rungs), then a fresh one for what is still missing."""
        trainable = self._trainable(tune.with_parameters(grid_trainable, job=job))
        root = ctx.run_dir / EXPERIMENTS_DIR
        experiments = _experiments(root, "grid")
        if experiments and tune.Tuner.can_restore(str(experiments[-1])):
            tuner = tune.Tuner.restore(str(experiments[-1]), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
            if self._fit(ctx, tuner, _grid_label):
                return True
        ctx.index.refresh()
        missing = ctx.plan.missing(ctx.index)
        if not missing:
            return False
        tuner = tune.Tuner(
            trainable,
            param_space={"key": tune.grid_search(missing)},
            tune_config=tune.TuneConfig(scheduler=scheduler(ctx.spec, job.board),
                                        reuse_actors=True, trial_dirname_creator=trial_dirname),
            run_config=self._run_config(ctx, f"grid-{len(experiments) + 1}", "grid"),
        )
        return self._fit(ctx, tuner, _grid_label)

    def _run_tpe(self, ctx: SweepContext, job: Job, head: str) -> bool:
        """`head`'s configurations still to run, in a fresh experiment: the records say
        which finished, which were interrupted (they run first, their recorded seeds
        kept) and what the sampler has seen. One experiment at most `capacity` trials
        at once, so that with one slot the sequence is the other engines'."""
        plan, spec = ctx.plan, ctx.spec
        configs = plan.configurations(head, ctx.index)
        pending = [(c.number, c.params) for c in configs if not c.complete(plan.seeds)]
        history = [(-1 if c.number is None else c.number, c.params, score)
                   for c, score in skeleton.scored(configs, spec)]
        numbers = [c.number for c in configs if c.number is not None]
        left = plan.budget - len(configs)
        searcher = SharedRuleSearcher(
            spec, head, pending=pending, history=history,
            next_number=max(numbers, default=-1) + 1, left=max(0, left), score=SCORE)
        samples = len(pending) + max(0, left)
        if samples == 0:
            return False
        root = ctx.run_dir / EXPERIMENTS_DIR
        name = f"tpe-{head}-{len(_experiments(root, f'tpe-{head}')) + 1}"
        tuner = tune.Tuner(
            self._trainable(tune.with_parameters(tpe_trainable, job=job, head=head)),
            tune_config=tune.TuneConfig(
                search_alg=searcher, metric=SCORE, mode=spec.study.direction[:3],
                num_samples=samples, max_concurrent_trials=self.capacity,
                reuse_actors=True, trial_dirname_creator=trial_dirname),
            run_config=self._run_config(ctx, name, head),
        )
        return self._fit(ctx, tuner, lambda config: (
            f"{head} s={config.get('s')} m={config.get('m')}"))

    def _fit(self, ctx: SweepContext, tuner: tune.Tuner, label: Callable[[dict], str]) -> bool:
        """Run one experiment; its errors go to the problems. True after Ctrl-C."""
        with _quiet_tune():
            results = tuner.fit()
        ctx.problems.extend(_errors(results, label))
        return results.num_terminated + results.num_errors < len(results)


def _grid_label(config: dict) -> str:
    return str(config.get("key"))


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
    """Run (or resume) the spec's study on Ray Tune (`sweep.run_sweep` with a
    `RayEngine`); the same records and tables as every engine.

    `address`: None for a local Ray started for the sweep (unless this process is
    connected to Ray already: then that one), "auto" or "HOST:PORT" to join a cluster.
    Returns when every trial has a record, or after Ctrl-C (then `interrupted`)."""
    engine = RayEngine(address, cpus_per_trial, gpus_per_trial, max_failures)
    return skeleton.run_sweep(spec, spec_path, engine, out=out, progress=progress)


# --------------------------------------------------------------------------- progress

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
            t.config.get("key") or f"{self.label} (tpe #{t.config.get('number')})"
            for t in trials if t.status == "RUNNING"
        ])


# ----------------------------------------------------------------------------- helpers


def _experiments(root: Path, phase: str) -> list[Path]:
    """The experiment folders of a phase ("grid", "tpe-<head>"), oldest first."""
    found = []
    for path in root.glob(f"{phase}-*"):
        suffix = path.name[len(phase) + 1:]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


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

