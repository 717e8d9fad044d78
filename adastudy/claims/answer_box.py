"""The answer to the question a reader brings: must I tune s and m, or does AdaCos do it?

For each setting (variant) of the study, on its metric: the better untuned AdaCos head
against the best tuned head (normface, cosface or arcface), both chosen on the
validation pairs and compared on the test metric, paired over seeds, every run counted
(a diverged one at the metric's chance value); how far tuning moved the metric (the
validation-best against the validation-worst configuration); how often each head
diverged; and one sentence that says what follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from adastudy import stats, theory
from adastudy.claims.evidence import Config, Evidence, configs, pick_best
from adastudy.claims.thresholds import NEGLIGIBLE
from adastudy.claims.tuning import versus_best

__all__ = ["TUNED_HEADS", "Answer", "HeadResult", "answer", "answers", "divergence_rates",
           "divergence_sentence"]

#: Heads whose s (and m) a study tunes.
TUNED_HEADS = ("normface", "cosface", "arcface")


def _number(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class HeadResult:
    """A configuration's result: mean over every seed (diverged at chance) with its
    interval."""

    label: str
    head: str
    s: float | None
    m: float | None
    mean: float
    interval: tuple[float, float] | None
    n_runs: int
    n_diverged: int

    @classmethod
    def of(cls, ev: Evidence, config: Config) -> HeadResult:
        values = list(config.outcomes(ev, ev.metric).values())
        box = stats.mean_interval(values, ev.bounds(ev.metric))
        return cls(config.label, config.head, _number(config.s), _number(config.m), box.mean,
                   (box.low, box.high) if box.known else None, config.n_runs,
                   config.n_diverged)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "head": self.head, "s": self.s, "m": self.m,
                "mean": _number(self.mean),
                "interval": None if self.interval is None else [_number(v) for v in self.interval],
                "n_runs": self.n_runs, "n_diverged": self.n_diverged}


@dataclass(frozen=True)
class Answer:
    """The answer box of one setting (see the module docstring)."""

    variant: str
    setting: str
    num_classes: int | None
    embedding_dim: int | None
    metric: str
    direction: str
    sentence: str
    adacos: HeadResult | None = None
    tuned: HeadResult | None = None
    worst_tuned: HeadResult | None = None
    difference: float = math.nan
    difference_interval: tuple[float, float] | None = None
    difference_method: str = ""
    verdict: str = "not tested"
    divergence: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "setting": self.setting, "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim, "metric": self.metric,
            "direction": self.direction, "sentence": self.sentence,
            "adacos": self.adacos and self.adacos.to_json(),
            "tuned": self.tuned and self.tuned.to_json(),
            "worst_tuned": self.worst_tuned and self.worst_tuned.to_json(),
            "difference": {
                "estimate": _number(self.difference),
                "interval": None if self.difference_interval is None
                else [_number(v) for v in self.difference_interval],
                "method": self.difference_method, "margin": NEGLIGIBLE,
                "verdict": self.verdict,
            },
            "tuning_moved": None if not (self.tuned and self.worst_tuned)
            else _number(self.tuned.mean - self.worst_tuned.mean),
            "divergence": self.divergence,
        }


def _divergence(ev: Evidence, variant: str) -> list[dict[str, Any]]:
    out = []
    for head in theory.HEAD_NAMES:
        runs = ev.of(variant, [head])
        if len(runs):
            out.append({"head": head, "n_runs": len(runs),
                        "n_diverged": int((runs["state"] == "diverged").sum()),
                        "n_failed": int((runs["state"] == "failed").sum())})
    return out


def _one(ev: Evidence, variant: str) -> Answer | None:
    untuned = configs(ev, variant, theory.ADACOS_HEADS)
    tuned = configs(ev, variant, TUNED_HEADS)
    if not untuned and not tuned:
        return None
    setting = ev.setting(variant)
    base = dict(variant=variant, setting=setting, num_classes=ev.num_classes(variant),
                embedding_dim=ev.embedding_dim(variant), metric=ev.metric,
                direction=ev.direction, divergence=_divergence(ev, variant))
    if not untuned or not tuned:
        missing = "an AdaCos head" if not untuned else "a tuned head (normface, cosface, arcface)"
        return Answer(sentence=f"At {setting} the study has no {missing}: the answer needs "
                               "both.", **base)
    ada_pick, best_pick = pick_best(ev, untuned), pick_best(ev, tuned)
    worst_pick = pick_best(ev, tuned, worst=True)
    if ada_pick.config is None or best_pick.config is None:
        problem = ada_pick.problem or best_pick.problem
        return Answer(sentence=f"At {setting}: {problem}.", **base)
    ada, best = ada_pick.config, best_pick.config
    diff = versus_best(ev, ada, best)
    box = diff.interval()
    verdict = stats.judge(diff.p_above(-NEGLIGIBLE), diff.p_below(-NEGLIGIBLE))
    gap = f"{box.text(4)} in {ev.metric}"
    if box.known and box.low > 0:
        says = (f"untuned {ada.head} beat the best tuned head, {best.label}, by {gap}: "
                "on this data there was nothing to gain from tuning s and m")
    elif verdict == "supported":
        says = (f"untuned {ada.head} is within {NEGLIGIBLE:g} of the best tuned head, "
                f"{best.label} (difference {gap}): tuning s and m bought no more than that")
    elif verdict == "not supported":
        says = (f"untuned {ada.head} lost to the best tuned head, {best.label}, by "
                f"{-box.mean:.4f} (difference {gap}): on this data, tuning s and m pays")
    else:
        says = (f"untuned {ada.head} and the best tuned head, {best.label}, cannot be told "
                f"apart within {NEGLIGIBLE:g} at this number of seeds (difference {gap}): "
                "run more seeds")
    worst = worst_pick.config
    moved = ""
    if worst is not None and worst is not best:
        w, b = HeadResult.of(ev, worst), HeadResult.of(ev, best)
        moved = (f" Tuning moved {ev.metric} from {w.mean:.4f} ({worst.label}) to "
                 f"{b.mean:.4f} ({best.label}).")
    diverged = [f"{d['head']} {d['n_diverged']} of {d['n_runs']}" for d in base["divergence"]
                if d["n_diverged"]]
    sentence = (f"On this data ({setting}), {says}.{moved}"
                + (f" Diverged: {', '.join(diverged)}." if diverged else " No run diverged."))
    return Answer(sentence=sentence, adacos=HeadResult.of(ev, ada),
                  tuned=HeadResult.of(ev, best),
                  worst_tuned=None if worst is None or worst is best else HeadResult.of(ev, worst),
                  difference=diff.value, difference_interval=(box.low, box.high) if box.known
                  else None, difference_method=diff.method, verdict=verdict, **base)


def divergence_rates(ev: Evidence) -> list[dict[str, Any]]:
    """Per head over the whole study: its judged runs (complete or diverged), how many
    diverged, their share, and in how many of the settings it ran."""
    out = []
    for head in theory.HEAD_NAMES:
        runs = ev.trials[(ev.trials["head"] == head)
                         & ev.trials["state"].isin(["complete", "diverged"])]
        if runs.empty:
            continue
        bad = runs["state"] == "diverged"
        variants = runs["variant"] if "variant" in runs else pd.Series("main", index=runs.index)
        out.append({"head": head, "n_runs": len(runs), "n_diverged": int(bad.sum()),
                    "rate": float(bad.mean()), "n_settings": int(variants.nunique()),
                    "n_settings_diverged": int(variants[bad].nunique())})
    return out


def divergence_sentence(rates: list[dict[str, Any]]) -> str:
    """"Divergence over the whole study: adacos-dynamic 14 of 34 runs (41 %), in 6 of 17
    settings; cosface none of 34." ("" without runs)."""
    if not rates:
        return ""
    said = []
    for r in rates:
        if r["n_diverged"]:
            said.append(f"{r['head']} {r['n_diverged']} of {r['n_runs']} runs "
                        f"({r['rate']:.0%})" + (f", in {r['n_settings_diverged']} of "
                                                f"{r['n_settings']} settings"
                                                if r["n_settings"] > 1 else ""))
        else:
            said.append(f"{r['head']} none of {r['n_runs']}")
    return f"Divergence over the whole study: {'; '.join(said)}."


def answers(ev: Evidence) -> list[Answer]:
    """The answer of every setting of the study, the main one first."""
    return [a for a in (_one(ev, v) for v in ev.variants()) if a is not None]


def answer(ev: Evidence) -> dict[str, Any]:
    """The answer as JSON: the headline setting's numbers (the first with both an
    AdaCos and a tuned head, the main one when it has them), and every setting's under
    "variants"."""
    every = answers(ev)
    complete = [a for a in every if a.adacos is not None]
    headline = complete[0] if complete else (every[0] if every else None)
    rates = divergence_rates(ev)
    if headline is None:
        return {"sentence": "The study has no AdaCos or tuned head: nothing to answer.",
                "metric": ev.metric, "direction": ev.direction, "variants": [],
                "divergence_rates": rates}
    return {**headline.to_json(), "variants": [a.to_json() for a in every],
            "divergence_rates": rates}

