"""Several run folders side by side: "backbone A against B", "dataset A against B".

    build_comparison([run_a, run_b, ...])  ->  Report

The first run is the baseline. The comparison shows each run's answer and verdict
matrix, a table of every claim's verdict per run with the changes, the parts whose
verdict changed, and each head's best configuration (chosen on validation, as the
claims choose it) with its metric and the difference from the baseline. The same
renderers draw it (`report.write`), and `data` holds the same numbers as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adastudy import claims, stats, store, theory
from adastudy.claims import Evidence, Verdict
from adastudy.report import ReportError, run_identity
from adastudy.report.model import Report, Section, Table
from adastudy.report.verdicts import answer_box, verdict_matrix
from adastudy.spec import metric_bounds

__all__ = ["build_comparison", "default_out"]


@dataclass(frozen=True)
class _Run:
    label: str
    run_dir: Path
    ev: Evidence
    verdicts: list[Verdict]
    manifest: dict[str, Any]


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """The shortest path suffixes that tell the runs apart ("quick", or "a/quick" and
    "b/quick" for two folders of one name)."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in run_dirs]


def default_out(run_dirs: Sequence[Path]) -> Path:
    """compare-<a>-vs-<b>/ beside the first run folder."""
    names = "-vs-".join(Path(p).resolve().name for p in run_dirs)
    return Path(run_dirs[0]).resolve().parent / f"compare-{names}"


def _load(run_dirs: Sequence[Path]) -> list[_Run]:
    if len(run_dirs) < 2:
        raise ReportError("compare: give two or more run folders")
    resolved = [Path(p).resolve() for p in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise ReportError("compare: a run folder is given twice")
    for path in run_dirs:
        if not Path(path).is_dir():
            raise ReportError(f"{path}: no such folder")
    runs = []
    for label, path in zip(_labels(run_dirs), run_dirs, strict=True):
        ev = Evidence.from_run(Path(path))
        runs.append(_Run(label, Path(path), ev, claims.evaluate_evidence(ev),
                         store.read_manifest(Path(path)) or {}))
    metrics = {(r.ev.metric, r.ev.direction) for r in runs}
    if len(metrics) > 1:
        raise ReportError("compare: the runs rank by different metrics ("
                          + "; ".join(f"{r.label}: {r.ev.metric} ({r.ev.direction})"
                                      for r in runs) + "); their best results do not compare")
    return runs


def _describe(run: _Run) -> list[str]:
    spec = run.manifest.get("spec") or {}
    data, model = spec.get("data") or {}, spec.get("model") or {}
    ev = run.ev
    settings = "; ".join(ev.setting(v) for v in ev.variants()) or "-"
    states = ev.trials["state"].value_counts().to_dict() if len(ev.trials) else {}
    return [run.label, str(run.run_dir), str(spec.get("study", {}).get("name", "-")),
            f"{data.get('name', '?')} {data.get('form', '')}".strip(),
            f"{model.get('name', '?')}, embedding {model.get('embedding_dim', '?')}",
            settings, f"{len(ev.trials)} ("
            + ", ".join(f"{n} {k}" for k, n in states.items()) + ")"]


def _best(run: _Run, variant: str, head: str) -> dict[str, Any] | None:
    """A head's configuration chosen on validation, with every seed's metric (a diverged
    or failed seed at chance, as the claims count it)."""
    found = claims.configs(run.ev, variant, [head])
    if not found:
        return None
    try:
        pick = claims.pick_best(run.ev, found)
        values = list(pick.config.outcomes(run.ev, run.ev.metric).values()) if pick.config \
            else []
    except claims.MissingField:
        return None
    if not values:
        return None
    mean = stats.mean_estimate(values, bounds=metric_bounds(run.ev.metric))
    box = mean.interval()
    return {"config": pick.config.label, "values": values, "mean": mean.value,
            "interval": (box.low, box.high) if box.known else None, "n": len(values)}


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.4f}, {interval[1]:.4f}]"


def _best_table(runs: list[_Run]) -> tuple[Table, list[dict[str, Any]]]:
    base = runs[0]
    keys: list[tuple[str, str]] = []
    for run in runs:
        for variant in run.ev.variants():
            present = set(run.ev.of(variant)["head"])
            for head in (h for h in theory.HEAD_NAMES if h in present):
                if (variant, head) not in keys:
                    keys.append((variant, head))
    rows, data = [], []
    bounds = metric_bounds(base.ev.metric)
    for variant, head in keys:
        found = [_best(run, variant, head) if variant in run.ev.variants() else None
                 for run in runs]
        cells = [head if variant == "main" else f"{head} [{variant}]"]
        cells += ["-" if b is None else
                  (b["config"].removeprefix(head).strip() + ": " if b["config"] != head
                   else "") + f"{b['mean']:.4f}{_interval_text(b['interval'])} (n = {b['n']})"
                  for b in found]
        deltas = []
        for b in found[1:]:
            if b is None or found[0] is None:
                deltas.append(None)
                continue
            # Different runs share no training: Welch's interval, never paired.
            d = stats.difference(b["values"], found[0]["values"], bounds=bounds)
            box = d.interval()
            deltas.append({"value": d.value, "interval": (box.low, box.high)
                           if box.known else None, "method": d.method})
        cells += ["-" if d is None else f"{d['value']:+.4f}{_interval_text(d['interval'])}"
                  for d in deltas]
        rows.append(cells)
        data.append({"variant": variant, "head": head,
                     "runs": {r.label: b and {k: v for k, v in b.items() if k != "values"}
                              for r, b in zip(runs, found, strict=True)},
                     "delta": {r.label: d for r, d in zip(runs[1:], deltas, strict=True)}})
    columns = ["head", *(f"{r.label}: best (chosen on validation)" for r in runs),
               *(f"{r.label} − {base.label}" for r in runs[1:])]
    return Table(columns, rows), data


def _verdict_tables(runs: list[_Run]) -> tuple[list[Table], list[dict[str, Any]]]:
    by_claim = [{v.claim_id: v for v in run.verdicts} for run in runs]
    rows, data = [], []
    for claim_id, text in claims.CLAIMS.items():
        seen = [found.get(claim_id) for found in by_claim]
        verdicts = [v.verdict if v else "not tested" for v in seen]
        changed = len(set(verdicts)) > 1
        rows.append([f"{claim_id}: {text}", *verdicts,
                     " → ".join(verdicts) if changed else "same"])
        data.append({"claim": claim_id, "verdicts": dict(zip([r.label for r in runs],
                                                             verdicts, strict=True)),
                     "changed": changed})
    verdict_table = Table(["claim", *(r.label for r in runs), "change"], rows)
    # The parts, matched by variant and head: those whose verdict differs between runs.
    part_rows = []
    for claim_id in claims.CLAIMS:
        parts: dict[tuple[str, str], list[str]] = {}
        for i, found in enumerate(by_claim):
            verdict = found.get(claim_id)
            for part in verdict.parts if verdict else ():
                key = (part.variant, part.head or "all heads")
                parts.setdefault(key, ["absent"] * len(runs))[i] = part.verdict
        for (variant, head), verdicts in parts.items():
            if len(set(verdicts)) > 1:
                part_rows.append([claim_id, head if variant == "main"
                                  else f"{head} [{variant}]", *verdicts])
    tables = [verdict_table]
    if part_rows:
        tables.append(Table(["claim", "part", *(r.label for r in runs)], part_rows,
                            caption="the parts whose verdict changed"))
    return tables, data


def build_comparison(run_dirs: Sequence[str | Path]) -> Report:
    """The comparison of `run_dirs` (two or more run folders; the first is the
    baseline). Raises ReportError for fewer than two, a repeated folder, a missing one,
    or runs ranked by different metrics."""
    run_dirs = [Path(p) for p in run_dirs]
    runs = _load(run_dirs)
    base = runs[0]
    best, best_data = _best_table(runs)
    verdict_tables, verdict_data = _verdict_tables(runs)
    changed = [d["claim"] for d in verdict_data if d["changed"]]
    sections = [
        Section("runs", "The runs", [
            f"{base.label} is the baseline: every difference is the other run minus it. "
            f"Metric: {base.ev.metric} ({base.ev.direction}), on the test pairs."],
            tables=[Table(["run", "folder", "study", "data", "model", "settings", "trials"],
                          [_describe(r) for r in runs])]),
        Section("answers", "The answer of each run", [
            f"{r.label}: {box.sentence}" if (box := answer_box(r.ev)) else
            f"{r.label}: no AdaCos head against a tuned head, so no answer." for r in runs]),
        Section("best", "Each head's best configuration", [
            "Each head's configuration is chosen on the validation pairs "
            f"({claims.SELECTION_METRIC}) within each run, as the claims choose it; the "
            "mean is over its seeds with a diverged or failed seed at the metric's chance "
            "value, and the difference has Welch's 95 % interval (the runs share no "
            "training, so nothing is paired)."], tables=[best]),
        Section("verdicts", "The verdicts side by side", [
            (f"Changed: {', '.join(changed)}." if changed else
             "Every claim has the same verdict in every run.")
            + " Parts are matched by variant and head."], tables=verdict_tables),
        *(Section(f"matrix-{i}", f"Verdict matrix: {r.label}",
                  matrix=verdict_matrix(r.ev, r.verdicts)) for i, r in enumerate(runs)),
    ]
    identities = [run_identity(r.run_dir, r.manifest) for r in runs]
    identity = {"kind": "comparison", "runs": identities,
                "key": " + ".join(i["key"] for i in identities)}
    data = {
        "baseline": base.label, "metric": base.ev.metric, "direction": base.ev.direction,
        "runs": [{"label": r.label, "run_dir": str(r.run_dir),
                  "answer": claims.answer(r.ev)} for r in runs],
        "verdicts": verdict_data, "best": best_data,
    }
    return Report(study=f"Comparison: {' vs '.join(r.label for r in runs)}",
                  subtitle=f"{len(runs)} runs, baseline {base.label}", verdicts=[],
                  sections=sections, identity=identity, data=data)
