"""Baseline against re-run: the drift rule, state changes, verdict flips, the
environment diff and the attribution (see `adastudy.reproduce`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from adastudy import stats
from adastudy.reproduce.baseline import BaselineError
from adastudy.spec import (
    MAIN_VARIANT,
    SET_METRIC_PREFIX,
    STUDY_METRICS,
    ReproduceSection,
    metric_bounds,
    natural_direction,
)

__all__ = ["DEFAULT_ABS_TOL", "FAIL_ON", "Attribution", "Comparison", "MetricDrift",
           "StateChange", "VerdictFlip", "attribute", "compare", "compared_metrics",
           "drift_of", "environment_diff", "gate"]

FAIL_ON = ("both", "worse", "improved")
#: A difference of means below this never drifts: accuracies, rank-1 and TAR move by
#: half a point between seeds on the small studies, and the claims call 0.005
#: negligible (`claims.NEGLIGIBLE`). Other metrics: 0 (k standard errors alone).
DEFAULT_ABS_TOL = 0.005
#: States that are worse than "complete", in the order a seed can fall.
_BAD_STATES = ("pruned", "diverged", "failed", "missing")

@dataclass(frozen=True)
class Attribution:
    """Where a drift comes from: "code", "environment", "code and environment" or
    "neither (nondeterminism)", with what differs."""

    cause: str
    code: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MetricDrift:
    """One metric of one configuration, baseline against re-run."""

    key: str
    variant: str
    head: str
    metric: str
    n_base: int
    n_new: int
    base_mean: float | None
    new_mean: float | None
    base_std: float | None
    new_std: float | None
    difference: float | None
    interval: tuple[float, float] | None
    threshold: float | None
    abs_tol: float
    k: float
    drifted: bool
    #: "improved", "worse" or "changed" (a metric without a direction); None: no drift.
    direction: str | None
    #: Every seed's value equal to the baseline's, bit for bit.
    identical: bool
    #: With --confirm, for a drift: whether the fresh seeds drift the same way too.
    confirmed: bool | None = None
    confirm_mean: float | None = None


@dataclass(frozen=True)
class StateChange:
    """A seed whose state differs: a run that newly diverged, failed, was pruned or is
    missing ("worse"), or one that no longer does ("improved")."""

    key: str
    seed: int
    base: str
    new: str
    direction: Literal["worse", "improved", "changed"]


@dataclass(frozen=True)
class VerdictFlip:
    claim: str
    part: str | None  # None: the claim's verdict
    base: str
    new: str


@dataclass
class Comparison:
    """Everything `adastudy reproduce` reports, and what its exit code follows."""

    study: str
    fail_on: str
    metrics: list[str]
    drifts: list[MetricDrift]
    states: list[StateChange]
    missing: list[tuple[str, str]]  # (key, "baseline" | "re-run"): the side it lacks
    flips: list[VerdictFlip]
    verdicts_compared: bool
    environment: list[tuple[str, Any, Any, bool]]  # (key, baseline, re-run, attributed)
    attribution: Attribution
    confirmed: bool = False

    def counts(self, direction: str | None) -> bool:
        """Whether a finding in `direction` fails the check under `fail_on`."""
        return direction not in ("improved", "worse") or self.fail_on in ("both", direction)

    @property
    def failing_drifts(self) -> list[MetricDrift]:
        return [d for d in self.drifts if d.drifted and d.confirmed is not False
                and self.counts(d.direction)]

    @property
    def failing_states(self) -> list[StateChange]:
        return [c for c in self.states if self.counts(c.direction)]

    @property
    def failed(self) -> bool:
        """Exit 1: a drift, a state change or a missing configuration that counts under
        `fail_on`, or a flipped verdict."""
        return bool(self.failing_drifts or self.failing_states or self.missing or self.flips)

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study, "reproduced": not self.failed, "fail_on": self.fail_on,
            "metrics": self.metrics, "confirmed": self.confirmed,
            "attribution": asdict(self.attribution),
            "drifts": [asdict(d) for d in self.drifts if d.drifted],
            "comparisons": len(self.drifts),
            "every_comparison": [asdict(d) for d in self.drifts],
            "identical": sum(d.identical for d in self.drifts),
            "states": [asdict(c) for c in self.states],
            "missing": [{"configuration": k, "missing_from": side} for k, side in self.missing],
            "verdicts_compared": self.verdicts_compared,
            "flips": [asdict(f) for f in self.flips],
            "environment": [{"key": k, "baseline": a, "re-run": b, "attributed": used}
                            for k, a, b, used in self.environment],
        }


def compared_metrics(baseline: dict[str, Any], gates: ReproduceSection) -> list[str]:
    """The metrics the check compares: the study's metric, the verification accuracy of
    every test set, rank-1, TAR and the validation accuracy (those the baseline has),
    and every metric `[reproduce.metrics]` names."""
    known = {name for c in baseline["configurations"] for name in c["metrics"]}
    wanted = [baseline["metric"], *STUDY_METRICS,
              *sorted(n for n in known if n.startswith(SET_METRIC_PREFIX)
                      and not n.endswith("_std")), *gates.metrics]
    return [name for name in dict.fromkeys(wanted) if name in known or name in gates.metrics]


def gate(metric: str, gates: ReproduceSection) -> tuple[float, float]:
    """(abs_tol, k) for `metric`: `[reproduce.metrics.<metric>]`, else the defaults."""
    own = gates.metrics.get(metric)
    default_tol = DEFAULT_ABS_TOL if metric_bounds(metric) is not None else 0.0
    abs_tol = own.abs_tol if own is not None and own.abs_tol is not None else default_tol
    k = own.k if own is not None and own.k is not None else gates.k
    return abs_tol, k


def _values(config: dict[str, Any], metric: str) -> dict[int, float]:
    return {int(seed): run["metrics"][metric] for seed, run in config["seeds"].items()
            if run["state"] == "complete" and metric in run["metrics"]}


def _direction(metric: str, baseline: dict[str, Any]) -> str | None:
    if metric == baseline["metric"]:
        return baseline["direction"]
    return natural_direction(metric)


def drift_of(metric: str, base: dict[int, float], new: dict[int, float],
             gates: ReproduceSection, direction: str | None, *, key: str = "",
             variant: str = MAIN_VARIANT, head: str = "") -> MetricDrift:
    """The drift rule (see the module's doc) for one metric of one configuration."""
    abs_tol, k = gate(metric, gates)
    a, b = np.array(list(base.values()), float), np.array(list(new.values()), float)
    n1, n2 = len(a), len(b)
    identical = n1 > 0 and base == new
    mean1 = float(a.mean()) if n1 else None
    mean2 = float(b.mean()) if n2 else None
    sd1 = float(a.std(ddof=1)) if n1 > 1 else None
    sd2 = float(b.std(ddof=1)) if n2 > 1 else None
    if not n1 or not n2:
        return MetricDrift(key, variant, head, metric, n1, n2, mean1, mean2, sd1, sd2,
                           None, None, None, abs_tol, k, False, None, False)
    diff = mean2 - mean1
    df = n1 + n2 - 2
    if df > 0:
        pooled = math.sqrt((((n1 - 1) * (sd1 or 0.0) ** 2) + ((n2 - 1) * (sd2 or 0.0) ** 2))
                           / df)
        se = pooled * math.sqrt(1 / n1 + 1 / n2)
        half = stats.t975(df) * se
        interval = (diff - half, diff + half)
        threshold = max(abs_tol, k * se)
    else:  # one seed a side: no spread to judge by
        interval, threshold = None, abs_tol
    drifted = abs(diff) > threshold and not identical
    way = None
    if drifted:
        if direction is None:
            way = "changed"
        else:
            way = "improved" if (diff > 0) == (direction == "maximize") else "worse"
    return MetricDrift(key, variant, head, metric, n1, n2, mean1, mean2, sd1, sd2, diff,
                       interval, threshold, abs_tol, k, drifted, way, identical)


def _state_rank(state: str) -> int:
    return _BAD_STATES.index(state) + 1 if state in _BAD_STATES else 0


def _state_changes(key: str, base: dict[str, Any], new: dict[str, Any]) -> list[StateChange]:
    out = []
    for seed in sorted(set(base["seeds"]) & set(new["seeds"]), key=int):
        a, b = base["seeds"][seed]["state"], new["seeds"][seed]["state"]
        if a == b:
            continue
        ra, rb = _state_rank(a), _state_rank(b)
        way = "worse" if rb > ra else "improved" if rb < ra else "changed"
        out.append(StateChange(key, int(seed), a, b, way))
    return out


def _part_name(part: dict[str, Any]) -> str:
    where = part.get("head") or "all heads"
    if part.get("variant") not in (None, MAIN_VARIANT):
        where += f" [{part['variant']}]"
    if part.get("versus"):
        where += f" vs {part['versus']}"
    return where


def _flips(base: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[VerdictFlip]:
    out = []
    theirs = {v["claim"]: v for v in new}
    for verdict in base:
        other = theirs.get(verdict["claim"])
        if other is None:
            out.append(VerdictFlip(verdict["claim"], None, verdict["verdict"], "absent"))
            continue
        if other["verdict"] != verdict["verdict"]:
            out.append(VerdictFlip(verdict["claim"], None, verdict["verdict"],
                                   other["verdict"]))
        a = _named_parts(verdict.get("parts", []))
        b = _named_parts(other.get("parts", []))
        for name in dict.fromkeys([*a, *b]):
            va, vb = a.get(name, "absent"), b.get(name, "absent")
            if va != vb:
                out.append(VerdictFlip(verdict["claim"], name, va, vb))
    return out


def _named_parts(parts: list[dict[str, Any]]) -> dict[str, str]:
    named: dict[str, str] = {}
    for part in parts:
        name = _part_name(part)
        n = 2
        while name in named:  # two parts of one setting: told apart by their order
            name = f"{_part_name(part)} #{n}"
            n += 1
        named[name] = part.get("verdict", "?")
    return named


#: Environment keys that can change a result, by where they are in a baseline.
_ENV_KEYS = ("python", "torch", "numpy", "optuna", "ray", "pandas", "pyarrow", "platform",
             "cpu_model", "cpu_count", "device.cuda_version", "device.devices")
#: Shown in the diff but not a cause: another machine of the same kind gives the same
#: floats.
_SHOWN_KEYS = ("hostname", "git_dirty")
_CODE_KEYS = ("git_commit", "code_digest")


def _get(mapping: dict[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _engine_keys(baseline: dict[str, Any]) -> dict[str, Any]:
    engine = (baseline.get("run") or {}).get("engine") or {}
    return {f"engine.{k}": v for k, v in sorted(engine.items())}


def environment_diff(base: dict[str, Any], new: dict[str, Any]
                     ) -> list[tuple[str, Any, Any, bool]]:
    """(key, baseline, re-run, attributed) for each thing a baseline records about where
    it ran: code, versions, device, CPU, determinism flags and the engine."""
    rows = []
    for key in (*_CODE_KEYS, *_ENV_KEYS, *_SHOWN_KEYS):
        rows.append((key, _get(base["environment"], key), _get(new["environment"], key),
                     key not in _SHOWN_KEYS))
    for key in sorted(set(base["determinism"]) | set(new["determinism"])):
        rows.append((f"determinism.{key}", base["determinism"].get(key),
                     new["determinism"].get(key), True))
    a, b = _engine_keys(base), _engine_keys(new)
    for key in sorted(set(a) | set(b)):
        rows.append((key, a.get(key), b.get(key), True))
    return rows


def attribute(rows: list[tuple[str, Any, Any, bool]]) -> Attribution:
    """Whether the code changed (another commit or package sources), the environment
    did (any other attributed key), both, or neither."""
    code = [k for k, a, b, used in rows if used and k in _CODE_KEYS and a != b
            and a is not None and b is not None]
    env = [k for k, a, b, used in rows if used and k not in _CODE_KEYS and a != b]
    cause = ("code and environment" if code and env else "code" if code
             else "environment" if env else "neither (nondeterminism)")
    return Attribution(cause, code, env)


def compare(baseline: dict[str, Any], new: dict[str, Any], gates: ReproduceSection, *,
            fail_on: str = "both", confirm: dict[str, Any] | None = None) -> Comparison:
    """The re-run `new` (a `make_baseline` of its run folder) against `baseline`. Only
    the configurations and seeds the re-run was meant to run are expected of it
    (`new["expected"]`: keys; default all of the baseline's). `confirm`, a snapshot of a
    re-run of the flagged configurations with fresh seeds: a drift stands only if it
    drifts the same way there too."""
    if fail_on not in FAIL_ON:
        raise BaselineError(f"--fail-on: choose from {', '.join(FAIL_ON)}, got {fail_on!r}")
    metrics = compared_metrics(baseline, gates)
    base = {c["key"]: c for c in baseline["configurations"]}
    theirs = {c["key"]: c for c in new["configurations"]}
    expected = set(new.get("expected") or base)
    seeds = new.get("expected_seeds")
    missing = [(k, "re-run") for k in base if k in expected and k not in theirs]
    missing += [(k, "baseline") for k in theirs if k not in base]
    drifts, states = [], []
    fresh = {c["key"]: c for c in (confirm or {}).get("configurations", [])}
    for key, config in base.items():
        if key not in theirs:
            continue
        if seeds is not None:
            config = {**config, "seeds": {s: r for s, r in config["seeds"].items()
                                          if int(s) in seeds}}
        other = theirs[key]
        states += _state_changes(key, config, other)
        for seed in set(config["seeds"]) - set(other["seeds"]):
            states.append(StateChange(key, int(seed), config["seeds"][seed]["state"],
                                      "missing", "worse"))
        for metric in metrics:
            direction = _direction(metric, baseline)
            drift = drift_of(metric, _values(config, metric), _values(other, metric), gates,
                             direction, key=key, variant=config["variant"],
                             head=config["head"])
            if drift.drifted and confirm is not None:
                again = drift_of(metric, _values(config, metric),
                                 _values(fresh.get(key, {"seeds": {}}), metric), gates,
                                 direction)
                drift = _with_confirmation(drift, again)
            if drift.n_base or drift.n_new:
                drifts.append(drift)
    compared = not new.get("subset") and not baseline.get("subset")
    flips = _flips(baseline["verdicts"], new["verdicts"]) if compared else []
    rows = environment_diff(baseline, new)
    return Comparison(str(baseline.get("study")), fail_on, metrics, drifts, states, missing,
                      flips, compared, rows, attribute(rows), confirm is not None)


def _with_confirmation(drift: MetricDrift, again: MetricDrift) -> MetricDrift:
    if not again.n_new:  # the fresh seeds did not complete: nothing confirms or clears it
        return drift
    holds = again.drifted and again.direction == drift.direction
    return replace(drift, confirmed=holds, confirm_mean=again.new_mean)
