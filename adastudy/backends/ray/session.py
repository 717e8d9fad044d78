"""The Ray session of a sweep: a local Ray on loopback, or a running cluster joined by
address (with its token), checked before anything is written."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import ray

from adastudy.errors import AdastudyError

__all__ = ["RayClusterError", "check_cluster_fits", "check_request", "init_local_ray",
           "ray_session"]

#: Ray reads this when it is imported: "0" makes a new local node use the loopback
#: address, so that every Ray server of the node listens on 127.0.0.1 only.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayClusterError(AdastudyError):
    """The Ray cluster cannot be used: unreachable, refused, or too small for a trial."""


def init_local_ray(*, num_cpus: int | None = None, num_gpus: int | None = None,
                   runtime_env: dict | None = None) -> None:
    """Start a Ray instance on this machine for this process: its servers listen on
    127.0.0.1 only, no dashboard, token authentication on (Ray's default for local
    instances). `runtime_env` is Ray's (tests use its `worker_process_setup_hook`).
    Shut it down with `ray.shutdown()`."""
    # Ray turns a node address of 127.0.0.1 into the machine's routable address (and
    # then listens on every interface) unless it runs as a single-machine Ray, which
    # the variable below selects: for the child processes (read at their import) and
    # for this one (read at ours, so set on the module as well).
    from ray._private import ray_constants

    saved_env = os.environ.get(_LOOPBACK_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=runtime_env,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = saved_env


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Hold what is written to file descriptor 2 meanwhile (Ray's C++ client logs each
    refused connection attempt there, twenty lines for a missing token) and write it
    out after a success; after a failure the caller's one-line error stands alone."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            sink.seek(0)
            held = sink.read()
            if held:
                os.write(2, held)
        finally:
            os.close(saved)


def _join_cluster(address: str) -> None:
    """Connect this process to the running cluster at `address` ("auto" or HOST:PORT)."""
    if address != "auto":
        # Ray enables token authentication by itself only for "auto"; a cluster named
        # by its address gets the same treatment: the token this machine holds, if any.
        with contextlib.suppress(ImportError):
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        with _held_stderr():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ray.exceptions.AuthenticationError:
        # With RAY_AUTH_MODE=token and no token Ray raises this (and printed a
        # traceback, exit 1): the same mistake as a missing token without the variable.
        raise RayClusterError(
            f"--address {address}: the cluster uses token authentication and this machine "
            "has no token for it: put it in RAY_AUTH_TOKEN, in the file RAY_AUTH_TOKEN_PATH "
            "names, or in ~/.ray/auth_token"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayClusterError(
            f"--address {address}: cannot join a Ray cluster there ({exc}); check that "
            "`ray start --head` runs there and, if the cluster uses token authentication, "
            "that this machine has its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None


def _probe(address: str) -> None:
    """Fail at once when nothing answers at HOST:PORT (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return  # "auto", or a form that Ray checks itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayClusterError(
            f"--address {address}: nothing answers there ({exc.strerror or exc}); "
            "start the head with `ray start --head --port PORT` or check the address"
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[str]:
    """Ray for the sweep: the caller's if this process is already connected, else the
    cluster at `address` (left running), else a local instance (shut down after).
    Yields which, for the manifest."""
    if address is not None:
        _probe(address)
    if ray.is_initialized():
        if address is not None:
            raise RayClusterError(f"--address {address}: this process is connected to a "
                                  "Ray already; leave --address out to use it")
        yield "this process's Ray"
        return
    if address is None:
        init_local_ray()
    else:
        _join_cluster(address)
    try:
        yield address or "local"
    finally:
        ray.shutdown()  # only disconnects this process from a joined cluster


def check_request(cpus_per_trial: float, gpus_per_trial: float) -> None:
    if not (math.isfinite(cpus_per_trial) and cpus_per_trial > 0):
        raise RayClusterError(f"--cpus-per-trial: must be > 0, got {cpus_per_trial:g}")
    if not (math.isfinite(gpus_per_trial) and gpus_per_trial >= 0):
        raise RayClusterError(f"--gpus-per-trial: must be >= 0, got {gpus_per_trial:g}")
    if gpus_per_trial > 1 and not float(gpus_per_trial).is_integer():
        raise RayClusterError(
            f"--gpus-per-trial: a share of one GPU (<= 1) or whole GPUs, got {gpus_per_trial:g}"
        )


def check_cluster_fits(cpus_per_trial: float, gpus_per_trial: float,
                       ranks: int = 1) -> dict[str, float]:
    """The cluster's total resources, after checking that one node can hold a trial
    of `ranks` ranks, each with the resources asked per trial (Tune would otherwise
    wait for ever): a trial's ranks are processes on one machine."""
    if ranks > 1:
        what = f"train.devices = {ranks} ranks x --%s-per-trial %g"
        cpu_label, gpu_label = what % ("cpus", cpus_per_trial), what % ("gpus", gpus_per_trial)
        cpus_per_trial, gpus_per_trial = cpus_per_trial * ranks, gpus_per_trial * ranks
    else:
        cpu_label = f"--cpus-per-trial {cpus_per_trial:g}"
        gpu_label = f"--gpus-per-trial {gpus_per_trial:g}"
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    most_gpus = max((node.get("GPU", 0.0) for node in nodes), default=0.0)
    most_cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
    if gpus_per_trial > 0 and most_gpus == 0:
        raise RayClusterError(
            f"{gpu_label}: the Ray cluster has no GPU; "
            "leave the option out to train on CPUs"
        )
    if gpus_per_trial > most_gpus:
        raise RayClusterError(
            f"{gpu_label}: no node of the Ray cluster has that many "
            f"GPUs (at most {most_gpus:g})"
        )
    if cpus_per_trial > most_cpus:
        raise RayClusterError(
            f"{cpu_label}: no node of the Ray cluster has that many "
            f"CPUs (at most {most_cpus:g})"
        )
    return {"CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0), "nodes": len(nodes)}
