"""The baseline format: what a run of a study measured, per configuration and seed, with
its claims' verdicts and where it ran (see `adastudy.reproduce` for the format).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adastudy import __version__, store
from adastudy.errors import AdastudyError
from adastudy.spec import MAIN_VARIANT, StudySpec

__all__ = ["BASELINE_FORMAT", "BASELINE_VERSION", "BaselineError", "check_baseline",
           "config_key", "expected_keys", "load_baseline", "make_baseline", "write_baseline"]

BASELINE_FORMAT = "adastudy-baseline"
BASELINE_VERSION = 1
#: The keys every baseline of this version has.
_REQUIRED = ("format", "version", "study", "spec_digest", "spec", "metric", "direction",
             "environment", "determinism", "configurations", "verdicts")
#: Trials-table columns that are bookkeeping or timings, not results.
_NOT_METRICS = frozenset(store.TRIALS_FIXED_COLUMNS)


class BaselineError(AdastudyError):
    """A baseline that cannot be used: unreadable, malformed, of an unknown version, or
    made from another spec than the one re-run."""


def _number(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def config_key(variant: str, head: str, s: Any, m: Any) -> str:
    """"cosface s=16 m=0.25", "adacos-dynamic", and in a variant "cosface s=16 m=0.25
    [c1000]": a configuration's name, its parameters with 12 significant digits (as
    `store.trial_key`, so float noise does not split one)."""
    parts = [head, *(f"{name}={format(value, '.12g')}" for name, value in
                     (("s", _number(s)), ("m", _number(m))) if value is not None)]
    key = " ".join(parts)
    return key if variant == MAIN_VARIANT else f"{key} [{variant}]"


def _metric_columns(trials: Any) -> list[str]:
    import pandas as pd

    return [c for c in trials.columns if c not in _NOT_METRICS
            and pd.api.types.is_numeric_dtype(trials[c])
            and not pd.api.types.is_bool_dtype(trials[c])]


def _summary(values: list[float]) -> dict[str, Any]:
    n = len(values)
    return {"n": n, "mean": float(np.mean(values)) if n else None,
            "std": float(np.std(values, ddof=1)) if n > 1 else None}


def _configurations(trials: Any) -> list[dict[str, Any]]:
    metrics = _metric_columns(trials)
    out: dict[str, dict[str, Any]] = {}
    for row in trials.to_dict("records"):
        variant = row.get("variant") or MAIN_VARIANT
        key = config_key(variant, row["head"], row["s"], row["m"])
        config = out.setdefault(key, {
            "key": key, "variant": variant, "head": row["head"], "s": _number(row["s"]),
            "m": _number(row["m"]), "num_classes": _int(row.get("num_classes")),
            "embedding_dim": _int(row.get("embedding_dim")), "seeds": {}})
        config["seeds"][str(int(row["seed"]))] = {
            "state": row["state"],
            "metrics": {c: _number(row[c]) for c in metrics if _number(row[c]) is not None}}
    for config in out.values():
        config["seeds"] = dict(sorted(config["seeds"].items(), key=lambda kv: int(kv[0])))
        complete = [s["metrics"] for s in config["seeds"].values() if s["state"] == "complete"]
        names = sorted({name for m in complete for name in m})
        config["metrics"] = {name: _summary([m[name] for m in complete if name in m])
                             for name in names}
    return list(out.values())


def _int(x: Any) -> int | None:
    value = _number(x)
    return None if value is None else int(value)


def _verdicts(run_dir: Path) -> list[dict[str, Any]]:
    from adastudy import claims

    out = []
    for verdict in claims.evaluate(run_dir):
        out.append({"claim": verdict.claim_id, "verdict": verdict.verdict,
                    "reason": verdict.reason,
                    "parts": [part.to_json() for part in verdict.parts]})
    return out


def make_baseline(run_dir: str | Path, *, subset: bool = False) -> dict[str, Any]:
    """The baseline of a run folder (see the module's doc). Raises BaselineError for a
    folder that is no run (no manifest, no trials)."""
    run_dir = Path(run_dir)
    manifest = store.read_manifest(run_dir) if run_dir.is_dir() else None
    if manifest is None:
        raise BaselineError(f"{run_dir}: not a run folder (no {store.MANIFEST_FILE}); give "
                            "the folder a sweep wrote")
    if (manifest.get("runs") or [{}])[-1].get("interrupted"):
        raise BaselineError(f"{run_dir}: its last sweep was interrupted, so trials are "
                            "missing; run the sweep again to finish it, then make the "
                            "baseline")
    trials, _ = store.load_tables(run_dir)
    if trials.empty:
        raise BaselineError(f"{run_dir}: the run has no finished trials yet")
    spec = manifest.get("spec") or {}
    study = spec.get("study") or {}
    last = (manifest.get("runs") or [{}])[-1]
    engine = {k: v for k, v in last.items()
              if k not in ("started_at", "ended_at", "argv", "interrupted", "determinism")}
    return {
        "format": BASELINE_FORMAT, "version": BASELINE_VERSION,
        "created_at": _now(), "adastudy": __version__,
        "study": manifest.get("study"), "spec_digest": manifest.get("spec_digest"),
        "spec": spec, "metric": study.get("metric", "verification_accuracy"),
        "direction": study.get("direction", "maximize"), "subset": subset,
        "run": {"run_dir": str(run_dir), "started_at": manifest.get("started_at"),
                "engine": engine},
        "environment": manifest.get("environment") or {},
        "determinism": manifest.get("determinism") or last.get("determinism") or {},
        "configurations": _configurations(trials),
        "verdicts": _verdicts(run_dir),
    }


def write_baseline(baseline: dict[str, Any], path: str | Path, *, force: bool = False
                   ) -> Path:
    """Write `baseline` to `path` atomically; an existing file is refused unless
    `force` (a baseline is a reference: replacing one is a decision)."""
    path = Path(path)
    if path.exists() and not force:
        raise BaselineError(f"{path}: exists; give another --out, or --force to replace "
                            "the baseline")
    if path.exists() and not path.is_file():
        raise BaselineError(f"{path}: exists and is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return store.atomic_write_text(path, json.dumps(baseline, indent=1,
                                                        allow_nan=False) + "\n")
    except OSError as exc:
        raise BaselineError(f"{path}: cannot write ({exc.strerror or exc})") from None


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline file, checked: JSON, this format, a known version, every key there,
    each configuration well formed. Raises BaselineError with one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read ({exc})") from None
    try:
        baseline = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(baseline, dict) or baseline.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{path}: not an adastudy baseline (no \"format\": "
                            f"\"{BASELINE_FORMAT}\"); make one with adastudy baseline RUN_DIR")
    version = baseline.get("version")
    if version != BASELINE_VERSION:
        raise BaselineError(f"{path}: baseline version {version!r} is unknown to this "
                            f"adastudy (it reads version {BASELINE_VERSION})")
    missing = [key for key in _REQUIRED if key not in baseline]
    if missing:
        raise BaselineError(f"{path}: the baseline lacks {', '.join(missing)}")
    problem = _shape_problem(baseline)
    if problem:
        raise BaselineError(f"{path}: {problem}")
    return baseline


def _shape_problem(baseline: dict[str, Any]) -> str | None:
    if not isinstance(baseline["configurations"], list) or not baseline["configurations"]:
        return "configurations: must be a non-empty list"
    for i, config in enumerate(baseline["configurations"]):
        where = f"configurations[{i}]"
        if not isinstance(config, dict):
            return f"{where}: must be an object"
        for key in ("key", "variant", "head", "seeds", "metrics"):
            if key not in config:
                return f"{where}: lacks {key!r}"
        if not isinstance(config["seeds"], dict) or not isinstance(config["metrics"], dict):
            return f"{where}: seeds and metrics must be objects"
        for seed, run in config["seeds"].items():
            if not (isinstance(run, dict) and isinstance(run.get("state"), str)
                    and isinstance(run.get("metrics"), dict)):
                return f"{where}.seeds.{seed}: must have a state and metrics"
            for name, value in run["metrics"].items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    return f"{where}.seeds.{seed}.metrics.{name}: not a number"
    if not isinstance(baseline["verdicts"], list):
        return "verdicts: must be a list"
    for i, verdict in enumerate(baseline["verdicts"]):
        if not (isinstance(verdict, dict) and {"claim", "verdict"} <= set(verdict)
                and isinstance(verdict.get("parts", []), list)):
            return f"verdicts[{i}]: must have a claim, a verdict and parts"
    return None


def check_baseline(baseline: dict[str, Any], study: StudySpec, path: str | Path = "baseline"
                   ) -> None:
    """Refuse a baseline of another spec, or a [reproduce] gate on a metric it lacks."""
    digest = study.digest()
    if baseline["spec_digest"] != digest:
        raise BaselineError(
            f"{path}: made from another spec (digest {str(baseline['spec_digest'])[:12]}, "
            f"this spec's is {digest[:12]}); make a new baseline from a run of this spec "
            "with adastudy baseline RUN_DIR --out FILE")
    known = {name for c in baseline["configurations"] for s in c["seeds"].values()
             for name in s["metrics"]}
    for name in study.reproduce.metrics:
        if name not in known:
            raise BaselineError(f"reproduce.metrics.{name}: the baseline has no such metric "
                                f"(it has {', '.join(sorted(known)[:12])}, ...)")


def expected_keys(study: StudySpec) -> list[str]:
    """The configuration keys a (subset) study runs: those of its grid trials."""
    return list(dict.fromkeys(config_key(t.variant, t.head, t.s, t.m)
                              for t in study.trials()))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
