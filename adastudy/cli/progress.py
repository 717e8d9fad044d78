"""What a sweep shows while it runs: the terminal's bar and live table, and plain lines
for a stderr that is not a terminal (a nightly job writing to a file)."""

from __future__ import annotations

import math
import time
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["LiveTable", "PlainProgress", "duration", "head_label", "live_table", "sweep_bar"]


def head_label(row: dict[str, Any]) -> str:
    """A head's name, with its study variant unless it is the main one."""
    variant = row.get("variant") or "main"
    return str(row["head"]) if variant == "main" else f"{row['head']} @{variant}"


def sweep_bar(name: str) -> Progress:
    """A sweep's progress bar on a terminal: trials done, elapsed, and the time left at
    the rate of the last five minutes (trials come in bursts; a short window jumps)."""
    return Progress(
        TextColumn(f"sweep {name}"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        speed_estimate_period=300.0,
    )


def duration(seconds: float) -> str:
    """0s, 0.6s, 42s, 1m02s, 2h05m (a tenth of a second below 10 s, except 0)."""
    if not math.isfinite(seconds):
        return "-"
    if 0 < seconds < 9.95:
        return f"{seconds:.1f}s"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class PlainProgress:
    """A sweep's progress as plain lines on stderr, for a stderr that is not a terminal
    (a nightly job writing to a file):

        sweep quick: 12/40 trials finished, 3 running, elapsed 1m02s, ETA ~2m20s

    one line at the first report, then one whenever another `every_share` (10 %) of the
    planned trials has finished or `every_s` (30 s) has passed since the last line, and
    one when the last trial finishes. The ETA is the remaining trials at the rate of
    those finished by this run (trials of an earlier run, on a resume, do not count)."""

    def __init__(self, name: str, *, every_s: float = 30.0, every_share: float = 0.1,
                 clock: Any = time.monotonic, echo: Any = None) -> None:
        self.name = name
        self.every_s = every_s
        self.every_share = every_share
        self.clock = clock
        self.echo = echo or (lambda line: typer.echo(line, err=True))
        self.start: float | None = None
        self.first = 0  # finished before this run
        self.last_time = 0.0
        self.last_finished = -1

    def __call__(self, status: Any) -> None:
        now = self.clock()
        finished, planned = status.finished, status.planned
        if self.start is None:
            self.start, self.first = now, finished
            due = True
        else:
            step = max(1, math.ceil(planned * self.every_share))
            due = (now - self.last_time >= self.every_s
                   or finished // step > self.last_finished // step
                   or (finished >= planned > self.last_finished))
        if not due or (finished == self.last_finished and now - self.last_time < self.every_s):
            return
        self.last_time, self.last_finished = now, finished
        self.echo(self.line(status, now - self.start))

    def line(self, status: Any, elapsed: float) -> str:
        text = (f"sweep {self.name}: {status.finished}/{status.planned} trials finished, "
                f"{len(status.running)} running, elapsed {duration(elapsed)}")
        done_here = status.finished - self.first
        left = status.planned - status.finished
        if done_here > 0 and left > 0 and elapsed > 0:
            text += f", ETA ~{duration(left * elapsed / done_here)}"
        return text


class LiveTable:
    """Running trials and the best configuration so far of each head (mean over its
    finished seeds), for the live view of a sweep. Kept up to date incrementally: each
    call reads only the records that are new since the last (a sweep's status lists its
    records in the order they were found), so a refresh costs the same at 10,000 trials
    as at 10."""

    def __init__(self, study: Any) -> None:
        self.study = study
        self.seen = 0
        self.runs: dict[tuple[str, Any, Any], list[float]] = {}

    def __call__(self, status: Any) -> Table:
        study = self.study
        for record in status.records[self.seen:]:
            value = (record.get("metrics") or {}).get(study.metric)
            if record.get("state") == "complete" and value is not None:
                self.runs.setdefault((head_label(record), record["s"], record["m"]),
                                     []).append(value)
        self.seen = len(status.records)
        best: dict[str, tuple[float, Any, Any, int]] = {}
        sign = 1.0 if study.direction == "maximize" else -1.0
        for (head, s, m), values in self.runs.items():
            mean = sum(values) / len(values)
            if head not in best or sign * mean > sign * best[head][0]:
                best[head] = (mean, s, m, len(values))
        table = Table(title=f"best so far per head: mean {study.metric} over finished seeds")
        for column in ("head", "s", "m", "seeds", "mean"):
            table.add_column(column, justify="left" if column == "head" else "right")
        for head, (mean, s, m, n) in sorted(best.items(), key=lambda kv: -sign * kv[1][0]):
            table.add_row(head, "-" if s is None else f"{s:g}", "-" if m is None else f"{m:g}",
                          str(n), f"{mean:.4f}")
        table.caption = "running: " + (", ".join(status.running) or "-")
        return table


def live_table(status: Any, study: Any) -> Table:
    """The live table of `status` from scratch (`LiveTable` keeps it incrementally)."""
    return LiveTable(study)(status)


#: Fixed columns of the trials table that are numbers but no metric to rank by.
