"""The command line as a new user meets it (issue #11's polish): ``-h``, one help style,
one ``error:`` line for every usage error, did-you-mean for a spec key, ``show``'s
direction and table, the sweep's plain progress lines, interrupted trials in the Optuna
journal, ``train``'s summary and ``--out``, and the quick study's stated run time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_checks import assert_one_error_line, tree
from tiny_study import TINY, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy import store
from adastudy.backends import SweepStatus
from adastudy.cli import app, natural_direction
from adastudy.cli.progress import PlainProgress, sweep_bar
from adastudy.spec import MAIN_VARIANT

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(Path(sys.executable).parent / "adastudy")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def command_names() -> list[str]:
    """Every command of the app, also those added later."""
    from typer.main import get_command

    return list(get_command(app).commands)  # type: ignore[attr-defined]




# -- help -------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_flags_work_on_the_app_and_every_command(runner, flag) -> None:
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0, result.output
    assert "Usage: adastudy" in result.stdout
    for name in command_names():
        result = runner.invoke(app, [name, flag])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: adastudy {name}" in result.stdout


def help_text(runner, *args: str) -> str:
    result = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def words(text: str) -> str:
    """The help's words in one line, without the boxes' borders."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_help_has_one_style_and_fits_80_columns(runner) -> None:
    for args in ([], *([name] for name in command_names())):
        text = help_text(runner, *args)
        assert "<bool>" not in text, args  # a flag takes no value
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage  # SPEC, not {SPEC}
        flat = words(text)
        assert "Default:" not in flat and "(default" not in flat, args  # [default: ...] only
        assert "[default: (" not in flat, args
        assert max(len(line) for line in text.splitlines()) <= 80, args
    sweep = words(help_text(runner, "sweep"))
    assert "Usage: adastudy sweep [OPTIONS] SPEC" in sweep
    assert "<optuna|ray|serial>" in sweep and "[default: runs/<study name>]" in sweep
    assert "[default: 1]" in sweep  # --cpus-per-trial's, in words before
    assert "<csv|parquet>" in help_text(runner, "export")
    show = words(help_text(runner, "show"))
    assert "<maximize|minimize>" in show
    for metric in ("verification_accuracy", "rank1", "steps_to_theta_med_<level>deg"):
        assert metric in show
    train = words(help_text(runner, "train"))
    for head in ("softmax", "normface", "cosface", "arcface", "adacos-fixed", "adacos-dynamic"):
        assert head in train
    theory = words(help_text(runner, "theory"))
    assert "[default: 8, 16, 32, 64]" in theory


# -- usage errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sweep", "{spec}", "--workers", "0"], ["'--workers'", "adastudy sweep -h"]),
        (["sweep", "{spec}", "--backend", "dask"], ["'--backend'", "'optuna', 'ray', 'serial'"]),
        (["sweep"], ["missing argument 'SPEC'"]),
        (["sweep", "{spec}", "--wrkers", "2"], ["--wrkers"]),
        (["no-such-command"], ["no-such-command"]),
        (["--no-such-option"], ["--no-such-option"]),
        (["theory", "--classes", "ten"], ["'--classes'"]),
        (["theory"], ["missing option '--classes'"]),
        (["train", "{spec}", "--head", "cosfac"], ["unknown head 'cosfac'", "cosface"]),
        (["train", "{spec}", "--head", "cosface", "--out", "{spec}"], ["--out", "exists"]),
        (["show", "{run}", "--direction", "up"], ["'--direction'", "'maximize'"]),
        (["export", "{run}", "--format", "xls"], ["'--format'", "'csv', 'parquet'"]),
    ],
)
def test_usage_errors_are_one_line_and_change_nothing(runner, tmp_path, args, needles) -> None:
    spec_path = write_spec(tmp_path)
    run = tmp_path / "run"
    write_run(run, [record("cosface", 16.0, 0.2, 0, 0.9)])
    before = tree(tmp_path)
    argv = [a.replace("{spec}", str(spec_path)).replace("{run}", str(run)) for a in args]
    result = runner.invoke(app, argv)
    assert_one_error_line(result, *needles)
    assert "╭" not in result.output and "Usage:" not in result.output
    assert tree(tmp_path) == before


def test_the_console_script_prints_a_usage_error_as_one_line(tmp_path) -> None:
    done = subprocess.run([SCRIPT, "sweep", "x.toml", "--workers", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: invalid value for '--workers'")
    assert list(tmp_path.iterdir()) == []


# -- the spec: did you mean -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[study]\nsedes = [0]\n', "study.sedes: unknown key; did you mean seeds?"),
        ('[studdy]\nname = "x"\n', "studdy: unknown key; did you mean study?"),
        ('[train]\nepoch = 2\n', "train.epoch: unknown key; did you mean epochs?"),
        ('[heads.cosface]\nss = [16.0]\n', "heads.cosface.ss: unknown key; did you mean s?"),
        ('[heads.cosface]\n[variants.v]\ndata = { identitis = 30 }\n',
         "variants.v.data.identitis: unknown key; did you mean identities?"),
        ('[train]\nzzzz = 1\n', "train.zzzz: unknown key"),
    ],
)
def test_an_unknown_spec_key_suggests_the_close_one(runner, tmp_path, text, line) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(specs.SpecError) as caught:
        specs.load(path)
    assert str(caught.value) == f"{path}: {line}"
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "run")])
    assert_one_error_line(result, line)
    assert not (tmp_path / "run").exists()


# -- show -------------------------------------------------------------------------------


def record(head: str, s: float | None, m: float | None, seed: int, acc: float | None,
           steps_30: int | None = None, state: str = "complete", **metrics: float) -> dict:
    key = store.trial_key(head, s, m, seed, MAIN_VARIANT)
    values = {} if acc is None else {"verification_accuracy": acc}
    return {"key": key, "variant": MAIN_VARIANT, "head": head, "s": s, "m": m, "seed": seed,
            "state": state, "metrics": {**values, **metrics},
            "steps_to_theta_med": {"30": steps_30}, "series": []}


def write_run(run: Path, records: list[dict], direction: str = "maximize") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    store.write_manifest(run, {"study": "fake", "spec_path": "studies/fake.toml", "spec": {
        "study": {"name": "fake", "metric": "verification_accuracy",
                  "direction": direction}}})
    for r in records:
        store.write_trial_record(run, r)
    return run


@pytest.fixture
def ranked_run(tmp_path) -> Path:
    """fast: accuracy 0.80, 100 steps to θ_med < 30°; slow: 0.90, 400 steps."""
    return write_run(tmp_path / "run", [
        record("cosface", 16.0, 0.2, 0, 0.80, 100, final_s=16.0),
        record("cosface", 16.0, 0.2, 1, 0.82, 110, final_s=16.0),
        record("cosface", 32.0, 0.2, 0, 0.90, 400, final_s=32.0),
        record("cosface", 32.0, 0.2, 1, 0.92, 420, final_s=32.0),
        record("adacos-fixed", None, None, 0, 0.85, 200, final_s=13.0),
        record("adacos-fixed", None, None, 1, None, state="failed"),
    ])


def board(runner, run: Path, *args: str) -> dict:
    result = runner.invoke(app, ["show", str(run), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_show_ranks_a_step_count_lowest_first_and_says_so(runner, ranked_run) -> None:
    default = board(runner, ranked_run)
    assert default["direction"] == "maximize"
    assert [r["s"] for r in default["leaderboard"]] == [32.0, None, 16.0]
    steps = board(runner, ranked_run, "--metric", "steps_to_theta_med_30deg")
    assert steps["direction"] == "minimize"
    assert [r["mean"] for r in steps["leaderboard"]] == [105.0, 200.0, 410.0]
    again = board(runner, ranked_run, "--metric", "steps_to_theta_med_30deg",
                  "--direction", "maximize")
    assert [r["mean"] for r in again["leaderboard"]] == [410.0, 200.0, 105.0]
    shown = runner.invoke(app, ["show", str(ranked_run), "--metric",
                                "steps_to_theta_med_30deg"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "lowest first (minimize)" in shown.stdout
    assert shown.stdout.index("105") < shown.stdout.index("410")
    # the study's own metric keeps the study's direction, unless told otherwise
    assert board(runner, ranked_run, "--direction", "minimize")["leaderboard"][0]["s"] == 16.0


def test_natural_directions() -> None:
    assert natural_direction("steps_to_theta_med_30deg") == "minimize"
    assert natural_direction("final_loss") == "minimize"
    assert natural_direction("final_theta_med_rad") == "minimize"
    assert natural_direction("rank1") == "maximize"
    assert natural_direction("tar_at_far_1e-03") == "maximize"
    assert natural_direction("final_s") is None


def test_show_refuses_an_unknown_metric_with_the_run_s_list(runner, ranked_run) -> None:
    result = runner.invoke(app, ["show", str(ranked_run), "--metric", "steps_to_30"])
    line = assert_one_error_line(result, "--metric", "'steps_to_30'")
    for name in ("verification_accuracy", "steps_to_theta_med_30deg", "final_s"):
        assert name in line
    result = runner.invoke(app, ["show", str(ranked_run), "--metric", "final_s"])
    assert_one_error_line(result, "--direction", "final_s")
    assert board(runner, ranked_run, "--metric", "final_s", "--direction",
                 "minimize")["leaderboard"][0]["mean"] == 13.0


def test_show_explains_its_columns_and_marks_missing_values_one_way(runner, tmp_path) -> None:
    run = write_run(tmp_path / "run", [
        record("cosface", 16.0, 0.2, 0, 0.80),
        record("cosface", 16.0, 0.2, 1, None, state="pruned"),
        record("adacos-fixed", None, None, 0, 0.85),
        record("adacos-fixed", None, None, 1, 0.87),
    ])
    result = runner.invoke(app, ["show", str(run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "not counted" in text and "other" not in text
    assert "pruned, failed and diverged" in text  # the caption says what it counts
    assert "---" not in text and "–" not in text
    single = next(line for line in text.splitlines() if "cosface" in line)
    cells = [c.strip() for c in single.strip("│ ").split("│")]
    assert cells[:4] == ["cosface", "16", "0.2", "1"]
    assert cells[5:] == ["-", "-", "1 pruned"]  # std and CI of one seed
    fixed = next(line for line in text.splitlines() if "adacos-fixed" in line)
    assert re.search(r"\[0\.\d{3}, 0\.\d{3}\]", fixed)


def test_show_with_no_finished_trial_prints_one_line(runner, tmp_path) -> None:
    run = write_run(tmp_path / "run", [])
    result = runner.invoke(app, ["show", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [result.stdout.strip()]
    assert result.stdout.startswith(f"no finished trial in {run} yet")
    assert "adastudy sweep studies/fake.toml" in result.stdout


def test_show_and_export_name_a_missing_folder(runner, tmp_path) -> None:
    missing = tmp_path / "nope"
    for command in (["show", str(missing)], ["export", str(missing)]):
        assert_one_error_line(runner.invoke(app, command), f"{missing}: no such folder")
    (tmp_path / "plain").mkdir()
    assert_one_error_line(runner.invoke(app, ["show", str(tmp_path / "plain")]),
                          "not a run folder")
    assert not missing.exists()


# -- sweep progress ---------------------------------------------------------------------


def status(finished: int, planned: int = 40, running: int = 2) -> SweepStatus:
    return SweepStatus(finished, planned, [], [f"t{i}" for i in range(running)])


def test_plain_progress_lines_every_tenth_and_every_30_s() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = PlainProgress("quick", clock=lambda: now[0], echo=lines.append)
    progress(status(0))
    assert lines == ["sweep quick: 0/40 trials finished, 2 running, elapsed 0s"]
    for t, done in ((1, 1), (2, 2), (3, 3)):  # under 10 % and 30 s: quiet
        now[0] = t
        progress(status(done))
    assert len(lines) == 1
    now[0] = 62.0
    progress(status(4))  # 10 %
    assert lines[-1] == ("sweep quick: 4/40 trials finished, 2 running, elapsed 1m02s, "
                         "ETA ~9m18s")
    now[0] = 93.0
    progress(status(5))  # 31 s later
    assert len(lines) == 3 and "5/40" in lines[-1]
    now[0] = 100.0
    progress(status(5))
    assert len(lines) == 3
    now[0] = 300.0
    progress(status(40, running=0))
    assert lines[-1] == "sweep quick: 40/40 trials finished, 0 running, elapsed 5m00s"


def test_plain_progress_counts_only_this_run_for_the_eta() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = PlainProgress("quick", clock=lambda: now[0], echo=lines.append)
    progress(status(20))  # a resume: 20 were done before
    now[0] = 40.0
    progress(status(24))
    assert lines[-1].endswith("elapsed 40s, ETA ~2m40s")  # 16 left at 4 per 40 s


def test_the_live_table_kept_incrementally_equals_the_one_from_scratch() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from adastudy.cli.progress import LiveTable, live_table

    def text(table) -> str:
        console = Console(width=100, record=True)
        console.print(table)
        return console.export_text()

    study = SimpleNamespace(metric="verification_accuracy", direction="maximize")
    records = [record("cosface", 16.0, 0.2, 0, 0.90), record("cosface", 32.0, 0.2, 0, 0.95),
               record("cosface", 32.0, 0.2, 1, 0.99), record("adacos-fixed", None, None, 0,
                                                            None, state="failed")]
    board = LiveTable(study)
    for shown in range(len(records) + 1):
        status = SweepStatus(shown, 4, records[:shown], ["cosface|s=64"])
        assert text(board(status)) == text(live_table(status, study)), shown
    assert text(board(status)) == text(live_table(status, study))  # nothing counted twice
    final = text(board(status))
    assert "│ 32 │ 0.2 │     2 │ 0.9700 │" in final  # (0.95 + 0.99) / 2 over 2 seeds
    assert "running: cosface|s=64" in final


def test_the_terminal_bar_has_an_eta() -> None:
    from rich.progress import TimeRemainingColumn

    assert any(isinstance(c, TimeRemainingColumn) for c in sweep_bar("x").columns)


def test_a_sweep_to_a_file_prints_plain_progress_lines(runner, tmp_path) -> None:
    spec_path = write_spec(tmp_path)
    result = runner.invoke(app, ["sweep", str(spec_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("sweep tiny: ")]
    assert lines[0].startswith("sweep tiny: 0/6 trials finished")
    assert lines[-1].startswith("sweep tiny: 6/6 trials finished, 0 running, elapsed ")
    assert "╸" not in result.stderr and "━" not in result.stderr  # no bar in a file


# -- interrupted trials in the Optuna journal -------------------------------------------


def test_an_interrupted_trial_goes_back_to_the_queue_not_to_fail(tmp_path) -> None:
    from adastudy import store
    from adastudy.backends import optuna as on_optuna
    from adastudy.backends.sweep import Plan, RecordIndex

    spec = specs.load(write_spec(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    plan, index = Plan(spec), RecordIndex(run)
    study = on_optuna.open_study(run, spec)
    on_optuna._enqueue_missing(study, plan, index, spec.study.metric)
    first, second = study.ask(), study.ask()  # both RUNNING, as when a process died
    first.suggest_categorical("head", ["cosface", "adacos-fixed"])
    # the second one's record was written just before its process died
    trial = plan.grid[second.user_attrs["key"]]
    done = {**record(trial.head, trial.s, trial.m, trial.seed, 0.9),
            "key": second.user_attrs["key"]}
    store.write_trial_record(run, done)
    index.refresh()
    assert index.keys() == {done["key"]}
    on_optuna._enqueue_missing(study, plan, index, spec.study.metric)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[first.number].state == optuna.trial.TrialState.WAITING
    assert trials[first.number].user_attrs["interruptions"] == 1
    assert trials[second.number].state == optuna.trial.TrialState.COMPLETE
    assert trials[second.number].value == 0.9
    assert len(trials) == len(plan.grid)  # nothing enqueued twice
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.FAIL]
    again = study.ask()  # the resumed sweep takes the interrupted trial first
    assert again.number == first.number
    assert again.suggest_categorical("head", ["cosface", "adacos-fixed"]) == first.params[
        "head"]


@pytest.mark.slow
def test_ctrl_c_leaves_no_failed_trial_in_the_journal(tmp_path) -> None:
    import os
    import signal
    import time

    spec_path = write_spec(tmp_path, epochs=6)
    out = tmp_path / "run"
    command = [SCRIPT, "sweep", str(spec_path), "--out", str(out)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            (out / "trials").exists() and any((out / "trials").glob("*.json"))):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 130
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    states = [t.state.name for t in optuna.load_study(study_name="tiny",
                                                      storage=storage).trials]
    assert "FAIL" not in states and "RUNNING" not in states
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6


# -- train ------------------------------------------------------------------------------


TRIAL = TINY.split("[data]")[1]  # the tiny study's data, model and train, no heads


@pytest.fixture
def trial_spec(tmp_path) -> Path:
    return write_spec(tmp_path, "[data]" + TRIAL, name="trial.toml")


def test_train_labels_every_row_in_words_and_degrees(runner, trial_spec) -> None:
    result = runner.invoke(app, ["train", str(trial_spec), "--head", "cosface", "--s", "16",
                                 "--m", "0.2"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    for raw in ("theta_med_rad", "theta_mean_rad", "final_", "ln_b_avg_ratio", "p_target"):
        assert raw not in text
    assert "± std over 10 folds" in text
    assert re.search(r"θ_med \(median target angle\)\s*│\s*\d+\.\d°", text)
    assert "0.2 rad (11.5°)" in text
    assert result.stderr == ""  # a trial spec: no note


def test_train_with_a_study_spec_asks_for_a_head_and_notes_the_heads(runner, tmp_path) -> None:
    study = write_spec(tmp_path)
    result = runner.invoke(app, ["train", str(study)])
    assert_one_error_line(result, "--head", "cosface, adacos-fixed")
    result = runner.invoke(app, ["train", str(study), "--head", "adacos-fixed", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["head"] == "adacos-fixed"
    assert result.stderr.splitlines() == [
        "note: train runs one head (--head adacos-fixed); the spec's [heads] "
        "(cosface, adacos-fixed) are for adastudy sweep"]


def test_train_out_writes_the_json_result_and_refuses_an_existing_file(
        runner, trial_spec, tmp_path) -> None:
    out = tmp_path / "results" / "t.json"
    result = runner.invoke(app, ["train", str(trial_spec), "--head", "adacos-fixed",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"wrote {out}"
    saved = json.loads(out.read_text())
    assert saved["head"] == "adacos-fixed" and saved["state"] == "complete"
    assert "series" in saved and "verification_accuracy" in saved["metrics"]
    printed = runner.invoke(app, ["train", str(trial_spec), "--head", "adacos-fixed",
                                  "--json"])
    assert set(json.loads(printed.stdout)) == set(saved)
    before = out.read_bytes()
    again = runner.invoke(app, ["train", str(trial_spec), "--out", str(out)])
    assert_one_error_line(again, "--out", str(out), "exists")
    assert out.read_bytes() == before
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = runner.invoke(app, ["train", str(trial_spec), "--out", str(blocker / "t.json")])
    assert_one_error_line(bad, "not a folder")


# -- the quick study's time -------------------------------------------------------------


def test_the_quick_study_states_one_run_time() -> None:
    pattern = re.compile(r"about ([\w ]+?) on 2 CPU cores")
    toml = pattern.findall((ROOT / "studies" / "quick.toml").read_text())
    readme_line = next(line for line in (ROOT / "README.md").read_text().splitlines()
                       if line.startswith("adastudy sweep studies/quick.toml ")
                       and "runs/quick/" in line)
    assert toml and toml == pattern.findall(readme_line), (toml, readme_line)


@pytest.mark.parametrize("variant", [False, True])
def test_a_sweep_that_asks_for_cuda_without_it_is_one_line_and_writes_nothing(
        runner, tmp_path, monkeypatch, variant) -> None:
    # Before: every trial ran, failed on the device, and the sweep exited 0.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = TINY.replace("[train]", "[train]\ndevice = \"cuda\"") if not variant else \
        TINY + '\n[variants.gpu]\ntrain = { device = "cuda" }\n'
    spec = write_spec(tmp_path, text)
    out = tmp_path / "run"
    for extra in ([], ["--dry-run"]):
        result = runner.invoke(app, ["sweep", str(spec), "--out", str(out), *extra])
        line = assert_one_error_line(result, "train.device", "CUDA is not available")
        assert ("variant gpu" in line) == variant
        assert not out.exists()


def test_importing_adastudy_and_its_help_import_neither_engine() -> None:
    # Each engine is imported only when a sweep runs on it: a machine without Ray (an
    # extra: adastudy[ray]) can use everything else.
    code = ("import sys, adastudy, adastudy.cli, adastudy.report, adastudy.claims\n"
            "from typer.testing import CliRunner\n"
            "assert CliRunner().invoke(adastudy.cli.app, ['--help']).exit_code == 0\n"
            "assert CliRunner().invoke(adastudy.cli.app, ['sweep', '--help']).exit_code == 0\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'ray'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(("backend", "package"), [("optuna", "optuna"), ("ray", "ray")])
def test_an_engine_whose_package_is_missing_is_one_line_naming_it(
        runner, tmp_path, monkeypatch, backend, package) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real(name, *a))
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", str(spec), "--backend", backend, "--out", str(out)])
    assert_one_error_line(result, f"the {backend} engine needs the package '{package}'",
                          "pip install")
    assert not out.exists()
