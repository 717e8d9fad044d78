"""Checks of what a command left behind, shared by the command-line tests (no import of
anything heavy: a test file that needs only these stays quick to collect)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["assert_one_error_line", "tree"]


def assert_one_error_line(result, *needles: str) -> str:
    """A usage error: exit 2, nothing on stdout, one `error: ...` line on stderr that
    holds every needle; returns the line."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}
