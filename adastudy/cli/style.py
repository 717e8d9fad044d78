"""The app's machinery: every user error is one line, every command has one help style.

- `fail`: an `AdastudyError` as ``error: <message>`` on stderr and exit code 2 (the
  traceback before it only under ``adastudy --debug ...``).
- `Group` (the app's group) does that for any command, and turns a usage error of the
  command line itself (an unknown option, a bad or missing value, a choice not in the
  list: click's, which typer would draw as a box) into one ``error:`` line too, under
  the console script and under ``typer.testing.CliRunner`` alike.
- `Command` (what `App.command()` gives every command): ``-h`` or ``--help``, no
  ``<bool>`` after a flag, plain ``SPEC`` in the usage line, every default written
  ``[default: ...]``.
"""

from __future__ import annotations

import inspect
import sys
import traceback
from typing import Any, NoReturn

import typer
from rich.markup import escape as rich_escape
from typer.core import TyperCommand, TyperGroup

from adastudy.errors import AdastudyError

__all__ = ["App", "Command", "Group", "fail", "usage_line"]


def fail(exc: AdastudyError, *, debug: bool) -> NoReturn:
    """Print ``error: <message>`` (after the traceback when ``debug``) and exit 2."""
    if debug:
        typer.echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)
    message = " ".join(str(exc).split()) or type(exc).__name__
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _click_error(name: str) -> type[Exception]:
    """Click's exception class `name`, from wherever this typer takes click (typer 0.29
    vendors it as `typer._click`; older ones use the click package)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_UsageError = _click_error("UsageError")
_ClickException = _click_error("ClickException")


def usage_line(exc: Exception) -> str:
    """A click usage error as one ``error: ...`` line, with where to read the help."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "").rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and isinstance(exc, _UsageError):
        message += f"; see '{ctx.command_path} -h'"
    return f"error: {message or type(exc).__name__}"


class _HelpStyle:
    """What `Command` and `Group` share: the help option shows no ``<bool>``."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option


def _tidy_help(command: Any) -> None:
    """One help style: a flag shows no ``<bool>`` after it; a default given in words
    (``show_default="runs/<study name>"``) reads ``[default: runs/<study name>]`` like
    any other, not typer's ``[default: (runs/<study name>)]``; the help text's paragraphs
    wrap at the terminal, not at the docstring's line ends."""
    markup = getattr(command, "rich_markup_mode", None)
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        described = getattr(param, "show_default", None)
        if isinstance(described, str):
            note = f"[default: {described}]"
            note = rich_escape(note) if markup == "rich" else note
            param.help = f"{param.help}  {note}" if param.help else note
            param.show_default = False
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


class Command(_HelpStyle, TyperCommand):
    """Every command's class (`App.command` gives it): see `_tidy_help`; the usage line
    names a required argument plainly (``SPEC``, not typer's ``{SPEC}``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            if param.metavar:  # as click: a metavar is written as given
                pieces.append(param.metavar)
                continue
            name = (param.name or "").upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class Group(_HelpStyle, TyperGroup):
    """The app's group: turns an `AdastudyError` from any command into `_fail`, and a
    usage error of the command line (click's, which typer would draw as a box) into one
    ``error:`` line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdastudyError as exc:
            fail(exc, debug=bool(ctx.params.get("debug", False)))

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:  # the caller handles the exceptions
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            # Not standalone: typer would print a usage error as a box; here it is a line.
            code = super().main(args=argv, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except _UsageError as exc:
            code = exc.exit_code  # type: ignore[attr-defined]
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help, already printed?
                text = exc.format_message()  # type: ignore[attr-defined]
                if text.strip():
                    typer.echo(text, err=True)
            else:
                typer.echo(usage_line(exc), err=True)
        except _ClickException as exc:  # e.g. a file click could not open
            typer.echo(usage_line(exc), err=True)
            code = exc.exit_code  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = 1
        except AdastudyError as exc:  # raised outside a command, e.g. by a global option
            try:
                fail(exc, debug="--debug" in argv)
            except typer.Exit as done:
                code = done.exit_code
        sys.exit(code if isinstance(code, int) else 0)


class App(typer.Typer):
    """The Typer app; its commands are `Command`s unless one asks for another class."""

    def command(self, name: str | None = None, *, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or Command, **kwargs)
