"""What the claims read: a run's tables, grouped into configurations whose every run
counts.

A configuration (head, s, m in one variant) holds all its runs but the pruned ones:
the complete, the diverged and the failed. For the accuracy metrics a run that
diverged or failed enters as the metric's chance value (`adastudy.spec.METRIC_CHANCE`):
an untuned loss that diverges has not matched the tuned heads, it lost. A pruned run
was stopped by the study's pruner, not by the loss; it is left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adastudy import stats, store
from adastudy.claims.thresholds import C7_LEVEL_DEG, SELECTION_METRIC
from adastudy.spec import MAIN_VARIANT, METRIC_CHANCE, StudySpec, metric_bounds

__all__ = ["COUNTED_STATES", "Config", "Evidence", "MissingField", "config_label",
           "configs", "pick_best", "where"]

#: The states of the runs that count: pruned runs are left out.
COUNTED_STATES = ("complete", "diverged", "failed")


class MissingField(Exception):
    """A claim needs a column the run's tables lack: the claim is "not tested"."""

    def __init__(self, name: str, table: str = "trials") -> None:
        super().__init__(name)
        self.name = name
        self.table = table


@dataclass(frozen=True)
class Evidence:
    """The run's tables and what the study ranks trials by. `embedding_dims` gives each
    variant's embedding dimension when the trials table does not (older records);
    `c7_level_deg` is C7's θ_med level."""

    trials: pd.DataFrame
    series: pd.DataFrame
    metric: str = "verification_accuracy"
    direction: str = "maximize"
    c7_level_deg: float = C7_LEVEL_DEG
    embedding_dims: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Evidence:
        """The evidence of a run folder: its tables, and its spec's metric, direction,
        C7 level and embedding dimensions."""
        trials, series = store.load_tables(Path(run_dir))
        spec = ((store.read_manifest(Path(run_dir)) or {}).get("spec") or {})
        study = spec.get("study") or {}
        level = (spec.get("claims") or {}).get("c7_level_deg", C7_LEVEL_DEG)
        return cls(trials, series, study.get("metric", "verification_accuracy"),
                   study.get("direction", "maximize"), float(level), _embedding_dims(spec))

    @property
    def sign(self) -> float:
        """+1 when larger values of the metric are better, −1 otherwise."""
        return 1.0 if self.direction == "maximize" else -1.0

    def variants(self) -> list[str]:
        """The variants with trials: the main one first, then by number of classes and
        embedding dimension."""
        if self.trials.empty:
            return []
        if "variant" not in self.trials:
            return [MAIN_VARIANT]
        names = list(dict.fromkeys(self.trials["variant"].fillna(MAIN_VARIANT)))

        def order(v: str) -> tuple[bool, float, float, str]:
            if v == MAIN_VARIANT:
                return (False, 0.0, 0.0, v)
            C, D = self.num_classes(v, required=False), self.embedding_dim(v)
            return (True, math.inf if C is None else C, math.inf if D is None else D, v)

        return sorted(names, key=order)

    def of(self, variant: str, heads: Iterable[str] | None = None,
           states: Iterable[str] = COUNTED_STATES) -> pd.DataFrame:
        """Trials of one variant (and heads) in `states` (the counted ones by default)."""
        df = self.trials
        if "variant" in df:
            df = df[df["variant"].fillna(MAIN_VARIANT) == variant]
        if heads is not None:
            df = df[df["head"].isin(list(heads))]
        return df[df["state"].isin(list(states))]

    def num_classes(self, variant: str, required: bool = True) -> int | None:
        """The variant's number of classes C (None when its trials do not say). Tables
        without the column at all are MissingField, unless not `required`."""
        if "num_classes" not in self.trials:
            if required:
                raise MissingField("num_classes")
            return None
        df = self.of(variant, states=store.TRIAL_STATES)
        if df["num_classes"].dropna().empty:
            return None
        return int(df["num_classes"].dropna().iloc[0])

    def embedding_dim(self, variant: str) -> int | None:
        df = self.of(variant, states=store.TRIAL_STATES)
        if "embedding_dim" in df and not df["embedding_dim"].dropna().empty:
            return int(df["embedding_dim"].dropna().iloc[0])
        return self.embedding_dims.get(variant)

    def setting(self, variant: str, tag: bool = True) -> str:
        """"C = 100, D = 64 [c100]" (without " [c100]" unless `tag`): what a part was
        measured on."""
        C, D = self.num_classes(variant, required=False), self.embedding_dim(variant)
        text = ", ".join(t for t in (f"C = {C}" if C else "", f"D = {D}" if D else "") if t)
        return (f"{text}{where(variant) if tag else ''}" if text else variant)

    def column(self, name: str) -> pd.Series:
        """A column of the trials table; MissingField when the records lack it."""
        if name not in self.trials:
            raise MissingField(name)
        return self.trials[name]

    def series_column(self, name: str) -> None:
        """MissingField when the logged windows lack `name` (any window has it)."""
        if "theta_med_rad" in self.series and name not in self.series:
            raise MissingField(name, "series")

    def windows(self, key: str) -> pd.DataFrame:
        """The logged training windows of one trial (rows with training statistics),
        in step order."""
        if "theta_med_rad" not in self.series:  # no trial logged training statistics
            return pd.DataFrame({"step": [], "theta_med_rad": []})
        rows = self.series[(self.series["key"] == key) & self.series["theta_med_rad"].notna()]
        return rows.sort_values("step", kind="mergesort")

    def chance(self, column: str) -> float | None:
        """The value a diverged or failed run enters with for `column` (None: it does
        not enter)."""
        return METRIC_CHANCE.get(column)

    def bounds(self, column: str) -> tuple[float, float] | None:
        return metric_bounds(column)


def _embedding_dims(spec: dict[str, Any]) -> dict[str, int]:
    """Each variant's model.embedding_dim, from a manifest's spec (empty when the spec
    cannot be read: the parts then say nothing of D)."""
    try:
        study = StudySpec.model_validate(spec)
    except Exception:  # noqa: BLE001 - a hand-edited or older manifest: no dimensions
        return {}
    return {name: study.variant_sections(name)[1].embedding_dim
            for name in study.variant_names()}


def where(variant: str) -> str:
    """" [c1000]" for a variant, "" for the main one."""
    return "" if variant == MAIN_VARIANT else f" [{variant}]"


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def config_label(head: str, s: Any, m: Any) -> str:
    """"cosface s=16 m=0.25", "normface s=8", "adacos-dynamic"."""
    parts = [head]
    if s is not None and not (isinstance(s, float) and math.isnan(s)):
        parts.append(f"s={s:g}")
    if m is not None and not (isinstance(m, float) and math.isnan(m)):
        parts.append(f"m={m:g}")
    return " ".join(parts)


@dataclass(frozen=True)
class Config:
    """One configuration of one variant and its counted runs (complete, diverged,
    failed; never pruned)."""

    head: str
    s: float
    m: float
    variant: str
    runs: pd.DataFrame
    n_pruned: int = 0

    @property
    def label(self) -> str:
        return config_label(self.head, self.s, self.m)

    @property
    def margin_free(self) -> bool:
        return math.isnan(self.m) or self.m == 0.0

    @property
    def complete(self) -> pd.DataFrame:
        return self.runs[self.runs["state"] == "complete"]

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def n_diverged(self) -> int:
        return int((self.runs["state"] == "diverged").sum())

    @property
    def n_failed(self) -> int:
        return int((self.runs["state"] == "failed").sum())

    def values(self, column: str, optional: bool = False) -> np.ndarray:
        """The finite values of `column` in the complete runs (a measurement, not an
        outcome: runs that diverged do not have it). A column the tables lack is
        MissingField, or no values when `optional`."""
        if column not in self.runs:
            if optional:
                return np.array([])
            raise MissingField(column)
        return stats.finite(self.complete[column])

    def outcomes(self, ev: Evidence, column: str) -> dict[int, float]:
        """seed → value of `column` for every run: a complete run's value, a diverged or
        failed run's chance value (for the accuracy metrics). A complete run without a
        finite value is left out."""
        if column not in self.runs:
            raise MissingField(column)
        chance = ev.chance(column)
        out: dict[int, float] = {}
        for seed, state, value in zip(self.runs["seed"], self.runs["state"],
                                      self.runs[column], strict=True):
            key = int(seed) if pd.notna(seed) else -len(out) - 1
            if state == "complete":
                if pd.notna(value) and math.isfinite(float(value)):
                    out[key] = float(value)
            elif chance is not None:
                out[key] = chance
        return out

    def missing(self, column: str) -> int:
        """Complete runs without a finite value of `column`."""
        if column not in self.runs:
            return len(self.complete)
        values = pd.to_numeric(self.complete[column], errors="coerce")
        return int((~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))).sum())

    def states_text(self) -> str:
        """"diverged in 2 of 6 seeds" (or "" when every run completed)."""
        bits = []
        if self.n_diverged:
            bits.append(f"diverged in {self.n_diverged} of {self.n_runs} seeds")
        if self.n_failed:
            bits.append(f"failed in {self.n_failed} of {self.n_runs}")
        if self.n_pruned:
            bits.append(f"{self.n_pruned} pruned seeds left out")
        return ", ".join(bits)


def configs(ev: Evidence, variant: str, heads: Iterable[str]) -> list[Config]:
    """The configurations (head, s, m) of `heads` in a variant, with their counted runs
    (a configuration whose every run was pruned is left out)."""
    every = ev.of(variant, heads, states=store.TRIAL_STATES)
    out = []
    for (head, s, m), runs in every.groupby(["head", "s", "m"], dropna=False, sort=True):
        counted = runs[runs["state"].isin(COUNTED_STATES)]
        if counted.empty:
            continue
        out.append(Config(str(head), float(s), float(m), variant, counted,
                          int((runs["state"] == "pruned").sum())))
    return out


@dataclass(frozen=True)
class Pick:
    """The outcome of a selection: the chosen configuration, or why there is none."""

    config: Config | None
    problem: str | None = None


def pick_best(ev: Evidence, candidates: list[Config], worst: bool = False) -> Pick:
    """The configuration a user would pick: the best mean of `SELECTION_METRIC` (the
    validation pairs; a diverged run at its chance value) over its seeds. `worst`
    picks the worst instead. A candidate's complete run without a validation score
    makes the selection impossible (`problem` says which); it is never made on the test
    pairs instead."""
    if not candidates:
        return Pick(None, "no configuration ran")
    if SELECTION_METRIC not in ev.trials:
        raise MissingField(SELECTION_METRIC)
    lacking = [c.label for c in candidates if c.missing(SELECTION_METRIC)]
    if lacking:
        return Pick(None, (f"{SELECTION_METRIC} is missing in complete runs of "
                           f"{', '.join(lacking[:3])}{' …' if len(lacking) > 3 else ''}: "
                           "the best configuration cannot be chosen on validation"))
    scored = []
    for c in candidates:
        values = list(c.outcomes(ev, SELECTION_METRIC).values())
        if values:
            scored.append((float(np.mean(values)), c))
    if not scored:
        return Pick(None, f"no run of {candidates[0].head} has a {SELECTION_METRIC}")
    # Validation accuracy is always "larger is better"; ties go to the smaller scale.
    key = (lambda item: (-item[0], item[1].s)) if worst else (lambda item: (item[0], -item[1].s))
    return Pick(max(scored, key=key)[1])
