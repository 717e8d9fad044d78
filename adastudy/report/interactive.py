"""A report `Figure` as a plotly figure: a plain, JSON-able ``{"data": [...], "layout": {...}}``.

The dict is written by hand rather than through ``plotly.graph_objects``: the HTML only
needs the JSON, building it directly keeps every value a plain Python number, string or
None (so ``json.dumps(..., allow_nan=False)`` always works), and it costs no validation
time. The figure's own title and caption are left to the page around it.

Plotly renders every string it draws (titles, trace names, tick labels, cell text,
hover labels) as a small subset of HTML, so each string from the model goes through
`plotly_text` first: the text shows as written and no tag in a head name becomes markup.

The colour helpers here (`PALETTE`, `trace_colors`, `color_range`, `nice_ticks`) are
shared with `adastudy.report.static`, so the PNG beside the Markdown and the
interactive figure use the same colours and the same colour-bar range.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from adastudy.report import model

__all__ = ["PALETTE", "color_range", "legend_entries", "log_ticks", "nice_ticks", "own_legends",
           "panel_subtitle", "plotly_figure", "plotly_text", "trace_colors"]

#: Colours for traces without one (matplotlib's "tab10", which plotly users know too).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: Diverging scale for heatmaps with a centre: red below the centre, blue above, white
#: at it. ColorBrewer's RdBu, the colours of matplotlib's "RdBu" (plotly's own "RdBu"
#: runs the other way, with grey in the middle), so both renderers agree.
_RDBU = ("#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
         "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061")
DIVERGING_SCALE = [[round(i / (len(_RDBU) - 1), 4), c] for i, c in enumerate(_RDBU)]
SEQUENTIAL_SCALE = "Viridis"
BAND_ALPHA = 0.18

# Layout in pixels. The width follows the page; the height is fixed so that the HTML can
# give each figure's div the same explicit height.
_ROW_PX = 360
_ROW_GAP_PX = 90
_MARGIN = {"l": 70, "r": 30, "t": 40, "b": 70}
_SUBTITLE_PX = 16
_H_SPACING = 0.08
_DASH = {"solid": "solid", "dash": "dash", "dot": "dot"}
#: The plotting width (the page's figure less the margins) at the narrowest window the
#: report is laid out for, 1,000 px: the figure div is then about 950 px wide. Widths
#: fixed in pixels (a legend, a colour bar) become fractions of the figure through it;
#: a wider window only gives them more room.
_REFERENCE_PX = 850
#: Between a panel and its own legend, as a fraction of the plotting width.
_LEGEND_GAP = 0.01
#: Between two heatmap panels: the colour bar (14 px bar, ticks, 4-digit labels, about
#: 70 px) and the next panel's y tick labels and axis title (about 60 px).
_HEATMAP_GAP_PX = 150


def plotly_figure(fig: model.Figure) -> dict[str, Any]:
    """Build the plotly figure of ``fig``: its panels as subplots, ``fig.columns`` per row.

    Lines panels: one scatter trace per `model.Trace` (its mode, dash, width and colour),
    with its band (``y_low``/``y_high``) drawn as a translucent fill, or as error bars
    when the mode is "markers"; a category x axis when a trace has ``x_labels``; log x
    when ``x_log``, log y when ``y_log``; vertical and horizontal lines as shapes, named
    in the legend only (a label on the line would print over the curves). Panels that
    show different things get one legend each, right of the panel (see `own_legends`).
    Heatmap panels: a diverging scale centred on ``center`` (same distance above and
    below it), the cell texts in a font plotly fits to the cells, the longer ``hover``
    texts on hover, the marks named under the panel's title.

    Every NaN or infinity becomes None, which plotly draws as a gap.
    """
    panels = fig.panels
    n = max(len(panels), 1)
    columns = max(1, min(fig.columns, n))
    rows = math.ceil(n / columns)
    h_spacing = _horizontal_spacing(panels)
    per_panel = own_legends(panels)
    # Each panel with its own legend gives up the legend's width, right of its plot.
    legend_w = max((_legend_width(p) for p in panels), default=0.0) if per_panel else 0.0
    plot_px = rows * _ROW_PX + (rows - 1) * _ROW_GAP_PX
    v_spacing = _ROW_GAP_PX / plot_px
    col_w = (1.0 - (columns - 1) * h_spacing) / columns
    row_h = (1.0 - (rows - 1) * v_spacing) / rows
    margin = dict(_MARGIN)
    if any(panel_subtitle(p) for p in panels):
        margin["t"] += _SUBTITLE_PX  # room for the second line of the top row's titles

    colors = trace_colors(fig)
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "height": plot_px + margin["t"] + margin["b"],
        "margin": margin,
        "template": "plotly_white",
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                 "size": 12},
        "hovermode": "closest",
        "legend": {"font": {"size": 11}},
    }
    in_legend: set[str] = set()

    for k, panel in enumerate(panels):
        row, col = divmod(k, columns)
        x0 = col * (col_w + h_spacing)
        y1 = 1.0 - row * (row_h + v_spacing)
        x_domain = [_round(x0), _round(min(x0 + col_w - legend_w, 1.0))]
        y_domain = [_round(max(y1 - row_h, 0.0)), _round(y1)]
        suffix = "" if k == 0 else str(k + 1)
        xref, yref = f"x{suffix}", f"y{suffix}"
        legend = "legend"
        if per_panel:
            legend = "legend" if k == 0 else f"legend{k + 1}"
            in_legend = set()  # each legend names its own panel's lines
            layout[legend] = {"font": {"size": 11}, "x": _round(x_domain[1] + _LEGEND_GAP),
                              "xanchor": "left", "y": y_domain[1], "yanchor": "top",
                              "bgcolor": "rgba(255, 255, 255, 0)"}

        x_axis: dict[str, Any] = {
            "domain": x_domain,
            "anchor": yref,
            "title": {"text": plotly_text(panel.x_title)},
            "automargin": True,
            "zeroline": False,
        }
        y_axis: dict[str, Any] = {
            "domain": y_domain,
            "anchor": xref,
            "title": {"text": plotly_text(panel.y_title)},
            "automargin": True,
            "zeroline": False,
        }
        if panel.heatmap is not None:
            data.append(_heatmap_trace(panel, xref, yref, x_domain, y_domain))
            x_axis.update(type="category", showgrid=False)
            y_axis.update(type="category", showgrid=False)
        else:
            for trace in panel.traces:
                data.extend(_line_traces(trace, colors, xref, yref, in_legend, legend))
            if any(t.x_labels is not None for t in panel.traces):
                x_axis["type"] = "category"
            elif panel.x_log:
                # Ticks at the data's own x (the swept scales): plotly's default log ticks
                # label 20 and 30 as "2" and "3".
                ticks = sorted({_clean(x) for tr in panel.traces for x in tr.x} - {None})
                x_axis.update(type="log", tickvals=ticks, ticktext=[f"{x:g}" for x in ticks])
            if panel.y_log:
                # Plain numbers at round values (plotly's own log ticks label 2 and 5 of
                # a decade in small digits, hard to read).
                ticks = log_ticks(*_y_extent(panel))
                y_axis.update(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
        if panel.y_range is not None:
            y_range = [_clean(panel.y_range[0]), _clean(panel.y_range[1])]
            if panel.y_log:  # plotly takes a log axis' range as logs
                y_range = [math.log10(v) if v is not None and v > 0 else None
                           for v in y_range]
            y_axis["range"] = y_range
        shapes.extend(_line_shapes(panel, xref, yref, in_legend, legend))
        shapes.extend(_cell_line_shapes(panel, xref, yref, in_legend, legend))
        layout[f"xaxis{suffix}"] = x_axis
        layout[f"yaxis{suffix}"] = y_axis
        title = f"<b>{plotly_text(panel.title)}</b>"
        subtitle = panel_subtitle(panel)
        if subtitle:
            title += f'<br><span style="font-size: 11px">{plotly_text(subtitle)}</span>'
        annotations.append(
            {
                "text": title,
                "x": (x_domain[0] + x_domain[1]) / 2,
                "y": y_domain[1],
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "yshift": 6,
                "showarrow": False,
                "font": {"size": 13},
            }
        )

    layout["shapes"] = shapes
    layout["annotations"] = annotations
    return {"data": data, "layout": layout}


# --------------------------------------------------------------------------- shared helpers


def plotly_text(text: str) -> str:
    """``text`` as plotly shows it literally: HTML-escaped (plotly decodes the entities
    when it draws) and with braces as entities, so that no ``%{...}`` in a name is read as
    a hover-template variable."""
    return html.escape(str(text), quote=False).replace("{", "&#123;").replace("}", "&#125;")


def panel_subtitle(panel: model.Panel) -> str:
    """The line under ``panel``'s title: its own subtitle, or a heatmap's marks with their
    values ("AdaCos dynamic 0.9090 · AdaCos fixed 0.9070")."""
    if panel.subtitle or panel.heatmap is None:
        return panel.subtitle
    marks = [(label, _clean(v)) for label, v in panel.heatmap.marks.items()]
    return " · ".join(f"{label} {v:.4f}" for label, v in marks if v is not None)


def legend_entries(panel: model.Panel) -> list[str]:
    """What ``panel``'s legend lists: its traces' names, then its lines' labels."""
    names = [t.name for t in panel.traces] + [v.label for v in panel.vlines] \
        + [h.label for h in panel.hlines]
    return list(dict.fromkeys(names))


def own_legends(panels: Sequence[model.Panel]) -> bool:
    """Whether each panel gets a legend of its own: when no panel's traces include every
    other panel's (panels that show different things). Panels showing the same traces
    (the convergence figure: one configuration per colour in every panel) share one
    legend; one legend for panels of different traces would give one colour two
    meanings (s = 4 on the left, cosface m = 0.1 on the right)."""
    names = [{t.name for t in p.traces} for p in panels if p.heatmap is None and p.traces]
    if len(names) < 2:
        return False
    return not any(all(other <= one for other in names) for one in names)


def _legend_width(panel: model.Panel) -> float:
    """The width of ``panel``'s own legend as a fraction of the plotting width: the
    line sample (about 45 px) and about 6.5 px a character at 11 px."""
    longest = max((len(e) for e in legend_entries(panel)), default=0)
    return 0.0 if not longest else (45 + 6.5 * longest) / _REFERENCE_PX


def trace_colors(fig: model.Figure) -> dict[str, str]:
    """The palette colour of each trace name without an explicit colour, in order of
    first appearance; one name keeps one colour in every panel of the figure."""
    colors: dict[str, str] = {}
    for panel in fig.panels:
        for trace in panel.traces:
            if trace.color is None and trace.name not in colors:
                colors[trace.name] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def color_range(heatmap: model.Heatmap) -> tuple[float, float]:
    """The colour-bar range of ``heatmap``: all finite cells and marks inside it and, with
    a ``center``, the same distance on both sides of it (so equal colour intensity means
    an equal difference from the centre, above or below)."""
    if heatmap.z_range is not None:
        return float(heatmap.z_range[0]), float(heatmap.z_range[1])
    values = [v for v in _finite(heatmap.z) if v is not None]
    values += [v for v in (_clean(m) for m in heatmap.marks.values()) if v is not None]
    center = _clean(heatmap.center) if heatmap.center is not None else None
    if center is not None:
        half = max((abs(v - center) for v in values), default=0.0)
        if half <= 0.0:
            half = max(abs(center) * 0.05, 1e-6)  # all cells equal the centre
        return center - half, center + half
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo == hi:
        pad = max(abs(lo) * 0.05, 1e-6)
        return lo - pad, hi + pad
    return lo, hi


def log_ticks(lo: float, hi: float) -> list[float]:
    """Round values for a log axis over [lo, hi] (both > 0): 1, 2 and 5 of each decade,
    or finer steps when that gives fewer than three."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        return []
    for mantissas in ((1.0, 2.0, 5.0), (1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [round(m * 10.0 ** k, 12)
                 for k in range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
                 for m in mantissas if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 3:
            break
    return ticks


def _y_extent(panel: model.Panel) -> tuple[float, float]:
    """The smallest and largest positive y of ``panel``'s traces, bands and lines."""
    values = [v for t in panel.traces for series in (t.y, t.y_low or [], t.y_high or [])
              for v in _clean_list(series) if v is not None and v > 0]
    values += [v for v in (_clean(h.y) for h in panel.hlines) if v is not None and v > 0]
    if panel.y_range is not None:
        values += [v for v in _clean_list(panel.y_range) if v is not None and v > 0]
    return (min(values), max(values)) if values else (math.nan, math.nan)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About ``target`` round values (steps of 1, 2, 2.5 or 5 × 10^k) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    raw = (hi - lo) / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next((m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw), raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


# --------------------------------------------------------------------------- lines panels


def _line_traces(
    trace: model.Trace,
    colors: dict[str, str],
    xref: str,
    yref: str,
    in_legend: set[str],
    legend: str = "legend",
) -> list[dict[str, Any]]:
    color = trace.color or colors.get(trace.name, PALETTE[0])
    name = plotly_text(trace.name)
    group = f"trace:{trace.name}"
    x: list[Any] = (
        [plotly_text(label) for label in trace.x_labels]
        if trace.x_labels is not None
        else _clean_list(trace.x)
    )
    y = _clean_list(trace.y)
    has_band = trace.y_low is not None and trace.y_high is not None
    low = _clean_list(trace.y_low) if has_band and trace.y_low is not None else None
    high = _clean_list(trace.y_high) if has_band and trace.y_high is not None else None

    main: dict[str, Any] = {
        "type": "scatter",
        "name": name,
        "x": x,
        "y": y,
        "mode": trace.mode,
        "xaxis": xref,
        "yaxis": yref,
        "legendgroup": group,
        "showlegend": group not in in_legend,
        "legend": legend,
        "connectgaps": False,
        "line": {"color": color, "width": trace.width, "dash": _DASH.get(trace.dash, "solid")},
        "marker": {"color": color, "size": 7},
        "hovertemplate": "x = %{x}<br>y = %{y:.4~g}",
    }
    in_legend.add(group)
    traces: list[dict[str, Any]] = []
    if low is not None and high is not None:
        # The interval goes into the hover label of the line itself.
        main["customdata"] = [[lo, hi] for lo, hi in zip(low, high, strict=False)]
        main["hovertemplate"] += "<br>[%{customdata[0]:.4~g}, %{customdata[1]:.4~g}]"
        if trace.mode == "markers":
            main["error_y"] = {
                "type": "data",
                "symmetric": False,
                "array": [_diff(hi, v) for v, hi in zip(y, high, strict=False)],
                "arrayminus": [_diff(v, lo) for v, lo in zip(y, low, strict=False)],
                "color": color,
                "thickness": 1.4,
                "width": 4,
            }
        else:
            # One closed polygon per run of finite bounds (upper bound out, lower bound
            # back), runs separated by None: "toself" fills each run on its own, where
            # "tonexty" between two gappy traces bridges the gaps with stray wedges.
            band_x, band_y = _band_polygons(x, low, high)
            fill = _translucent(color)
            band: dict[str, Any] = {
                "type": "scatter",
                "name": f"{name} (band)",
                "x": band_x,
                "y": band_y,
                "mode": "lines",
                "fill": "toself",
                "fillcolor": fill,
                "line": {"width": 0, "color": color},
                "xaxis": xref,
                "yaxis": yref,
                "legendgroup": group,  # toggles with its line
                "showlegend": False,
                "legend": legend,
                "hoverinfo": "skip",
            }
            if fill == color:  # not "#rrggbb": make the whole band trace translucent
                band["opacity"] = BAND_ALPHA
            traces.append(band)
    main["hovertemplate"] += "<extra>%{fullData.name}</extra>"
    traces.append(main)
    return traces


def _band_polygons(
    x: list[Any], low: list[float | None], high: list[float | None]
) -> tuple[list[Any], list[float | None]]:
    runs: list[list[int]] = [[]]
    for i, (lo, hi) in enumerate(zip(low, high, strict=False)):
        if i < len(x) and x[i] is not None and lo is not None and hi is not None:
            runs[-1].append(i)
        elif runs[-1]:
            runs.append([])
    band_x: list[Any] = []
    band_y: list[float | None] = []
    for run in runs:
        if len(run) < 2:
            continue  # a lone point has no area (its interval is in the hover label)
        if band_x:
            band_x.append(None)
            band_y.append(None)
        band_x += [x[i] for i in run] + [x[i] for i in reversed(run)]
        band_y += [high[i] for i in run] + [low[i] for i in reversed(run)]
    return band_x, band_y


def _line_shapes(
    panel: model.Panel, xref: str, yref: str, in_legend: set[str], legend: str = "legend"
) -> list[dict[str, Any]]:
    """Vertical and horizontal lines across the whole panel, each named once in the
    legend and not on the line: a label inside the panel prints over the curves, and
    two lines close together (s_f of two C) print their labels over each other. Shapes
    in data units on the one axis, in fractions of the panel on the other; plotly takes
    data values, not logs, for shapes on log axes."""
    shapes = []
    for vline in panel.vlines:
        x = _clean(vline.x)
        if x is None:
            continue
        shapes.append(
            _shape(vline.label, vline.color, vline.dash, in_legend, legend)
            | {"xref": xref, "yref": f"{yref} domain", "x0": x, "x1": x, "y0": 0, "y1": 1}
        )
    for hline in panel.hlines:
        y = _clean(hline.y)
        if y is None:
            continue
        shapes.append(
            _shape(hline.label, hline.color, hline.dash, in_legend, legend)
            | {"xref": f"{xref} domain", "yref": yref, "x0": 0, "x1": 1, "y0": y, "y1": y}
        )
    return shapes


def _shape(label: str, color: str, dash: str, in_legend: set[str],
           legend: str) -> dict[str, Any]:
    group = f"line:{label}"
    shape = {
        "type": "line",
        "line": {"color": color, "width": 1.4, "dash": _DASH.get(dash, "dot")},
        "name": plotly_text(label),
        "legendgroup": group,
        "showlegend": group not in in_legend,
        "legend": legend,
        "layer": "above",
    }
    in_legend.add(group)
    return shape


# --------------------------------------------------------------------------- heatmaps


def _heatmap_trace(
    panel: model.Panel, xref: str, yref: str, x_domain: list[float], y_domain: list[float]
) -> dict[str, Any]:
    heatmap = panel.heatmap
    assert heatmap is not None
    lo, hi = color_range(heatmap)
    ticks = nice_ticks(lo, hi)
    x_label = plotly_text(panel.x_title) or "x"
    y_label = plotly_text(panel.y_title) or "y"
    value_label = plotly_text(heatmap.colorbar_title) or "value"
    hover = heatmap.hover if heatmap.hover is not None else heatmap.text
    return {
        "type": "heatmap",
        "x": [plotly_text(label) for label in heatmap.x_labels],
        "y": [plotly_text(label) for label in heatmap.y_labels],
        "z": [_clean_list(row) for row in heatmap.z],
        "text": [[_cell_text(cell) for cell in row] for row in heatmap.text],
        "customdata": [[_cell_text(cell) for cell in row] for row in hover],
        "texttemplate": "%{text}",
        # No font size: plotly.js then fits it to the cells ("auto", which plotly.py's
        # validator does not accept written out), from their size in pixels, also after
        # a resize, at most the layout's 12 px. A fixed size ran a long label into the
        # next cell on a narrow page.
        "textfont": {},
        "xaxis": xref,
        "yaxis": yref,
        "colorscale": DIVERGING_SCALE if heatmap.center is not None else SEQUENTIAL_SCALE,
        # zmin/zmax rather than zmid: the range also has to hold the marks, and
        # `color_range` already centres it.
        "zmin": lo,
        "zmax": hi,
        "zauto": False,
        "hoverongaps": False,
        "xgap": 1,
        "ygap": 1,
        "showscale": True,
        "hovertemplate": (
            f"{x_label} = %{{x}}<br>{y_label} = %{{y}}<br>{value_label} = %{{z:.4~g}}"
            "<br>%{customdata}<extra></extra>"
        ),
        "colorbar": {
            # Above the bar: on its right the title would push into the next panel.
            "title": {"text": value_label, "side": "top"},
            "x": x_domain[1] + 0.01,
            "xanchor": "left",
            "y": y_domain[0],
            "yanchor": "bottom",
            "len": 0.9 * (y_domain[1] - y_domain[0]),
            "thickness": 14,
            # Round values only: the marks are named under the panel's title, where two
            # close marks cannot print over each other or into the next panel.
            "tickmode": "array",
            "tickvals": ticks,
            "ticktext": [f"{t:.4g}" for t in ticks],
            "ticks": "outside",
            "ticklen": 6,
        },
    }


def _cell_text(text: str) -> str:
    """A cell's text for plotly: escaped, its newlines as line breaks."""
    return plotly_text(text).replace("\n", "<br>")


def _cell_line_shapes(panel: model.Panel, xref: str, yref: str, in_legend: set[str],
                      legend: str) -> list[dict[str, Any]]:
    """A heatmap's `CellLine`s as path shapes: on its category axes, shapes take the
    cells' serial numbers (fractions included) as coordinates."""
    shapes = []
    for line in panel.heatmap.lines if panel.heatmap is not None else []:
        points = [(x, y) for x, y in zip(line.x, line.y, strict=True)
                  if _clean(x) is not None and _clean(y) is not None]
        if len(points) < 2:
            continue
        path = "M " + " L ".join(f"{x:.4g},{y:.4g}" for x, y in points)
        shape = _shape(line.label, line.color, line.dash, in_legend, legend)
        shape["line"]["width"] = 2.4
        shapes.append(shape | {"type": "path", "path": path, "xref": xref, "yref": yref})
    return shapes


# --------------------------------------------------------------------------- numbers


def _horizontal_spacing(panels: Sequence[model.Panel]) -> float:
    """Room between columns: the colour bars of heatmaps sit there."""
    if any(panel.heatmap is not None for panel in panels):
        return max(_H_SPACING, _HEATMAP_GAP_PX / _REFERENCE_PX)
    return _H_SPACING


def _clean(value: Any) -> float | None:
    """A finite float, or None (plotly's gap) for NaN, infinities and None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clean_list(values: Iterable[Any]) -> list[float | None]:
    return [_clean(v) for v in values]


def _finite(rows: Iterable[Iterable[Any]]) -> list[float | None]:
    return [_clean(v) for row in rows for v in row]


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return max(a - b, 0.0)  # an error bar cannot be negative; a bad bound shows as none


def _round(x: float) -> float:
    return round(x, 6)


def _translucent(color: str, alpha: float = BAND_ALPHA) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)``; any other CSS colour is kept as it is."""
    text = color.strip()
    if len(text) == 7 and text.startswith("#"):
        try:
            r, g, b = (int(text[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            return text
        return f"rgba({r}, {g}, {b}, {alpha})"
    return text
