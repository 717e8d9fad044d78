"""One logged statistic of a group of runs over training, as one line with a band: the
mean over the runs at each logged step, between their minimum and maximum."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from adastudy.claims import Evidence
from adastudy.report.model import Trace

__all__ = ["curve"]


def curve(ev: Evidence, keys: Iterable[str], name: str, column: str,
          transform: Callable[[pd.Series], pd.Series] | None = None) -> Trace | None:
    """`column` of the runs `keys` (their series rows that have it), named `name`; None
    when no run logged it."""
    frames = []
    for key in keys:
        rows = ev.series[ev.series["key"] == key]
        if column not in rows:
            continue
        rows = rows[rows[column].notna()][["step", column]]
        if len(rows):
            frames.append(rows)
    if not frames:
        return None
    stacked = pd.concat(frames)
    stacked[column] = stacked[column].astype("float64")
    if transform is not None:
        stacked[column] = transform(stacked[column])
    by_step = stacked.groupby("step")[column]
    mean, low, high = by_step.mean(), by_step.min(), by_step.max()
    x = [float(s) for s in mean.index]
    return Trace(name=name, x=x, y=mean.tolist(), y_low=low.tolist(), y_high=high.tolist())
