"""A report `Figure` as a PNG, drawn with matplotlib for the Markdown report.

The same content as `adastudy.report.interactive` (same colours, same colour-bar range),
drawn through matplotlib's object API (`matplotlib.figure.Figure`, Agg canvas) so that
pyplot's global state and the process-wide backend are left alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adastudy import store
from adastudy.report import model
from adastudy.report.interactive import (
    color_range,
    log_ticks,
    nice_ticks,
    panel_subtitle,
    trace_colors,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

__all__ = ["DPI", "save_png"]

DPI = 110
#: Inches per panel: two panels side by side make a PNG about 1400 px wide at `DPI`.
PANEL_SIZE_IN = (6.4, 4.4)
#: Cell labels of a heatmap: at most this size, shrunk to fit the cells, and left out
#: (the PNG has no hover) below the smallest readable size.
CELL_FONT_PT = 9.0
MIN_CELL_FONT_PT = 5.0
BAND_ALPHA = 0.18
NAN_COLOR = "#f0f0f0"
_LINESTYLE = {"solid": "-", "dash": "--", "dot": ":"}


def save_png(fig: model.Figure, path: Path) -> Path:
    """Draw ``fig`` and write it as a PNG to ``path`` (its folder is created when missing).

    The image is written beside ``path`` under a temporary name and renamed into place,
    so a reader never sees half a file. Returns ``path``.
    """
    figure = _draw(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


def _draw(fig: model.Figure) -> MplFigure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(fig.panels), 1)
    columns = max(1, min(fig.columns, n))
    rows = math.ceil(n / columns)
    width = PANEL_SIZE_IN[0] * columns
    height = PANEL_SIZE_IN[1] * rows + 0.4
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # a renderer to measure text with (`_fit_cell_labels`)
    axes = figure.subplots(rows, columns, squeeze=False)
    if fig.title:
        figure.suptitle(_text(fig.title), fontsize=13, fontweight="bold")
    colors = trace_colors(fig)
    cell_labels: list[tuple[Axes, list]] = []
    for k, ax in enumerate(axes.flat):
        if k >= len(fig.panels):
            ax.set_axis_off()
            continue
        panel = fig.panels[k]
        if panel.heatmap is not None:
            cell_labels.append((ax, _draw_heatmap(figure, ax, panel, panel.heatmap)))
        else:
            _draw_lines(ax, panel, colors)
        subtitle = panel_subtitle(panel)
        ax.set_title(_text(panel.title) + (f"\n{_text(subtitle)}" if subtitle else ""),
                     fontsize=11 if not subtitle else 10)
        ax.set_xlabel(_text(panel.x_title))
        ax.set_ylabel(_text(panel.y_title))
    if cell_labels:
        _fit_cell_labels(figure, cell_labels)
    return figure


# --------------------------------------------------------------------------- lines panels


def _draw_lines(ax: Axes, panel: model.Panel, colors: dict[str, str]) -> None:
    categories = _categories(panel)
    for trace in panel.traces:
        color = trace.color or colors.get(trace.name)
        if trace.x_labels is not None:
            x = np.array([categories[label] for label in trace.x_labels], dtype=float)
        else:
            x = _array(trace.x)
        y = _array(trace.y)
        low = _array(trace.y_low) if trace.y_low is not None else None
        high = _array(trace.y_high) if trace.y_high is not None else None
        style: dict[str, Any] = {
            "color": color,
            "linestyle": _LINESTYLE.get(trace.dash, "-"),
            "linewidth": trace.width,
            "label": _text(trace.name),
        }
        if trace.mode == "markers":
            style |= {"linestyle": "none", "marker": "o", "markersize": 5}
            if low is not None and high is not None:
                # Clipped at 0: matplotlib rejects negative error bars, and a bound on
                # the wrong side of the mean is better shown as none than as a crash.
                yerr = np.vstack([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
                ax.errorbar(x, y, yerr=yerr, capsize=3, elinewidth=1.2, **style)
            else:
                ax.plot(x, y, **style)
            continue
        if trace.mode == "lines+markers":
            style |= {"marker": "o", "markersize": 4}
        (line,) = ax.plot(x, y, **style)
        if low is not None and high is not None:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=BAND_ALPHA,
                            linewidth=0)
    for vline in panel.vlines:
        ax.axvline(vline.x, color=vline.color, linestyle=_LINESTYLE.get(vline.dash, ":"),
                   linewidth=1.3, label=_text(vline.label))
    for hline in panel.hlines:
        ax.axhline(hline.y, color=hline.color, linestyle=_LINESTYLE.get(hline.dash, ":"),
                   linewidth=1.3, label=_text(hline.label))
    if categories:
        ax.set_xticks(list(categories.values()), [_text(c) for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)  # room for the first and last label
        if max(len(c) for c in categories) * len(categories) > 60:
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    elif panel.x_log:
        ax.set_xscale("log")
        # Ticks at the data's own x (the swept scales), as plain numbers.
        ticks = sorted({x for tr in panel.traces for x in tr.x if math.isfinite(x) and x > 0})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    if panel.y_log:
        ax.set_yscale("log")
    if panel.y_range is not None:
        ax.set_ylim(*panel.y_range)
    if panel.y_log:
        from matplotlib.ticker import NullFormatter

        # Plain numbers at round values, the plotly figure's ticks.
        ticks = log_ticks(*ax.get_ylim())
        if ticks:
            ax.set_yticks(ticks, [f"{v:g}" for v in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _categories(panel: model.Panel) -> dict[str, int]:
    """Position of each category label, in order of first appearance over the traces."""
    positions: dict[str, int] = {}
    for trace in panel.traces:
        for label in trace.x_labels or []:
            positions.setdefault(label, len(positions))
    return positions


# --------------------------------------------------------------------------- heatmaps


def _draw_heatmap(figure: MplFigure, ax: Axes, panel: model.Panel,
                  heatmap: model.Heatmap) -> list:
    """Draw the heatmap; its cell labels (sized later, by `_fit_cell_labels`)."""
    from matplotlib import colormaps
    from matplotlib.colors import CenteredNorm, Normalize

    z = np.ma.masked_invalid(_array2d(heatmap.z))
    if z.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return []
    lo, hi = color_range(heatmap)
    if heatmap.center is not None:
        cmap = colormaps["RdBu"].with_extremes(bad=NAN_COLOR)
        norm: Normalize = CenteredNorm(vcenter=(lo + hi) / 2, halfrange=(hi - lo) / 2)
    else:
        cmap = colormaps["viridis"].with_extremes(bad=NAN_COLOR)
        norm = Normalize(vmin=lo, vmax=hi)
    # Row 0 at the bottom, as plotly draws it: the grid reads like a plot of (x, y).
    image = ax.imshow(z, cmap=cmap, norm=norm, origin="lower", aspect="auto",
                      interpolation="nearest")
    rows, cols = z.shape
    ax.set_xticks(range(cols), [_text(label) for label in heatmap.x_labels[:cols]])
    ax.set_yticks(range(rows), [_text(label) for label in heatmap.y_labels[:rows]])
    if cols and max(len(label) for label in heatmap.x_labels[:cols]) * cols > 50:
        ax.tick_params(axis="x", labelrotation=30)
    labels = []
    for i, row in enumerate(heatmap.text[:rows]):
        for j, cell in enumerate(row[:cols]):
            if not cell:
                continue
            value = z[i, j]
            dark = (value is not np.ma.masked) and _is_dark(cmap(norm(float(value))))
            label = ax.text(j, i, _text(cell), ha="center", va="center", fontsize=CELL_FONT_PT,
                            color="white" if dark else "black", clip_on=True)
            label.set_in_layout(False)  # inside its cell: no room to make for it
            labels.append(label)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for line in heatmap.lines:
        ax.plot(_array(line.x), _array(line.y), color=line.color, linewidth=2.4,
                linestyle=_LINESTYLE.get(line.dash, "-"), label=_text(line.label))
    if heatmap.lines:
        ax.set_xlim(-0.5, cols - 0.5)  # a line along an edge must not widen the grid
        ax.set_ylim(-0.5, rows - 0.5)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14),
                  frameon=False)

    # Beside its own panel: a small fraction of the panel's width, a small pad.
    bar = figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label(_text(heatmap.colorbar_title))
    ticks = nice_ticks(lo, hi)
    bar.set_ticks(ticks, labels=[f"{t:.4g}" for t in ticks])
    # Each mark is a black line across the bar, not labelled there (two close marks
    # would print over each other): the panel's subtitle names them with their values.
    for value in heatmap.marks.values():
        if math.isfinite(value):
            bar.ax.axhline(value, color="black", linewidth=2.0)
    return labels


def _fit_cell_labels(figure: MplFigure, cell_labels: list[tuple[Axes, list]]) -> None:
    """Shrink each heatmap's cell labels, all to one size, to fit inside the cells, as
    laid out; below `MIN_CELL_FONT_PT` they are left out."""
    figure.draw_without_rendering()  # the layout, so the cells have their final size
    renderer = figure.canvas.get_renderer()
    for ax, labels in cell_labels:
        if not labels:
            continue
        box = ax.get_window_extent(renderer)
        x_lo, x_hi = ax.get_xlim()
        y_lo, y_hi = ax.get_ylim()
        cell_w = box.width / abs(x_hi - x_lo)  # one cell is one data unit
        cell_h = box.height / abs(y_hi - y_lo)
        scale = 1.0
        for label in labels:
            extent = label.get_window_extent(renderer)
            if extent.width > 0 and extent.height > 0:
                # 0.9: a margin to the cell's edge (and to the gap of the next cell).
                scale = min(scale, 0.9 * cell_w / extent.width, 0.9 * cell_h / extent.height)
        size = CELL_FONT_PT * scale
        for label in labels:
            label.set_fontsize(size)
            label.set_visible(size >= MIN_CELL_FONT_PT)


def _is_dark(rgba: tuple[float, float, float, float]) -> bool:
    r, g, b = rgba[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


# --------------------------------------------------------------------------- values


def _text(text: str) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` would start mathtext (and an
    odd number of them fails the whole draw), and a leading ``_`` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _array(values: list[float]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _array2d(rows: list[list[float]]) -> np.ndarray:
    width = max((len(row) for row in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = _array(row)
    return out
