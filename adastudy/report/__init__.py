"""Reports of a run: a verdict on each claim of the paper, with the evidence.

    render(run_dir, out=None, formats=("html", "md"))  ->  [written paths]

writes `index.html` (one self-contained file, interactive plotly figures, works offline)
and `report.md` with its figures in `figures/` (static, matplotlib), by default to
`RUN_DIR/report/`, and `source.json` (which run it is of: a folder holding another
run's report is refused unless `force`). `content.build` decides what the report says; `html` and
`markdown` only draw it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adastudy.errors import AdastudyError
from adastudy.report.model import Report

__all__ = ["FORMATS", "ReportError", "check_out", "default_out", "parse_formats", "preflight",
           "render", "run_identity", "write"]

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


#: The file in a report folder that says which run the report is of.
SOURCE_FILE = "source.json"
#: What `write` writes (or replaces) in a report folder.
REPORT_FILES = ("index.html", "report.md", "figures", SOURCE_FILE)


def default_out(run_dir: str | Path) -> Path:
    """RUN_DIR/report/: a report lives with its run, so two runs of one study (same
    name, two folders) cannot write over each other's reports."""
    return Path(run_dir) / "report"


def run_identity(run_dir: str | Path | None, manifest: dict[str, Any] | None,
                 study: str = "") -> dict[str, Any]:
    """What names the run a report is of. Its `key` is the spec digest and the time the
    run's first sweep started (they survive moving the folder), else the folder."""
    manifest = manifest or {}
    folder = str(Path(run_dir).resolve()) if run_dir else None
    digest, started = manifest.get("spec_digest"), manifest.get("started_at")
    return {"study": study or manifest.get("study"), "run_dir": folder,
            "spec_digest": digest, "started_at": started,
            "key": f"{digest}@{started}" if digest and started else str(folder)}


def preflight(run_dir: str | Path, out: str | Path | None, *, force: bool = False) -> Path:
    """The folder a report of `run_dir` goes to, checked (`check_out`) before the report
    is built, so a refusal comes at once."""
    from adastudy import store

    out_dir = Path(out) if out is not None else default_out(run_dir)
    check_out(out_dir, run_identity(run_dir, store.read_manifest(Path(run_dir))),
              force=force)
    return out_dir


def check_out(out_dir: Path, identity: dict[str, Any], *, force: bool = False) -> None:
    """Refuse (ReportError) a folder that holds a report of another run, or one of unknown
    origin, unless `force`: reports of two runs must not mix in one folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"{out_dir}: exists and is not a folder")
    if force or not out_dir.is_dir():
        return
    source = out_dir / SOURCE_FILE
    if source.is_file():
        try:
            theirs = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            theirs = {}
        if isinstance(theirs, dict) and theirs.get("key") == identity["key"]:
            return
        who = (f"run {theirs.get('run_dir')}" if isinstance(theirs, dict)
               and theirs.get("run_dir") else "another run")
        raise ReportError(f"{out_dir}: holds the report of {who}; give another --out, or "
                          "--force to replace it")
    if any((out_dir / name).exists() for name in REPORT_FILES):
        raise ReportError(f"{out_dir}: holds a report of an unknown run (no {SOURCE_FILE}); "
                          "give another --out, or --force to replace it")


def render(run_dir: str | Path, out: str | Path | None = None,
           formats: str | Iterable[str] = FORMATS, *, force: bool = False) -> list[Path]:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report/); returns the
    written files. Everything is read and checked before anything is written."""
    from adastudy.report import content

    formats = parse_formats(formats)
    return write(content.build(Path(run_dir)), out, formats, force=force)


def write(report: Report, out: str | Path | None = None,
          formats: str | Iterable[str] = FORMATS, *, force: bool = False) -> list[Path]:
    """Write a built `Report` (see `content.build`) in `formats` to `out` (default
    RUN_DIR/report/). A folder holding another run's report is refused unless `force`;
    `source.json` records which run this one is of."""
    formats = parse_formats(formats)
    if out is not None:
        out_dir = Path(out)
    elif report.run_dir is not None:
        out_dir = default_out(report.run_dir)
    else:
        raise ReportError("--out: the report does not know its run folder; name a folder")
    identity = report.identity or run_identity(report.run_dir, report.manifest,
                                                report.study)
    check_out(out_dir, identity, force=force)
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
    _write_atomic(out_dir / SOURCE_FILE, json.dumps(
        {"kind": "adastudy-report", "version": 1, **identity,
         "formats": list(formats)}, indent=2) + "\n")
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
