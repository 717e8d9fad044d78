"""`adastudy reproduce`: the study (or its `[reproduce]` subset) run again into a fresh
folder, compared with the baseline, the drifts confirmed on fresh seeds when asked,
and the comparison written up (`render`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adastudy.reproduce import render
from adastudy.reproduce.baseline import (
    BaselineError,
    check_baseline,
    expected_keys,
    make_baseline,
)
from adastudy.reproduce.drift import FAIL_ON, Comparison, MetricDrift, compare
from adastudy.spec import MAIN_VARIANT, HeadGrid, StudySpec

__all__ = ["Reproduction", "confirm_spec", "fresh_seeds", "reproduce", "stamp"]


@dataclass
class Reproduction:
    """What a re-run gave: the comparison (None when it was interrupted), the folders
    it ran in, and the files of its report."""

    comparison: Comparison | None
    run_dir: Path
    confirm_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)


def stamp() -> str:
    """A file-name-safe UTC timestamp, "20261203T071500Z"."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def fresh_seeds(baseline: dict[str, Any], used_too: list[int], n: int) -> list[int]:
    """`n` seeds above every seed the baseline and the re-run used."""
    used = {int(s) for c in baseline["configurations"] for s in c["seeds"]} | set(used_too)
    start = max(used) + 1 if used else 0
    return list(range(start, start + n))


def confirm_spec(study: StudySpec, drifts: list[MetricDrift], baseline: dict[str, Any],
                 seeds: list[int]) -> StudySpec:
    """The flagged configurations of `study` with `seeds`: each flagged head runs the
    s and m values flagged for it (a grid: their product, which may hold a few
    configurations more than were flagged; only the flagged ones are compared)."""
    configs = {c["key"]: c for c in baseline["configurations"]}
    values: dict[str, tuple[set[float], set[float]]] = {}
    variants: set[str] = set()
    for drift in drifts:
        config = configs[drift.key]
        s_values, m_values = values.setdefault(config["head"], (set(), set()))
        if config["s"] is not None:
            s_values.add(config["s"])
        if config["m"] is not None:
            m_values.add(config["m"])
        if config["variant"] != MAIN_VARIANT:
            variants.add(config["variant"])
    grid = {head: HeadGrid(s=tuple(sorted(s)) or None, m=tuple(sorted(m)) or None)
            for head, (s, m) in values.items()}
    grids = {(variant, head): g for head, g in grid.items()
             for variant in (MAIN_VARIANT, *variants)}
    return study.subset(heads=list(values), variants=sorted(variants), seeds=seeds,
                        grids=grids)


def _fresh_folder(folder: Path) -> Path:
    """`folder`, or folder-2, -3, ... when it exists (two re-runs in one second)."""
    candidate, n = folder, 2
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}-{n}")
        n += 1
    return candidate


def reproduce(
    study: StudySpec, spec_path: Path, baseline: dict[str, Any], engine: Any, *,
    baseline_path: Path, out: Path | None = None, confirm: bool = False,
    fail_on: str = "both", deterministic: bool | None = None,
    run: Callable[..., Any] | None = None,
) -> Reproduction:
    """Re-run `study` (its `[reproduce]` heads, variants and seeds) on `engine` into
    OUT/run-<timestamp>/ (OUT: `out`, default runs/reproduce-<study>/), compare it with
    `baseline` and write OUT/reproduce-<timestamp>.md, .html and .json. In
    deterministic mode when `deterministic`, or (None) when the baseline was. With
    `confirm`, the configurations that drifted run again with fresh seeds into
    OUT/run-<timestamp>-confirm/, and a drift stands only if it holds there too.
    `run(spec, spec_path, engine, out=...)` runs a sweep (default `run_sweep`; the CLI
    gives one with a progress view)."""
    from adastudy.backends.sweep import run_sweep

    check_baseline(baseline, study, baseline_path)
    if fail_on not in FAIL_ON:
        raise BaselineError(f"--fail-on: choose from {', '.join(FAIL_ON)}, got {fail_on!r}")
    run = run or run_sweep
    gates = study.reproduce
    on = (bool(baseline["determinism"].get("deterministic", False)) if deterministic is None
          else deterministic)
    subset = study.subset(heads=gates.heads, variants=gates.variants,
                          seeds=gates.seeds).with_determinism(on)
    when = stamp()
    out = Path(out) if out is not None else Path("runs") / f"reproduce-{study.study.name}"
    run_dir = _fresh_folder(out / f"run-{when}")
    summary = run(subset, spec_path, engine, out=run_dir)
    if summary.interrupted:
        return Reproduction(None, run_dir, interrupted=True, problems=summary.problems)
    problems = list(summary.problems)
    new = make_baseline(run_dir, subset=subset.digest() != study.digest())
    new["expected"] = expected_keys(subset)
    new["expected_seeds"] = list(subset.study.seeds) if gates.seeds is not None else None
    comparison = compare(baseline, new, gates, fail_on=fail_on)
    confirm_dir = None
    if confirm and comparison.failing_drifts:
        seeds = fresh_seeds(baseline, list(subset.study.seeds),
                            max(2, len(subset.study.seeds)))
        again_spec = confirm_spec(subset, comparison.failing_drifts, baseline, seeds)
        confirm_dir = _fresh_folder(out / f"run-{when}-confirm")
        again = run(again_spec, spec_path, engine, out=confirm_dir)
        if again.interrupted:
            return Reproduction(None, run_dir, confirm_dir, interrupted=True,
                                problems=problems + again.problems)
        problems += again.problems
        comparison = compare(baseline, new, gates, fail_on=fail_on,
                             confirm=make_baseline(confirm_dir, subset=True))
    files = render.write(comparison, out, when, baseline_path=baseline_path,
                         run_dir=run_dir, confirm_dir=confirm_dir)
    return Reproduction(comparison, run_dir, confirm_dir, files, problems=problems)
