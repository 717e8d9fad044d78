"""One trial: train a backbone with one head, record what the paper plots, evaluate once.

`run_trial(spec, reporter)` knows nothing of Optuna or Ray: every `log_every` steps it
hands the reporter the window's mean training statistics, every `eval_every` epochs the
validation verification accuracy (and asks `should_stop()`, for pruning), and returns a
`TrialResult`. The test pairs are scored once, at the end, and never choose anything.

The hot loop never syncs the host per step: the per-step statistics are added into one
device tensor, and so are the divergence flag and the first steps at which θ_med falls
below the requested levels; the host reads that tensor once per `log_every` steps.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from adastudy import checkpoint, distributed, evaluate
from adastudy.data import PairSet, TrialData, build_trial_data
from adastudy.errors import ParameterError
from adastudy.heads import STATISTICS, build_head, check_head_params
from adastudy.models import build_backbone
from adastudy.spec import SET_METRIC_PREFIX, TrainSpec, TrialSpec

__all__ = [
    "TRAIN_METRICS",
    "RecordingReporter",
    "Reporter",
    "TrialResult",
    "run_trial",
]

#: What each `log_every` report holds: the window means of the head's statistics and of
#: these, plus the learning rate and the throughput (read on the host).
TRAIN_METRICS = ("loss", *STATISTICS, "train_accuracy", "lr", "samples_per_s")

#: FARs reported at the end, as far as the impostor count allows.
FINAL_FARS = (1e-2, 1e-3)

#: With `train.checkpoint_every` unset, a trial writes a checkpoint every epoch once its
#: first epoch took longer than this (a shorter trial loses little when killed).
AUTO_CHECKPOINT_EPOCH_S = 60.0

#: A dynamic scale above this has run away (it grows ~√2 per step once the classes
#: collapse); ending the trial here saves the steps until it overflows to inf.
MAX_SCALE = 1e4


class Reporter(Protocol):
    """What a backend hands `run_trial`: a sink for metrics and a pruning signal."""

    def report(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def should_stop(self) -> bool: ...


class RecordingReporter:
    """Keeps every report in `rows` (one dict per report, with its `step`); never stops."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        self.rows.append({"step": step, **metrics})

    def should_stop(self) -> bool:
        return False


@dataclass
class TrialResult:
    """The outcome of one trial. `state`: "complete", "pruned" or "diverged"."""

    head: str
    s: float | None
    m: float | None
    seed: int
    state: str
    steps: int
    epochs: float
    wall_time_s: float
    train_time_s: float
    samples_per_s: float
    #: Final metrics: verification_accuracy (+ _std), tar_at_far_1e-02 …, rank1,
    #: val_accuracy, and the last window's training statistics (final_*).
    metrics: dict[str, float] = field(default_factory=dict)
    #: First step at which the batch θ_med fell below each level, e.g. {"60": 120};
    #: None when it never did.
    steps_to_theta_med: dict[str, int | None] = field(default_factory=dict)
    diverged_step: int | None = None
    diverged_reason: str | None = None
    #: How a diverged trial was found out: "observed" (a non-finite loss or s above
    #: `MAX_SCALE`) or "stability guard" (`train.stability_stop_windows`: predicted).
    diverged_by: str | None = None
    #: Steps at which `train.adacos_scale_max` bound the dynamic scale, and the first.
    scale_clamped_steps: int = 0
    scale_clamped_first_step: int | None = None
    #: The training classes C of the data (from its source).
    num_classes: int | None = None
    #: The epoch a killed trial was resumed after (from its checkpoint), and why a
    #: checkpoint found could not be used (the trial then started from step 0).
    resumed_from_epoch: int | None = None
    checkpoint_problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ReportLog:
    """The reporter, with every report kept: a checkpoint holds them, and a resumed
    trial hands them to its new reporter first (the series, a pruner's values)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.reports: list[tuple[int, dict[str, float]]] = []

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        self.reports.append((step, dict(metrics)))
        self.reporter.report(step, metrics)

    def should_stop(self) -> bool:
        return self.reporter.should_stop()


class _ScaleGuards:
    """Dynamic AdaCos's optional guards (`train.adacos_scale_max`,
    `train.stability_stop_windows`), checked on the host once per log window; inert for
    heads whose scale does not change."""

    def __init__(self, train: TrainSpec, head: nn.Module) -> None:
        adaptive = bool(getattr(head, "adaptive", False))
        cap = train.adacos_scale_max if adaptive else None
        if cap is not None:
            head.scale_max = cap
        # The clamp writes float32(cap): a row's s equals it exactly when the cap bound.
        self.cap = float(torch.tensor(cap, dtype=torch.float32)) if cap is not None else None
        self.windows = train.stability_stop_windows if adaptive else None
        self.clamped_steps = 0
        self.first_clamped_step: int | None = None
        self._run = 0
        self._last_scale = float(head.current_scale) if self.windows else math.nan

    def state(self) -> dict[str, Any]:
        return {"clamped_steps": self.clamped_steps, "first_clamped_step":
                self.first_clamped_step, "run": self._run, "last_scale": self._last_scale}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.clamped_steps = state["clamped_steps"]
        self.first_clamped_step = state["first_clamped_step"]
        self._run, self._last_scale = state["run"], state["last_scale"]

    def count(self, step: int, scale: float) -> None:
        """Note one step's scale (the clamp's record)."""
        if self.cap is not None and scale >= self.cap:
            self.clamped_steps += 1
            if self.first_clamped_step is None:
                self.first_clamped_step = step

    def stop_reason(self, means: Mapping[str, float]) -> str | None:
        """The early stop's reason after a window with these means, or None."""
        if self.windows is None:
            return None
        scale, slope = means["s"], means["update_slope"]
        grew = scale > self._last_scale
        self._last_scale = scale
        self._run = self._run + 1 if grew and slope > 1.0 else 0
        if self._run < self.windows:
            return None
        return (f"stability guard: the scale update's slope was above 1 while s grew for "
                f"{self.windows} window{'s' if self.windows != 1 else ''} "
                f"(slope {slope:.3g}, s = {scale:.4g})")


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("train.device: 'cuda' was asked for, but CUDA is not available")
    return torch.device(name)


def amp_dtype(train: TrainSpec, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` on `device`; None: no mixed precision (the CPU,
    or "none"). Raises `ParameterError` for "bf16" on a GPU without bfloat16."""
    if device.type != "cuda" or train.amp in (False, "none"):
        return None
    if train.amp == "fp16":
        return torch.float16
    supported = torch.cuda.is_bf16_supported()
    if train.amp == "bf16" and not supported:
        raise ParameterError("train.amp: 'bf16' was asked for, but this GPU does not "
                             "support bfloat16; use 'fp16' or true")
    return torch.bfloat16 if supported else torch.float16


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, train: TrainSpec) -> float:
    """Multiplier of the base learning rate at `step` (0-based): linear warm-up, then the
    cosine (to 0 at the last step), step (× gamma at each milestone epoch) or constant."""
    warmup_steps = round(train.warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if train.schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
    if train.schedule == "step":
        epoch = step / steps_per_epoch
        return train.gamma ** sum(epoch >= milestone for milestone in train.milestones)
    return 1.0


def make_optimizer(params: list[nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW, weight decay on every parameter (as insightface)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def _pair_embeddings(
    model: nn.Module, pairs: PairSet, flip: bool, cache: dict[int, Tensor]
) -> tuple[Tensor, Tensor]:
    key = id(pairs.inputs)  # sets that share their inputs are embedded once
    if key not in cache:
        cache[key] = evaluate.embed(model, pairs.inputs, flip=flip)
    emb = cache[key]
    return emb[pairs.left], emb[pairs.right]


def _validation_accuracy(model: nn.Module, data: TrialData, flip: bool) -> float:
    e1, e2 = _pair_embeddings(model, data.val, flip, {})
    return evaluate.verification_accuracy(e1, e2, data.val.issame)[0]


def _final_metrics(model: nn.Module, data: TrialData, flip: bool) -> dict[str, float]:
    """The test metrics: every `[eval]` set's accuracy and their mean (data on disk), or
    the embedded dataset's verification, TAR@FAR and rank-1."""
    cache: dict[int, Tensor] = {}
    if data.eval_sets:
        metrics: dict[str, float] = {}
        for name, pairs in data.eval_sets.items():
            e1, e2 = _pair_embeddings(model, pairs, flip, cache)
            mean, std = evaluate.verification_accuracy(e1, e2, pairs.issame)
            metrics[f"{SET_METRIC_PREFIX}{name}"] = mean
            metrics[f"{SET_METRIC_PREFIX}{name}_std"] = std
        accuracies = [metrics[f"{SET_METRIC_PREFIX}{name}"] for name in data.eval_sets]
        # The "AVG" column of face papers; its std would mix sets, so there is none
        # unless there is one set.
        metrics["verification_accuracy"] = math.fsum(accuracies) / len(accuracies)
        if len(accuracies) == 1:
            metrics["verification_accuracy_std"] = metrics[
                f"{SET_METRIC_PREFIX}{next(iter(data.eval_sets))}_std"]
        return metrics
    if data.test is None:
        return {}
    e1, e2 = _pair_embeddings(model, data.test, flip, cache)
    mean, std = evaluate.verification_accuracy(e1, e2, data.test.issame)
    metrics = {"verification_accuracy": mean, "verification_accuracy_std": std}
    if data.impostor is not None:
        i1, i2 = _pair_embeddings(model, data.impostor, flip, cache)
        scores = evaluate.pair_scores(i1, i2)
        impostors = int((~data.impostor.issame).sum())
        for far in evaluate.measurable_fars(impostors, FINAL_FARS):
            metrics[f"tar_at_far_{far:.0e}"] = evaluate.tar_at_far(
                scores, data.impostor.issame, far)
    ident = data.identification
    if ident is not None:
        metrics["rank1"] = evaluate.rank1_identification(
            evaluate.embed(model, ident.probes, flip=flip), ident.probe_labels,
            evaluate.embed(model, ident.gallery, flip=flip), ident.gallery_labels,
        )
    return metrics


#: What a window's steps become when it closes: the loss, the head's statistics (the
#: head finishes its per-sample rows of all the window's steps at once) and the count
#: of correct predictions.
_COLUMNS = ("loss", *STATISTICS, "train_accuracy")


class _LogWindow:
    """The steps of one log window, written on the device and read by the host once
    per window: each step's loss and correct count, and the head's per-sample
    `ROW_STATISTICS`, which `finish` (the head's `finish_statistics`) turns into
    `STATISTICS` for all the window's steps in one go when it closes.

    `close(step)` is the one host sync: it checks each step for divergence, notes the
    first steps below the θ_med levels and the scale clamps, and returns the window's
    means (or None when the window was empty). After a divergence, `diverged_step`,
    `diverged_reason` and `diverged_by` say where, why and how it was found.
    """

    def __init__(self, train: TrainSpec, guards: _ScaleGuards, device: torch.device,
                 finish: Callable[[Tensor], Tensor], world: int = 1) -> None:
        self.scalars = torch.empty(train.log_every, 2, device=device)  # loss, correct
        #: (log_every, 8, width): the steps' head rows; a batch narrower than the
        #: widest so far is padded with zeros (unlabelled columns, which count in
        #: nothing). Allocated at the first step, as wide as its batch.
        self.samples: Tensor | None = None
        self.finish = finish
        #: Ranks of the trial: the loss and the correct counts are summed over them at
        #: each close (the statistics gather the ranks' rows), so every rank reads the
        #: same window and they diverge, or not, together.
        self.world = world
        self.levels_deg = train.theta_levels_deg
        self.first_below: dict[str, int | None] = {f"{d:g}": None for d in self.levels_deg}
        self.guards = guards
        self.steps = 0  # steps in the current window
        self.sizes: list[int] = []  # their batches' samples (a batch may lose corrupt ones)
        self.started = time.perf_counter()
        self.train_time_s = 0.0
        self.last: dict[str, float] = {}
        self.diverged_step: int | None = None
        self.diverged_reason: str | None = None
        self.diverged_by: str | None = None

    def record(self, loss: Tensor, correct: Tensor, rows: Tensor, samples: int) -> None:
        """Write one step on the device (no host sync): its loss, its count of correct
        predictions, the head's `statistics_rows` and its batch's size (all ranks)."""
        step, width = self.steps, rows.shape[-1]
        torch.stack([loss.detach(), correct.to(loss.dtype)], out=self.scalars[step])
        if self.samples is None or width > self.samples.shape[-1]:
            grown = torch.zeros(self.scalars.shape[0], *rows.shape, device=rows.device,
                                dtype=rows.dtype)
            if self.samples is not None:
                grown[..., : self.samples.shape[-1]] = self.samples
            self.samples = grown
        if width == self.samples.shape[-1]:
            self.samples[step].copy_(rows)
        else:
            self.samples[step, :, :width].copy_(rows)
            self.samples[step, :, width:].zero_()
        self.steps += 1
        self.sizes.append(samples)

    def full(self) -> bool:
        return self.steps == self.scalars.shape[0]

    def close(self, step: int, lr: float) -> dict[str, float] | None:
        """Read the window that ended at `step`; its means, or None when it was empty."""
        if not self.steps:
            return None
        scalars = self.scalars[: self.steps]
        if self.world > 1:
            summed = scalars.clone()
            torch.distributed.all_reduce(summed)
            # The mean of equal shards' mean losses; the sum of their correct counts.
            scalars = torch.stack([summed[:, 0] / self.world, summed[:, 1]], dim=1)
        assert self.samples is not None
        statistics = self.finish(self.samples[: self.steps]).to(scalars.dtype)
        values = torch.cat([scalars[:, :1], statistics, scalars[:, 1:]], dim=1).tolist()
        elapsed = time.perf_counter() - self.started
        self.train_time_s += elapsed
        first_step = step - self.steps + 1
        s_at = 1 + STATISTICS.index("s")
        theta_at = 1 + STATISTICS.index("theta_med_rad")
        for offset, row in enumerate(values):
            loss_value, scale = row[0], row[s_at]
            theta_med_deg = math.degrees(row[theta_at])
            for level in self.levels_deg:
                if self.first_below[f"{level:g}"] is None and theta_med_deg < level:
                    self.first_below[f"{level:g}"] = first_step + offset
            self.guards.count(first_step + offset, scale)
            reason = None
            if not math.isfinite(loss_value):
                reason = "loss is not finite"
            elif not math.isfinite(scale) or scale > MAX_SCALE:
                reason = f"scale s is not finite or > {MAX_SCALE:g} (s = {scale:g})"
            if reason is not None:
                self.diverged_step, self.diverged_reason = first_step + offset, reason
                self.diverged_by = "observed"
                values = values[: offset + 1]
                break
        columns = dict(zip(_COLUMNS, zip(*values, strict=True), strict=True))
        means = {k: math.fsum(c) / len(values) for k, c in columns.items()}
        # The rows hold the number of correct samples; the batches' sizes are known on
        # the host (up to the diverged step, when there was one).
        means["train_accuracy"] = math.fsum(columns["train_accuracy"]) / sum(
            self.sizes[: len(values)])
        means["lr"] = lr
        means["samples_per_s"] = sum(self.sizes) / elapsed if elapsed > 0 else math.nan
        self.last = means
        self.steps = 0
        self.sizes = []
        self.started = time.perf_counter()
        if self.diverged_step is None and (stop := self.guards.stop_reason(means)) is not None:
            self.diverged_step, self.diverged_reason = step, stop
            self.diverged_by = "stability guard"
        return means


#: cuBLAS's fixed workspace, which deterministic algorithms need on CUDA >= 10.2
#: (torch raises without it); set only when the environment does not set it already.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def determinism_flags(train: TrainSpec) -> dict[str, Any]:
    """What a trial of `train` runs under, for the run's manifest: deterministic mode,
    and what it sets (deterministic algorithms, cuDNN autotuning, cuBLAS's workspace)."""
    import os

    on = train.deterministic
    return {"deterministic": on, "use_deterministic_algorithms": on,
            "cudnn_deterministic": on, "cudnn_benchmark": not on,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")
            or (CUBLAS_WORKSPACE_CONFIG if on else None)}


@contextlib.contextmanager
def determinism(on: bool, seed: int) -> Iterator[None]:
    """Deterministic mode for one trial (`train.deterministic`), undone afterwards so
    that the next trial of the process starts as it would alone: torch's deterministic
    algorithms only (an op without one raises, naming itself), cuDNN deterministic and
    not autotuned, cuBLAS's fixed workspace, and Python's and NumPy's global generators
    seeded (adastudy draws from its own seeded generators; this covers user code).
    On the CPU trials are bit for bit repeatable either way; on CUDA only this is."""
    if not on:
        yield
        return
    import os
    import random

    import numpy as np

    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        enabled, warn_only, cudnn.deterministic, cudnn.benchmark, workspace = saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def run_trial(
    spec: TrialSpec,
    reporter: Reporter | None = None,
    *,
    data: TrialData | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint_dir: Path | None = None,
    save_model_to: Path | None = None,
) -> TrialResult:
    """Train `spec.head` with (`spec.s`, `spec.m`) and `spec.seed` on `spec.data`.

    Args:
        spec: the trial.
        reporter: receives the training statistics every `log_every` steps and the
            validation accuracy every `eval_every` epochs; `should_stop()` prunes.
        data: the dataset, when the caller built it already (it must match spec.data).
        progress: called as progress(step, total_steps) at every report.
        checkpoint_dir: where the trial keeps its checkpoint (`train.checkpoint_every`);
            a checkpoint of this trial found there is resumed from, and the result is
            an uninterrupted trial's (bit for bit on the CPU, timings apart). None: no
            checkpoints.
        save_model_to: where a completed trial saves its final model and head
            (`checkpoint.save_model`); None: nowhere.

    A non-finite loss or scale ends the trial as "diverged", with its step and reason.
    With `train.devices = N > 1` this process becomes rank 0 of N and starts the others
    (`adastudy.distributed`); only rank 0 reports, writes and evaluates. With
    `train.deterministic` it runs in deterministic mode (`determinism`).
    """
    with determinism(spec.train.deterministic, spec.seed):
        return _run_trial(spec, reporter, data=data, progress=progress,
                          checkpoint_dir=checkpoint_dir, save_model_to=save_model_to)


def _run_trial(
    spec: TrialSpec,
    reporter: Reporter | None,
    *,
    data: TrialData | None,
    progress: Callable[[int, int], None] | None,
    checkpoint_dir: Path | None,
    save_model_to: Path | None,
) -> TrialResult:
    ranks = distributed.current()
    if spec.train.devices > 1 and ranks.world == 1:
        with distributed.start_ranks(spec, checkpoint_dir):
            return run_trial(spec, reporter, data=data, progress=progress,
                             checkpoint_dir=checkpoint_dir, save_model_to=save_model_to)
    reports = _ReportLog(reporter or RecordingReporter())
    train = spec.train
    device = (distributed.rank_device(spec, ranks.rank) if ranks.world > 1
              else choose_device(train.device))
    started = time.perf_counter()
    data = data if data is not None else build_trial_data(spec)
    source = data.source
    shard = (ranks.rank, ranks.world)

    # -- set-up: model, head, optimiser, schedule, precision ----------------------------
    torch.manual_seed(spec.seed)  # model and head initialisation, dropout
    model = build_backbone(spec.model, source.input_shape).to(device)
    # Convolutions on CUDA run faster on NHWC tensors; cuDNN picks its kernels once per
    # shape (the shapes of a trial do not change).
    channels_last = device.type == "cuda" and len(source.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and not train.deterministic:  # autotuning picks freely
        torch.backends.cudnn.benchmark = True
    head = build_head(
        spec.head, source.num_classes, spec.model.embedding_dim, **spec.head_params()
    ).to(device)
    if ranks.world > 1:  # BatchNorm and the head's statistics over the global batch
        model = distributed.sync_batchnorm(model, device)
        head.equal_rank_batches = source.exact_batches
    guards = _ScaleGuards(train, head)
    params = [*model.parameters(), *head.parameters()]
    optimizer = make_optimizer(params, train)
    steps_per_epoch = source.steps_per_epoch(train.batch_size)
    total_steps = train.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, steps_per_epoch, train)
    )
    precision = amp_dtype(train, device)
    # On the CPU (or without amp) neither context nor scaler: each costs a step some µs.
    autocast = (
        functools.partial(torch.autocast, device.type, dtype=precision)
        if precision is not None else contextlib.nullcontext
    )
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None

    def forward(x: Tensor, y: Tensor) -> Tensor:
        with autocast():
            embeddings = model(x)
        # The loss, the statistics and the training accuracy's count in one pass over
        # the cosines (`head.loss`); the head runs its math in float32.
        return head.loss(embeddings, y)

    if ranks.world > 1:  # DDP averages the gradients of model and head over the ranks
        forward = distributed.data_parallel(model, head, forward, device)
    flip = train.flip_eval and data.flippable
    window = _LogWindow(train, guards, device, head.finish_statistics, ranks.world)
    start_epoch, step, val_accuracy = 0, 0, float("nan")
    every = train.checkpoint_every
    digest = checkpoint.trial_digest(spec) if checkpoint_dir is not None else ""
    saved, problem = (checkpoint.load(checkpoint_dir, digest) if checkpoint_dir is not None
                      else (None, None))
    if saved is not None:
        model.load_state_dict(saved["model"])
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler") is not None:
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda" and saved.get("rng_cuda"):
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
        guards.restore(saved["guards"])
        window.first_below = dict(saved["first_below"])
        window.train_time_s = saved["train_time_s"]
        window.last = dict(saved["last"])
        start_epoch, step, val_accuracy = saved["epoch"], saved["step"], saved["val_accuracy"]
        every = saved["every"]
        for at, metrics in saved["reports"]:  # the new reporter sees the whole series
            reports.report(at, metrics)

    def report(step: int) -> bool:
        """Close the window and report its means; False when the trial diverged."""
        means = window.close(step, scheduler.get_last_lr()[0])
        if means is None:
            return True
        if window.diverged_step is not None:
            reports.report(window.diverged_step, means)
            return False
        reports.report(step, means)
        if progress is not None:
            progress(step, total_steps)
        return True

    def save_checkpoint(epochs_done: int) -> None:
        assert checkpoint_dir is not None
        checkpoint.save(checkpoint_dir, {
            "trial": digest, "epoch": epochs_done, "step": step, "every": every,
            "model": model.state_dict(), "head": head.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "guards": guards.state(), "first_below": window.first_below,
            "train_time_s": window.train_time_s, "last": window.last,
            "val_accuracy": val_accuracy, "reports": reports.reports,
        })

    # -- the epochs ---------------------------------------------------------------------
    state = "complete"
    model.train()
    head.train()
    for epoch in range(start_epoch, train.epochs):
        epoch_started = time.perf_counter()
        for x, y in source.batches(train.batch_size, spec.seed, epoch, device, shard):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = forward(x, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            window.record(loss, head.correct, head.statistics_rows, y.shape[0] * ranks.world)
            step += 1
            if window.full() and not report(step):
                state = "diverged"
                break
        if state == "diverged":
            break
        if not report(step):
            state = "diverged"
            break
        last_epoch = epoch + 1 == train.epochs
        if (train.eval_every and (epoch + 1) % train.eval_every == 0) or last_epoch:
            stop = False
            if ranks.lead:  # the other ranks wait for its decision
                val_accuracy = _validation_accuracy(model, data, flip)
                reports.report(step, {"val_accuracy": val_accuracy, "epoch": epoch + 1})
                model.train()
                stop = not last_epoch and reports.should_stop()
            if ranks.world > 1 and not last_epoch:
                stop = distributed.lead_decides(stop, device)
            if stop:
                state = "pruned"
                break
        if every is None:  # decided by the first epoch this process trains
            slow = time.perf_counter() - epoch_started > AUTO_CHECKPOINT_EPOCH_S
            every = 1 if slow else 0
        if (checkpoint_dir is not None and ranks.lead and every and not last_epoch
                and (epoch + 1) % every == 0):
            save_checkpoint(epoch + 1)

    # -- the final evaluation -----------------------------------------------------------
    skip = ("lr", "samples_per_s")
    metrics = {f"final_{k}": v for k, v in window.last.items() if k not in skip}
    metrics["val_accuracy"] = val_accuracy
    if state == "complete" and ranks.lead:
        metrics.update(_final_metrics(model, data, flip))
        if save_model_to is not None:
            checkpoint.save_model(save_model_to, spec, model, head)
    if data.files is not None:
        metrics["corrupt_samples"] = float(source.corrupt)
    hyper = check_head_params(spec.head, **spec.head_params())
    train_time_s = window.train_time_s
    batch = min(train.batch_size, len(source))
    return TrialResult(
        head=spec.head,
        s=hyper.get("s"),
        m=hyper.get("m"),
        seed=spec.seed,
        state=state,
        steps=step,
        epochs=step / steps_per_epoch,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time_s,
        samples_per_s=step * batch / train_time_s if train_time_s > 0 else float("nan"),
        metrics=metrics,
        steps_to_theta_med=window.first_below,
        diverged_step=window.diverged_step,
        diverged_reason=window.diverged_reason,
        diverged_by=window.diverged_by,
        scale_clamped_steps=guards.clamped_steps,
        scale_clamped_first_step=guards.first_clamped_step,
        num_classes=source.num_classes,
        resumed_from_epoch=start_epoch if saved is not None else None,
        checkpoint_problem=problem,
    )
