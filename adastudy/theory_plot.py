"""The paper's Figure 2: target probability P(θ) against θ, for scales and for margins.

Kept apart from `adastudy.theory` so that the closed forms import numpy only; matplotlib
is used through its object API (`matplotlib.figure.Figure`, Agg canvas), which leaves
pyplot and the global backend untouched.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adastudy.errors import AdastudyError, ParameterError
from adastudy.theory import MARGIN_HEADS, THETA0_RAD, fixed_scale, target_probability

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_paths", "plot_target_probability"]

_THETA_DEG = np.linspace(0.0, 180.0, 721)
_LINESTYLE = {"cosface": "-", "arcface": "--"}
_LABEL = {"cosface": "CosFace", "arcface": "ArcFace"}


def figure_paths(num_classes: int, out_dir: str | Path) -> list[Path]:
    """Where `plot_target_probability` writes: ``target_probability_C{C}.png`` and ``.svg``."""
    stem = Path(out_dir) / f"target_probability_C{num_classes}"
    return [stem.with_suffix(".png"), stem.with_suffix(".svg")]


def _curves(
    num_classes: int, scales: list[float], margins: list[float], margin_scale: float
) -> tuple[dict[float, np.ndarray], np.ndarray, dict[tuple[str, float], np.ndarray]]:
    theta_rad = np.deg2rad(_THETA_DEG)
    by_scale = {
        s: np.asarray(target_probability(theta_rad, s=s, num_classes=num_classes, head="normface"))
        for s in scales
    }
    fixed = np.asarray(target_probability(theta_rad, num_classes=num_classes, head="adacos-fixed"))
    by_margin = {
        (head, m): np.asarray(
            target_probability(theta_rad, s=margin_scale, num_classes=num_classes, m=m, head=head)
        )
        for m in [0.0, *margins]
        for head in MARGIN_HEADS
    }
    return by_scale, fixed, by_margin


def plot_target_probability(
    num_classes: int,
    scales: Iterable[float],
    margins: Iterable[float],
    *,
    margin_scale: float,
    out_dir: str | Path,
) -> list[Path]:
    """Draw P(θ) (θ in degrees, 0…180) in two panels and write PNG and SVG.

    (a) P(θ) for each scale in ``scales`` with no margin (normface), the fixed AdaCos
    scale ``s_f = √2 ln(C - 1)`` as a thick dashed black curve, and θ0 = π/4 marked.
    (b) P(θ) for CosFace (solid) and ArcFace (dashed) at each margin in ``margins``
    (``margin_rad``, radians) with ``s = margin_scale``, and the m = 0 curve.

    Every curve is computed (and every parameter validated) before anything is written.
    ``out_dir`` is created when missing.

    Returns:
        ``[out_dir/target_probability_C{C}.png, out_dir/target_probability_C{C}.svg]``.

    Raises:
        ParameterError: C ≤ 2, a scale ≤ 0, a margin outside [0, π).
        AdastudyError: ``out_dir`` cannot be created or written; whatever this call had
            created is removed again.
    """
    from matplotlib.figure import Figure

    scales = [float(s) for s in scales]
    margins = [float(m) for m in margins]
    s_f = fixed_scale(num_classes)
    if not math.isfinite(margin_scale) or margin_scale <= 0.0:
        raise ParameterError(f"margin_scale must be finite and > 0, got {margin_scale!r}")
    by_scale, fixed, by_margin = _curves(num_classes, scales, margins, margin_scale)

    fig = Figure(figsize=(12.0, 4.8), layout="constrained")
    ax_s, ax_m = fig.subplots(1, 2, sharey=True)

    colors = _palette(len(scales))
    for color, s in zip(colors, scales, strict=True):
        ax_s.plot(_THETA_DEG, by_scale[s], color=color, linewidth=1.6, label=f"s = {s:g}")
    ax_s.plot(
        _THETA_DEG,
        fixed,
        color="black",
        linestyle="--",
        linewidth=2.8,
        label=f"s_f = {s_f:.2f} (AdaCos fixed)",
    )
    ax_s.axvline(
        math.degrees(THETA0_RAD), color="grey", linestyle=":", linewidth=1.2, label="θ0 = π/4 (45°)"
    )
    ax_s.set_title(f"(a) P(θ), no margin, C = {num_classes:,}")
    ax_s.set_ylabel("P(θ) of the true class")

    ax_m.plot(
        _THETA_DEG,
        by_margin[("cosface", 0.0)],
        color="black",
        linewidth=1.6,
        label="m = 0 (NormFace)",
    )
    colors = _palette(len(margins))
    for color, m in zip(colors, margins, strict=True):
        for head in MARGIN_HEADS:
            ax_m.plot(
                _THETA_DEG,
                by_margin[(head, m)],
                color=color,
                linestyle=_LINESTYLE[head],
                linewidth=1.6,
                label=f"{_LABEL[head]} m = {m:g}",
            )
    ax_m.set_title(
        f"(b) P(θ), CosFace (solid) / ArcFace (dashed), s = {margin_scale:g}, C = {num_classes:,}"
    )

    for ax in (ax_s, ax_m):
        ax.set_xlabel("θ (degrees) to the class centre")
        ax.set_xlim(0.0, 180.0)
        ax.set_xticks(np.arange(0.0, 181.0, 30.0))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper right")

    paths = figure_paths(num_classes, out_dir)
    _write(fig, paths)
    return paths


def _palette(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.85, max(n, 1))][:n]


def _write(fig: Figure, paths: list[Path]) -> None:
    """Save ``fig`` to each path, all or nothing.

    Each file is first written beside its target under a temporary name and renamed into
    place only once all are written; on failure, the temporary files and any folder this
    call created are removed, and `AdastudyError` is raised.
    """
    out_dir = paths[0].parent
    created_dirs = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    temporary = [path.with_name(f".{path.name}.tmp") for path in paths]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, tmp in zip(paths, temporary, strict=True):
            fmt = path.suffix.lstrip(".")
            # SVG Date metadata off: the same figure gives the same bytes.
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(tmp, format=fmt, dpi=120, metadata=metadata)
        for path, tmp in zip(paths, temporary, strict=True):
            os.replace(tmp, path)
    except OSError as exc:
        for tmp in temporary:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        for directory in created_dirs:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                break
        reason = exc.strerror or str(exc)
        raise AdastudyError(f"cannot write figures to {out_dir}: {reason}") from exc
