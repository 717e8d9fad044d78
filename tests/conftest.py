"""Fixtures shared by the test modules: one local Ray per session (as Ray's own tests
advise), its workers able to import the tests' kill hook."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import ray_kill_hook


@pytest.fixture(scope="session")
def kill_dir():
    """The folder through which a test arms `ray_kill_hook` (see there)."""
    with tempfile.TemporaryDirectory(prefix="adastudy-kill-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def local_ray(kill_dir):
    """One local Ray (2 CPUs, loopback, no dashboard) for the session, its
    workers able to import the tests' kill hook (`ray_kill_hook`)."""
    import ray

    from adastudy.backends import ray as ray_backend

    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", ray_kill_hook.ARM_ENV)}
    tests = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, saved["PYTHONPATH"]) if p)
    os.environ[ray_kill_hook.ARM_ENV] = str(kill_dir)
    try:
        ray_backend.init_local_ray(
            num_cpus=2, runtime_env={"worker_process_setup_hook": "ray_kill_hook.install"})
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield
    ray.shutdown()


def arm_kill(kill_dir: Path, after_checkpoint: bool = False) -> Path:
    """The next trial to start (or, `after_checkpoint`, to write a checkpoint) SIGKILLs
    its worker; returns the file that says it did."""
    (kill_dir / "fired").unlink(missing_ok=True)
    (kill_dir / ("armed_after_checkpoint" if after_checkpoint else "armed")).touch()
    return kill_dir / "fired"


