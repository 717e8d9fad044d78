"""The study spec: a TOML file, validated with pydantic.

This module is the schema only (it imports nothing of adastudy but its errors and the
heads' names and parameter checks from `theory`), so the data, trial and study layers
can all take its models as arguments. Every validation error is one line naming the file
and the key:

    studies/x.toml: train.lr: must be > 0, got -1

Sections: `[study]`, `[heads.<name>]`, `[search]` (the sweep), `[data]`, `[model]`,
`[train]` (each trial), and `[variants.<name>]`: the same heads again on other data (a
number of classes, images instead of features), given as overrides of `[data]`,
`[model]` and `[train]`. Unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from adastudy.errors import AdastudyError, ParameterError
from adastudy.theory import HEAD_DEFAULTS, HEAD_NAMES, check_head_params

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "MAIN_VARIANT",
    "METRIC_CHANCE",
    "STUDY_METRICS",
    "BACKBONE_NAMES",
    "DATASETS",
    "FACE_BACKBONES",
    "EMBEDDED_ONLY_METRICS",
    "FILE_DATASETS",
    "SET_METRIC_PREFIX",
    "ClaimsSection",
    "DataSection",
    "DataSpec",
    "DigitsData",
    "EvalSet",
    "FolderData",
    "RecordIOData",
    "SyntheticData",
    "HeadGrid",
    "Range",
    "ModelSpec",
    "SearchSpec",
    "SpecError",
    "StudySection",
    "StudySpec",
    "TrainSpec",
    "TrialSpec",
    "Variant",
    "load",
    "metric_bounds",
    "parse",
]


class SpecError(AdastudyError):
    """A study spec that cannot be read or does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SyntheticData(_Section):
    """`[data] name = "synthetic"`: seeded identities, open set, as features or images."""

    name: Literal["synthetic"] = "synthetic"
    #: "features" (vectors; an MLP trains in seconds) or "images" (needs a CNN).
    form: Literal["features", "images"] = "features"
    #: Training identities (classes), 10 … 100,000 (synthetic).
    identities: int = Field(100, ge=10, le=100_000)
    images_per_identity: int = Field(20, ge=2, le=10_000)
    #: Held-out identities for verification and identification (never trained on).
    eval_identities: int = Field(100, ge=10, le=100_000)
    eval_images_per_identity: int = Field(10, ge=2, le=1_000)
    #: Intra-class spread: standard deviation of a sample around its identity, relative
    #: to the typical distance between identities.
    spread: float = Field(0.35, gt=0.0, le=5.0)
    #: Dimension of the synthetic feature vectors.
    feature_dim: int = Field(64, ge=2, le=4096)
    #: Side of the square synthetic images, in pixels.
    image_size: int = Field(32, ge=16, le=128)
    #: LFW-style pairs: half same, half different, in 10 folds (a multiple of 20).
    val_pairs: int = Field(600, ge=20, le=1_000_000, multiple_of=20)
    test_pairs: int = Field(6000, ge=20, le=1_000_000, multiple_of=20)
    #: Extra identities in the identification gallery that no probe belongs to.
    distractors: int = Field(1000, ge=0, le=1_000_000)
    #: Seed of the dataset; the same for every trial of a study (trials vary `seed`).
    seed: int = Field(0, ge=0)


class DigitsData(_Section):
    """`[data] name = "digits"`: scikit-learn's bundled 8x8 digits, closed set (10 classes)."""

    name: Literal["digits"] = "digits"
    form: Literal["features", "images"] = "features"
    val_pairs: int = Field(600, ge=20, le=1_000_000, multiple_of=20)
    test_pairs: int = Field(6000, ge=20, le=1_000_000, multiple_of=20)
    #: Seed of the stratified split and of the pairs.
    seed: int = Field(0, ge=0)


class _FaceFiles(_Section):
    """Aligned face images on disk, read by a DataLoader (see `adastudy.data.faces`)."""

    #: The data on disk. A relative path in a spec file is relative to that file's folder.
    path: str = Field(min_length=1)
    #: Side of the square images a model sees, in pixels; images of another size are
    #: resized (insightface's sets are aligned at 112 × 112).
    image_size: int = Field(112, ge=8, le=512)
    #: DataLoader worker processes that decode the images; None: from the cores
    #: (`adastudy.data.faces.default_workers`), 0: decode in the trial's process.
    workers: int | None = Field(None, ge=0, le=64)
    #: Random horizontal flip of training images (a face's mirror is the same identity).
    flip: bool = True
    #: Corrupt training samples skipped before the trial fails; None: 0.1 % of them.
    max_corrupt: int | None = Field(None, ge=0)
    #: `study.selection = "holdout"`: identities held out of training, whose images
    #: give the validation pairs (they are never trained on).
    val_identities: int = Field(50, ge=2, le=1_000_000)
    val_pairs: int = Field(600, ge=20, le=1_000_000, multiple_of=20)
    #: Seed of the held-out identities and their pairs.
    seed: int = Field(0, ge=0)
    #: The images `path` holds, for `sweep --dry-run`'s GPU-hours where the files are
    #: not on this machine (the count on disk wins). Changes no trial: not in the digest.
    expected_images: int | None = Field(None, ge=1)


class RecordIOData(_FaceFiles):
    """`[data] name = "recordio"`: insightface's `train.rec` + `train.idx` (`path`: the
    .rec, or the folder holding train.rec)."""

    name: Literal["recordio"] = "recordio"


class FolderData(_FaceFiles):
    """`[data] name = "folder"`: one sub-folder of images per identity (`path`: the root)."""

    name: Literal["folder"] = "folder"


#: The training data sets, by `[data] name`: each takes only its own keys.
DATASETS: dict[str, type[_Section]] = {
    "synthetic": SyntheticData, "digits": DigitsData,
    "recordio": RecordIOData, "folder": FolderData,
}
#: Datasets read from the user's files (the others are built in memory).
FILE_DATASETS = ("recordio", "folder")


def _dataset_name(value: Any) -> str:
    """The discriminator of `[data]`: its `name`, "synthetic" when left out."""
    if isinstance(value, dict):
        return value.get("name", "synthetic")
    return getattr(value, "name", "synthetic")


DataSection = Annotated[
    Annotated[SyntheticData, Tag("synthetic")]
    | Annotated[DigitsData, Tag("digits")]
    | Annotated[RecordIOData, Tag("recordio")]
    | Annotated[FolderData, Tag("folder")],
    Discriminator(_dataset_name),
]
_DATA_ADAPTER: TypeAdapter[Any] = TypeAdapter(DataSection)

#: Keys of `[data]` before it became one table per dataset, with their defaults: the
#: digest of an embedded dataset's spec is taken over these, so it did not change.
_LEGACY_DATA = SyntheticData().model_dump(mode="json")


def DataSpec(**values: Any) -> Any:  # noqa: N802 - it was a class, and callers build it so
    """`[data]` from keyword arguments: the section of the dataset `name` (default
    "synthetic"), e.g. `DataSpec(name="digits", seed=1)`. Raises pydantic's
    `ValidationError` for a key that dataset does not take."""
    return _DATA_ADAPTER.validate_python(values)


class EvalSet(_Section):
    """`[eval.<name>]`: a verification set scored at the end of every trial, e.g.
    `[eval.lfw] path = "lfw.bin"`: an insightface `.bin`, or an LFW `pairs.txt` over the
    image folder `images` (default: the folder holding the pairs file). A relative path
    in a spec file is relative to that file's folder. Loading a `.bin` unpickles it,
    which runs code: name only files you trust."""

    path: str = Field(min_length=1)
    images: str | None = Field(None, min_length=1)


#: The backbones `[model] name` takes (`adastudy.models.BACKBONES` registers each one):
#: the small models of the embedded data and insightface's face backbones.
BACKBONE_NAMES = ("mlp", "cnn", "iresnet18", "iresnet34", "iresnet50", "iresnet100",
                  "mobilefacenet")
#: The backbones for 112 × 112 aligned faces, whose embedding is 512-d unless set.
FACE_BACKBONES = ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet")
#: insightface's embedding size, the face backbones' default `model.embedding_dim`.
FACE_EMBEDDING_DIM = 512


class ModelSpec(_Section):
    """`[model]`: the backbone ending in an embedding."""

    #: "auto" picks the MLP for feature vectors and the CNN for images; the face
    #: backbones (`FACE_BACKBONES`) take 3 × 112 × 112 images.
    name: Literal[("auto", *BACKBONE_NAMES)] = "auto"  # type: ignore[valid-type]
    #: Default 64, or 512 (insightface's) for the face backbones.
    embedding_dim: int = Field(64, ge=2, le=4096)
    #: MLP hidden widths.
    hidden: tuple[int, ...] = (256, 256)
    #: CNN channels per stage (each stage halves the resolution).
    channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: What ends the backbone after its last linear layer: "batchnorm" (the BN-neck of
    #: face-recognition backbones, which keeps the embedding centred: the non-target
    #: cosines' mean stays near 0) or "none" (the mean drifts; dynamic AdaCos's scale
    #: then loses its fixed point sooner, see `theory.min_stable_effective_dim`).
    embedding_norm: Literal["batchnorm", "none"] = "batchnorm"

    @model_validator(mode="before")
    @classmethod
    def _face_embedding_default(cls, values: Any) -> Any:
        # Only when the key is left out, so a spec that sets it keeps its value (and the
        # small models' specs their digest).
        if isinstance(values, dict) and values.get("name") in FACE_BACKBONES:
            values = {"embedding_dim": FACE_EMBEDDING_DIM, **values}
        return values

    @model_validator(mode="after")
    def _positive_widths(self) -> ModelSpec:
        for key in ("hidden", "channels"):
            values = getattr(self, key)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{key}: must be a non-empty list of integers >= 1")
        return self


class TrainSpec(_Section):
    """`[train]`: the optimisation of one trial."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=2, le=65_536)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=100.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    #: "step" schedule: epochs at which the learning rate is multiplied by `gamma`.
    milestones: tuple[float, ...] = ()
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    #: Training statistics are read from the device every `log_every` steps.
    log_every: int = Field(20, ge=1)
    #: Validation verification accuracy every `eval_every` epochs (0: only at the end).
    eval_every: int = Field(1, ge=0)
    #: Report the first step at which θ_med falls below each of these angles.
    theta_levels_deg: tuple[float, ...] = (60.0, 45.0, 30.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Train one trial on this many devices with DistributedDataParallel (one GPU per
    #: rank on CUDA, processes on the CPU): each rank takes batch_size / devices rows of
    #: every batch, and the result equals the 1-device trial's (`adastudy.distributed`).
    devices: int = Field(1, ge=1, le=64)
    #: Mixed precision on CUDA (the head's math stays float32): "bf16", "fp16" (with a
    #: gradient scaler) or "none"; true (the default): bf16 where the GPU supports it,
    #: else fp16; false: "none". Nothing changes on the CPU.
    amp: Literal[True, False, "bf16", "fp16", "none"] = True
    #: Evaluate images with their horizontal flip summed in (insightface protocol).
    flip_eval: bool = True
    #: Write a checkpoint every `checkpoint_every` epochs (RUN_DIR/checkpoints/), from
    #: which a rerun of the sweep resumes a killed trial; 0: never; None (the default):
    #: every epoch when the first epoch took more than a minute.
    checkpoint_every: int | None = Field(None, ge=0, le=10_000)
    #: Guards for dynamic AdaCos, off by default (the paper's method has none); they
    #: change nothing for the other heads.
    #: A ceiling on the dynamic scale: s(t) = min(k · ln B_avg, adacos_scale_max). The
    #: trial records how many steps it bound; the report keeps such runs apart.
    adacos_scale_max: float | None = Field(None, gt=0.0, le=1e4)
    #: End a trial as diverged ("stability guard") once `stability_stop_windows` log
    #: windows in a row had the scale update's slope above 1 while s grew (the point of
    #: no return of the run-away, see `heads.STATISTICS`'s update_slope), instead of
    #: training on until s passes 1e4.
    stability_stop_windows: int | None = Field(None, ge=1, le=10_000)
    #: Deterministic mode (`--deterministic`): deterministic algorithms only
    #: (`torch.use_deterministic_algorithms`), cuDNN without autotuning, cuBLAS with a
    #: fixed workspace, Python's and NumPy's generators seeded too (`train.determinism`).
    #: It changes how a trial runs, not what it is: not in the spec's digest, and
    #: recorded in the run's manifest.
    deterministic: bool = False

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size: {self.batch_size} does not split into "
                             f"train.devices = {self.devices} equal shards")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs: must be < epochs ({self.epochs}), got {self.warmup_epochs:g}"
            )
        if any(not 0 < e < self.epochs for e in self.milestones):
            raise ValueError(f"milestones: must lie in (0, epochs = {self.epochs})")
        if any(not 0 < t < 180 for t in self.theta_levels_deg):
            raise ValueError("theta_levels_deg: must lie in (0, 180) degrees")
        return self


#: Final metrics a study may rank its trials by (TrialResult.metrics keys).
STUDY_METRICS = (
    "verification_accuracy", "rank1", "val_accuracy", "tar_at_far_1e-02", "tar_at_far_1e-03",
)


#: The final metric of the `[eval.<name>]` set `name` is this prefix + name (and + "_std").
SET_METRIC_PREFIX = "verification_accuracy_"
#: Final metrics that only the embedded datasets have (impostor and identification sets).
EMBEDDED_ONLY_METRICS = ("rank1", "tar_at_far_1e-02", "tar_at_far_1e-03")

#: What each final metric scores by chance: verification accuracy guesses half the pairs
#: right; rank-1 identification and TAR at a small FAR find nothing. A run that diverged
#: or failed enters the claims with this value (it is no better than a guess).
METRIC_CHANCE: dict[str, float] = {
    "verification_accuracy": 0.5, "val_accuracy": 0.5, "rank1": 0.0,
    "tar_at_far_1e-02": 0.0, "tar_at_far_1e-03": 0.0,
}

#: Statistics of a trial that are shares or probabilities, whatever their prefix.
_UNIT_INTERVAL = ("accuracy", "rank1", "tar_at_far", "p_target")


def metric_bounds(name: str) -> tuple[float, float] | None:
    """(0, 1) for a metric that is a share or a probability (accuracies, rank-1, TAR,
    the target probability, with or without a `final_` prefix); None otherwise."""
    bare = name.removeprefix("final_")
    return (0.0, 1.0) if any(part in bare for part in _UNIT_INTERVAL) else None


def natural_direction(metric: str) -> str | None:
    """The direction in which `metric` gets better, where it is plain: "minimize" for
    step counts (``steps_to_theta_med_*``, ``steps``), times, losses and target angles
    (θ_med, the mean angle); "maximize" for accuracies, rank-1, TAR, the target
    probability and the throughput; None for the rest (the scale, ln B_avg, ...)."""
    bare = metric.removeprefix("final_")
    if (metric.startswith("steps_to_") or "loss" in bare
            or bare.startswith(("theta_med", "theta_mean"))
            or metric in ("steps", "epochs", "wall_time_s", "train_time_s", "diverged_step")):
        return "minimize"
    if metric_bounds(metric) is not None or metric == "samples_per_s":
        return "maximize"
    return None


class StudySection(_Section):
    """`[study]`: what the sweep is called, its seeds, and what it ranks trials by."""

    #: The run folder is runs/<name>/ unless --out says otherwise.
    name: str = Field("study", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    #: Every grid point runs once per seed.
    seeds: tuple[int, ...] = (0,)
    metric: str = "verification_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    #: Where the validation accuracy (pruning, the TPE search's score when it ranks by
    #: val_accuracy, the curves) comes from; never a test set. "auto": the embedded
    #: datasets' own validation pairs, "holdout" for data on disk. "holdout": pairs over
    #: `data.val_identities` identities held out of training. Or the name of an
    #: `[eval.<name>]` set, which then serves validation only and is not a test set.
    selection: str = Field("auto", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> StudySection:
        if not self.seeds or any(seed < 0 for seed in self.seeds):
            raise ValueError("seeds: must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: must not repeat, got {list(self.seeds)}")
        if self.metric not in STUDY_METRICS and not self.metric.startswith(SET_METRIC_PREFIX):
            raise ValueError(f"metric: must be one of {', '.join(STUDY_METRICS)} or "
                             f"{SET_METRIC_PREFIX}<eval set>, got {self.metric!r}")
        return self


class ClaimsSection(_Section):
    """`[claims]`: settings of the verdicts that must be fixed before the data are seen."""

    #: C7: the θ_med level (degrees) whose first crossing counts as converged; one of
    #: `train.theta_levels_deg`, so that every trial records it.
    c7_level_deg: float = 45.0

    @model_validator(mode="after")
    def _check(self) -> ClaimsSection:
        if not 0.0 < self.c7_level_deg < 90.0:
            raise ValueError(f"c7_level_deg: must lie in (0, 90) degrees, "
                             f"got {self.c7_level_deg:g}")
        return self


class MetricGate(_Section):
    """`[reproduce.metrics.<metric>]`: how far a metric may move before it drifts."""

    #: The smallest difference of means that counts, in the metric's units.
    abs_tol: float | None = Field(None, ge=0.0)
    #: How many standard errors of the difference count (None: `[reproduce] k`).
    k: float | None = Field(None, gt=0.0, le=100.0)


class ReproduceSection(_Section):
    """`[reproduce]`: what `adastudy reproduce` re-runs of the study, and its drift
    gate: a metric drifts when its mean moves by more than
    max(abs_tol, k · σ_pooled · sqrt(1/n_base + 1/n_new)). How a study is checked, not
    what it is: never in the digest, so a gate can be retuned without a new baseline."""

    #: The heads, variants and seeds to re-run (None: all the study's; the main
    #: sections always run, so `variants = []` re-runs them alone).
    heads: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    #: Standard errors of the difference a metric may move by (every metric's default).
    k: float = Field(3.0, gt=0.0, le=100.0)
    #: Per metric: its `abs_tol` and `k`; a metric named here is compared too.
    metrics: dict[str, MetricGate] = {}

    @model_validator(mode="after")
    def _check(self) -> ReproduceSection:
        for key in ("heads", "variants", "seeds"):
            values = getattr(self, key)
            if values is not None and not values and key != "variants":
                raise ValueError(f"{key}: must not be empty (leave it out for all)")
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"{key}: must not repeat values")
        if any(seed < 0 for seed in self.seeds or ()):
            raise ValueError("seeds: must be integers >= 0")
        return self


class Range(_Section):
    """`{ low = ..., high = ... }`: an interval for the TPE search (`log`: sample the
    logarithm uniformly, for scales)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"high: must be > low ({self.low:g}), got {self.high:g}")
        return self


class HeadGrid(_Section):
    """`[heads.<name>]`: the values of s and m (radians) to sweep for one head, as a list
    (grid) or, with `search.method = "tpe"`, a range; heads without the parameter
    (AdaCos, softmax) take an empty table."""

    s: tuple[float, ...] | Range | None = None
    m: tuple[float, ...] | Range | None = None

    def searched(self) -> bool:
        """True when a parameter is a range (the TPE search samples it)."""
        return isinstance(self.s, Range) or isinstance(self.m, Range)


class SearchSpec(_Section):
    """`[search]`: how the grid is walked, and the pruner on the validation accuracy."""

    #: "grid": every (s, m) point × every seed, each exactly once. "tpe": heads with a
    #: range are searched by Optuna's TPE sampler, `trials` configurations each, every
    #: configuration run with every seed; heads without a range run as a grid.
    method: Literal["grid", "tpe"] = "grid"
    #: tpe: configurations sampled per searched head.
    trials: int = Field(20, ge=1, le=100_000)
    #: tpe: the sampler's seed.
    seed: int = Field(0, ge=0)
    #: "median" / "hyperband" stop trials whose validation accuracy lags (per epoch).
    pruner: Literal["none", "median", "hyperband"] = "none"
    #: Median pruner: trials to finish before pruning starts, and epochs before a trial
    #: may be pruned.
    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(1, ge=0)


_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
#: The variant name of the main `[data]`, `[model]` and `[train]` sections.
MAIN_VARIANT = "main"


class Variant(_Section):
    """`[variants.<name>]`: the study's grid run again on other data or another model,
    e.g. another number of classes (claim C4) or images instead of features. `data`,
    `model` and `train` are overrides of the main sections (only the keys given change);
    `heads` picks which of the study's heads run here (default: all), and `grids`
    replaces the grid of some of them here (e.g. a smaller one for slow images)."""

    heads: tuple[str, ...] | None = None
    grids: dict[str, HeadGrid] = {}
    data: dict[str, Any] = {}
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}


#: Keys added after specs were first written, with their defaults: a spec that leaves
#: them at the default keeps the digest it had before they existed.
_LATER_KEYS: dict[tuple[str, str], Any] = {
    ("study", "selection"): "auto",
    ("model", "embedding_norm"): "batchnorm",
    ("train", "adacos_scale_max"): None,
    ("train", "checkpoint_every"): None,
    ("train", "devices"): 1,
    ("train", "stability_stop_windows"): None,
}


#: Keys that change no trial's result (hints for the tools around it, how a trial
#: runs): never in the digest.
_UNDIGESTED = (("data", "expected_images"), ("train", "deterministic"))


def _eval_problem(data: Any, sets: list[str], selection: str, where: str) -> str | None:
    """What is wrong with `[eval]` sets `sets` and `selection` for the `[data]` section
    `data` (found at `where`), as "key: message"; None when nothing is."""
    on_disk = data.name in FILE_DATASETS
    if sets and not on_disk:
        return (f"eval.{sets[0]}: verification sets on disk need face images on disk to "
                f"train on ({where}.name = 'recordio' or 'folder'); {data.name!r} builds "
                "its own test pairs")
    if on_disk and not [name for name in sets if name != selection]:
        return (f"{where}.name: {data.name!r} needs an [eval.<name>] verification set to "
                "test on besides the selection's, e.g. [eval.lfw] path = \"lfw.bin\"")
    return None


class StudySpec(_Section):
    """A whole spec file."""

    study: StudySection = StudySection()
    heads: dict[str, HeadGrid] = {}
    search: SearchSpec = SearchSpec()
    data: DataSection = SyntheticData()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    variants: dict[str, Variant] = {}
    claims: ClaimsSection = ClaimsSection()
    #: What `adastudy reproduce` re-runs and its drift gate (not in the digest).
    reproduce: ReproduceSection = ReproduceSection()
    #: Verification sets scored at the end of every trial, by name (`[eval.<name>]`).
    eval: dict[str, EvalSet] = {}

    @model_validator(mode="after")
    def _check_heads(self) -> StudySpec:
        for name, grid in self.heads.items():
            if name not in HEAD_NAMES:
                raise ValueError(f"heads.{name}: unknown head; choose one of "
                                 f"{', '.join(HEAD_NAMES)}")
            self._check_grid(f"heads.{name}", name, grid)
        return self

    def _check_grid(self, where: str, name: str, grid: HeadGrid) -> None:
        takes = HEAD_DEFAULTS[name]
        for key in ("s", "m"):
            values = getattr(grid, key)
            if values is None:
                continue
            if key not in takes:
                raise ValueError(f"{where}.{key}: {name} takes no {key}")
            if isinstance(values, Range):
                if self.search.method != "tpe":
                    raise ValueError(f"{where}.{key}: a range needs "
                                     "search.method = 'tpe'; give a list for the grid")
                values = (values.low, values.high)
            elif not values:
                raise ValueError(f"{where}.{key}: must not be empty")
            elif len(set(values)) != len(values):
                raise ValueError(f"{where}.{key}: must not repeat values")
            for value in values:
                try:
                    check_head_params(name, **{key: value})
                except ParameterError as exc:
                    raise ValueError(f"{where}.{key}: {exc}") from None

    @model_validator(mode="after")
    def _check_variants(self) -> StudySpec:
        import re

        searched = set(self.searched_heads())
        for name, variant in self.variants.items():
            if not re.match(_NAME_PATTERN, name) or len(name) > 40:
                raise ValueError(f"variants.{name}: a variant's name is 1-40 letters, "
                                 "digits, '.', '_' or '-'")
            if name == MAIN_VARIANT:
                raise ValueError(f"variants.{name}: {name!r} names the main sections; "
                                 "choose another name")
            for head in variant.heads or ():
                if head not in self.heads:
                    raise ValueError(f"variants.{name}.heads: {head!r} is not one of the "
                                     f"study's heads ({', '.join(self.heads) or 'none'})")
                if head in searched:
                    raise ValueError(f"variants.{name}.heads: {head} is searched by TPE; "
                                     "variants run grids only")
            if variant.heads == ():
                raise ValueError(f"variants.{name}.heads: must not be empty")
            for head, grid in variant.grids.items():
                if head not in (variant.heads or self.heads):
                    raise ValueError(f"variants.{name}.grids.{head}: {head} does not run in "
                                     "this variant")
                if grid.searched():
                    raise ValueError(f"variants.{name}.grids.{head}: variants run grids "
                                     "only; give lists")
                self._check_grid(f"variants.{name}.grids.{head}", head, grid)
            self.variant_sections(name)  # the overrides must validate
        return self

    @model_validator(mode="after")
    def _check_claims(self) -> StudySpec:
        level = self.claims.c7_level_deg
        for name in self.variant_names():
            levels = self.variant_sections(name)[2].theta_levels_deg
            if level not in levels:
                where = "train" if name == MAIN_VARIANT else f"variants.{name}.train"
                raise ValueError(
                    f"claims.c7_level_deg: {level:g} is not one of {where}.theta_levels_deg "
                    f"({', '.join(f'{x:g}' for x in levels)}); add it there so that every "
                    "trial records when θ_med first falls below it")
        return self

    @model_validator(mode="after")
    def _check_eval(self) -> StudySpec:
        import re

        for name in self.eval:
            if not re.match(r"^[A-Za-z0-9_-]+$", name) or len(name) > 40 or name == "std":
                raise ValueError(f"eval.{name}: a set's name is 1-40 letters, digits, '_' "
                                 "or '-' (and not 'std'); it names the metric "
                                 f"{SET_METRIC_PREFIX}<name>")
        selection = self.study.selection
        if selection not in ("auto", "holdout", *self.eval):
            sets = ", ".join(repr(n) for n in self.eval)
            raise ValueError(f"study.selection: must be 'auto', 'holdout' or the name of an "
                             f"[eval.<name>] set{f' ({sets})' if sets else ''}, "
                             f"got {selection!r}")
        tests = [n for n in self.eval if n != selection]
        metric = self.study.metric
        if metric.startswith(SET_METRIC_PREFIX) and metric.removeprefix(
                SET_METRIC_PREFIX) not in tests:
            raise ValueError(f"study.metric: {metric!r} names no test set; the [eval] test "
                             f"sets are {', '.join(tests) or 'none'}")
        for variant in self.variant_names():
            data = self.variant_sections(variant)[0]
            where = "data" if variant == MAIN_VARIANT else f"variants.{variant}.data"
            problem = _eval_problem(data, list(self.eval), selection, where)
            if problem is not None:
                raise ValueError(problem)
            if data.name in FILE_DATASETS and metric in EMBEDDED_ONLY_METRICS:
                raise ValueError(f"study.metric: {metric!r} needs the impostor and "
                                 "identification sets that only the embedded datasets "
                                 f"build; {where}.name is {data.name!r}")
        return self

    @model_validator(mode="after")
    def _check_reproduce(self) -> StudySpec:
        chosen = self.reproduce
        for head in chosen.heads or ():
            if head not in self.heads:
                raise ValueError(f"reproduce.heads: {head!r} is not one of the study's "
                                 f"heads ({', '.join(self.heads) or 'none'})")
        for name in chosen.variants or ():
            if name == MAIN_VARIANT:
                raise ValueError(f"reproduce.variants: the main sections always run; name "
                                 f"only variants ({', '.join(self.variants) or 'none'})")
            if name not in self.variants:
                raise ValueError(f"reproduce.variants: no variant {name!r} in the spec "
                                 f"({', '.join(self.variants) or 'none'})")
        return self

    def with_determinism(self, on: bool) -> StudySpec:
        """This study with `train.deterministic = on` in the main sections and every
        variant (`--deterministic`); the digest does not change."""
        variants = {name: v.model_copy(update={"train": {**v.train, "deterministic": on}})
                    if "deterministic" in v.train else v for name, v in self.variants.items()}
        train = self.train.model_copy(update={"deterministic": on})
        return self.model_copy(update={"train": train, "variants": variants})

    def subset(self, *, heads: Iterable[str] | None = None,
               variants: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
               grids: dict[tuple[str, str], HeadGrid] | None = None) -> StudySpec:
        """This study with fewer trials: only `heads`, the main sections and only
        `variants`, only `seeds` (None: all of each). `grids` gives a head in a variant
        (`(variant, head)`, MAIN_VARIANT for the main sections) another grid, e.g. the
        values of a few configurations to run again; a searched head given a grid runs
        as a grid. `adastudy reproduce` runs such subsets; their digest is their own."""
        keep = [h for h in self.heads if heads is None or h in set(heads)]
        grids = grids or {}
        new_heads = {h: grids.get((MAIN_VARIANT, h), self.heads[h]) for h in keep}
        new_variants = {}
        for name, variant in self.variants.items():
            if variants is not None and name not in set(variants):
                continue
            runs = [h for h in (variant.heads or self.heads) if h in keep]
            if not runs:
                continue
            own = {h: grids.get((name, h), g) for h, g in variant.grids.items() if h in runs}
            own.update({h: g for (v, h), g in grids.items() if v == name and h in runs})
            new_variants[name] = variant.model_copy(update={
                "heads": tuple(runs) if variant.heads is not None else None, "grids": own})
        study = self.study.model_copy(
            update={"seeds": tuple(seeds) if seeds is not None else self.study.seeds})
        dumped = {**self.model_dump(), "study": study.model_dump(),
                  "heads": {h: g.model_dump() for h, g in new_heads.items()},
                  "variants": {n: v.model_dump() for n, v in new_variants.items()}}
        return StudySpec.model_validate(dumped)

    def variant_sections(self, name: str) -> tuple[Any, ModelSpec, TrainSpec]:
        """The data, model and train sections of variant `name` (MAIN_VARIANT: the main
        sections; others: the main sections with the variant's overrides). Raises
        ValueError naming the key."""
        if name == MAIN_VARIANT:
            return self.data, self.model, self.train
        variant = self.variants[name]
        sections = []
        for key, base in (("data", self.data), ("model", self.model), ("train", self.train)):
            given = getattr(variant, key)
            if key == "data" and given.get("name", base.name) != base.name:
                merged = dict(given)  # another dataset: none of the main one's keys apply
            elif key == "model" and given.get("name", base.name) != base.name:
                # Another backbone: the main section's defaults are not carried, so the
                # new backbone's own (a face backbone's 512-d embedding) apply.
                merged = {**base.model_dump(exclude_unset=True), **given}
            else:
                merged = {**base.model_dump(), **given}
            try:
                if key == "data":
                    sections.append(_DATA_ADAPTER.validate_python(merged))
                else:
                    sections.append(type(base).model_validate(merged))
            except ValidationError as exc:
                where_and_message = _one_line(exc.errors()[0], "", type(base)).removeprefix(
                    ": ")
                raise ValueError(f"variants.{name}.{key}.{where_and_message}") from None
        data, model, train = sections
        return data, model, train

    def variant_names(self) -> list[str]:
        """MAIN_VARIANT (the main sections) and then each variant, in the spec's order."""
        return [MAIN_VARIANT, *self.variants]

    def digest(self) -> str:
        """SHA-256 of the spec's canonical JSON: equal specs, equal digests."""
        dumped = self.model_dump(mode="json")
        if dumped["data"]["name"] in ("synthetic", "digits"):
            # Both had every key of the one [data] table they shared before.
            dumped["data"] = {**_LEGACY_DATA, **dumped["data"]}
        if not self.eval:  # specs written before [eval] keep their digest
            del dumped["eval"]
        if not self.variants:  # specs written before variants existed keep their digest
            del dumped["variants"]
        if self.claims == ClaimsSection():  # so do specs written before [claims]
            del dumped["claims"]
        del dumped["reproduce"]  # how the study is checked, not what it is
        # And so do specs written before a key existed, while it keeps its default.
        for (section, key), default in _LATER_KEYS.items():
            if dumped[section].get(key, default) == default:
                dumped[section].pop(key, None)
        for section, key in _UNDIGESTED:
            dumped[section].pop(key, None)
            for variant in dumped.get("variants", {}).values():
                (variant.get(section) or {}).pop(key, None)
        text = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def trial(self, head: str, *, s: float | None = None, m: float | None = None,
              seed: int = 0, variant: str = MAIN_VARIANT) -> TrialSpec:
        """One trial on this spec's data, model and train sections (variant `variant`'s
        when named): `head` with `s` and `m` (None: the head's default) and `seed`. The
        spec's [heads] and [search] play no part. Raises SpecError for an unknown head
        or variant."""
        if head not in HEAD_DEFAULTS:
            raise SpecError(f"head: unknown head {head!r}; choose from "
                            f"{', '.join(HEAD_DEFAULTS)}")
        if variant != MAIN_VARIANT and variant not in self.variants:
            raise SpecError(f"variant: no variant {variant!r} in the spec")
        data, model, train = self.variant_sections(variant)
        return parse({"data": data.model_dump(), "model": model.model_dump(),
                      "train": train.model_dump(), "head": head, "s": s, "m": m,
                      "seed": seed, "variant": variant,
                      "eval": {k: v.model_dump() for k, v in self.eval.items()},
                      "selection": self.study.selection}, "<trial>", TrialSpec)

    def searched_heads(self) -> list[str]:
        """Heads that the TPE search samples (those with a range), in the spec's order."""
        return [name for name, grid in self.heads.items() if grid.searched()]

    def trials(self) -> list[TrialSpec]:
        """The grid: every head's (s, m) points × every seed, in a stable order (heads
        in the spec's order, then s, m, seed). Unset s / m take the head's default.
        Heads searched by TPE (`searched_heads`) are not in it. The main sections come
        first, then each variant's grid."""
        out = []
        for variant in self.variant_names():
            data, model, train = self.variant_sections(variant)
            chosen = None if variant == MAIN_VARIANT else self.variants[variant].heads
            grids = {} if variant == MAIN_VARIANT else self.variants[variant].grids
            for name, grid in self.heads.items():
                if grid.searched() or (chosen is not None and name not in chosen):
                    continue
                grid = grids.get(name, grid)
                takes = HEAD_DEFAULTS[name]
                s_values = grid.s or ((takes["s"],) if "s" in takes else (None,))
                m_values = grid.m or ((takes["m"],) if "m" in takes else (None,))
                for s in s_values:
                    for m in m_values:
                        for seed in self.study.seeds:
                            out.append(TrialSpec(
                                data=data, model=model, train=train,
                                head=name, s=s, m=m, seed=seed, variant=variant,
                                eval=self.eval, selection=self.study.selection,
                            ))
        return out


class TrialSpec(_Section):
    """One trial: a study spec plus one head, one (s, m) and one seed."""

    data: DataSection = SyntheticData()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    #: The study's verification sets (`[eval.<name>]`) and where validation comes from
    #: (`[study] selection`).
    eval: dict[str, EvalSet] = {}
    selection: str = "auto"
    head: str = "adacos-dynamic"
    #: None: the head's default (or none, for AdaCos and softmax).
    s: float | None = None
    #: Margin in radians; None: the head's default.
    m: float | None = None
    seed: int = Field(0, ge=0)
    #: The study variant it belongs to (MAIN_VARIANT: the main data, model and train).
    variant: str = MAIN_VARIANT

    def head_params(self) -> dict[str, float]:
        """The keyword arguments for `build_head` (only those given)."""
        return {k: v for k, v in (("s", self.s), ("m", self.m)) if v is not None}

    @model_validator(mode="after")
    def _check_eval(self) -> TrialSpec:
        if self.selection not in ("auto", "holdout", *self.eval):
            raise ValueError(f"selection: must be 'auto', 'holdout' or the name of an "
                             f"[eval.<name>] set, got {self.selection!r}")
        problem = _eval_problem(self.data, list(self.eval), self.selection, "data")
        if problem is not None:
            raise ValueError(problem)
        return self

    def validation_source(self) -> str:
        """Where validation comes from: "data" (an embedded dataset's own pairs),
        "holdout", or the name of the `[eval]` set that serves it."""
        if self.selection == "auto":
            return "holdout" if self.data.name in FILE_DATASETS else "data"
        if self.selection == "holdout" and self.data.name not in FILE_DATASETS:
            return "data"  # an embedded dataset's validation pairs are held out already
        return self.selection

    def test_sets(self) -> list[str]:
        """The `[eval]` sets scored at the end as test sets (the selection's set is not)."""
        return [name for name in self.eval if name != self.selection]


# -- reading and error messages ---------------------------------------------------------

_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def _keys_at(model: Any, path: list[str]) -> list[str]:
    """The keys that the table at `path` of `model` takes (empty when unknown): the
    fields of the pydantic model found by walking fields, dict values and unions."""
    import types
    import typing

    def models(annotation: Any) -> list[type[BaseModel]]:
        if typing.get_origin(annotation) is typing.Annotated:
            return models(typing.get_args(annotation)[0])
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return [m for arg in typing.get_args(annotation) for m in models(arg)]
        return []

    def step(annotation: Any, part: str) -> list[Any]:
        if typing.get_origin(annotation) is typing.Annotated:
            return step(typing.get_args(annotation)[0], part)
        if typing.get_origin(annotation) is dict:  # the part names an entry
            return [typing.get_args(annotation)[1]]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return [a for arg in typing.get_args(annotation) for a in step(arg, part)]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            return [] if field is None else [field.annotation]
        return []

    current = [model]
    for part in path:
        current = [a for annotation in current for a in step(annotation, part)]
    return [key for m in (m for a in current for m in models(a)) for key in m.model_fields]


def _did_you_mean(key: str, known: list[str]) -> str:
    """"; did you mean seeds?" for a key close to a known one (difflib), else ""."""
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _one_line(error: dict[str, Any], source: str, model: Any = None) -> str:
    # A union's errors name the member tried (`tuple[float, ...]`, `Range`): not a key.
    raw = list(error["loc"])
    # A [data] table's errors name its dataset's member (the tag) after "data".
    # (first, when a [data] table is validated alone, as a variant's is).
    raw = [p for i, p in enumerate(raw) if not (p in DATASETS and (
        (i > 0 and raw[i - 1] == "data") or (i == 0 and len(raw) > 1)))]
    parts = [str(p) for p in raw if not (isinstance(p, str) and (
        "[" in p or p == "Range"))]
    loc = ".".join(parts)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "union_tag_invalid":
        name = loc + ".name" if loc else "name"
        return (f"{source}: {name}: must be one of "
                f"{', '.join(repr(n) for n in DATASETS)}, got {_format_value(ctx.get('tag'))}")
    if kind == "literal_error":
        message = f"must be one of {ctx.get('expected', '')}"
    elif kind == "value_error":
        # Our model validators say "key: message"; pydantic prefixes "Value error, ".
        text = str(error["msg"]).removeprefix("Value error, ")
        key, _, message = text.partition(": ")
        loc = f"{loc}.{key}" if loc else key
        return f"{source}: {loc}: {message}"
    else:
        template = _MESSAGES.get(kind, "")
        values = {k: _format_value(v) for k, v in ctx.items()}
        message = template.format(**values) if template else str(error["msg"]).lower()
    if kind not in ("extra_forbidden", "missing") and "input" in error:
        message += f", got {_format_value(error['input'])}"
    if kind == "extra_forbidden" and model is not None and parts:
        message += _did_you_mean(parts[-1], _keys_at(model, parts[:-1]))
    return f"{source}: {loc}: {message}"


def parse(data: dict[str, Any], source: str = "<spec>", model: type[BaseModel] = StudySpec):
    """Validate a spec given as a dict; raises `SpecError` with one line on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # For a list-or-range key, report the member that matches what was written.
        fitting = [e for e in errors if not _wrong_union_member(e)] or errors
        raise SpecError(_one_line(fitting[0], source, model)) from None


def _wrong_union_member(error: dict[str, Any]) -> bool:
    given = error.get("input")
    if error["type"] == "tuple_type" and isinstance(given, dict):
        return True
    return error["type"] in ("model_type", "model_attributes_type") and isinstance(
        given, (list, tuple))


def load(path: str | Path) -> StudySpec:
    """Read and validate a spec file (TOML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    _resolve_paths(data, path.parent)
    return parse(data, str(path))


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    """Make the data paths of a spec file's tables absolute, relative to its folder,
    so a sweep finds them from any working directory (Ray's workers run elsewhere)."""
    def resolve(table: Any, key: str) -> None:
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
            given = Path(table[key]).expanduser()
            if not given.is_absolute():
                table[key] = os.path.normpath(folder.absolute() / given)
            else:
                table[key] = str(given)

    resolve(data.get("data"), "path")
    for table in (data.get("eval") or {}).values() if isinstance(data.get("eval"), dict) else ():
        resolve(table, "path")
        resolve(table, "images")
    variants = data.get("variants")
    for variant in variants.values() if isinstance(variants, dict) else ():
        if isinstance(variant, dict):
            resolve(variant.get("data"), "path")
