"""``adastudy data``: face data sets on disk, looked at before a run trains on them.

    adastudy data check faces_emore                 # train.rec + train.idx
    adastudy data check faces_emore/lfw.bin --json
    adastudy data check pairs.txt --images lfw/ --full

`check` is `adastudy.data.check.check` with a summary: exit 0 when nothing is corrupt,
1 when corrupt records were found (the report is printed all the same), 2 when the set
cannot be read at all (the one ``error:`` line of every command). It writes nothing.

This module imports only typer and rich: the readers (numpy, PIL, torch through
`adastudy.data`) are imported by the command, so ``adastudy --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from adastudy.cli import style

if TYPE_CHECKING:
    from adastudy.data.check import CheckReport

__all__ = ["BIN_WARNING", "SHOWN", "data_app"]

#: What a check of a `.bin` says, on stderr and in the JSON (`"warning"`).
BIN_WARNING = (
    "a .bin is a pickle, and loading a pickle can run code chosen by whoever wrote it: "
    "check and load only .bin files you trust (adastudy's reader refuses any global a "
    "verification set does not need, a second line of defence, not a sandbox)"
)

#: Corrupt records listed on screen; the rest are counted ("... and N more").
SHOWN = 20

#: What a corrupt entry is, per format (singular, plural).
_NOUNS = {
    "recordio": ("record", "records"),
    "bin": ("image", "images"),
    "folder": ("image", "images"),
    "pairs": ("line or image", "lines or images"),
}

_FORMAT_NAMES = {
    "recordio": "RecordIO (insightface .rec + .idx)",
    "bin": "verification .bin (insightface pickle)",
    "folder": "image folder (one sub-folder per identity)",
    "pairs": "pairs file (LFW pairs.txt)",
}

class _Group(style.Group):
    """The app's help style; a user error raised in a command goes up to the app's group
    (`style.Group.invoke` of the root), which knows the root's --debug."""

    def invoke(self, ctx: typer.Context) -> Any:
        return super(style.Group, self).invoke(ctx)


data_app = style.App(
    name="data",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Inspect face data sets on disk.",
)


class _PlainLines:
    """Progress for a stderr that is not a terminal, under --full only (a long check
    in a job's log): one line at 0, at every further 10 % and at the end."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth == self.last:
            return
        self.last = tenth
        share = 100 * done // total if total else 100
        elapsed = time.monotonic() - self.start
        typer.echo(f"{self.label}: {done:,}/{total:,} ({share} %), elapsed {elapsed:.1f}s",
                   err=True)


def _run_check(path: Path, full: bool, images: Path | None, show_bar: bool,
               plain: bool) -> CheckReport:
    """`check` under a rich bar on stderr (`show_bar`), plain lines (`plain`), or silent."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from adastudy.data.check import check, identify

    form = identify(path)  # cheap; names what the bar counts
    unit = "records" if form == "recordio" else "images"
    label = f"checking {path.name or path}"
    if not show_bar:
        progress = _PlainLines(f"{label} ({unit})") if plain else None
        return check(path, full=full, images=images, progress=progress)
    with Progress(
        TextColumn(rich_escape(label)), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("check", total=None)
        return check(path, full=full, images=images,
                     progress=lambda done, total: bar.update(task, completed=done,
                                                             total=total))


def _decoded_text(report: CheckReport) -> str:
    from adastudy.data.check import SAMPLE

    tried = report.images if report.full or report.images <= SAMPLE else SAMPLE
    if report.full:
        how = "every image (--full)"
    elif tried == report.images:
        how = f"every image: the set is smaller than the sample of {SAMPLE}"
    else:
        how = f"a sample spread over the {report.images:,} images (--full decodes every one)"
    return f"{report.decoded:,} of {tried:,}, {how}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _print_report(report: CheckReport) -> None:
    table = Table(title=rich_escape(f"data check: {report.path}"), show_header=False,
                  box=None, padding=(0, 2, 0, 0), title_justify="left")
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("format", _FORMAT_NAMES[report.format])
    table.add_row("path", rich_escape(str(report.path)))
    table.add_row("identities", _count(report.identities))
    table.add_row("images", _count(report.images))
    table.add_row("pairs", _count(report.pairs))
    table.add_row("decoded", _decoded_text(report))
    shape = report.image_shape
    table.add_row("image size", "-" if shape is None else f"{shape[0]} x {shape[1]} "
                  "(height x width, of the first image decoded)")
    table.add_row("corrupt", f"{report.corrupt_count:,}")
    Console().print(table)
    one, many = _NOUNS[report.format]
    if report.corrupt_count:
        # Plain lines: rich would wrap a long path at the console width.
        typer.echo(f"{report.corrupt_count:,} corrupt "
                   f"{many if report.corrupt_count > 1 else one}:")
        for line in report.corrupt[:SHOWN]:
            typer.echo(f"  {line}")
        more = report.corrupt_count - min(len(report.corrupt), SHOWN)
        if more:
            typer.echo(f"  ... and {more:,} more (--json lists the first "
                       f"{len(report.corrupt):,})")
        typer.echo(f"corrupt: {report.corrupt_count:,} corrupt "
                   f"{many if report.corrupt_count > 1 else one} in {report.path}")
    else:
        from adastudy.data.check import SAMPLE

        what = ("every image decoded" if report.full or report.images <= SAMPLE else
                f"a sample of {SAMPLE} images decoded; --full decodes every one")
        headers = ", every record header read" if report.format == "recordio" else ""
        typer.echo(f"ok: nothing corrupt found in {report.path} ({what}{headers})")


@data_app.command()
def check(
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="A .rec (or a folder holding train.rec), a verification .bin, "
        "a pairs .txt, or a folder of identity sub-folders.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Decode every image, not a sample of 100.")
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option("--images", metavar="FOLDER", help="The image folder a pairs file "
                     "names its images in (pairs files only).",
                     show_default="the pairs file's folder"),
    ] = None,
) -> None:
    """Check a face data set: its format, identities, images and pairs; decode a sample
    of its images (every one with --full) and list the corrupt records.

    Exit 0: nothing corrupt; 1: corrupt records (listed, the report printed all the
    same); 2: the set cannot be read at all. Nothing is written. A .bin is a pickle:
    check and load only files you trust."""
    terminal = sys.stderr.isatty()
    report = _run_check(path, full, images, show_bar=terminal, plain=full and not terminal)
    warning = BIN_WARNING if report.format == "bin" else None
    if as_json:
        payload: dict[str, Any] = {**report.to_json(), "ok": report.ok}
        if warning is not None:
            payload["warning"] = warning
        typer.echo(json.dumps(payload))
    else:
        if warning is not None:
            typer.echo(f"warning: {warning}", err=True)
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)
