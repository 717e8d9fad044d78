"""Closed forms of the AdaCos paper: the fixed scale and the target-probability curve P(θ).

Everything here is numpy only (math layer). With the paper's approximation that the
non-target logits sum to ``B ≈ C - 1`` (non-target angles near π/2), the probability a
cosine-softmax head gives the true class at angle ``θ`` (radians) to its class centre is

    P(θ) = e^f / (e^f + C - 1),   f = s · t(cos θ)

where ``t`` is the head's target "cosine" after the margin (see `target_cosine`).
Margins are in radians throughout. The figures live in `adastudy.theory_plot`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from adastudy.errors import ParameterError

__all__ = [
    "ADACOS_HEADS",
    "HEAD_NAMES",
    "MARGIN_HEADS",
    "THETA0_RAD",
    "HEAD_DEFAULTS",
    "TheoryRow",
    "check_head_params",
    "check_margin",
    "check_scale",
    "dynamic_scale_fixed_point",
    "fixed_scale",
    "min_stable_effective_dim",
    "target_cosine",
    "target_probability",
    "target_probability_rows",
]

HEAD_NAMES: tuple[str, ...] = (
    "softmax",
    "normface",
    "cosface",
    "arcface",
    "adacos-fixed",
    "adacos-dynamic",
)
"""Every head adastudy knows, in the order the project lists them."""

MARGIN_HEADS: tuple[str, ...] = ("cosface", "arcface")
"""Heads that take a margin ``m`` (radians); all others must have ``m = 0``."""

ADACOS_HEADS: tuple[str, ...] = ("adacos-fixed", "adacos-dynamic")
"""Heads whose scale defaults to the fixed AdaCos scale ``s_f``."""

THETA0_RAD: float = math.pi / 4
"""θ0 = π/4, where fixed AdaCos puts the steepest point of P(θ)."""

# Heads with a P(θ) curve: softmax has no scale (its logits are not normalised).
_PROBABILITY_HEADS = tuple(name for name in HEAD_NAMES if name != "softmax")


def _check_num_classes(num_classes: Any, minimum: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ParameterError(
            f"num_classes must be an integer, got {num_classes!r} ({type(num_classes).__name__})"
        )
    if num_classes < minimum:
        raise ParameterError(f"num_classes must be >= {minimum}, got {num_classes}")
    return int(num_classes)


def _check_head(head: Any, allowed: Sequence[str]) -> str:
    if head not in allowed:
        raise ParameterError(f"head must be one of {', '.join(allowed)}; got {head!r}")
    return str(head)


def check_margin(m: Any, head: str) -> float:
    """``m`` as a float in [0, π) radians, and 0 for heads without a margin."""
    try:
        margin_rad = float(m)
    except (TypeError, ValueError):
        raise ParameterError(f"m (margin, radians) must be a number, got {m!r}") from None
    if not math.isfinite(margin_rad) or margin_rad < 0.0 or margin_rad >= math.pi:
        raise ParameterError(f"m (margin, radians) must be in [0, pi), got {m!r}")
    if margin_rad != 0.0 and head not in MARGIN_HEADS:
        raise ParameterError(
            f"m (margin) must be 0 for head {head!r}: only {', '.join(MARGIN_HEADS)} "
            f"take a margin; got m={m!r}"
        )
    return margin_rad


def check_scale(s: Any, name: str = "s (scale)") -> float:
    """``s`` as a finite float > 0."""
    try:
        scale = float(s)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {s!r}") from None
    if not math.isfinite(scale) or scale <= 0.0:
        raise ParameterError(f"{name} must be finite and > 0, got {s!r}")
    return scale


#: Default hyperparameters of each head: CosFace's and ArcFace's papers (s = 64;
#: m = 0.35, 0.5 rad) and NormFace as pytorch-metric-learning's default (s = 20). The
#: keys of each entry are the parameters the head takes.
HEAD_DEFAULTS: dict[str, dict[str, float]] = {
    "softmax": {},
    "normface": {"s": 20.0},
    "cosface": {"s": 64.0, "m": 0.35},
    "arcface": {"s": 64.0, "m": 0.5},
    "adacos-fixed": {},
    "adacos-dynamic": {},
}


def check_head_params(name: str, **params: float) -> dict[str, float]:
    """The head's hyperparameters with defaults filled in, checked without building it:
    `s` and `m` for normface / cosface / arcface, nothing for the others.

    Raises `ParameterError` for an unknown head, an unexpected parameter, `s <= 0` or
    `m` outside [0, pi).
    """
    if name not in HEAD_DEFAULTS:
        raise ParameterError(f"unknown head {name!r}; choose one of {', '.join(HEAD_NAMES)}")
    accepted = HEAD_DEFAULTS[name]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no parameters"
        raise ParameterError(f"{name}: unexpected parameter {unknown[0]!r} ({name} takes {takes})")
    values = {**accepted, **params}
    if "s" in values:
        values["s"] = check_scale(values["s"])
    if "m" in values:
        values["m"] = check_margin(values["m"], name)
    return values


def _as_output(value: NDArray[np.float64], like: ArrayLike) -> float | NDArray[np.float64]:
    """A float for scalar input, an array of the input's shape otherwise."""
    if np.ndim(like) == 0:
        return float(value)
    return value


def fixed_scale(num_classes: int) -> float:
    """Fixed AdaCos scale ``s_f = √2 · ln(C - 1)`` (natural log).

    From putting ``P(θ0) = 1/2`` at ``θ0 = π/4`` with ``B ≈ C - 1``:
    ``s_f = ln(C - 1) / cos(π/4)``. C = 10 → 3.11, 1,000 → 9.77, 10,575 → 13.10,
    85,742 → 16.06.

    Raises:
        ParameterError: ``num_classes`` is not an integer > 2 (C ≤ 2 gives s_f ≤ 0).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ParameterError(
            f"num_classes must be an integer > 2 for AdaCos, got {num_classes!r} "
            f"({type(num_classes).__name__})"
        )
    if num_classes <= 2:
        raise ParameterError(
            f"num_classes must be > 2 for AdaCos (s_f = √2 ln(C-1) <= 0), got {num_classes}"
        )
    return math.sqrt(2.0) * math.log(int(num_classes) - 1)


# -- dynamic AdaCos: when its scale has a fixed point ------------------------------------


def _update_gain(theta_med_rad: float) -> float:
    """k = 1 / cos(min(π/4, θ_med)): the dynamic scale is s(t) = k · ln B_avg(t)."""
    theta = float(theta_med_rad)
    if not math.isfinite(theta) or not 0.0 <= theta <= math.pi:
        raise ParameterError(f"theta_med_rad must lie in [0, π], got {theta_med_rad!r}")
    return 1.0 / math.cos(min(THETA0_RAD, theta))


def _check_cos_mean(cos_mean: Any) -> float:
    mu = float(cos_mean)
    if not math.isfinite(mu) or not -1.0 <= mu <= 1.0:
        raise ParameterError(f"cos_mean must lie in [-1, 1], got {cos_mean!r}")
    return mu


def dynamic_scale_fixed_point(num_classes: int, cos_var: float, cos_mean: float = 0.0,
                              theta_med_rad: float = THETA0_RAD) -> float:
    """The stable fixed point s* of dynamic AdaCos's scale update, or NaN without one.

    If a batch's non-target cosines have mean μ and variance σ² (roughly Gaussian),
    ``ln B_avg ≈ ln(C - 1) + s·μ + s²σ²/2``, so the update s(t+1) = k · ln B_avg(t),
    k = 1 / cos(min(π/4, θ_med)), is the map ``s ↦ k (ln(C - 1) + s μ + s² σ² / 2)``.
    Its fixed points solve ``(k σ²/2) s² + (k μ - 1) s + k ln(C - 1) = 0``; they exist
    when ``(1 - k μ)² ≥ 2 k² σ² ln(C - 1)`` (and ``k μ < 1``), the smaller one is
    stable (the map's slope there is 1 - √disc), and without one s runs away.
    With σ² = 0 and μ = 0 this is s_f = √2 ln(C - 1) at θ_med ≥ 45°.

    Raises:
        ParameterError: C not an integer > 2, σ² negative or not finite, μ outside
            [-1, 1], θ_med outside [0, π].
    """
    log_c = math.log(_check_num_classes(num_classes, 3) - 1)
    var = float(cos_var)
    if not math.isfinite(var) or var < 0.0:
        raise ParameterError(f"cos_var must be a finite variance >= 0, got {cos_var!r}")
    mu = _check_cos_mean(cos_mean)
    k = _update_gain(theta_med_rad)
    slack = 1.0 - k * mu  # the room the linear term leaves below the identity
    if slack <= 0.0:
        return math.nan
    disc = slack * slack - 2.0 * k * k * var * log_c
    if disc < 0.0:
        return math.nan
    # The smaller root, written so that it stays exact as σ² → 0 (no 0/0).
    return 2.0 * k * log_c / (slack + math.sqrt(disc))


def min_stable_effective_dim(num_classes: int, cos_mean: float = 0.0,
                             theta_med_rad: float = THETA0_RAD) -> float:
    """The smallest effective dimension d_eff = 1 / σ² of the non-target cosines for
    which dynamic AdaCos's scale has a fixed point (see `dynamic_scale_fixed_point`):
    ``2 k² ln(C - 1) / (1 - k μ)²``, that is 4 ln(C - 1) with μ = 0 and θ_med ≥ 45°;
    infinite when k μ ≥ 1 (no variance is small enough).

    Raises:
        ParameterError: as `dynamic_scale_fixed_point`.
    """
    log_c = math.log(_check_num_classes(num_classes, 3) - 1)
    mu = _check_cos_mean(cos_mean)
    k = _update_gain(theta_med_rad)
    slack = 1.0 - k * mu
    if slack <= 0.0:
        return math.inf
    return 2.0 * k * k * log_c / (slack * slack)


def _target_cosine_of_angle(
    theta_rad: NDArray[np.float64], cos: NDArray[np.float64], margin_rad: float, head: str
) -> NDArray[np.float64]:
    """Target cosine given both θ and cos θ (so callers holding θ avoid a round trip)."""
    if head == "cosface":
        return cos - margin_rad
    if head == "arcface":
        # cos(θ + m) turns back up once θ + m > π; the usual fallback keeps it falling.
        return np.where(
            theta_rad < math.pi - margin_rad,
            np.cos(theta_rad + margin_rad),
            cos - margin_rad * math.sin(margin_rad),
        )
    return cos


def target_cosine(
    cos: ArrayLike, *, m: float = 0.0, head: str = "cosface"
) -> float | NDArray[np.float64]:
    """The target "cosine" after the head's margin, before the scale.

    - softmax, normface, adacos-fixed, adacos-dynamic: ``cos θ`` (``m`` must be 0)
    - cosface: ``cos θ - m``
    - arcface: ``cos(θ + m)`` if ``θ < π - m``, else ``cos θ - m · sin m``, with
      ``θ = arccos(clip(cos, -1, 1))``; the fallback keeps it non-increasing in θ
      on [0, π] (for margins up to about 2.3 rad).

    Args:
        cos: cosine(s) of the angle to the class centre, scalar or array.
        m: margin ``margin_rad`` in radians, in [0, π).
        head: one of `HEAD_NAMES`.

    Returns:
        A float for scalar input, otherwise an array of the same shape.
    """
    head = _check_head(head, HEAD_NAMES)
    margin_rad = check_margin(m, head)
    cos_arr = np.asarray(cos, dtype=np.float64)
    theta_rad = np.arccos(np.clip(cos_arr, -1.0, 1.0))
    return _as_output(_target_cosine_of_angle(theta_rad, cos_arr, margin_rad, head), cos)


def _logistic(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 / (1 + e^-z)`` without overflow: only ``e^-|z|`` is ever computed."""
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(z))
    return np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def target_probability(
    theta: ArrayLike,
    *,
    s: float | None = None,
    num_classes: int,
    m: float = 0.0,
    head: str = "cosface",
) -> float | NDArray[np.float64]:
    """Probability of the true class at angle ``theta`` (``theta_rad``) to its centre.

    ``P(θ) = e^f / (e^f + C - 1)`` with ``f = s · target_cosine(cos θ)``, i.e. the
    paper's curve with the non-target sum ``B ≈ C - 1``. Computed as the logistic of
    ``f - ln(C - 1)``, so it is exactly 0 or 1 at the extremes, without overflow.

    Args:
        theta: angle(s) in radians, in [0, π]; scalar or array.
        s: scale. Required for normface, cosface, arcface; defaults to
            ``fixed_scale(C)`` for adacos-fixed and adacos-dynamic (``s(0)``).
        num_classes: C ≥ 2 (> 2 when the AdaCos default scale is used).
        m: margin ``margin_rad`` in radians, in [0, π); must be 0 except for cosface and
            arcface.
        head: normface, cosface, arcface, adacos-fixed or adacos-dynamic. softmax has
            no scale and is rejected.

    Returns:
        A float for scalar ``theta``, otherwise an array of the same shape.

    Raises:
        ParameterError: unknown head or softmax, missing / non-positive / non-finite
            ``s``, ``m`` outside [0, π) or non-zero for a head without a margin,
            C < 2, ``theta`` outside [0, π].
    """
    if head == "softmax":
        raise ParameterError(
            "head 'softmax' has no P(theta) curve: its logits are not normalised and it "
            f"has no scale s; use one of {', '.join(_PROBABILITY_HEADS)}"
        )
    head = _check_head(head, _PROBABILITY_HEADS)
    num_classes = _check_num_classes(num_classes, minimum=2)
    margin_rad = check_margin(m, head)
    if s is None:
        if head not in ADACOS_HEADS:
            raise ParameterError(f"s (scale) is required for head {head!r}")
        scale = fixed_scale(num_classes)
    else:
        scale = check_scale(s)

    theta_arr = np.asarray(theta, dtype=np.float64)
    if not np.all(np.isfinite(theta_arr)):
        raise ParameterError("theta (radians) must be finite")
    tolerance = 1e-12
    if np.any(theta_arr < -tolerance) or np.any(theta_arr > math.pi + tolerance):
        raise ParameterError(
            f"theta (radians) must be in [0, pi], got values in "
            f"[{float(theta_arr.min())}, {float(theta_arr.max())}]"
        )
    theta_rad = np.clip(theta_arr, 0.0, math.pi)

    target = _target_cosine_of_angle(theta_rad, np.cos(theta_rad), margin_rad, head)
    logit_gap = scale * target - math.log(num_classes - 1)
    return _as_output(_logistic(logit_gap), theta)


@dataclass(frozen=True)
class TheoryRow:
    """One head's P(θ) at θ = 0, π/4, π/2 (angles in radians, ``m`` in radians)."""

    head: str
    s: float
    m: float
    p_theta_0: float
    p_theta_pi_4: float
    p_theta_pi_2: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(head: str, s: float, m: float, num_classes: int) -> TheoryRow:
    p = target_probability(
        np.array([0.0, math.pi / 4, math.pi / 2]), s=s, num_classes=num_classes, m=m, head=head
    )
    p = np.asarray(p)
    return TheoryRow(head, float(s), float(m), float(p[0]), float(p[1]), float(p[2]))


def target_probability_rows(
    num_classes: int,
    scales: Iterable[float],
    margins: Iterable[float],
    *,
    margin_scale: float,
) -> list[TheoryRow]:
    """The table of ``adastudy theory``: P(θ) at θ = 0, π/4, π/2 for a set of heads.

    Rows, in order: adacos-fixed at ``s_f = fixed_scale(C)``; normface at each scale in
    ``scales``; then for each margin (radians) in ``margins``, cosface and arcface at
    ``s = margin_scale``. Validates everything (C > 2, every s > 0, every m in [0, π))
    and raises `ParameterError` before returning anything.
    """
    s_f = fixed_scale(num_classes)
    margin_scale = check_scale(margin_scale, "margin_scale")
    rows = [_row("adacos-fixed", s_f, 0.0, num_classes)]
    rows += [_row("normface", s, 0.0, num_classes) for s in scales]
    for m in margins:
        rows += [_row(head, margin_scale, m, num_classes) for head in MARGIN_HEADS]
    return rows
