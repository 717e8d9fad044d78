"""Headless Chromium for the report tests: Debian's `chromium` with no network, and a
probe script that records errors, alerts, requests and the figures' sizes."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)

# Injected first into <head> of a copy of the page: records every error, failed load,
# alert and network request, then writes what it saw into the DOM for --dump-dom.
PROBE = """<script>
(function () {
  var seen = {errors: [], alerts: [], consoleErrors: [], rejections: [], failedLoads: []};
  window.__probe = seen;
  window.alert = function (m) { seen.alerts.push(String(m)); };
  window.onerror = function (msg, src, line) { seen.errors.push(msg + " @" + line); };
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window) {
      seen.failedLoads.push(e.target.tagName + " " + (e.target.src || e.target.href));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    seen.rejections.push(String(e.reason));
  });
  var origError = console.error;
  console.error = function () {
    seen.consoleErrors.push(Array.prototype.join.call(arguments, " "));
    return origError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    setTimeout(function () {
      var figures = [];
      document.querySelectorAll("div.plot").forEach(function (div) {
        var box = div.getBoundingClientRect();
        var svg = div.querySelector("svg.main-svg");
        var svgBox = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
        figures.push({id: div.id, plotly: div.classList.contains("js-plotly-plot"),
                      width: box.width, height: box.height,
                      svgWidth: svgBox.width, svgHeight: svgBox.height,
                      traces: div.querySelectorAll("g.trace, g.hm").length});
      });
      seen.figures = figures;
      // Per figure: every drawn SVG text with its box (to find labels that overprint),
      // each legend (its box, its entries, its scroll bar: plotly gives the bar a size
      // only when the legend is clipped) and each subplot's plotting area.
      function box(node) {
        var b = node.getBoundingClientRect();
        return {x: b.left, y: b.top, w: b.width, h: b.height};
      }
      var layouts = {};
      document.querySelectorAll("div.plot").forEach(function (div) {
        var texts = [];
        div.querySelectorAll("svg text").forEach(function (node) {
          var text = (node.textContent || "").trim();
          var b = box(node);
          if (!text || b.w === 0 || b.h === 0) { return; }
          var group = node.parentNode.closest("g[class]");
          b.text = text;
          b.group = group ? group.getAttribute("class") : "";
          b.legend = !!node.closest("g.infolayer > g[class^='legend']");
          texts.push(b);
        });
        var legends = [];
        div.querySelectorAll("g.infolayer > g[class^='legend']").forEach(function (g) {
          var b = box(g);
          var bar = g.querySelector("rect.scrollbar");
          b.name = g.getAttribute("class");
          // "legendtext", "legend2text", ...: one class per legend.
          b.entries = Array.prototype.map.call(g.querySelectorAll("g.traces > text"),
            function (t) { return t.textContent; });
          b.scrollbar = bar ? [Number(bar.getAttribute("width") || 0),
                               Number(bar.getAttribute("height") || 0)] : [0, 0];
          legends.push(b);
        });
        var plots = Array.prototype.map.call(
          div.querySelectorAll("g.draglayer rect.nsewdrag"), box);
        layouts[div.id] = {texts: texts, legends: legends, plots: plots};
      });
      seen.layouts = layouts;
      // Every cell of the verdict matrix, with its width: none may collapse.
      seen.matrixCells = Array.prototype.map.call(
        document.querySelectorAll("table.verdict-matrix th, table.verdict-matrix td"),
        function (cell) { return cell.getBoundingClientRect().width; });
      seen.resources = performance.getEntriesByType("resource").map(function (r) {
        return r.name;
      });
      var out = document.createElement("pre");
      out.id = "probe-result";
      out.textContent = JSON.stringify(seen);
      document.body.appendChild(out);
    }, 1500);
  });
})();
</script>"""


def run_chromium(args: list[str], user_data_dir: Path, width: int = 1280
                 ) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with no network: every host is unresolvable and every request
    goes to a proxy on a closed port. `width`: of the window, in CSS pixels."""
    command = [
        CHROMIUM or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={width},3000",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def probe_page(page: Path, tmp_path: Path, width: int = 1280) -> tuple[dict, str]:
    """Open a copy of `page` with the probe injected (in a window `width` pixels wide);
    what the probe saw, and stderr."""
    text = page.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    head = text.index("<head>") + len("<head>")
    probed.write_text(text[:head] + PROBE + text[head:], encoding="utf-8")
    result = run_chromium(["--virtual-time-budget=15000", "--dump-dom", probed.as_uri()],
                          tmp_path / "profile-dom", width)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no probe result; stderr:\n{result.stderr[-3000:]}"
    return json.loads(html.unescape(found.group(1))), result.stderr


def overlaps(a: dict, b: dict, tolerance_px: float = 1.0) -> bool:
    """Whether two boxes ({x, y, w, h}, CSS pixels) overlap by more than `tolerance_px`
    both ways (boxes that only touch do not)."""
    return (a["x"] < b["x"] + b["w"] - tolerance_px and b["x"] < a["x"] + a["w"] - tolerance_px
            and a["y"] < b["y"] + b["h"] - tolerance_px
            and b["y"] < a["y"] + a["h"] - tolerance_px)


def overprinted(texts: list[dict]) -> list[tuple[str, str]]:
    """The pairs of texts (from the probe's `layouts`) whose boxes overlap."""
    return [(a["text"], b["text"]) for i, a in enumerate(texts) for b in texts[i + 1:]
            if overlaps(a, b)]


def assert_clean(seen: dict, stderr: str) -> None:
    """No error of any kind, no alert, no network request."""
    assert seen["errors"] == [] and seen["rejections"] == [] and seen["failedLoads"] == []
    assert seen["consoleErrors"] == []
    assert seen["alerts"] == []
    assert not [r for r in seen["resources"] if r.startswith(("http:", "https:"))]
    assert "Uncaught" not in stderr
