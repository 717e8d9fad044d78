"""``adastudy data check PATH`` (issue #14): every format's counts, the corrupt records
(exit 1, still reported), the sets that cannot be read (exit 2, one ``error:`` line),
``--full``, and the warning that a ``.bin`` is a pickle. On files `face_files` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_checks import assert_one_error_line, tree
from face_files import (
    read_index,
    tiny_jpeg,
    write_bin,
    write_folder,
    write_pairs,
    write_recordio,
)
from typer.testing import CliRunner

from adastudy.cli import app
from adastudy.cli.data import BIN_WARNING, SHOWN
from adastudy.data.check import SAMPLE

SMALL = (16, 16)
TRUST = "check and load only .bin files you trust"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()




def check_json(runner: CliRunner, *args: str, code: int = 0) -> dict:
    """`data check ... --json`: exactly one JSON object on stdout, exit `code`."""
    result = runner.invoke(app, ["data", "check", *args, "--json"])
    assert result.exit_code == code, result.output
    payload = json.loads(result.stdout)  # one object, nothing else around it
    assert isinstance(payload, dict)
    assert payload["ok"] is (code == 0)
    return payload


def jpegs(count: int, classes: int = 3) -> list[tuple[int, bytes]]:
    return [(i % classes, tiny_jpeg(i, SMALL)) for i in range(count)]


@pytest.fixture
def lfw(tmp_path: Path) -> Path:
    """ann (3 images), ben (2), cy (1)."""
    return write_folder(tmp_path / "lfw", {
        "ann": [tiny_jpeg(i, SMALL) for i in range(3)],
        "ben": [tiny_jpeg(10 + i, SMALL) for i in range(2)],
        "cy": [tiny_jpeg(20, SMALL)],
    })


# -- every format, all well: exit 0 ------------------------------------------------------


def test_recordio_by_folder_and_by_rec(runner, tmp_path) -> None:
    rec, _ = write_recordio(tmp_path, jpegs(7, classes=3))
    before = tree(tmp_path)
    for path in (tmp_path, rec):
        payload = check_json(runner, str(path))
        assert payload["format"] == "recordio" and payload["path"] == str(path)
        assert (payload["identities"], payload["images"], payload["pairs"]) == (3, 7, None)
        assert payload["decoded"] == 7 and payload["image_shape"] == list(SMALL)
        assert payload["corrupt"] == [] and payload["corrupt_count"] == 0
        assert "warning" not in payload
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in ("RecordIO", "identities", "images", "decoded", "7 of 7", "16 x 16"):
        assert needle in out, needle
    assert out.rstrip().splitlines()[-1].startswith("ok: nothing corrupt found")
    assert result.stderr == ""  # no bar: stderr is not a terminal
    assert tree(tmp_path) == before  # nothing written


def test_bin_counts_and_its_trust_warning(runner, tmp_path) -> None:
    path = write_bin(tmp_path / "lfw.bin", [tiny_jpeg(i, SMALL) for i in range(6)],
                     [True, False, True])
    payload = check_json(runner, str(path))
    assert payload["format"] == "bin"
    assert (payload["identities"], payload["images"], payload["pairs"]) == (None, 6, 3)
    assert payload["decoded"] == 6
    assert payload["warning"] == BIN_WARNING and TRUST in payload["warning"]
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "pickle" in result.stderr and TRUST in result.stderr
    assert result.stderr.startswith("warning: ")
    assert "verification .bin" in result.stdout


def test_image_folder(runner, lfw) -> None:
    payload = check_json(runner, str(lfw))
    assert payload["format"] == "folder"
    assert (payload["identities"], payload["images"], payload["pairs"]) == (3, 6, None)
    assert payload["decoded"] == 6


def test_pairs_with_an_image_folder(runner, tmp_path, lfw) -> None:
    pairs = write_pairs(tmp_path / "pairs.txt", [("ann", 1, 2), ("ben", 1, 2)],
                        [("ann", 3, "cy", 1)])
    payload = check_json(runner, str(pairs), "--images", str(lfw))
    assert payload["format"] == "pairs"
    assert (payload["identities"], payload["images"], payload["pairs"]) == (3, 6, 3)
    assert payload["decoded"] == 6


# -- corrupt records: exit 1, the report printed all the same ----------------------------


def test_recordio_bad_magic_record(runner, tmp_path) -> None:
    rec, idx = write_recordio(tmp_path, jpegs(5))
    offset = read_index(idx)[3]
    data = bytearray(rec.read_bytes())
    data[offset : offset + 4] = b"\xde\xad\xbe\xef"
    rec.write_bytes(bytes(data))
    payload = check_json(runner, str(rec), code=1)
    assert payload["corrupt_count"] == 1 and payload["images"] == 5
    assert "record 3" in payload["corrupt"][0] and "bad magic" in payload["corrupt"][0]
    result = runner.invoke(app, ["data", "check", str(rec)])
    assert result.exit_code == 1, result.output
    assert f"{rec}: record 3: bad magic number" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == f"corrupt: 1 corrupt record in {rec}"


def test_recordio_truncated_record(runner, tmp_path) -> None:
    rec, idx = write_recordio(tmp_path, jpegs(4), meta=False)
    with open(rec, "r+b") as handle:
        handle.truncate(read_index(idx)[3] + 8 + 40)
    payload = check_json(runner, str(tmp_path), code=1)
    assert payload["corrupt_count"] == 1
    assert "record 3" in payload["corrupt"][0] and "truncated" in payload["corrupt"][0]


def test_bin_with_an_undecodable_image(runner, tmp_path) -> None:
    images = [tiny_jpeg(i, SMALL) for i in range(4)]
    images[3] = b"garbage"
    path = write_bin(tmp_path / "agedb_30.bin", images, [True, False])
    payload = check_json(runner, str(path), code=1)
    assert payload["corrupt_count"] == 1 and payload["decoded"] == 3
    assert payload["warning"] == BIN_WARNING
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: image 3 (pair 1)" in result.stdout
    assert TRUST in result.stderr


def test_pairs_line_naming_a_missing_image(runner, lfw) -> None:
    pairs = write_pairs(lfw / "pairs.txt", [("ann", 1, 2), ("ann", 1, 9)], [])
    payload = check_json(runner, str(pairs), code=1)
    assert payload["corrupt_count"] == 1 and payload["pairs"] == 1
    assert "line 3" in payload["corrupt"][0]
    result = runner.invoke(app, ["data", "check", str(pairs)])
    assert result.exit_code == 1
    assert f"{pairs}: line 3: no image {lfw / 'ann' / 'ann_0009.jpg'}" in result.stdout


def test_many_corrupt_records_are_listed_up_to_a_screenful(runner, tmp_path) -> None:
    broken = SHOWN + 5
    root = write_folder(tmp_path / "faces", {
        "a": [tiny_jpeg(1, SMALL)], "b": [b"not an image"] * broken})
    payload = check_json(runner, str(root), code=1)
    assert payload["corrupt_count"] == broken == len(payload["corrupt"])
    result = runner.invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 1
    listed = [line for line in result.stdout.splitlines() if "cannot decode" in line]
    assert len(listed) == SHOWN
    assert "... and 5 more" in result.stdout


# -- --full ------------------------------------------------------------------------------


def test_full_decodes_every_image(runner, tmp_path) -> None:
    count = SAMPLE + 20
    write_recordio(tmp_path, jpegs(count, classes=4))
    sampled = check_json(runner, str(tmp_path))
    assert sampled["decoded"] == SAMPLE and sampled["full"] is False
    full = check_json(runner, str(tmp_path), "--full")
    assert full["decoded"] == full["images"] == count and full["full"] is True
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--full"])
    assert result.exit_code == 0
    assert f"{count} of {count}, every image" in result.stdout
    # stderr is no terminal: a long check says how far it got in plain lines.
    assert f"{count}/{count} (100 %)" in result.stderr


# -- sets that cannot be read, usage errors: exit 2, one line, nothing written -----------


@pytest.mark.parametrize(
    ("make", "extra", "needles"),
    [
        (lambda d: d / "absent", [], ["no such file or folder"]),
        (lambda d: _file(d / "table.csv", b"a,b\n"), [], ["unknown data format"]),
        (lambda d: _folder(d / "empty"), [], ["unknown data format"]),
        (lambda d: _file(d / "lfw.bin", b"not a pickle"), [], ["lfw.bin", "cannot unpickle"]),
        (lambda d: write_recordio(d, jpegs(2))[0], ["--images", "."], ["only a pairs file"]),
    ],
    ids=["missing", "unknown-file", "unknown-folder", "bin-not-pickle", "images-on-rec"],
)
def test_unreadable_sets_are_one_error_line(runner, tmp_path, make, extra, needles) -> None:
    path = make(tmp_path)
    before = tree(tmp_path)
    listing = sorted(p.name for p in tmp_path.iterdir())
    for json_flag in ([], ["--json"]):
        result = runner.invoke(app, ["data", "check", str(path), *extra, *json_flag])
        assert_one_error_line(result, *needles)
    assert tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_debug_shows_the_traceback_before_the_line(runner, tmp_path) -> None:
    result = runner.invoke(app, ["--debug", "data", "check", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "DataError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")


def test_help_of_the_data_commands(runner) -> None:
    for args in (["data"], ["data", "check"]):
        result = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert f"Usage: adastudy {' '.join(args)}" in result.stdout
        assert "<bool>" not in result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "Inspect face data sets on disk." in runner.invoke(app, ["-h"]).stdout


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path
