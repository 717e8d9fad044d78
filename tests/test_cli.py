"""The ``adastudy`` command line: the ``theory`` command and the user-error contract.

typer 0.29's CliRunner keeps the streams apart: ``result.stdout`` and ``result.stderr``
each hold one stream, ``result.output`` both as a terminal would show them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adastudy import __version__
from adastudy.cli import app, parse_float_list
from adastudy.errors import ParameterError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def assert_one_error_line(result, *needles: str) -> str:
    """Exit 2, nothing on stdout, and exactly one line on stderr: ``error: ...``."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line
    assert "Traceback" not in result.output
    return line


def test_theory_prints_fixed_scale_table_and_writes_figures(runner, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["theory", "--classes", "10575", "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "s_f = 13.10"
    for text in ("adacos-fixed", "normface", "cosface", "arcface", "P(θ=π/4)", "0.5000"):
        assert text in result.stdout
    png = out_dir / "target_probability_C10575.png"
    svg = out_dir / "target_probability_C10575.svg"
    assert png.stat().st_size > 0
    assert svg.stat().st_size > 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert "<svg" in svg.read_text()
    assert str(png) in result.stdout
    assert str(svg) in result.stdout
    assert result.stderr == ""


def test_theory_json_is_the_only_stdout(runner, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["theory", "--classes", "10575", "--out", str(out_dir), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["num_classes"] == 10575
    assert round(payload["fixed_scale"], 2) == 13.10
    rows = payload["rows"]
    # adacos-fixed, 4 default scales, 3 default margins x (cosface, arcface)
    assert len(rows) == 1 + 4 + 3 * 2
    assert set(rows[0]) == {"head", "s", "m", "p_theta_0", "p_theta_pi_4", "p_theta_pi_2"}
    assert rows[0]["head"] == "adacos-fixed"
    assert rows[0]["p_theta_pi_4"] == pytest.approx(0.5)
    assert [r["s"] for r in rows if r["head"] == "normface"] == [8.0, 16.0, 32.0, 64.0]
    assert [r["m"] for r in rows if r["head"] == "arcface"] == [0.2, 0.35, 0.5]
    assert {r["s"] for r in rows if r["head"] in ("cosface", "arcface")} == {64.0}
    assert [Path(p).name for p in payload["figures"]] == [
        "target_probability_C10575.png",
        "target_probability_C10575.svg",
    ]
    assert all(Path(p).is_file() for p in payload["figures"])


def test_theory_no_plot_writes_nothing(runner, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(
        app, ["theory", "--classes", "1000", "--out", str(out_dir), "--no-plot", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["figures"] == []
    assert not out_dir.exists()


def test_theory_scales_repeat_and_comma_separate(runner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["theory", "--classes", "10575", "--s", "16,32", "--s", "64", "--m", "0.1, 0.4"]
        + ["--margin-scale", "30", "--no-plot", "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["s"] for r in rows if r["head"] == "normface"] == [16.0, 32.0, 64.0]
    assert [(r["head"], r["m"], r["s"]) for r in rows if r["head"] in ("cosface", "arcface")] == [
        ("cosface", 0.1, 30.0),
        ("arcface", 0.1, 30.0),
        ("cosface", 0.4, 30.0),
        ("arcface", 0.4, 30.0),
    ]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--classes", "2"], ["num_classes", "got 2"]),
        (["--classes", "1"], ["num_classes"]),
        (["--classes", "100", "--m", "4"], ["m (margin", "4"]),
        (["--classes", "100", "--m", "0.2,-0.1"], ["m (margin"]),
        (["--classes", "100", "--s", "0"], ["s (scale)"]),
        (["--classes", "100", "--s", "16", "--s", "-3"], ["s (scale)"]),
        (["--classes", "100", "--s", "abc"], ["--s", "'abc'"]),
        (["--classes", "100", "--s", "16,,32"], ["--s"]),
        (["--classes", "100", "--m", "nan"], ["--m"]),
        (["--classes", "100", "--margin-scale", "0"], ["margin_scale"]),
    ],
)
def test_theory_user_errors_are_one_line_and_write_nothing(
    runner, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["theory", *args, "--out", str(out_dir)])
    assert_one_error_line(result, *needles)
    assert not out_dir.exists()


def test_theory_unwritable_out_is_a_user_error(runner, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("keep me")
    result = runner.invoke(app, ["theory", "--classes", "10", "--out", str(blocker / "figs")])
    assert_one_error_line(result, "cannot write figures", str(blocker))
    assert blocker.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-folder"]


def test_debug_shows_the_traceback(runner, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["--debug", "theory", "--classes", "2", "--out", str(out_dir)])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "ParameterError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: num_classes")
    assert not out_dir.exists()


def test_typer_usage_errors_still_exit_2(runner) -> None:
    assert runner.invoke(app, ["theory"]).exit_code == 2  # --classes missing
    assert runner.invoke(app, ["theory", "--classes", "ten"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_version_and_help(runner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"adastudy {__version__}"
    result = runner.invoke(app, [])
    assert "theory" in result.output  # no_args_is_help
    result = runner.invoke(app, ["theory", "--help"])
    assert result.exit_code == 0
    for option in ("--classes", "--s", "--m", "--margin-scale", "--out", "--json", "--no-plot"):
        assert option in result.stdout


def test_parse_float_list() -> None:
    assert parse_float_list(None, "--s") is None
    assert parse_float_list(["16,32", " 64 "], "--s") == [16.0, 32.0, 64.0]
    with pytest.raises(ParameterError, match="--m takes numbers"):
        parse_float_list(["0.2", "x"], "--m")
    with pytest.raises(ParameterError, match="--s takes finite numbers"):
        parse_float_list(["inf"], "--s")


def _console_script() -> str:
    candidate = Path(sys.executable).parent / "adastudy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("adastudy")
    if found is None:
        pytest.skip("the adastudy console script is not installed")
    return found


@pytest.mark.parametrize("debug", [False, True])
def test_console_script_user_error(tmp_path: Path, debug: bool) -> None:
    """The real entry point (``adastudy = adastudy.cli:main``), in its own process."""
    command = [_console_script(), *(["--debug"] if debug else []), "theory", "--classes", "2"]
    done = subprocess.run(
        [*command, "--out", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("error: num_classes must be > 2")
    if debug:
        assert "Traceback (most recent call last)" in done.stderr
    else:
        assert len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
