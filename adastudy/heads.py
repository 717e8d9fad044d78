"""Classification heads of the cosine-softmax family, on one `CosineHead` skeleton.

Every head maps embeddings `x` (N, D) and labels `y` (N,) to logits (N, C) for a plain
cross-entropy. The skeleton computes the cosines `cos θ_ij = <x̂_i, Ŵ_j>` in float32 (or
float64 for float64 inputs), lets the head change the target column (the margin) and pick
the scale, and multiplies: `f_ij = s · cos θ_ij`, `f_i,y_i = s · target(cos θ_i,y_i)`.

| head           | target(cos θ)                                 | s                               |
|----------------|-----------------------------------------------|---------------------------------|
| softmax        | unnormalised `<x, W_y> + b_y`                 | 1 (none)                        |
| normface       | cos θ                                         | fixed                           |
| cosface        | cos θ − m                                     | fixed                           |
| arcface        | cos(θ + m) if θ < π − m, else cos θ − m sin m | fixed                           |
| adacos-fixed   | cos θ                                         | √2 ln(C − 1)                    |
| adacos-dynamic | cos θ                                         | ln B_avg / cos(min(π/4, θ_med)) |

Without labels, with every label −1, or in eval mode, a head returns `s · cos` (raw logits
for softmax): no margin and no AdaCos update. A label of −1 leaves its row untouched.

After each training forward with labels, `head.statistics` holds what the paper plots, as
0-d device tensors (no host sync): see `STATISTICS`. A step records only per-sample rows
(`head.statistics_rows`, see `ROW_STATISTICS`); `finish_statistics` reduces them, for one
batch or for a training loop's whole log window at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adastudy.errors import ParameterError
from adastudy.theory import HEAD_DEFAULTS, HEAD_NAMES, check_head_params, fixed_scale

__all__ = [
    "DEFAULTS",
    "HEAD_NAMES",
    "ROW_STATISTICS",
    "STATISTICS",
    "AdaCosDynamicHead",
    "AdaCosFixedHead",
    "ArcFaceHead",
    "CosFaceHead",
    "CosineHead",
    "NormFaceHead",
    "SoftmaxHead",
    "SPREAD_STATISTICS",
    "build_head",
    "check_head_params",
]

#: Names of the per-batch statistics every head records in `head.statistics`.
#: - ``s``: the scale used for this batch's logits (1 for softmax).
#: - ``theta_med_rad``: median target angle (lower median, as `torch.median`).
#: - ``theta_mean_rad``: mean target angle.
#: - ``cos_nontarget_mean``: mean cosine to the non-target class centres.
#: - ``p_target_mean``: mean predicted probability of the true class (margin included).
#: - ``ln_b_avg``: ln of the batch mean of B_i = Σ_{k≠y_i} exp(s cos θ_ik); for
#:   adacos-dynamic at the previous scale s(t−1), as in its update rule.
#: - ``ln_b_avg_ratio``: ln B_avg / ln(C − 1); 1 when B_avg = C − 1 (claim C5).
#: - ``cos_nontarget_var``: variance of the cosines to the non-target class centres,
#:   pooled over the labelled rows (NaN for softmax: its logits are not cosines, and
#:   their squares would cost a second matmul).
#: - ``d_eff``: 1 / cos_nontarget_var, the cosines' effective dimension.
#: - ``stability_margin``: d_eff / d_eff_min, where d_eff_min =
#:   `theory.min_stable_effective_dim` at the batch's θ_med and mean non-target cosine:
#:   below 1, dynamic AdaCos's scale update has no fixed point and s runs away (in the
#:   Gaussian approximation of ln B_avg that the bound rests on).
#: - ``update_slope``: the slope of dynamic AdaCos's update map s ↦ k · ln B_avg(s),
#:   k = 1 / cos(min(π/4, θ_med)), at the batch's (starting) scale: k times the
#:   B-weighted mean non-target cosine, exact (no approximation). ln B_avg is convex in
#:   s, so once the slope is above 1 while s grows, s grows without bound for these
#:   cosines: the run-away's point of no return (the early-stop guard's signal). Only
#:   adacos-dynamic records it (one more pass over the cosines); NaN for the others.
STATISTICS = (
    "s",
    "theta_med_rad",
    "theta_mean_rad",
    "cos_nontarget_mean",
    "p_target_mean",
    "ln_b_avg",
    "ln_b_avg_ratio",
    "cos_nontarget_var",
    "d_eff",
    "stability_margin",
    "update_slope",
)

#: What a training step records per sample (`head.statistics_rows`, one row of N each),
#: from which `finish_statistics` gives `STATISTICS`: 1 for a labelled sample (0 for a
#: label of −1 or a loop's padding), cos θ_iy, ln B_i (for adacos-dynamic at s(t−1)),
#: P_iy, Σ_k cos θ_ik and Σ_k cos² θ_ik over every class k, dynamic AdaCos's
#: B-weighted mean non-target cosine m_i (NaN for the other heads), and s (the same in
#: every column). Medians, log-sum-exps and sums over the samples all wait for the
#: finish, so a loop records a step in one op and finishes a whole log window at once.
ROW_STATISTICS = (
    "labelled",
    "cos_target",
    "ln_b",
    "p_target",
    "cos_row_sum",
    "cos_square_row_sum",
    "tilted_cos",
    "s",
)

#: The statistics of the cosines' spread, which softmax (not a cosine head) records as
#: NaN.
SPREAD_STATISTICS = ("cos_nontarget_var", "d_eff", "stability_margin")

# Keeps sqrt(1 - cos²) and its gradient finite at cos = ±1 in ArcFace; its effect on
# the value is below float32 resolution of the angle (sqrt(1e-12) = 1e-6 rad).
_SIN_EPS = 1e-12


def _outside_autocast(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`method` with autocast off: the head's sums over the batch and its classes (the
    loss, the statistics) would overflow or round in half precision; the cosines are
    float32 anyway (`similarity`)."""

    @functools.wraps(method)
    def run(self: CosineHead, embeddings: Tensor, *args: Any) -> Tensor:
        device = embeddings.device.type
        if not torch.is_autocast_enabled(device):
            return method(self, embeddings, *args)
        with torch.autocast(device, enabled=False):
            return method(self, embeddings, *args)

    return run


class CosineHead(nn.Module):
    """Skeleton of a cosine-softmax head. Subclasses override `target_cosine` (the
    margin) and/or `next_scale` (with `adaptive = True`); softmax overrides `similarity`.

    Args:
        num_classes: C, the number of classes (rows of `weight`).
        embedding_dim: D, the size of an embedding.
        s: the (initial) scale.
    """

    name = "normface"
    #: True for heads whose scale changes in training (`next_scale` is called).
    adaptive = False
    #: True for heads whose `target_cosine` is not the identity.
    has_margin = False

    def __init__(self, num_classes: int, embedding_dim: int, s: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        # The scale is state (AdaCos changes it), so it lives in a buffer and is saved
        # with the model in its state_dict.
        self.register_buffer("current_scale", torch.tensor(float(s), dtype=torch.float32))
        self.track_statistics = True
        #: Under `torch.distributed`: every rank's batch has the same number of rows (the
        #: trainer's shards do). θ_med in dynamic AdaCos's update is then the exact
        #: median of the global batch, gathered from every rank; otherwise the mean of
        #: the ranks' medians (rows of unknown count cannot be gathered each step without
        #: the host learning the counts). The statistics are always the global batch's.
        self.equal_rank_batches = False
        #: The last training batch's `ROW_STATISTICS`, (8, N) on the device: a training
        #: loop copies it with one op per step and finishes a window's rows at once
        #: (`finish_statistics`); None before the first training batch with labels.
        self.statistics_rows: Tensor | None = None
        #: `loss`'s count of the labelled rows it classified right (0-d device tensor).
        self.correct: Tensor | None = None
        self._workspace: Tensor | None = None
        self._nan_row: Tensor | None = None
        # ln(C - 1) normalises ln B_avg; C = 2 gives 0, where the ratio is undefined.
        self._inv_ln_c_minus_1 = 1.0 / math.log(num_classes - 1) if num_classes > 2 else math.nan

    @property
    def statistics(self) -> dict[str, Tensor]:
        """The last training batch's statistics by name, as 0-d device tensors (views of
        `statistics_vector`; empty before the first training batch with labels)."""
        vector = self.statistics_vector
        return {} if vector is None else dict(zip(STATISTICS, vector.unbind(), strict=True))

    @property
    def statistics_vector(self) -> Tensor | None:
        """The last training batch's statistics in the order of `STATISTICS`, as one
        float32 device tensor (float64 for float64 inputs); None before the first.
        Under torch.distributed, the global batch's: every rank must read it (it
        gathers the ranks' rows)."""
        rows = self.statistics_rows
        return None if rows is None else self.finish_statistics(rows)

    @property
    def scale(self) -> float:
        """The current scale s as a Python float (reads the device: not for hot loops)."""
        return float(self.current_scale)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}"

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # `.half()` / `.bfloat16()` would round s (s_f = 13.10 becomes 13.1016 in
        # float16) and make every AdaCos update drift: the scale stays float32.
        scale = self.current_scale
        result = super()._apply(fn, recurse)
        if self.current_scale.dtype in (torch.float16, torch.bfloat16):
            self.current_scale = scale.to(device=self.current_scale.device, dtype=torch.float32)
        return result

    # -- the steps a head may override -------------------------------------------------

    def similarity(self, embeddings: Tensor) -> Tensor:
        """cos θ_ij for every sample and class, (N, C), in float32 (float64 for float64
        inputs) even under autocast: angles in half precision lose the margin."""
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            x = F.normalize(embeddings.to(dtype), dim=1)
            w = F.normalize(self.weight.to(dtype), dim=1)
            return x @ w.t()

    def target_cosine(self, cos_target: Tensor) -> Tensor:
        """The target column after the margin, before the scale. Identity: no margin."""
        return cos_target

    def next_scale(self, batch: _BatchGeometry, previous_scale: Tensor) -> Tensor:
        """The scale for this batch (only called when `adaptive`)."""
        return previous_scale

    def cosine_to_target(self, embeddings: Tensor, sim_target: Tensor, index: Tensor) -> Tensor:
        """cos θ_i,y_i, (N,): the similarity itself for cosine heads."""
        return sim_target

    def cosine_row_sums(self, embeddings: Tensor, sim: Tensor) -> tuple[Tensor, Tensor]:
        """Σ_k cos θ_ik and Σ_k cos² θ_ik over every class, each (N,): the non-target
        moments follow from them and the target column. The squares come from a norm
        (one fused pass over sim, no (N, C) temporary)."""
        return sim.sum(dim=1), torch.linalg.vector_norm(sim, dim=1).square()

    # -- the skeleton -------------------------------------------------------------------

    def _check_shape(self, embeddings: Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ParameterError(
                f"embeddings must have shape (N, {self.embedding_dim}), "
                f"got {tuple(embeddings.shape)}"
            )

    @_outside_autocast
    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (N, C): `s · cos` with the margin on the target column in training."""
        self._check_shape(embeddings)
        sim = self.similarity(embeddings)
        previous_scale = _as_dtype(self.current_scale, sim.dtype)
        if labels is None or not self.training:
            return sim * previous_scale

        sim_d = sim.detach()
        valid, index, sim_target = _targets(sim, labels)
        batch, scale = None, previous_scale
        if self.adaptive:
            with torch.no_grad():
                batch = self._measure(embeddings, sim_d, sim_target.detach(), index, valid,
                                      previous_scale)
                scale = self.next_scale(batch, previous_scale)

        logits = sim * scale
        new_target = sim_target
        if self.has_margin:
            margin = torch.where(valid, self.target_cosine(sim_target) - sim_target, 0.0)
            new_target = sim_target + margin
            # Added in place: the backward of scatter_add_ passes the gradient through
            # unchanged, where scatter_ (or a copy) would cost one more (N, C) pass.
            logits.scatter_add_(1, index, (margin * scale).unsqueeze(1))

        if self.track_statistics:
            with torch.no_grad():
                # B_i at the scale of the logits, for P_iy; adacos-dynamic's ln B_i
                # statistic stays the one of its update rule, at s(t-1).
                ln_b_now, _ = _log_nontarget_sum(sim_d, index, scale, self._workspace_like(sim))
                # P_iy = e^{f_iy} / (e^{f_iy} + B_i) = sigmoid(f_iy - ln B_i): exact.
                p_target = torch.sigmoid(new_target.detach() * scale - ln_b_now)
                self.statistics_rows = self._rows(
                    embeddings, sim_d, sim_target.detach(), index, valid.to(sim.dtype),
                    batch, ln_b_now, p_target, scale)
        if self.adaptive:
            self.current_scale.copy_(scale)
        return logits

    @_outside_autocast
    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The mean cross-entropy of `forward(embeddings, labels)` over the labelled rows,
        `F.cross_entropy(head(x, y), y, ignore_index=-1)`, with the same statistics and
        AdaCos update, from one pass over the (N, C) cosines in training: the row's
        log-sum-exp over the non-target classes is ln B_i, and from it and the target
        logit come the cross-entropy (softplus(ln B_i − f_iy)), p_target and the
        gradient (a `_CosineCrossEntropy`), where the logits and `F.cross_entropy`
        would take several more. Also sets `correct`: the labelled rows whose target
        logit is the largest (the training accuracy's count), as a 0-d device tensor."""
        if labels is None:
            raise ParameterError("loss: needs the labels (the cross-entropy is of them)")
        if not self.training:
            logits = self(embeddings, labels)
            self.correct = torch.eq(logits.argmax(dim=1), labels).sum()
            return F.cross_entropy(logits, labels, ignore_index=-1)
        self._check_shape(embeddings)
        sim = self.similarity(embeddings)
        sim_d = sim.detach()
        previous_scale = _as_dtype(self.current_scale, sim.dtype)
        workspace = self._workspace_like(sim)
        valid, index, sim_target = _targets(sim_d, labels)
        valid_f = valid.to(sim.dtype)
        batch, scale = None, previous_scale
        if self.adaptive:  # its update reads ln B at s(t-1): a pass before the loss's
            with torch.no_grad():
                batch = self._measure(embeddings, sim_d, sim_target, index, valid,
                                      previous_scale)
                scale = self.next_scale(batch, previous_scale)
        # The target logits' gradient goes into the loss's (N, C) gradient in place, at
        # the target columns: a gather's backward would build a fresh (N, C) tensor for
        # N numbers, and the engine one more to sum the two. Without a margin the loss
        # does it itself; a margin has its own graph, ending in a `_TargetColumn`.
        new_target = sim_target
        if self.has_margin:
            column = _TargetColumn.apply(sim, sim_target, index, workspace)
            new_target = torch.where(valid, self.target_cosine(column), column)
        f_target = new_target * scale
        loss, ln_b, top, p_target = _CosineCrossEntropy.apply(
            sim, f_target, index, valid_f / valid_f.sum(), scale, workspace,
            not self.has_margin)
        with torch.no_grad():
            self.correct = (valid & (f_target.detach() >= top)).sum()
            if self.track_statistics:
                self.statistics_rows = self._rows(embeddings, sim_d, sim_target, index,
                                                  valid_f, batch, ln_b, p_target, scale)
        if self.adaptive:
            self.current_scale.copy_(scale)
        return loss

    def _workspace_like(self, sim: Tensor) -> Tensor:
        """A scratch (N, C) tensor kept between batches (not state: never saved)."""
        ws = self._workspace
        if ws is None or ws.shape != sim.shape or ws.dtype != sim.dtype or ws.device != sim.device:
            ws = self._workspace = torch.empty_like(sim)
        return ws

    def _measure(
        self,
        embeddings: Tensor,
        sim: Tensor,
        sim_target: Tensor,
        index: Tensor,
        valid: Tensor,
        scale: Tensor,
    ) -> _BatchGeometry:
        """What dynamic AdaCos's update reads, over the labelled rows of the global
        batch (under torch.distributed, every rank holds the same), and what the
        statistics take from the same pass."""
        cos_target = self.cosine_to_target(embeddings, sim_target, index)
        theta = torch.acos(cos_target.clamp(-1.0, 1.0))
        ln_b, tilted = _log_nontarget_sum(sim, index, scale, self._workspace_like(sim),
                                          tilted=True)
        theta_valid = torch.where(valid, theta, math.nan)
        ln_b_valid = torch.where(valid, ln_b, -math.inf)
        if _distributed():
            theta_med, ln_b_sum, count = _global_geometry(
                theta_valid, ln_b_valid, valid.sum().to(sim.dtype), self.equal_rank_batches)
        else:
            theta_med, ln_b_sum = theta_valid.nanmedian(), ln_b_valid.logsumexp(dim=0)
            count = valid.sum().to(sim.dtype)
        return _BatchGeometry(cos_target=cos_target, theta_med_rad=theta_med, ln_b=ln_b,
                              ln_b_sum=ln_b_sum, count=count, tilted_cos=tilted)

    def _rows(
        self,
        embeddings: Tensor,
        sim: Tensor,
        sim_target: Tensor,
        index: Tensor,
        valid_f: Tensor,
        batch: _BatchGeometry | None,
        ln_b_now: Tensor,
        p_target: Tensor,
        scale: Tensor,
    ) -> Tensor:
        """The batch's `ROW_STATISTICS`, (8, N): the per-sample values, in as few ops
        as can be (at small sizes each op's fixed cost, not the arithmetic, is what a
        step pays); every reduction over the samples is `finish_statistics`'s."""
        row_sum, row_square = self.cosine_row_sums(embeddings, sim)
        if batch is None:  # a fixed scale: the loss's ln B_i is the statistic's
            cos_target = self.cosine_to_target(embeddings, sim_target, index)
            ln_b, tilted = ln_b_now, self._nan_row_like(row_sum)
        else:
            cos_target, ln_b, tilted = batch.cos_target, batch.ln_b, batch.tilted_cos
        return torch.stack([valid_f, cos_target, ln_b, p_target, row_sum, row_square,
                            tilted, scale.expand_as(row_sum)])

    def _nan_row_like(self, x: Tensor) -> Tensor:
        """NaN shaped like `x`, kept between batches (one op less a step)."""
        nan = self._nan_row
        if nan is None or nan.shape != x.shape or nan.dtype != x.dtype or nan.device != x.device:
            nan = self._nan_row = torch.full_like(x, math.nan)
        return nan

    def finish_statistics(self, rows: Tensor) -> Tensor:
        """`STATISTICS` (..., 11) from `ROW_STATISTICS` rows (..., 8, N): one batch's
        (8, N), or a log window's (steps, 8, N) at once, in float32 (float64 stays
        float64). Columns with `labelled` = 0 count in nothing. Under torch.distributed
        it gathers every rank's rows first (a collective: every rank calls it), so the
        statistics are the global batch's."""
        if _distributed():
            rows = _gather_rows(rows)
        (labelled, cos_target, ln_b, p_target, row_sum, row_square, tilted,
         scale) = rows.unbind(-2)
        valid = labelled > 0
        count = labelled.sum(-1)
        theta = torch.acos(cos_target.clamp(-1.0, 1.0))
        theta_med = torch.where(valid, theta, math.nan).nanmedian(dim=-1).values
        ln_b_valid = torch.where(valid, ln_b, -math.inf)
        ln_b_sum = ln_b_valid.logsumexp(dim=-1)
        # d ln B_avg / ds = Σ_i B_i m_i / Σ_i B_i (m_i row i's B-weighted mean cosine;
        # NaN for a fixed scale, and so is the sum).
        tilt = (torch.exp(ln_b_valid - ln_b_sum.unsqueeze(-1)) * tilted).sum(-1)
        sums = torch.where(valid.unsqueeze(-2), torch.stack(
            [theta, row_sum - cos_target, row_square - cos_target * cos_target, p_target],
            dim=-2), 0.0).sum(-1)
        theta_mean, mu, second, p_mean = (sums / count.unsqueeze(-1)).unbind(-1)
        others = max(self.num_classes - 1, 1)
        mu, second = mu / others, second / others
        ln_b_avg = ln_b_sum - count.log()
        var = (second - mu * mu).clamp(min=0.0)  # pooled over (i, k ≠ y_i)
        # d_eff / d_eff_min with d_eff_min = 2 k² ln(C-1) / (1 - k μ)², k = 1 / cos(min(π/4,
        # θ_med)) (theory.min_stable_effective_dim), written without a division by zero.
        cos_k = torch.cos(theta_med.clamp(max=math.pi / 4))
        slack = (1.0 - mu / cos_k).clamp(min=0.0)
        margin = slack * slack * cos_k * cos_k * self._inv_ln_c_minus_1 / (2.0 * var)
        finished = torch.stack([
            scale[..., 0], theta_med, theta_mean, mu, p_mean, ln_b_avg,
            ln_b_avg * self._inv_ln_c_minus_1, var, 1.0 / var, margin, tilt / cos_k,
        ], dim=-1)
        return finished if finished.dtype == torch.float64 else finished.float()


class _BatchGeometry(NamedTuple):
    """What dynamic AdaCos's update reads from a batch (and its statistics reuse).
    Rows with label -1 count in none of the reductions."""

    cos_target: Tensor  #: cos θ_i,y_i, (N,)
    theta_med_rad: Tensor  #: lower median of θ over labelled rows (0-d; NaN if none)
    ln_b: Tensor  #: ln B_i = ln Σ_{k≠y_i} exp(s cos θ_ik) at the batch's starting s, (N,)
    ln_b_sum: Tensor  #: ln Σ_i B_i over labelled rows (0-d; -inf if none)
    count: Tensor  #: number of labelled rows (0-d, float)
    #: Σ_{k≠y_i} sim_ik B_ik / B_i: the mean non-target cosine weighted as in B_i,
    #: which is d ln B_i / ds (N,)
    tilted_cos: Tensor


def _as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """`x.to(dtype)` without the call when it would return `x` (each op costs a step
    some µs at small sizes)."""
    return x if x.dtype == dtype else x.to(dtype)


def _targets(sim: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(labelled rows, target columns (N, 1) with −1 read as 0, sim at them (N,))."""
    if labels.dtype != torch.long or labels.device != sim.device:
        labels = labels.to(device=sim.device, dtype=torch.long)
    labels = labels.reshape(-1, 1)
    index = labels.clamp(min=0)
    return labels.squeeze(1) >= 0, index, sim.gather(1, index).squeeze(1)


def _log_nontarget_sum(
    sim: Tensor, index: Tensor, scale: Tensor, workspace: Tensor, tilted: bool = False
) -> tuple[Tensor, Tensor | None]:
    """ln B_i = ln Σ_{k≠y_i} exp(s · sim_ik) per row, as a log-sum-exp (never overflows),
    and with `tilted` its derivative in s, the mean of sim_ik weighted by exp(s · sim_ik).

    Works in place in `workspace` (shaped like `sim`): on the CPU a fresh (N, C) tensor
    per call costs more in page faults than the arithmetic itself.
    """
    scaled = torch.mul(sim, scale, out=workspace)
    scaled.scatter_(1, index, -math.inf)
    row_max = scaled.amax(dim=1, keepdim=True)
    weights = scaled.sub_(row_max).exp_()
    row_sum = weights.sum(dim=1)
    ln_b = row_max.squeeze(1) + row_sum.log()
    if not tilted:
        return ln_b, None
    # A batched row-by-row dot product: no (N, C) temporary.
    weighted = torch.bmm(weights.unsqueeze(1), sim.unsqueeze(2)).view(-1)
    return ln_b, weighted / row_sum


class _TargetColumn(torch.autograd.Function):
    """The target cosines `sim_target` = sim[i, y_i] (N,), computed by the caller, as a
    node of `sim`'s graph whose backward adds their gradient into `workspace` in place
    and returns none for `sim`. Only for `_CosineCrossEntropy`, whose backward runs
    first (the target logits are its input) and returns that same workspace as the
    gradient of `sim`: the two gradients meet in one (N, C) tensor, where a gather's
    backward would allocate and fill a fresh one and the engine a third to add them."""

    @staticmethod
    def forward(ctx: Any, sim: Tensor, sim_target: Tensor, index: Tensor,
                workspace: Tensor) -> Tensor:
        # Kept as attributes, not saved tensors: the workspace is meant to change (it
        # becomes the gradient) before this backward reads it.
        ctx.index, ctx.workspace = index, workspace
        return sim_target.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_target: Tensor) -> tuple[Tensor | None, ...]:
        ctx.workspace.scatter_add_(1, ctx.index, grad_target.unsqueeze(1).to(
            ctx.workspace.dtype))
        return None, None, None, None


class _CosineCrossEntropy(torch.autograd.Function):
    """The mean cross-entropy of cosine logits from one pass over the (N, C) cosines.

    Inputs: `sim` (N, C), `f_target` (N,) the target logits (scale and margin in, with
    their own autograd graph, from `_TargetColumn`), `index` (N, 1) the target columns,
    `weight` (N,) each row's share of the mean (1 / count for a labelled row, 0
    otherwise), `scale` (0-d) and `workspace`, a scratch tensor shaped like `sim`. With
    e_ik = exp(s sim_ik − M_i) over the non-targets (M_i their largest logit) and
    S_i = Σ_k e_ik:

        ln B_i = M_i + ln S_i,   CE_i = softplus(ln B_i − f_iy),   p_i = sigmoid(f_iy − ln B_i)

    and the gradient is ∂CE_i/∂f_iy = p_i − 1, ∂CE_i/∂sim_ik = s e_ik (1 − p_i) / S_i
    (k ≠ y_i): softmax's own, with the exponentials already in the workspace, which
    the backward turns into the gradient of `sim` in place. Its target column, where
    e_iy = 0, gets the target's gradient: from `_TargetColumn` through the margin's
    graph, or, with `plain` (no margin: f_iy = s sim_iy, no graph of its own), from
    this backward, as s (p_i − 1). Returns (loss, ln B_i, M_i, p_i); the last three
    carry no gradient. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, sim: Tensor, f_target: Tensor, index: Tensor, weight: Tensor,
                scale: Tensor, workspace: Tensor, plain: bool,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        scaled = torch.mul(sim, scale, out=workspace)
        scaled.scatter_(1, index, -math.inf)
        top = scaled.amax(dim=1, keepdim=True)
        e = scaled.sub_(top).exp_()
        row_sum = e.sum(dim=1)
        ln_b = top.squeeze(1) + row_sum.log()
        z = f_target - ln_b
        # CE_i = softplus(−z) = −log sigmoid(z), which F.logsigmoid gives exactly for
        # every z (F.softplus turns linear above 20 and drops e^{−20} ≈ 2e-9 of it).
        loss = -(F.logsigmoid(z) @ weight)
        p = torch.sigmoid(z)
        ctx.save_for_backward(e, row_sum, p, weight, scale, index)
        ctx.plain = plain
        ctx.mark_non_differentiable(ln_b, top, p)
        return loss, ln_b, top.squeeze(1), p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        e, row_sum, p, weight, scale, index = ctx.saved_tensors
        row = grad_loss * weight
        grad_sim = e.mul_((row * scale * (1.0 - p) / row_sum).unsqueeze(1))
        grad_target = row * (p - 1.0)
        if ctx.plain:
            grad_sim.scatter_add_(1, index, (grad_target * scale).unsqueeze(1))
            grad_target = None
        return grad_sim, grad_target, None, None, None, None, None


class CosFaceHead(CosineHead):
    """CosFace / LMCL (Wang et al. 2018): target logit s (cos θ − m)."""

    name = "cosface"
    has_margin = True

    def __init__(self, num_classes: int, embedding_dim: int, s: float, m: float) -> None:
        super().__init__(num_classes, embedding_dim, s)
        self.margin_rad = m

    def target_cosine(self, cos_target: Tensor) -> Tensor:
        return cos_target - self.margin_rad

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.scale:g}, m={self.margin_rad:g}"


class ArcFaceHead(CosineHead):
    """ArcFace (Deng et al. 2019): target logit s cos(θ + m), kept non-increasing in θ.

    For θ ≥ π − m, cos(θ + m) would rise again; there the target is cos θ − m sin m
    (the insightface fallback). The margin's real gradient flows: cos(θ + m) is
    expanded as cos θ cos m − sin θ sin m with sin θ = sqrt(max(1 − cos² θ, ε)), so the
    gradient stays finite at cos θ = ±1.
    """

    name = "arcface"
    has_margin = True

    def __init__(self, num_classes: int, embedding_dim: int, s: float, m: float) -> None:
        super().__init__(num_classes, embedding_dim, s)
        self.margin_rad = m
        self._cos_m = math.cos(m)
        self._sin_m = math.sin(m)
        # θ < π − m  ⇔  cos θ > cos(π − m) = −cos m
        self._threshold = -math.cos(m)
        self._fallback_shift = m * math.sin(m)

    def target_cosine(self, cos_target: Tensor) -> Tensor:
        cos = cos_target.clamp(-1.0, 1.0)
        sin = (1.0 - cos * cos).clamp(min=_SIN_EPS).sqrt()
        cos_theta_plus_m = cos * self._cos_m - sin * self._sin_m
        return torch.where(cos > self._threshold, cos_theta_plus_m, cos - self._fallback_shift)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.scale:g}, m={self.margin_rad:g}"


class NormFaceHead(CosineHead):
    """NormFace / L2-softmax: s cos θ for every class."""

    name = "normface"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.scale:g}"


class AdaCosFixedHead(CosineHead):
    """Fixed AdaCos (Zhang et al. 2019): s_f = √2 ln(C − 1), no margin."""

    name = "adacos-fixed"

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__(num_classes, embedding_dim, fixed_scale(num_classes))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s_f={self.scale:.4f}"


class AdaCosDynamicHead(CosineHead):
    """Dynamic AdaCos (Zhang et al. 2019, eq. 15-16), no margin. Per training batch:

        B_avg(t) = 1/N Σ_i Σ_{k≠y_i} exp(s(t−1) cos θ_ik)
        θ_med(t) = median of the target angles θ_i,y_i
        s(t)     = ln B_avg(t) / cos(min(π/4, θ_med(t))),    s(0) = √2 ln(C − 1)

    and the batch's logits use s(t). The median is the lower median of the rows with a
    label (`torch.median`'s convention, as in the reference implementations). No gradient
    flows through s. Under `torch.distributed`, B_avg is the mean over the global batch,
    θ_med its median (with `equal_rank_batches`; else the mean of the ranks' medians),
    the statistics are the global batch's, and rank 0's s is broadcast so every rank holds
    bit-identical scales.
    """

    name = "adacos-dynamic"
    adaptive = True

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__(num_classes, embedding_dim, fixed_scale(num_classes))
        #: A ceiling on s (`train.adacos_scale_max`, a guard; None: the paper's rule).
        self.scale_max: float | None = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s0={fixed_scale(self.num_classes):.4f}"

    def next_scale(self, batch: _BatchGeometry, previous_scale: Tensor) -> Tensor:
        # The batch's geometry is the global batch's under torch.distributed (_measure).
        ln_b_sum, count, theta_med = batch.ln_b_sum, batch.count, batch.theta_med_rad
        new = (ln_b_sum - count.log()) / torch.cos(theta_med.clamp(max=math.pi / 4))
        # A batch with no labelled row keeps the previous scale (no host sync to test it).
        new = torch.where(count > 0, new, previous_scale)
        if self.scale_max is not None:
            new = new.clamp(max=self.scale_max)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(new, src=0)
        return new


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_geometry(
    theta_valid: Tensor, ln_b_valid: Tensor, count: Tensor, equal_batches: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """θ_med, ln Σ_i B_i and the row count of the global batch, from this rank's rows
    (θ NaN and ln B_i −inf where a row has no label); the same on every rank."""
    dist = torch.distributed
    # ln Σ_r exp(a_r) = M + ln Σ_r exp(a_r − M) with M the global max: no overflow.
    local = ln_b_valid.logsumexp(dim=0)
    top = local.clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no row anywhere
    local_median = theta_valid.nanmedian()
    has_rows = (count > 0).to(count.dtype)
    packed = torch.stack([
        torch.exp(local - top), count,
        torch.where(count > 0, local_median, torch.zeros_like(local_median)), has_rows,
    ])
    dist.all_reduce(packed)
    sum_exp, total, median_sum, ranks_with_rows = packed.unbind()
    if equal_batches:  # the exact lower median of every rank's rows
        gathered = [torch.empty_like(theta_valid) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, theta_valid)
        theta_med = torch.cat(gathered).nanmedian()
    else:
        theta_med = median_sum / ranks_with_rows
    return theta_med, top + torch.log(sum_exp), total


def _gather_rows(rows: Tensor) -> Tensor:
    """Every rank's `ROW_STATISTICS` rows (..., 8, N_r), side by side along the
    samples: the global batch's, the same on every rank. Ranks whose N_r differ (a
    batch that lost corrupt samples) pad theirs with unlabelled columns."""
    dist = torch.distributed
    size = torch.tensor([rows.shape[-1]], device=rows.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    pad = int(size) - rows.shape[-1]
    if pad:
        rows = F.pad(rows, (0, pad))  # zeros: `labelled` 0, so the columns count in nothing
    gathered = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, rows.contiguous())
    return torch.cat(gathered, dim=-1)


class SoftmaxHead(CosineHead):
    """Plain softmax baseline: f_ij = <x_i, W_j> + b_j, nothing normalised, s = 1.

    It shares the skeleton with a scale of 1 and no margin; its statistics still give
    the angles between embeddings and class weights.
    """

    name = "softmax"

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__(num_classes, embedding_dim, 1.0)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def similarity(self, embeddings: Tensor) -> Tensor:
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            return torch.addmm(self.bias.to(dtype), embeddings.to(dtype), self.weight.to(dtype).t())

    # Logits are not cosines here: the statistics recompute them from the vectors.

    def cosine_to_target(self, embeddings: Tensor, sim_target: Tensor, index: Tensor) -> Tensor:
        x = F.normalize(embeddings.detach().to(sim_target.dtype), dim=1)
        w = F.normalize(self.weight.detach()[index.squeeze(1)].to(sim_target.dtype), dim=1)
        return (x * w).sum(dim=1)

    def cosine_row_sums(self, embeddings: Tensor, sim: Tensor) -> tuple[Tensor, Tensor]:
        # Σ_k <x̂, Ŵ_k> = <x̂, Σ_k Ŵ_k>: O((N + C) D), no (N, C) pass. The squares have no
        # such shortcut (they would cost a second matmul): NaN.
        x = F.normalize(embeddings.detach().to(sim.dtype), dim=1)
        w = self.weight.detach().to(sim.dtype)
        # Σ_k W_k / ‖W_k‖ as one vector-matrix product: no normalised (C, D) copy.
        w_sum = torch.linalg.vector_norm(w, dim=1).clamp_min(1e-12).reciprocal() @ w
        row_sum = x @ w_sum
        return row_sum, torch.full_like(row_sum, math.nan)


# The heads' hyperparameters and their validation live in `theory` (no torch), so the
# spec can check a sweep's grid without importing the heads; re-exported here.
DEFAULTS = HEAD_DEFAULTS


def build_head(name: str, num_classes: int, embedding_dim: int, **params: float) -> CosineHead:
    """Build a head by name: "softmax", "normface", "cosface", "arcface", "adacos-fixed",
    "adacos-dynamic". Parameters: `s` (normface, cosface, arcface) and `m` in radians
    (cosface, arcface); AdaCos and softmax take none. Missing ones take `DEFAULTS`.
    Raises `ParameterError` naming the parameter for anything impossible.
    """
    values = check_head_params(name, **params)
    for key, value, low in (("num_classes", num_classes, 2), ("embedding_dim", embedding_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(f"{name}: {key} must be an integer >= {low}, got {value!r}")
    if name == "softmax":
        return SoftmaxHead(num_classes, embedding_dim)
    if name == "adacos-fixed":  # AdaCos heads raise for C <= 2 through fixed_scale
        return AdaCosFixedHead(num_classes, embedding_dim)
    if name == "adacos-dynamic":
        return AdaCosDynamicHead(num_classes, embedding_dim)
    if name == "normface":
        return NormFaceHead(num_classes, embedding_dim, values["s"])
    head_class = CosFaceHead if name == "cosface" else ArcFaceHead
    return head_class(num_classes, embedding_dim, values["s"], values["m"])
