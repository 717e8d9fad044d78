"""The serial engine: every trial in this process, one after the other, no Optuna study
and no Ray. It is the reference the other engines are tested against (the engine
contract) and what unit tests use; `--backend serial` runs it from the command line.

- The grid runs in the spec's order; each searched head then runs its TPE
  configurations one at a time (`sweep.propose`, the rule every engine follows).
- Pruning: `search.pruner = "median"` stops a trial at an epoch whose validation
  accuracy is below the median of the finished trials' at that epoch (after
  `startup_trials` finished trials and `warmup_epochs` epochs), Optuna's median rule.
  Hyperband needs concurrent brackets and is refused: use the Optuna or Ray engine.
- Faults: a killed process loses only the trial that was running (no record: it runs
  again on the rerun); Ctrl-C stops at once; the running trial has no record and runs again.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Iterator
from typing import Any

from adastudy.backends.sweep import (
    SweepContext,
    TrialRunner,
    history_of,
    iter_missing_configs,
    propose,
    run_configuration,
)
from adastudy.errors import ParameterError
from adastudy.spec import SearchSpec, StudySpec

__all__ = ["SerialEngine"]


class SerialEngine:
    name = "serial"
    trials_run_here = True
    slots = 1

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SerialEngine:
        return cls()

    @contextlib.contextmanager
    def session(self, spec: StudySpec) -> Iterator[dict[str, Any]]:
        if spec.search.pruner == "hyperband":
            raise ParameterError("search.pruner = 'hyperband': the serial backend prunes with "
                                 "the median rule only; use --backend optuna or ray")
        yield {}

    def resume_args(self) -> str:
        return " --backend serial"

    def run(self, ctx: SweepContext) -> bool:
        rule = MedianRule(ctx.spec.search)
        for record in ctx.index.records.values():
            rule.add(record)

        def written(record: dict[str, Any]) -> None:  # no listing per trial
            ctx.index.add(record)
            rule.add(record)

        runner = TrialRunner(ctx.run_dir, on_record=written, options=ctx.options)
        try:
            for key in ctx.plan.missing(ctx.index):
                ctx.view([key])
                runner.execute(ctx.plan.grid[key], MedianReporter(rule), ctx.plan.numbers[key])
            for head in ctx.plan.searched:
                run_searched_head(runner, ctx, head)
        except KeyboardInterrupt:
            return True
        return False


def run_searched_head(runner: TrialRunner, ctx: SweepContext, head: str) -> None:
    """`head`'s TPE configurations one at a time: interrupted ones first (their seeds
    with a record are kept), then new ones sampled by the shared rule, to the budget."""
    plan, spec = ctx.plan, ctx.spec
    for config in list(iter_missing_configs(plan, head, ctx.index)):
        ctx.view([f"{head} (tpe #{config.number})"])
        run_configuration(runner, spec, head, config.params, config.number)
    while True:
        configs = plan.configurations(head, ctx.index)
        if len(configs) >= plan.budget:
            return
        number = _next_number(configs)
        params = propose(spec, head, number, history_of(configs, spec))
        ctx.view([f"{head} (tpe #{number})"])
        run_configuration(runner, spec, head, params, number)


def _next_number(configs: list[Any]) -> int:
    numbers = [c.number for c in configs if c.number is not None]
    return max(numbers, default=-1) + 1 if numbers else len(configs)


class MedianRule:
    """Optuna's median rule over the completed trials, kept incrementally: the
    validation accuracies of the completed trials at each epoch, sorted, so that a
    report costs a lookup, not a pass over every record."""

    def __init__(self, search: SearchSpec) -> None:
        self.active = search.pruner == "median"
        self.startup = search.startup_trials
        self.warmup = search.warmup_epochs
        self.completed = 0
        self.by_epoch: dict[int, list[float]] = {}

    def add(self, record: dict[str, Any]) -> None:
        if record.get("state") != "complete":
            return
        self.completed += 1
        for row in record.get("series") or []:
            if row.get("epoch") is not None and row.get("val_accuracy") is not None:
                bisect.insort(self.by_epoch.setdefault(int(row["epoch"]), []),
                              float(row["val_accuracy"]))

    def prunes(self, epoch: int, best: float) -> bool:
        """Whether a trial whose best validation accuracy so far is `best` stops at
        `epoch`: below the median of the completed trials' at that epoch, once
        `startup_trials` have completed and from epoch `warmup_epochs` on."""
        values = self.by_epoch.get(epoch)
        if not self.active or epoch < self.warmup or self.completed < self.startup or not values:
            return False
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        return best < median


class MedianReporter:
    """Keeps the trial's reports as its series; stops it when the median rule says so.
    Lagging accuracy is pruned in either direction of the study, as on the other
    engines."""

    def __init__(self, rule: MedianRule) -> None:
        self.rule = rule
        self.rows: list[dict[str, float]] = []
        self.best = -math.inf
        self.stop = False

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})
        if "val_accuracy" in metrics and "epoch" in metrics:
            self.best = max(self.best, metrics["val_accuracy"])
            self.stop = self.stop or self.rule.prunes(int(metrics["epoch"]), self.best)

    def should_stop(self) -> bool:
        return self.stop
