"""The report of a reproducibility check: `reproduce-<timestamp>.md`, `.html` (the
report renderers, no figures) and `.json` (`Comparison.to_json`), in the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adastudy import store
from adastudy.report.model import Report, Section, Table
from adastudy.reproduce.drift import Comparison, MetricDrift

__all__ = ["build_report", "headline", "number", "write"]


def number(x: float | None, signed: bool = False) -> str:
    """A value as the tables show it: 4 significant digits, "—" for none."""
    if x is None:
        return "—"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _mean(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return f"— (n={n})"
    return f"{number(mean)} ± {number(std)} (n={n})" if std is not None else \
        f"{number(mean)} (n={n})"


def _difference(d: MetricDrift) -> str:
    if d.difference is None:
        return "—"
    if d.interval is None:
        return f"{number(d.difference, True)} (one seed a side: no interval)"
    low, high = d.interval
    return f"{number(d.difference, True)} [{number(low, True)}, {number(high, True)}]"


def _tolerance(d: MetricDrift) -> str:
    return f"{number(d.threshold)} (abs_tol {number(d.abs_tol)}, k {d.k:g})"


def _status(d: MetricDrift) -> str:
    if d.identical:
        return "identical"
    if not d.drifted:
        return "within tolerance"
    if d.confirmed is False:
        return f"{d.direction}, not confirmed"
    return d.direction or "changed"


def drift_row(d: MetricDrift, comparison: Comparison) -> list[str]:
    """One comparison as a row of the drift tables (the CLI prints the same cells)."""
    confirmed = "" if d.confirmed is None else ("yes" if d.confirmed else
                                                f"no (fresh seeds: {number(d.confirm_mean)})")
    return [d.key, d.metric, _mean(d.base_mean, d.base_std, d.n_base),
            _mean(d.new_mean, d.new_std, d.n_new), _difference(d), _tolerance(d), _status(d),
            confirmed, comparison.attribution.cause if d.drifted else ""]


DRIFT_COLUMNS = ["configuration", "metric", "baseline mean ± std", "re-run mean ± std",
                 "difference [95 % interval]", "tolerance", "result", "confirmed",
                 "attribution"]


def headline(c: Comparison, attribution: bool = True) -> str:
    """One sentence: reproduced, or what drifted (and, with `attribution`, where to
    look)."""
    identical = sum(d.identical for d in c.drifts)
    bits = f"{identical} of {len(c.drifts)} comparisons identical bit for bit"
    if not c.failed:
        ignored = [d for d in c.drifts if d.drifted and d not in c.failing_drifts]
        extra = (f"; {len(ignored)} drift(s) not counted (--fail-on {c.fail_on} or not "
                 "confirmed)") if ignored else ""
        return f"Reproduced: no drift in {len(c.drifts)} comparisons ({bits}){extra}."
    found = []
    if c.failing_drifts:
        configs = len({d.key for d in c.failing_drifts})
        named = ", ".join(f"{d.key}: {d.metric} {d.direction}" for d in c.failing_drifts[:3])
        more = ", ..." if len(c.failing_drifts) > 3 else ""
        found.append(f"{len(c.failing_drifts)} metric drift(s) in {configs} configuration(s) "
                     f"({named}{more})")
    if c.failing_states:
        found.append(f"{len(c.failing_states)} seed(s) changed state")
    if c.missing:
        found.append(f"{len(c.missing)} configuration(s) on one side only")
    if c.flips:
        found.append(f"{len(c.flips)} verdict(s) flipped")
    where = c.attribution
    detail = ", ".join(where.code + where.environment)
    said = f"Drift: {'; '.join(found)} (--fail-on {c.fail_on})."
    if attribution:
        said += f" Attribution: {where.cause}{f' ({detail} differ)' if detail else ''}."
    return said


def _value(x: Any) -> str:
    if isinstance(x, list):
        return ", ".join(str(v) for v in x) or "none"
    return "—" if x is None else str(x)


def build_report(c: Comparison, *, when: str, baseline_path: Path, run_dir: Path,
                 confirm_dir: Path | None = None) -> Report:
    """The check as a `Report` of tables (the renderers of `adastudy.report`)."""
    drifted = [d for d in c.drifts if d.drifted]
    how = ("A metric drifts when its mean moves by more than max(abs_tol, k · σ_pooled · "
           "sqrt(1/n_base + 1/n_new)), σ_pooled the seeds' pooled standard deviation; the "
           "difference (re-run − baseline) has its 95 % t interval. Metrics: "
           f"{', '.join(c.metrics)}.")
    where = c.attribution
    cause = (f"Attribution: {where.cause}. Code: "
             f"{', '.join(where.code) or 'the same commit and sources'}; environment: "
             f"{', '.join(where.environment) or 'the same'}.")
    sections = [Section("outcome", "Outcome", [headline(c, attribution=False), cause, how, (
        f"Baseline {baseline_path}; re-run in {run_dir}"
        + (f"; drifts re-run with fresh seeds in {confirm_dir}" if confirm_dir else "")
        + ".")])]
    sections.append(Section("drifts", "Drifts", [] if drifted else ["No metric drifted."],
                            tables=[Table(DRIFT_COLUMNS, [drift_row(d, c) for d in drifted])]
                            if drifted else []))
    if c.states:
        sections.append(Section("states", "Seeds whose state changed", tables=[Table(
            ["configuration", "seed", "baseline", "re-run", "change"],
            [[s.key, str(s.seed), s.base, s.new, s.direction] for s in c.states])]))
    if c.missing:
        sections.append(Section("missing", "Configurations on one side only", tables=[Table(
            ["configuration", "missing from"], [[k, side] for k, side in c.missing])]))
    if not c.verdicts_compared:
        verdicts = Section("verdicts", "Verdicts", [
            "Not compared: the re-run is a subset of the study ([reproduce] heads, "
            "variants or seeds), and a claim's verdict depends on the whole study."])
    elif c.flips:
        verdicts = Section("verdicts", "Verdicts that flipped", tables=[Table(
            ["claim", "part", "baseline", "re-run"],
            [[f.claim, f.part or "(the claim)", f.base, f.new] for f in c.flips])])
    else:
        verdicts = Section("verdicts", "Verdicts", ["Every claim's verdict, and every part's, "
                                                     "is the baseline's."])
    sections.append(verdicts)
    sections.append(Section("environment", "Environment", [
        "What differs is marked; the host name and a dirty work tree are shown but are no "
        "cause (the package sources' digest says whether the code differs)."],
        tables=[Table(["", "baseline", "re-run", "differs"],
                      [[k, _value(a), _value(b), ("yes" if used else "yes (not a cause)")
                        if a != b else ""] for k, a, b, used in c.environment])]))
    sections.append(Section("comparisons", "Every comparison", tables=[Table(
        DRIFT_COLUMNS, [drift_row(d, c) for d in c.drifts])]))
    return Report(study=f"Reproducibility check: {c.study}",
                  subtitle=f"{_readable(when)}, --fail-on {c.fail_on}", verdicts=[],
                  sections=sections,
                  data=c.to_json(), identity={"kind": "reproduce", "key": when})


def _readable(when: str) -> str:
    """"20261203T071500Z" as "2026-12-03 07:15:00 UTC"."""
    if len(when) < 16:
        return when
    return (f"{when[:4]}-{when[4:6]}-{when[6:8]} {when[9:11]}:{when[11:13]}:{when[13:15]} "
            "UTC")


def write(c: Comparison, out: Path, when: str, **info: Any) -> list[Path]:
    """OUT/reproduce-<when>.md, .html and .json; returns their paths."""
    from adastudy.report.html import render_html
    from adastudy.report.markdown import render_markdown

    report = build_report(c, when=when, **info)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"reproduce-{when}"
    files = [store.atomic_write_text(stem.with_suffix(".md"), render_markdown(report)),
             store.atomic_write_text(stem.with_suffix(".html"), render_html(report)),
             store.atomic_write_text(stem.with_suffix(".json"), store.json_text(
                 c.to_json(), indent=1) + "\n")]
    return files
