"""`adastudy sweep SPEC --dry-run`: what a sweep would run, and about how long it takes.

    plan(study)                    ->  [PlanRow]: trials per variant and head
    estimate(study, workers=1)     ->  Estimate: the plan with a pilot-based wall time

The estimate comes from one pilot trial per variant (a variant is one data, model and
train setting), run in this process and written nowhere: the data are built (timed),
the variant's first trial trains one epoch to warm up, then the whole trial (timed).
A sweep then costs each variant's data once and its pilot's time per trial. It is an
estimate: pruned trials end sooner, other heads and seeds cost a little more or less,
several workers share the cores, and a busy machine's speed moves. The pilots cost one
trial per variant: on paper-scale data, size the study by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from adastudy import store
from adastudy.backends import RunFolderError
from adastudy.backends.sweep import Plan, PlanRow, RecordIndex
from adastudy.spec import StudySpec

__all__ = ["Estimate", "PlanRow", "Pilot", "estimate", "finished_keys", "plan"]


@dataclass(frozen=True)
class Pilot:
    """One variant's pilot: the time to build its data and to run one whole trial."""

    variant: str
    head: str
    data_s: float  #: building the dataset (once per worker process and variant)
    trial_s: float  #: one whole trial, after a warm-up


@dataclass(frozen=True)
class Estimate:
    rows: list[PlanRow]
    pilots: dict[str, Pilot] = field(default_factory=dict)
    workers: int = 1

    @property
    def trials(self) -> int:
        return sum(r.trials for r in self.rows)

    @property
    def serial_s(self) -> float:
        """Every trial one after the other, each variant's data built once."""
        return sum(p.data_s for p in self.pilots.values()) + sum(
            r.trials * self.pilots[r.variant].trial_s for r in self.rows if r.trials)

    @property
    def wall_s(self) -> float:
        """With `workers` trials at once: each worker builds the data it needs, the
        trials share the workers (and the cores: that slowdown is not modelled)."""
        data = sum(p.data_s for p in self.pilots.values())
        return data + (self.serial_s - data) / max(1, self.workers)

    @property
    def finished(self) -> int:
        return sum(r.finished for r in self.rows)

    def to_json(self) -> dict:
        return {
            "trials": self.trials, "finished": self.finished, "workers": self.workers,
            "estimated_wall_s": self.wall_s, "estimated_serial_s": self.serial_s,
            "plan": [vars(r) for r in self.rows],
            "pilots": {v: vars(p) for v, p in self.pilots.items()},
            "note": "an estimate from one pilot trial per variant",
        }


def _index(study: StudySpec, run_dir: Path | None) -> RecordIndex | None:
    """What a run folder has finished already (a resumed sweep skips it), from one
    listing. A folder made from another spec is refused, as the sweep would refuse it."""
    if run_dir is None or not Path(run_dir).is_dir():
        return None
    manifest = store.read_manifest(Path(run_dir))
    if manifest is not None and manifest.get("spec_digest") != study.digest():
        raise RunFolderError(f"{run_dir}: was made from another spec "
                             f"({manifest.get('spec_path', '?')}); give --out a new folder")
    index = RecordIndex(Path(run_dir))
    index.refresh()
    return index


def finished_keys(study: StudySpec, run_dir: Path | None) -> set[str]:
    """The keys of the trials a run folder has finished already."""
    index = _index(study, run_dir)
    return set() if index is None else index.keys()


def plan(study: StudySpec, run_dir: Path | None = None) -> list[PlanRow]:
    """The trials a sweep of `study` runs, per variant and head, in the spec's order
    (`sweep.Plan.rows`), less what `run_dir` finished already."""
    return Plan(study).rows(_index(study, run_dir))


def _pilot(study: StudySpec, variant: str, head: str) -> Pilot:
    from adastudy.data import build_trial_data
    from adastudy.train import run_trial

    trial = study.trial(head, seed=study.study.seeds[0], variant=variant)
    started = time.perf_counter()
    data = build_trial_data(trial)
    data_s = time.perf_counter() - started
    # Warm-up (one epoch): a sweep's first trial pays it once, its others do not.
    run_trial(trial.model_copy(update={"train": trial.train.model_copy(
        update={"epochs": 1})}), data=data)
    started = time.perf_counter()
    run_trial(trial, data=data)
    return Pilot(variant, head, data_s, time.perf_counter() - started)


def estimate(study: StudySpec, workers: int = 1, run_dir: Path | None = None) -> Estimate:
    """The plan (less what `run_dir` finished already) with a wall-time estimate from
    one pilot per variant that has trials to run (see the module docstring). Writes
    nothing."""
    rows = plan(study, run_dir)
    pilots = {}
    for variant in dict.fromkeys(r.variant for r in rows if r.trials):
        head = next(r.head for r in rows if r.variant == variant)
        pilots[variant] = _pilot(study, variant, head)
    return Estimate(rows, pilots, workers)
