"""The errors adastudy raises for things a user can fix.

The command line turns any `AdastudyError` into one line, `error: <message>`, on stderr
and exit code 2; the traceback shows only under `--debug`. Everything else is a bug.
"""

from __future__ import annotations


class AdastudyError(Exception):
    """Base of every error caused by user input (a spec, a file, a parameter)."""


class ParameterError(AdastudyError, ValueError):
    """An impossible parameter: unknown head, s <= 0, a margin outside [0, pi), C too small."""
