"""One registration per claim, its parts, and how the parts decide the claim.

A claim function maps `Evidence` to an `Outcome`: its parts (one per setting it was
tested on: a variant and a head) and the numbers that decided them. `@claim` registers
the function under its id with its text, the figure that shows its evidence and its
basis (analytic, measured or both), and turns its outcome into a `Verdict`:

- each part brings two one-sided p-values, for the claim and against it (or a verdict
  the data fix exactly, or "not tested");
- the parts of one claim are one family: both sets of p-values are adjusted with Holm's
  method over the parts that ran a test, and each part's verdict is judged on the
  adjusted values (`adastudy.stats.judge`);
- the claim is "not supported" when a part is, "supported" when every tested part is,
  "not tested" when no part could be tested, and "inconclusive" otherwise.

A claim whose evidence lacks a column of the run's tables is "not tested", and says
which column; it never raises.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from adastudy import stats
from adastudy.claims.evidence import Config, Evidence, MissingField, where

__all__ = ["runs", "CLAIMS", "REGISTRY", "VERDICTS", "ClaimInfo", "Outcome", "Part", "Verdict",
           "claim", "decide", "make_part"]

VERDICTS = ("supported", "not supported", "inconclusive", "not tested")

Basis = Literal["analytic", "measured", "analytic and measured"]


@dataclass(frozen=True)
class Part:
    """The claim tested on one setting: a variant (its C and embedding dimension D) and
    a head. `estimate` and `interval` are the quantity judged against `threshold`;
    `versus` names the configuration it was compared with; `text` says what was
    measured (the verdict is appended when the family is decided)."""

    variant: str
    head: str | None
    text: str
    verdict: str = "inconclusive"
    estimate: float = math.nan
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    versus: str | None = None
    num_classes: int | None = None
    embedding_dim: int | None = None
    n_runs: int = 0
    n_diverged: int = 0
    n_failed: int = 0
    method: str = ""
    p_for: float = math.nan
    p_against: float = math.nan
    p_for_adjusted: float = math.nan
    p_against_adjusted: float = math.nan
    #: A verdict the data fix without a test ("not tested", or a fact: a divergence).
    fixed: str | None = None
    #: A few words for a table cell when the estimate alone would mislead ("ran away
    #: 6/6", "never reached"); empty: the estimate speaks.
    short: str = ""

    @property
    def where(self) -> str:
        """"adacos-dynamic [c1000]", or the variant alone for a part without a head."""
        return f"{self.head or 'all heads'}{where(self.variant)}"

    def to_json(self) -> dict[str, Any]:
        """The fields scripts read (`adastudy report --json`)."""
        def number(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "head": self.head, "variant": self.variant, "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim, "verdict": self.verdict,
            "estimate": number(self.estimate),
            "interval": None if self.interval is None else [number(v) for v in self.interval],
            "threshold": number(self.threshold), "versus": self.versus,
            "n_runs": self.n_runs, "n_diverged": self.n_diverged, "n_failed": self.n_failed,
            "p_for": number(self.p_for_adjusted), "p_against": number(self.p_against_adjusted),
            "method": self.method, "text": self.text, "short": self.short,
        }


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict: `numbers` are the values that decided it (floats, ints or
    short strings), `figure` the id of the report figure that shows the evidence,
    `parts` each setting's verdict, `basis` whether it is an analytic check."""

    claim_id: str
    verdict: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    figure: str | None = None
    parts: tuple[Part, ...] = ()
    basis: Basis = "measured"
    #: The reason's opening sentence (how the claim is checked, the tested range), or
    #: what to add to the study when nothing could be tested.
    lead: str = ""

    @property
    def claim(self) -> str:
        return CLAIMS[self.claim_id]

    @property
    def family(self) -> str:
        """How the parts were combined, for the report."""
        tested = [p for p in self.parts if p.verdict != "not tested"]
        if len(tested) < 2:
            return ""
        return (f"{len(tested)} parts, one family: their tests are Holm-corrected; the "
                "claim holds when every part supports it and fails when any part "
                "contradicts it.")


@dataclass(frozen=True)
class Outcome:
    """What a claim function returns: its parts, the deciding numbers, and the reason to
    give when the study has nothing the claim applies to (`untested`: what to add).
    `lead` opens the reason (e.g. "Analytic: ...", or why the parts are not tested)."""

    parts: list[Part]
    numbers: dict[str, Any] = field(default_factory=dict)
    untested: str = ""
    lead: str = ""


@dataclass(frozen=True)
class ClaimInfo:
    claim_id: str
    text: str
    figure: str | None
    basis: Basis
    judge: Callable[[Evidence], Verdict]


#: Every claim, by id, in registration order (C1 … C10).
REGISTRY: dict[str, ClaimInfo] = {}
#: The claims' texts by id (the paper's claims C1-C10).
CLAIMS: dict[str, str] = {}


def runs(n: int) -> str:
    """"1 run", "6 runs": a count of runs as a sentence says it."""
    return f"{n} run" if n == 1 else f"{n} runs"


def claim(claim_id: str, text: str, *, figure: str | None, basis: Basis = "measured"
          ) -> Callable[[Callable[[Evidence], Outcome]], Callable[[Evidence], Verdict]]:
    """Register a claim function (Evidence → Outcome) as the judge of `claim_id`."""
    def register(function: Callable[[Evidence], Outcome]) -> Callable[[Evidence], Verdict]:
        @functools.wraps(function)
        def judge(ev: Evidence) -> Verdict:
            try:
                outcome = function(ev)
            except (MissingField, KeyError) as missing:
                name = missing.name if isinstance(missing, MissingField) else missing.args[0]
                if isinstance(missing, KeyError) and _present(ev, name):
                    raise  # not a field the records lack: a bug, and it must show
                return Verdict(claim_id, "not tested", (
                    f"The run's records lack the field {name!r} that this claim needs "
                    "(a run written by an older adastudy, or a trial that did not log "
                    "it)."), {}, figure, (), basis)
            return decide(claim_id, outcome, figure, basis)

        REGISTRY[claim_id] = ClaimInfo(claim_id, text, figure, basis, judge)
        CLAIMS[claim_id] = text
        return judge

    return register


def _present(ev: Evidence, name: Any) -> bool:
    """Whether `name` is a column of the run's tables."""
    return name in ev.trials.columns or name in ev.series.columns


def make_part(
    ev: Evidence,
    variant: str,
    head: str | None,
    text: str,
    *,
    estimate: stats.Estimate | None = None,
    threshold: float | None = None,
    supports: Literal["above", "below"] = "above",
    fixed: str | None = None,
    runs: Config | list[Config] | None = None,
    versus: str | None = None,
    p: tuple[float, float] | None = None,
) -> Part:
    """A part from its estimate: the claim holds on the `supports` side of `threshold`.
    With `fixed` ("supported", "not supported" or "not tested") the data decide
    without a test; `p` = (p_for, p_against) replaces the estimate's own p-values when
    the part tests several estimates at once. `runs` (one or more configurations) give
    the run counts."""
    groups = [runs] if isinstance(runs, Config) else list(runs or [])
    counts = {"n_runs": sum(c.n_runs for c in groups),
              "n_diverged": sum(c.n_diverged for c in groups),
              "n_failed": sum(c.n_failed for c in groups)}
    p_for = p_against = math.nan
    value, interval, method = math.nan, None, ""
    if estimate is not None:
        value, method = estimate.value, estimate.method
        box = estimate.interval()
        interval = (box.low, box.high) if box.known else None
        if threshold is not None and fixed is None:
            above, below = estimate.p_above(threshold), estimate.p_below(threshold)
            p_for, p_against = (above, below) if supports == "above" else (below, above)
    if p is not None and fixed is None:  # a test of several estimates (its own p-values)
        p_for, p_against = p
    if fixed == "supported":
        p_for, p_against = 0.0, 1.0
    elif fixed == "not supported":
        p_for, p_against = 1.0, 0.0
    return Part(variant, head, text, estimate=value, interval=interval, threshold=threshold,
                versus=versus, num_classes=ev.num_classes(variant, required=False),
                embedding_dim=ev.embedding_dim(variant), method=method, p_for=p_for,
                p_against=p_against, fixed=fixed, **counts)


def decide(claim_id: str, outcome: Outcome, figure: str | None, basis: Basis) -> Verdict:
    """The family's verdicts (Holm over the tested parts) and the claim's."""
    tested = [i for i, p in enumerate(outcome.parts) if p.fixed != "not tested"]
    adjusted_for = stats.holm([outcome.parts[i].p_for for i in tested])
    adjusted_against = stats.holm([outcome.parts[i].p_against for i in tested])
    # The size of each family (a part without a p-value ran no test).
    k = (sum(1 for i in tested if math.isfinite(outcome.parts[i].p_for)),
         sum(1 for i in tested if math.isfinite(outcome.parts[i].p_against)))
    parts = list(outcome.parts)
    for j, i in enumerate(tested):
        part = parts[i]
        verdict = part.fixed or stats.judge(adjusted_for[j], adjusted_against[j])
        parts[i] = replace(part, verdict=verdict, p_for_adjusted=adjusted_for[j],
                           p_against_adjusted=adjusted_against[j],
                           text=_with_verdict(part, verdict, adjusted_for[j],
                                              adjusted_against[j], k))
    for i, part in enumerate(parts):
        if part.fixed == "not tested":
            parts[i] = replace(part, verdict="not tested",
                               text=f"{part.where}: {part.text} (not tested)")
    verdicts = [p.verdict for p in parts if p.verdict != "not tested"]
    if not verdicts:
        verdict = "not tested"
    elif "not supported" in verdicts:
        verdict = "not supported"
    elif all(v == "supported" for v in verdicts):
        verdict = "supported"
    else:
        verdict = "inconclusive"
    lead = outcome.lead
    if not parts and outcome.untested:
        lead = f"{outcome.untested} {lead}".strip()
    reason = " ".join(t for t in [lead, *(p.text for p in parts)] if t).strip()
    return Verdict(claim_id, verdict, reason or "Nothing to test.", dict(outcome.numbers),
                   figure, tuple(parts), basis, lead)


def _with_verdict(part: Part, verdict: str, p_for: float, p_against: float,
                  k: tuple[int, int]) -> str:
    """The part's text with its verdict, and the p-values when Holm changed it (`k`:
    the sizes of the two families, for and against)."""
    text = f"{part.where}: {part.text} ({verdict}"
    raw_verdict = stats.judge(part.p_for, part.p_against)
    if part.fixed is None and raw_verdict != verdict:
        side = raw_verdict == "supported"
        raw, adjusted = (part.p_for, p_for) if side else (part.p_against, p_against)
        text += (f"; p = {raw:.3g} alone would pass, {adjusted:.3g} after Holm over "
                 f"{k[0] if side else k[1]} parts does not")
    return text + ")."
