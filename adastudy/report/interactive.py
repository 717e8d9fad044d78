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

__all__ = ["PALETTE", "color_range", "nice_ticks", "plotly_figure", "plotly_text",
           "trace_colors"]

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
_H_SPACING = 0.08
_DASH = {"solid": "solid", "dash": "dash", "dot": "dot"}


def plotly_figure(fig: model.Figure) -> dict[str, Any]:
    """Build the plotly figure of ``fig``: its panels as subplots, ``fig.columns`` per row.

    Lines panels: one scatter trace per `model.Trace` (its mode, dash, width and colour),
    with its band (``y_low``/``y_high``) drawn as a translucent fill, or as error bars
    when the mode is "markers"; a category x axis when a trace has ``x_labels``; log x
    when ``x_log``; vertical and horizontal lines as labelled shapes, listed in the
    legend. Heatmap panels: a diverging scale centred on ``center`` (same distance above
    and below it), the cell texts, the marks as labelled ticks of the colour bar.

    Every NaN or infinity becomes None, which plotly draws as a gap.
    """
    panels = fig.panels
    n = max(len(panels), 1)
    columns = max(1, min(fig.columns, n))
    rows = math.ceil(n / columns)
    h_spacing = _horizontal_spacing(panels)
    plot_px = rows * _ROW_PX + (rows - 1) * _ROW_GAP_PX
    v_spacing = _ROW_GAP_PX / plot_px
    col_w = (1.0 - (columns - 1) * h_spacing) / columns
    row_h = (1.0 - (rows - 1) * v_spacing) / rows

    colors = trace_colors(fig)
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "height": plot_px + _MARGIN["t"] + _MARGIN["b"],
        "margin": dict(_MARGIN),
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
        x_domain = [_round(x0), _round(min(x0 + col_w, 1.0))]
        y_domain = [_round(max(y1 - row_h, 0.0)), _round(y1)]
        suffix = "" if k == 0 else str(k + 1)
        xref, yref = f"x{suffix}", f"y{suffix}"

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
                data.extend(_line_traces(trace, colors, xref, yref, in_legend))
            if any(t.x_labels is not None for t in panel.traces):
                x_axis["type"] = "category"
            elif panel.x_log:
                # Ticks at the data's own x (the swept scales): plotly's default log ticks
                # label 20 and 30 as "2" and "3".
                ticks = sorted({_clean(x) for tr in panel.traces for x in tr.x} - {None})
                x_axis.update(type="log", tickvals=ticks, ticktext=[f"{x:g}" for x in ticks])
        if panel.y_range is not None:
            y_axis["range"] = [_clean(panel.y_range[0]), _clean(panel.y_range[1])]
        shapes.extend(_line_shapes(panel, xref, yref, in_legend))
        layout[f"xaxis{suffix}"] = x_axis
        layout[f"yaxis{suffix}"] = y_axis
        annotations.append(
            {
                "text": f"<b>{plotly_text(panel.title)}</b>",
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
    panel: model.Panel, xref: str, yref: str, in_legend: set[str]
) -> list[dict[str, Any]]:
    """Vertical and horizontal lines across the whole panel, each with its label on the
    line and once in the legend (shapes in data units on the one axis, in fractions of
    the panel on the other; plotly takes data values, not logs, for shapes on log axes)."""
    shapes = []
    for vline in panel.vlines:
        x = _clean(vline.x)
        if x is None:
            continue
        shapes.append(
            _shape(vline.label, vline.color, vline.dash, in_legend)
            | {"xref": xref, "yref": f"{yref} domain", "x0": x, "x1": x, "y0": 0, "y1": 1,
               # Level, just right of the line's top, inside the panel: along the line
               # it would run into the panel's title.
               "label": _shape_label(vline.label, vline.color, "end")
               | {"textangle": 0, "xanchor": "left", "yanchor": "top"}}
        )
    for hline in panel.hlines:
        y = _clean(hline.y)
        if y is None:
            continue
        shapes.append(
            _shape(hline.label, hline.color, hline.dash, in_legend)
            | {"xref": f"{xref} domain", "yref": yref, "x0": 0, "x1": 1, "y0": y, "y1": y,
               "label": _shape_label(hline.label, hline.color, "end")}
        )
    return shapes


def _shape(label: str, color: str, dash: str, in_legend: set[str]) -> dict[str, Any]:
    group = f"line:{label}"
    shape = {
        "type": "line",
        "line": {"color": color, "width": 1.4, "dash": _DASH.get(dash, "dot")},
        "name": plotly_text(label),
        "legendgroup": group,
        "showlegend": group not in in_legend,
        "layer": "above",
    }
    in_legend.add(group)
    return shape


def _shape_label(label: str, color: str, position: str) -> dict[str, Any]:
    return {"text": plotly_text(label), "textposition": position,
            "font": {"size": 10, "color": color}}


# --------------------------------------------------------------------------- heatmaps


def _heatmap_trace(
    panel: model.Panel, xref: str, yref: str, x_domain: list[float], y_domain: list[float]
) -> dict[str, Any]:
    heatmap = panel.heatmap
    assert heatmap is not None
    lo, hi = color_range(heatmap)
    tickvals, ticktext = _colorbar_ticks(heatmap, lo, hi)
    x_label = plotly_text(panel.x_title) or "x"
    y_label = plotly_text(panel.y_title) or "y"
    value_label = plotly_text(heatmap.colorbar_title) or "value"
    return {
        "type": "heatmap",
        "x": [plotly_text(label) for label in heatmap.x_labels],
        "y": [plotly_text(label) for label in heatmap.y_labels],
        "z": [_clean_list(row) for row in heatmap.z],
        "text": [[plotly_text(cell) for cell in row] for row in heatmap.text],
        "texttemplate": "%{text}",
        "textfont": {"size": 11},
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
            "<extra></extra>"
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
            "tickmode": "array",
            "tickvals": tickvals,
            "ticktext": ticktext,
            "ticks": "outside",
            "ticklen": 6,
        },
    }


def _colorbar_ticks(heatmap: model.Heatmap, lo: float, hi: float) -> tuple[list, list]:
    """Round ticks plus one labelled tick per mark; a round tick too close to a mark is
    dropped so that the two labels do not overlap."""
    marks = [(label, _clean(v)) for label, v in heatmap.marks.items()]
    marks = [(label, v) for label, v in marks if v is not None]
    min_gap = 0.06 * (hi - lo)
    vals: list[float] = []
    text: list[str] = []
    for tick in nice_ticks(lo, hi):
        if all(abs(tick - v) >= min_gap for _, v in marks):
            vals.append(tick)
            text.append(f"{tick:.4g}")
    for label, v in marks:
        vals.append(v)
        text.append(f"<b>◀ {plotly_text(label)}</b> {v:.4g}")
    return vals, text


# --------------------------------------------------------------------------- numbers


def _horizontal_spacing(panels: Sequence[model.Panel]) -> float:
    """Room between columns: colour bars, and the labels of their marks, sit there."""
    spacing = _H_SPACING
    for panel in panels:
        if panel.heatmap is not None:
            longest = max((len(label) for label in panel.heatmap.marks), default=0)
            # About 7 px per character of a mark label on a page about 1100 px wide.
            spacing = max(spacing, min(0.4, (90 + 7 * (longest + 8)) / 1100))
    return spacing


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
