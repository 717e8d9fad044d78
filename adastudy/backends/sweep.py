"""The sweep skeleton: everything a sweep does that does not depend on the engine.

    run_sweep(spec, spec_path, engine, out=..., progress=...) -> SweepSummary

An engine (`Engine`: serial, Optuna, Ray) only decides where and in which order trials
run. What they run, and what counts as done, is decided here, once:

- `Plan`: the grid's trials by key (`StudySpec.trials()`), the searched heads and their
  budget, `planned`, and `finished` computed from the records alone;
- `RecordIndex`: what the run folder has finished, from one listing of `trials/`,
  reading each record file once (the live view and the counts cost one listing per
  refresh, not one read of every record);
- `TrialRunner`: one trial from its spec to its record (the data cache lives here);
- `run_configuration`: one TPE configuration, every seed, where **a seed that already
  has a record is not run again** (on every engine);
- `propose`: the one rule for sampling TPE configurations: configuration k of a head is
  asked of a TPE sampler seeded `search.seed + k` that has seen the configurations
  finished by then, in the order of their number. One worker therefore samples the
  same sequence on every engine.

An engine is checked (`Engine.check`, devices, the cluster, its token) before the run
folder is touched: a mistake is one line and nothing is written.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
from adastudy.errors import ParameterError
from adastudy.spec import MAIN_VARIANT, Range, StudySpec, TrialSpec

__all__ = [
    "ConfigOutcome",
    "Engine",
    "Plan",
    "PlanRow",
    "RecordIndex",
    "SweepContext",
    "TrialRunner",
    "check_spec",
    "propose",
    "run_configuration",
    "run_sweep",
]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlanRow:
    """The trials of one head in one variant (`searched`: sampled by TPE)."""

    variant: str
    head: str
    trials: int  #: still to run
    searched: bool = False
    finished: int = 0  #: finished already in the run folder (not run again)


class Plan:
    """What a sweep of `spec` runs: the grid by record key, in the spec's order, and
    `search.trials` configurations × the seeds for each head searched by TPE."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.grid: dict[str, TrialSpec] = {record_key(t): t for t in spec.trials()}
        #: the record number of each grid trial: its place in the grid
        self.numbers = {key: i for i, key in enumerate(self.grid)}
        self.searched: tuple[str, ...] = tuple(spec.searched_heads())
        self.seeds: tuple[int, ...] = tuple(spec.study.seeds)
        self.budget = spec.search.trials

    @property
    def planned(self) -> int:
        return len(self.grid) + len(self.searched) * self.budget * len(self.seeds)

    def grid_done(self, index: RecordIndex) -> set[str]:
        """The grid's keys that have a (valid) record."""
        return index.keys() & self.grid.keys()

    def missing(self, index: RecordIndex) -> list[str]:
        """The grid's keys without a record, in the grid's order."""
        done = self.grid_done(index)
        return [key for key in self.grid if key not in done]

    def configurations(self, head: str, index: RecordIndex) -> list[Configuration]:
        """The TPE configurations of `head` that have at least one record, by number."""
        found: dict[tuple, Configuration] = {}
        for record in index.records_of(head):
            if record.get("variant", MAIN_VARIANT) != MAIN_VARIANT:
                continue
            config = found.setdefault((record["s"], record["m"]), Configuration(
                head, _params(self.spec, head, record["s"], record["m"]),
                record.get("number")))
            config.records[record["seed"]] = record
        return sorted(found.values(), key=lambda c: (c.number is None, c.number or 0))

    def finished(self, index: RecordIndex) -> int:
        """Trials finished: grid trials with a record, plus the seeds of the TPE
        configurations that have a record for every seed (up to the budget)."""
        total = len(self.grid_done(index))
        for head in self.searched:
            done = sum(c.complete(self.seeds) for c in self.configurations(head, index))
            total += min(done, self.budget) * len(self.seeds)
        return total

    def rows(self, index: RecordIndex | None = None) -> list[PlanRow]:
        """The trials still to run (and finished) per variant and head, in the spec's
        order, for `sweep --dry-run`."""
        done = self.grid_done(index) if index is not None else set()
        counts: dict[tuple[str, str], list[int]] = {}
        for key, trial in self.grid.items():
            count = counts.setdefault((trial.variant, trial.head), [0, 0])
            count[1 if key in done else 0] += 1
        rows = [PlanRow(v, h, n, finished=k) for (v, h), (n, k) in counts.items()]
        for head in self.searched:
            configs = self.configurations(head, index) if index is not None else []
            finished = min(sum(c.complete(self.seeds) for c in configs), self.budget)
            rows.append(PlanRow(MAIN_VARIANT, head, (self.budget - finished) * len(self.seeds),
                                True, finished * len(self.seeds)))
        return rows


def _params(spec: StudySpec, head: str, s: float | None, m: float | None) -> dict[str, float]:
    """The searched parameters of a configuration (those the head's grid names)."""
    grid = spec.heads[head]
    return {name: value for name, value in (("s", s), ("m", m))
            if value is not None and getattr(grid, name)}


@dataclass
class Configuration:
    """One TPE configuration of a head: its parameters, its number k, its records."""

    head: str
    params: dict[str, float]
    number: int | None
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  #: by seed

    def complete(self, seeds: tuple[int, ...]) -> bool:
        return set(seeds) <= set(self.records)


# ------------------------------------------------------------------- the records


class RecordIndex:
    """The records of a run folder, kept up to date incrementally: `refresh()` lists
    `trials/` once and reads only the files it has not read. A valid record is never
    rewritten during a sweep (a trial with a record never runs again), so a file read
    once is known; a bad one (its trial runs again) is read again at each refresh."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.names: set[str] = set()  #: the files read, valid
        self.records: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self._by_head: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()  # Ray's callbacks and the driver both refresh

    def refresh(self) -> int:
        """Read the files that appeared since the last refresh; how many records
        that added."""
        with self._lock:
            new = [n for n in store.record_names(self.run_dir) if n not in self.names]
            added = 0
            for name in new:
                record, problem = store.read_record_file(self.run_dir, name)
                if record is None:
                    if problem not in self.problems:
                        self.problems.append(problem)
                    continue
                self.names.add(name)
                if record["key"] not in self.records:
                    self.records[record["key"]] = record
                    self._by_head.setdefault(record["head"], []).append(record)
                    added += 1
            return added

    def add(self, record: dict[str, Any]) -> None:
        """A record this process has just written: known without listing the folder."""
        with self._lock:
            self.names.add(store.record_name(record["key"]))
            if record["key"] not in self.records:
                self.records[record["key"]] = record
                self._by_head.setdefault(record["head"], []).append(record)

    def keys(self) -> set[str]:
        return set(self.records)

    def records_of(self, head: str) -> list[dict[str, Any]]:
        return list(self._by_head.get(head, ()))


# -------------------------------------------------------------------- one trial

#: Inside a run folder: one folder per trial that has a checkpoint (`train.checkpoint_every`).
CHECKPOINTS_DIR = "checkpoints"
#: Inside a run folder: each finished trial's final weights, with `--save-models`.
MODELS_DIR = "models"


@dataclass(frozen=True)
class TrialOptions:
    """What a sweep's command line asks of every trial, whatever the engine:
    `keep_checkpoints` (`--keep-checkpoints`: a finished trial's checkpoint stays) and
    `save_models` (`--save-models`: RUN_DIR/models/<trial>.pt, a completed trial's
    final model and head)."""

    keep_checkpoints: bool = False
    save_models: bool = False


DEFAULT_OPTIONS = TrialOptions()


class TrialRunner:
    """Runs a trial with `run_trial` and writes its record; keeps the datasets it built
    (at most `cache_size`, the oldest dropped: a worker runs many trials of few
    variants). A trial keeps its checkpoint in `RUN_DIR/checkpoints/<its record's
    name>/`, resumes from it when it was killed, and loses it once its record is written
    (unless `keep_checkpoints`). `in_trial` is true while `run_trial` runs (an engine's
    Ctrl-C handler reads it). `on_record` is called with each record written (the serial engine adds
    it to its index)."""

    def __init__(self, run_dir: Path, cache_size: int = 2,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 options: TrialOptions = DEFAULT_OPTIONS) -> None:
        self.run_dir = Path(run_dir)
        self.options = options
        self.cache_size = cache_size
        self.on_record = on_record
        self.in_trial = False
        self._data: dict[str, Any] = {}

    def data(self, trial: TrialSpec) -> Any:
        from adastudy.data import build_trial_data

        key = json.dumps([trial.data.model_dump(mode="json"),
                          {k: v.model_dump(mode="json") for k, v in trial.eval.items()},
                          trial.validation_source()], sort_keys=True)
        if key not in self._data:
            while len(self._data) >= self.cache_size:
                self._data.pop(next(iter(self._data)))
            self._data[key] = build_trial_data(trial)
        return self._data[key]

    def execute(self, trial: TrialSpec, reporter: Any, number: int | None) -> Any:
        """Run one trial and write its record; the `TrialResult`, or None when the
        trial raised (a `failed` record: a result, not a crash)."""
        from adastudy.train import run_trial

        data = self.data(trial)
        started = now()
        name = store.record_name(record_key(trial)).removesuffix(".json")
        checkpoints = self.run_dir / CHECKPOINTS_DIR / name
        model_file = self.run_dir / MODELS_DIR / f"{name}.pt" if self.options.save_models \
            else None
        error = None
        try:
            self.in_trial = True
            result = run_trial(trial, reporter, data=data, checkpoint_dir=checkpoints,
                               save_model_to=model_file)
        except Exception as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        finally:
            self.in_trial = False  # before the write: Ctrl-C must not cut a record
        # A trial that raised is a `failed` record; one interrupted (Ctrl-C, a kill) has
        # none, and keeps its checkpoint to resume from.
        self._write(trial_record(trial, result, number=number, started_at=started,
                                 error=error, series=getattr(reporter, "rows", None)))
        if not self.options.keep_checkpoints:  # the record is written: no more use
            shutil.rmtree(checkpoints, ignore_errors=True)
        return result

    def _write(self, record: dict[str, Any]) -> None:
        store.write_trial_record(self.run_dir, record)
        if self.on_record is not None:
            self.on_record(record)


# --------------------------------------------------------- TPE: one rule, every engine


@dataclass(frozen=True)
class ConfigOutcome:
    """How a TPE configuration ended: the mean of the study metric over the seeds that
    completed with a finite value (NaN if none), each seed's state, and the outcome."""

    score: float
    states: tuple[str, ...]

    @property
    def outcome(self) -> str:
        if math.isfinite(self.score):
            return "complete"
        return "diverged" if self.states and all(s == "diverged" for s in self.states) \
            else "failed"


def run_configuration(runner: TrialRunner, spec: StudySpec, head: str,
                      params: dict[str, float], number: int | None) -> ConfigOutcome:
    """Run configuration `number` of `head` with every seed; a seed that has a record
    already (an interrupted configuration, resumed) is taken from it, not run again.
    No pruning here: the seeds run one after the other."""
    from adastudy.train import RecordingReporter

    scores, states = [], []
    for seed in spec.study.seeds:
        trial = spec.trial(head, seed=seed, **params)  # with the spec's [eval] sets
        existing = store.read_trial_record(runner.run_dir, record_key(trial))
        if existing is not None:
            state = existing["state"]
            value = (existing.get("metrics") or {}).get(spec.study.metric)
        else:
            result = runner.execute(trial, RecordingReporter(), number)
            state = "failed" if result is None else result.state
            value = None if result is None else result.metrics.get(spec.study.metric)
        states.append(state)
        if state == "complete" and value is not None and math.isfinite(value):
            scores.append(value)
    return ConfigOutcome(sum(scores) / len(scores) if scores else math.nan, tuple(states))


def distributions(spec: StudySpec, head: str) -> dict[str, Any]:
    """The TPE search space of `head`, as Optuna distributions."""
    import optuna

    space: dict[str, Any] = {}
    grid = spec.heads[head]
    for name in ("s", "m"):
        values = getattr(grid, name)
        if isinstance(values, Range):
            space[name] = optuna.distributions.FloatDistribution(
                values.low, values.high, log=values.log)
        elif values:
            space[name] = optuna.distributions.CategoricalDistribution(list(values))
    return space


def propose(spec: StudySpec, head: str, number: int,
            history: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Configuration `number` of `head`: asked of a TPE sampler seeded
    `search.seed + number` that has seen `history`, the configurations finished so far
    with a finite score, in the order of their number. A pure function of its inputs,
    so every engine samples the same sequence when one configuration runs at a time."""
    import warnings

    import optuna

    space = distributions(spec, head)
    logging_level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction=spec.study.direction,
            sampler=optuna.samplers.TPESampler(seed=spec.search.seed + number))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a value outside a changed range, say
            for params, value in history:
                study.add_trial(optuna.trial.create_trial(
                    params={k: v for k, v in params.items() if k in space},
                    distributions={k: space[k] for k in params if k in space}, value=value))
        return dict(study.ask(space).params)
    finally:
        optuna.logging.set_verbosity(logging_level)


def scored(configs: list[Configuration], spec: StudySpec) -> list[tuple[Configuration, float]]:
    """The finished configurations (a record for every seed) with a finite score (the
    mean of the study metric over their completed seeds), in the order given."""
    out = []
    for config in configs:
        if config.complete(tuple(spec.study.seeds)):
            # In the seeds' order, as `run_configuration` sums them: the same float.
            records = [config.records[seed] for seed in spec.study.seeds]
            values = [(r.get("metrics") or {}).get(spec.study.metric)
                      for r in records if r["state"] == "complete"]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                out.append((config, sum(values) / len(values)))
    return out


def history_of(configs: list[Configuration], spec: StudySpec) -> list[tuple[dict, float]]:
    """What `propose` has seen: (params, score) of `scored` configurations."""
    return [(config.params, score) for config, score in scored(configs, spec)]


# ----------------------------------------------------------------- the engines


@dataclass
class SweepContext:
    """What the skeleton hands an engine's `run`."""

    spec: StudySpec
    run_dir: Path  #: absolute
    plan: Plan
    index: RecordIndex
    problems: list[str]
    progress: Callable[[SweepStatus], None] | None = None
    options: TrialOptions = field(default_factory=TrialOptions)
    _last_view: float = 0.0

    def view(self, running: list[str], *, every_s: float = 0.5, force: bool = False) -> None:
        """Show the live view: refresh the index (one listing, new files only) and hand
        the progress callback the counts, the records and the running trials. At most
        every `every_s` seconds unless `force`."""
        if self.progress is None:
            return
        clock = time.monotonic()
        if not force and clock - self._last_view < every_s:
            return
        self._last_view = clock
        self.index.refresh()
        self.progress(SweepStatus(self.plan.finished(self.index), self.plan.planned,
                                  list(self.index.records.values()), running))


class Engine(Protocol):
    """What an engine implements; the skeleton (`run_sweep`) does the rest.

    - `name`: what `--backend` calls it;
    - `from_options(options)`: the engine for the command-line options given (only
      those its `ENGINES` entry names reach it); a bad value is a one-line
      `ParameterError`;
    - `trials_run_here`: whether the trials run on this machine (then the skeleton
      checks the spec's devices here);
    - `slots`: trials at once, where known before the run (the dry run's estimate);
    - `session(spec)`: a context that checks and holds what the engine needs (a Ray
      cluster), raising a one-line error before anything is written; yields the
      engine's details for the run's manifest;
    - `run(ctx)`: run what `ctx.plan` still lacks; True when interrupted (Ctrl-C);
    - `resume_args()`: the options that rerun the sweep on this engine.
    """

    name: str
    trials_run_here: bool
    slots: int

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Engine: ...

    def session(self, spec: StudySpec) -> AbstractContextManager[dict[str, Any]]: ...

    def run(self, ctx: SweepContext) -> bool: ...

    def resume_args(self) -> str: ...


def check_spec(spec: StudySpec, spec_path: Path, engine: Engine, *,
               dry_run: bool = False) -> None:
    """What every engine checks before its session: the spec names a head to sweep,
    and the devices and data files it asks for exist where the trials run here (a
    remote cluster's are its own). A dry run reads no data file and runs pilot trials
    only on embedded data, so a study of data on disk is planned on any machine.
    One-line errors."""
    from adastudy.backends import check_devices
    from adastudy.data import check_paths

    if not spec.heads:
        raise ParameterError(f"{spec_path}: heads: the spec names no head to sweep")
    if engine.trials_run_here:
        check_devices(spec, pilots_only=dry_run)
        if not dry_run:
            check_paths(spec)


def run_sweep(spec: StudySpec, spec_path: Path, engine: Engine, *, out: Path | None = None,
              progress: Callable[[SweepStatus], None] | None = None,
              options: TrialOptions = DEFAULT_OPTIONS) -> SweepSummary:
    """Run (or resume) the study on `engine`, every trial with `options`. Returns when
    every planned trial has a record, or after Ctrl-C (then `interrupted`).

    Order: the spec and the engine are checked (devices where the trials run here, the
    engine's own checks in its session) before the run folder is touched; then the
    folder's locks (one sweep per folder; no worker of an earlier sweep alive), the
    manifest, the engine's run, and the tables (`store.consolidate`)."""
    check_spec(spec, spec_path, engine)
    plan = Plan(spec)
    with engine.session(spec) as details:
        run_dir = prepare_run_dir(spec, spec_path, out)
        folder = run_dir.resolve()
        with run_lock(folder, SWEEP_LOCK):
            with run_lock(folder, WORKERS_LOCK):
                pass  # no worker of an earlier sweep is alive
            manifest = start_manifest(folder, spec, spec_path, engine.name, details)
            index = RecordIndex(folder)
            index.refresh()
            ctx = SweepContext(spec, folder, plan, index, [], progress, options)
            interrupted = False
            if plan.finished(index) < plan.planned:
                interrupted = engine.run(ctx)
                ctx.view([], force=True)
            records, problems = store.read_trial_records(folder)
            problems += [p for p in ctx.problems if p not in problems]
            store.consolidate(folder)
            index.refresh()
            finished = plan.finished(index)
            # Workers that stopped early (their Ctrl-C, a crash) leave trials to resume.
            interrupted = interrupted or finished < plan.planned
            finish_manifest(folder, manifest, interrupted)
    return SweepSummary(run_dir, plan.planned, finished, interrupted, problems)


def iter_missing_configs(plan: Plan, head: str, index: RecordIndex) -> Iterator[Configuration]:
    """The configurations of `head` that have records for some seeds but not all (an
    interrupted configuration): an engine finishes them before it samples new ones."""
    for config in plan.configurations(head, index):
        if not config.complete(plan.seeds):
            yield config
