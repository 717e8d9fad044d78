"""`adastudy sweep --backend ray`: the same rows and metrics as Optuna, on a local Ray
(loopback only) or a real cluster; a dead worker is retried, an interrupted experiment
is restored, a request the cluster cannot hold is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import arm_kill
from tiny_study import TINY, planned_keys, write_spec
from typer.testing import CliRunner

from adastudy import spec as specs
from adastudy import store
from adastudy.backends import optuna as optuna_backend
from adastudy.backends import ray as ray_backend
from adastudy.cli import app

pytestmark = pytest.mark.ray

SCRIPT = str(Path(sys.executable).parent / "adastudy")
RAY = str(Path(sys.executable).parent / "ray")

#: Columns that differ between two runs of the same trial (time, place, engine).
RUN_COLUMNS = {"number", "wall_time_s", "train_time_s", "samples_per_s", "started_at",
               "finished_at", "worker"}


def record_times(run_dir: Path) -> dict[str, str]:
    return {r["key"]: r["finished_at"] for r in store.read_trial_records(run_dir)[0]}


def test_a_grid_on_ray_gives_the_rows_and_metrics_of_optuna(local_ray, tmp_path):
    spec_path = write_spec(tmp_path, epochs=2)
    spec = specs.load(spec_path)
    # Two Optuna workers train with one thread each, as one CPU per Ray trial does.
    on_optuna = optuna_backend.run_sweep(spec, spec_path, out=tmp_path / "optuna", workers=2)
    on_ray = ray_backend.run_sweep(spec, spec_path, out=tmp_path / "ray")
    assert on_ray.planned == on_ray.finished == on_optuna.finished == 6
    assert not on_ray.interrupted and on_ray.problems == []

    ours = pd.read_parquet(tmp_path / "ray" / "trials.parquet").set_index("key").sort_index()
    theirs = pd.read_parquet(tmp_path / "optuna" / "trials.parquet").set_index("key")
    assert list(ours.columns) == list(theirs.columns)
    assert list(ours.index) == planned_keys(spec_path)
    assert set(ours["state"]) == {"complete"}
    same = [c for c in ours.columns if c not in RUN_COLUMNS]
    pd.testing.assert_frame_equal(ours[same], theirs.loc[ours.index, same])

    series = pd.read_parquet(tmp_path / "ray" / "series.parquet")
    reference = pd.read_parquet(tmp_path / "optuna" / "series.parquet")
    assert list(series.columns) == list(reference.columns)
    order = ["key", "step", "epoch"]
    series, reference = (df.sort_values(order, na_position="first").reset_index(drop=True)
                         .drop(columns="samples_per_s") for df in (series, reference))
    pd.testing.assert_frame_equal(series, reference)

    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["backend"] == "ray" and manifest["spec_digest"] == spec.digest()
    assert manifest["runs"][-1]["ray"] == ray.__version__
    assert manifest["environment"]["ray"] == ray.__version__
    assert (tmp_path / "ray" / "ray" / "grid-1" / "tuner.pkl").is_file()

    # Running it again finds every trial recorded: no Tune experiment, nothing rerun.
    before = record_times(tmp_path / "ray")
    again = ray_backend.run_sweep(spec, spec_path, out=tmp_path / "ray")
    assert again.finished == 6 and not again.interrupted
    assert record_times(tmp_path / "ray") == before
    assert sorted(p.name for p in (tmp_path / "ray" / "ray").iterdir()) == ["grid-1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_ray_listens_on_loopback_only(local_ray):
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    pids = _processes_of(session)
    assert pids, "no Ray process found"
    addresses = _listening_addresses(pids)
    assert addresses, "no Ray server found"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses


def test_a_killed_worker_is_retried_and_the_study_completes(local_ray, kill_dir, tmp_path):
    spec_path = write_spec(tmp_path)
    marker = arm_kill(kill_dir)
    summary = ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run")
    assert marker.exists()  # one trial's worker was SIGKILLed ...
    assert summary.finished == summary.planned == 6 and not summary.interrupted
    trials = pd.read_parquet(tmp_path / "run" / "trials.parquet")  # ... and run again
    assert sorted(trials["key"]) == planned_keys(spec_path)
    assert set(trials["state"]) == {"complete"}


def test_a_tpe_search_runs_its_budget_with_every_seed(local_ray, tmp_path):
    text = TINY.replace(
        '[heads.cosface]\ns = [16.0, 32.0]\nm = [0.2]\n',
        '[heads.cosface]\ns = { low = 8.0, high = 32.0, log = true }\n'
        'm = { low = 0.1, high = 0.4 }\n',
    ) + '\n[search]\nmethod = "tpe"\ntrials = 2\nseed = 7\n'
    spec_path = write_spec(tmp_path, text)
    summary = ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run")
    assert summary.planned == summary.finished == 2 + 2 * 2
    trials = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    searched = trials[trials["head"] == "cosface"]
    assert len(searched) == 4 and set(searched["state"]) == {"complete"}
    assert searched.groupby(["s", "m"])["seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert ((searched["s"] >= 8) & (searched["s"] <= 32)).all()
    assert (tmp_path / "run" / "ray" / "tpe-cosface-1" / "tuner.pkl").is_file()
    before = record_times(tmp_path / "run")
    again = ray_backend.run_sweep(specs.load(spec_path), spec_path, out=tmp_path / "run")
    assert again.finished == 6 and record_times(tmp_path / "run") == before
    assert sorted(p.name for p in (tmp_path / "run" / "ray").iterdir()) == [
        "grid-1", "tpe-cosface-1"]


def test_gpus_on_a_machine_without_them_is_one_line_and_no_hang(tmp_path):
    spec_path = write_spec(tmp_path)
    out = tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run(
        [SCRIPT, "sweep", str(spec_path), "--backend", "ray", "--gpus-per-trial", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=_env_without_ray_mode(),
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --gpus-per-trial 1: the Ray cluster has no GPU; leave the "
                      "option out to train on CPUs"], done.stderr
    assert not out.exists()
    assert time.monotonic() - started < 60


def test_ray_options_need_the_ray_backend_and_workers_need_optuna(tmp_path):
    spec_path = write_spec(tmp_path)
    for options in (["--cpus-per-trial", "1"], ["--gpus-per-trial", "0.5"],
                    ["--address", "auto"]):
        result = CliRunner().invoke(app, ["sweep", str(spec_path), *options])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {options[0]}: only the ray backend")
    result = CliRunner().invoke(
        app, ["sweep", str(spec_path), "--backend", "ray", "--workers", "2"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --workers:")
    result = CliRunner().invoke(
        app, ["sweep", str(spec_path), "--backend", "ray", "--cpus-per-trial", "0"])
    assert result.exit_code == 2 and "--cpus-per-trial: must be > 0" in result.stderr
    nobody = f"127.0.0.1:{_free_port()}"  # fails at once: Ray would retry for minutes
    result = CliRunner().invoke(
        app, ["sweep", str(spec_path), "--backend", "ray", "--address", nobody])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --address {nobody}: nothing answers there")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sweep_joins_a_real_cluster_on_loopback_with_its_token(tmp_path):
    """`ray start --head` with token authentication on a free port and its own folder;
    the command line joins it by address, and the test stops exactly that cluster."""
    spec_path = write_spec(tmp_path)
    out = tmp_path / "run"
    token = tmp_path / "token"
    token.write_text("adastudy-test-" + os.urandom(16).hex())
    env = _env_without_ray_mode()
    env["RAY_AUTH_TOKEN_PATH"] = str(token)  # the head enables token auth: it has one
    port = _free_port()
    # Ray's socket paths must stay short: its own folder right under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="adastudy-ray-", dir="/tmp")
    log_path = tmp_path / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
             "--temp-dir", temp_dir, "--include-dashboard", "false",
             "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        _wait_for(lambda: "Ray runtime started" in log_path.read_text(), head, log_path)
        assert "Token authentication is enabled" in log_path.read_text()
        done = subprocess.run(
            [SCRIPT, "sweep", str(spec_path), "--backend", "ray",
             "--address", f"127.0.0.1:{port}", "--out", str(out), "--json"],
            capture_output=True, text=True, timeout=180, env=env,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["planned"] == summary["finished"] == 6
        trials = pd.read_parquet(out / "trials.parquet")
        assert sorted(trials["key"]) == planned_keys(spec_path)
        assert set(trials["state"]) == {"complete"}
        run = json.loads((out / "manifest.json").read_text())["runs"][-1]
        assert run["address"] == f"127.0.0.1:{port}" and run["cluster"]["CPU"] == 2
        assert head.poll() is None  # the sweep left the cluster running
        # Without its token (and with RAY_AUTH_MODE=token, where Ray raised its
        # AuthenticationError as a traceback, exit 1): one line, exit 2, nothing written.
        # HOME elsewhere: no ~/.ray/auth_token of the machine's own.
        tokenless = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH_TOKEN")}
        elsewhere = tmp_path / "no-token"
        for mode in ({}, {"RAY_AUTH_MODE": "token"}):
            refused = subprocess.run(
                [SCRIPT, "sweep", str(spec_path), "--backend", "ray",
                 "--address", f"127.0.0.1:{port}", "--out", str(elsewhere)],
                capture_output=True, text=True, timeout=120,
                env={**tokenless, "HOME": str(tmp_path), **mode})
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, (mode, refused.stderr)
            assert lines[0].startswith("error: --address") and "token" in lines[0]
            assert not elsewhere.exists()
    finally:
        _stop_cluster(head, temp_dir)
    assert _processes_of(Path(temp_dir)) == set()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_overhead_benchmark_runs_on_a_tiny_study(tmp_path):
    spec_path = write_spec(tmp_path)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "ray_overhead.py"), "--spec",
         str(spec_path)],
        capture_output=True, text=True, timeout=300, check=True, env=_env_without_ray_mode(),
    ).stdout
    assert "6 trials" in out and "ratio ray / optuna = " in out
    assert "overhead per trial = " in out


# ------------------------------------------------------------------------------ helpers


def _env_without_ray_mode() -> dict[str, str]:
    """This process's environment without what its own Ray set (RAY_AUTH_MODE)."""
    return {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(ready, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)


def _stop_cluster(head: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to the `ray start --block` process stops its node; whatever of that
    cluster (its process group, or a process naming its folder) outlives it is killed."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while _processes_of(Path(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _processes_of(Path(temp_dir)):
        os.kill(pid, signal.SIGKILL)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=10)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _processes_of(folder: Path) -> set[int]:
    """Live processes whose command line names `folder`, and their descendants (Ray's
    workers rename themselves, e.g. "ray::IDLE")."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    found = {pid for pid in pids if str(folder) in _cmdline(pid)}
    grew = True
    while grew:
        children = {pid for pid in pids if _parent(pid) in found} - found
        found |= children
        grew = bool(children)
    return {pid for pid in found if Path(f"/proc/{pid}").exists()}


def _listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets that `pids` listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(_ip(fields[1].split(":")[0], family))
    return addresses


def _ip(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp* print each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, words)
