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

import contextlib
import statistics
from collections.abc import Iterator
from typing import Any

from adastudy.backends.sweep import (
    RecordIndex,
    SweepContext,
    TrialRunner,
    history_of,
    iter_missing_configs,
    propose,
    run_configuration,
)
from adastudy.errors import ParameterError
from adastudy.spec import StudySpec

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
        runner = TrialRunner(ctx.run_dir)
        try:
            for key in ctx.plan.missing(ctx.index):
                ctx.view([key])
                reporter = MedianReporter(ctx.spec, ctx.index)
                runner.execute(ctx.plan.grid[key], reporter, ctx.plan.numbers[key])
                ctx.index.refresh()
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
        ctx.index.refresh()
    while True:
        configs = plan.configurations(head, ctx.index)
        if len(configs) >= plan.budget:
            return
        number = _next_number(configs)
        params = propose(spec, head, number, history_of(configs, spec))
        ctx.view([f"{head} (tpe #{number})"])
        run_configuration(runner, spec, head, params, number)
        ctx.index.refresh()


def _next_number(configs: list[Any]) -> int:
    numbers = [c.number for c in configs if c.number is not None]
    return max(numbers, default=-1) + 1 if numbers else len(configs)


class MedianReporter:
    """Keeps the trial's reports as its series and stops it by the median rule: at an
    epoch of at least `warmup_epochs`, once `startup_trials` trials have completed, a
    trial whose best validation accuracy so far is below the median of the completed
    trials' at that epoch is pruned. Lagging accuracy is pruned in either direction of
    the study, as on the other engines."""

    def __init__(self, spec: StudySpec, index: RecordIndex) -> None:
        search = spec.search
        self.active = search.pruner == "median"
        self.startup = search.startup_trials
        self.warmup = search.warmup_epochs
        self.index = index
        self.rows: list[dict[str, float]] = []
        self.best = -float("inf")
        self.stop = False

    def report(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, **metrics})
        if not self.active or "val_accuracy" not in metrics or "epoch" not in metrics:
            return
        epoch = int(metrics["epoch"])
        self.best = max(self.best, metrics["val_accuracy"])
        if epoch < self.warmup:
            return
        completed = [r for r in self.index.records.values() if r.get("state") == "complete"]
        if len(completed) < self.startup:
            return
        at_epoch = [row["val_accuracy"] for r in completed
                    for row in (r.get("series") or [])
                    if row.get("epoch") == epoch and row.get("val_accuracy") is not None]
        if at_epoch and self.best < statistics.median(at_epoch):
            self.stop = True

    def should_stop(self) -> bool:
        return self.stop
