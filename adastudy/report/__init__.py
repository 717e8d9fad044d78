"""Reports of a run: a verdict on each claim of the paper, with the evidence.

    render(run_dir, out=None, formats=("html", "md"))  ->  [written paths]

writes `index.html` (one self-contained file, interactive plotly figures, works offline)
and `report.md` with its figures in `figures/` (static, matplotlib), by default to
`reports/<study>/`. `content.build` decides what the report says; `html` and
`markdown` only draw it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from adastudy.errors import AdastudyError
from adastudy.report.model import Report

__all__ = ["FORMATS", "ReportError", "parse_formats", "render", "write"]

FORMATS = ("html", "md")


class ReportError(AdastudyError):
    """A report that cannot be made: unknown format, output folder not writable."""


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """"html,md" → ("html", "md"); one-line error on an unknown or empty format list."""
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"--format: choose from {', '.join(FORMATS)} (comma-separated), "
                          f"got {','.join(items) if not isinstance(text, str) else text!r}")
    return formats


def default_out(study: str) -> Path:
    """reports/<study>/, with anything but letters, digits, '.', '_' and '-' in the name
    replaced: a name from a hand-edited manifest must not lead outside reports/."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", study).lstrip(".") or "study"
    return Path("reports") / name


def render(run_dir: str | Path, out: str | Path | None = None,
           formats: str | Iterable[str] = FORMATS) -> list[Path]:
    """Write the report of `run_dir` to `out` (default reports/<study>/); returns the
    written files. Everything is read and checked before anything is written."""
    from adastudy.report import content

    formats = parse_formats(formats)
    return write(content.build(Path(run_dir)), out, formats)


def write(report: Report, out: str | Path | None = None,
          formats: str | Iterable[str] = FORMATS) -> list[Path]:
    """Write a built `Report` (see `content.build`) in `formats` to `out`."""
    formats = parse_formats(formats)
    out_dir = Path(out) if out is not None else default_out(report.study)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"{out_dir}: exists and is not a folder")
    existed = out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        if not existed and out_dir.is_dir():
            out_dir.rmdir()
        raise ReportError(f"{out_dir}: cannot write there ({exc.strerror})") from None
    written = []
    if "html" in formats:
        from adastudy.report.html import write_html

        written.append(write_html(report, out_dir))
    if "md" in formats:
        from adastudy.report.markdown import write_markdown

        written.append(write_markdown(report, out_dir))
    return written
