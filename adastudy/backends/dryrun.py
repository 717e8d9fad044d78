"""`adastudy sweep SPEC --dry-run`: what a sweep would run, and about how long it takes.

    plan(study)                    ->  [PlanRow]: trials per variant and head
    estimate(study, workers=1)     ->  Estimate: the plan with a pilot-based wall time

The estimate comes from one pilot trial per variant (a variant is one data, model and
train setting), run in this process and written nowhere: the data are built (timed),
the variant's first trial trains one epoch to warm up, then the whole trial (timed).
A sweep then costs each variant's data once and its pilot's time per trial. It is an
estimate: pruned trials end sooner, other heads and seeds cost a little more or less,
several workers share the cores, and a busy machine's speed moves.

A variant on face data on disk (RecordIO, folders) gets no pilot: one trial there takes
hours. Its estimate is in GPU-hours instead, from what one trial trains on (`epochs` ×
the images: counted on disk, or `data.expected_images` where the files are not on this
machine) and from the backbone's cost: its forward multiply-adds per image (counted
here, on the meta device) against insightface's published training throughput
(`REFERENCE_GPU_GMACS_PER_S`). It is a reference figure for one data-centre GPU of
insightface's logs, not a measurement of this machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adastudy import store
from adastudy.backends import RunFolderError
from adastudy.backends.sweep import Plan, PlanRow, RecordIndex
from adastudy.spec import FILE_DATASETS, StudySpec

__all__ = ["REFERENCE_GPU_GMACS_PER_S", "Estimate", "PlanRow", "Pilot", "estimate",
           "finished_keys", "forward_gmacs", "images_on_disk", "plan"]


#: Multiply-adds per second one GPU gets through in training, from insightface's
#: arcface_torch README ("Training on Multi-Host GPU"): IResNet-50 at 512 samples per GPU
#: on 8 GPUs trains about 5,900 samples/s with mixed precision (WebFace42M, partial FC
#: 0.2), i.e. 737 samples/s per GPU, for a forward of 6.3 G multiply-adds per 112 × 112
#: image (their figure; `forward_gmacs` counts 6.31 G).
REFERENCE_GPU_GMACS_PER_S = 5_900 / 8 * 6.3


@dataclass(frozen=True)
class Pilot:
    """One variant's pilot: the time to build its data and to run one whole trial.

    `basis` "pilot": both timed here; "reference" (face data on disk): `trial_s` is
    `gpu_hours` of one trial at insightface's throughput (NaN when the image count is
    unknown), `data_s` 0."""

    variant: str
    head: str
    data_s: float  #: building the dataset (once per worker process and variant)
    trial_s: float  #: one whole trial, after a warm-up
    basis: str = "pilot"
    #: "reference" only: training images, where they come from ("disk" or
    #: "data.expected_images", None when unknown), the backbone's forward G multiply-adds.
    images: int | None = None
    images_from: str | None = None
    gmacs: float | None = None


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
    def gpu_hours(self) -> float | None:
        """GPU-hours of the variants on face data on disk (`basis` "reference"); None
        when the study has none."""
        reference = {v for v, p in self.pilots.items() if p.basis == "reference"}
        if not reference:
            return None
        return sum(r.trials * self.pilots[r.variant].trial_s for r in self.rows
                   if r.variant in reference and r.trials) / 3600.0

    @property
    def finished(self) -> int:
        return sum(r.finished for r in self.rows)

    def to_json(self) -> dict:
        return {
            "trials": self.trials, "finished": self.finished, "workers": self.workers,
            "estimated_wall_s": self.wall_s, "estimated_serial_s": self.serial_s,
            "estimated_gpu_hours": self.gpu_hours,
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


def forward_gmacs(model: Any, input_shape: tuple[int, ...]) -> float:
    """G multiply-adds of one forward of the backbone `model` (a `ModelSpec`) on one
    input of `input_shape`, counted on the meta device (no memory, no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from adastudy.models import build_backbone

    with torch.device("meta"):
        backbone = build_backbone(model, input_shape).eval()
        with FlopCounterMode(display=False) as counter:
            backbone(torch.empty(1, *input_shape))
    return counter.get_total_flops() / 2e9  # FLOPs count a multiply-add as two


def images_on_disk(data: Any) -> int | None:
    """The training images at `data.path` (from the RecordIO index or the folder
    listing), None when the files are not on this machine."""
    from adastudy.data.folders import ImageFolder
    from adastudy.data.recordio import RecordIOReader

    path = Path(data.path)
    if data.name == "recordio":
        rec = path / "train.rec" if path.is_dir() else path
        if not rec.is_file():
            return None
        with RecordIOReader(rec) as reader:
            return len(reader)
    return len(ImageFolder(path)) if path.is_dir() else None


def _reference(study: StudySpec, variant: str, head: str) -> Pilot:
    data, model, train = study.variant_sections(variant)
    images, images_from = images_on_disk(data), "disk"
    if images is None:
        images, images_from = data.expected_images, "data.expected_images"
    side = data.image_size
    gmacs = forward_gmacs(model, (3, side, side))
    trial_s = (math.nan if images is None
               else train.epochs * images * gmacs / REFERENCE_GPU_GMACS_PER_S)
    return Pilot(variant, head, 0.0, trial_s, "reference", images,
                 images_from if images is not None else None, gmacs)


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
        on_disk = study.variant_sections(variant)[0].name in FILE_DATASETS
        pilots[variant] = (_reference if on_disk else _pilot)(study, variant, head)
    return Estimate(rows, pilots, workers)
