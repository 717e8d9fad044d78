"""The README's examples, as a new user meets them: every Python snippet runs as written
(each in a fresh interpreter, from the project root), and every `adastudy ...` command
line in its shell blocks names a command and options that command accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from adastudy.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_the_readme_has_snippets_to_check() -> None:
    # If the fences change (```py, say), the tests below would check nothing.
    assert len(PYTHON_BLOCKS) >= 3
    assert sum(block.count("adastudy ") for block in SHELL_BLOCKS) >= 10


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_snippet_runs_as_written(index: int, tmp_path: Path) -> None:
    snippet = PYTHON_BLOCKS[index]
    # Run from the project root (the snippets use studies/...), in a fresh interpreter,
    # and print the last expression so a snippet that silently does nothing is visible.
    done = subprocess.run([sys.executable, "-c", snippet + "\nprint('snippet ok')\n"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README snippet {index} failed:\n{snippet}\n{done.stderr}"
    assert done.stdout.strip().endswith("snippet ok")


def test_the_python_trial_snippet_trains() -> None:
    block = next(b for b in PYTHON_BLOCKS if "run_trial" in b)
    namespace: dict = {}
    exec(compile(block, "<README>", "exec"), namespace)
    result = namespace["result"]
    assert result.state == "complete" and result.head == "arcface"
    assert (result.s, result.m) == (30.0, 0.5)
    assert 0.5 < result.metrics["verification_accuracy"] <= 1.0


def _command_lines() -> list[str]:
    lines = []
    for block in SHELL_BLOCKS:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            # "[--s 8,16]" lines describe the syntax, they are not commands to paste.
            if line.startswith("adastudy ") and "[" not in line:
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_readme_command_line_parses(line: str) -> None:
    root = typer.main.get_command(app)
    args = shlex.split(line)[1:]
    while args and args[0] in ("--debug",):  # the app's own options come first
        args.pop(0)
    name, rest = args[0], args[1:]
    with root.make_context("adastudy", [name], resilient_parsing=True) as ctx:
        command = root.get_command(ctx, name)
        assert command is not None, f"README: {line!r}: no command {name!r}"
        try:
            command.make_context(name, rest, parent=ctx)
        except click.UsageError as exc:
            pytest.fail(f"README: {line!r} does not parse: {exc.format_message()}")
