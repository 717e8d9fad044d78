"""One trial on several devices: `train.devices = N` ranks of DistributedDataParallel.

    with start_ranks(spec, checkpoint_dir):   # in the trial's process: it is rank 0
        run_trial(spec, ...)                  # trains its shard, reports, evaluates

The process that runs a trial (the serial engine's, an Optuna worker, a Ray trial)
becomes rank 0 and starts ranks 1 … N−1 itself, as `python -m adastudy.distributed`
child processes on the same machine (NCCL on GPUs, one GPU per rank; gloo on the CPU).
Every rank builds the same data and model, trains on its slice of every global batch
(`train.batch_size` rows in all, `batch_size / N` per rank), and leaves after the last
epoch; rank 0 alone reports, validates, decides on pruning (and tells the others),
writes checkpoints and models, and scores the final evaluation. The heads take their
statistics and AdaCos's update over the global batch (`heads.CosineHead`), BatchNorm
normalises over it (`sync_batchnorm`), and DDP averages the gradients, so a trial on N
ranks equals the 1-process trial of the same global batch within float tolerance.

Why the trial starts its ranks itself rather than through Ray Train's TorchTrainer: one
launcher serves all three engines alike, rank 0 stays the process that the engine's
reporter and records already live in, and a Ray trial asks for its N devices as one
bundle (one machine), which is what a child process needs.

A rank that fails before training (its data, say) is reported with its last error line;
one that dies during training makes rank 0's next collective fail, and the trial fails
with that rank's error.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from adastudy.errors import ParameterError
from adastudy.spec import TrainSpec, TrialSpec

__all__ = ["RankError", "Ranks", "check_devices", "current", "data_parallel", "devices_problem",
           "lead_decides", "start_ranks", "sync_batchnorm"]

#: How long a rank waits in a collective (rank 0's validation and evaluation included)
#: before the trial fails.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
#: How long rank 0 waits for the other ranks to have built their data.
READY_TIMEOUT_S = 3600.0


class RankError(RuntimeError):
    """A rank other than 0 failed: the trial fails with its error."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the trial: `rank` of `world` (0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        """Rank 0: the one that reports, evaluates and writes."""
        return self.rank == 0


def current() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def devices_problem(train: TrainSpec) -> str | None:
    """Why this machine cannot hold `train.devices` ranks (more than its GPUs, on
    CUDA), or None. The CPU takes any number of rank processes."""
    devices = train.devices
    if devices > 1 and _on_cuda(train) and torch.cuda.device_count() < devices:
        return f"{devices} ranks need {devices} GPUs, this machine has " \
               f"{torch.cuda.device_count()}"
    return None


def check_devices(spec: TrialSpec) -> None:
    """`ParameterError` when the trial's ranks need more GPUs than this machine has."""
    if (problem := devices_problem(spec.train)) is not None:
        raise ParameterError(f"train.devices: {problem}")


def _on_cuda(train: TrainSpec) -> bool:
    return train.device == "cuda" or (train.device == "auto" and torch.cuda.is_available())


def rank_device(spec: TrialSpec, rank: int) -> torch.device:
    """Rank `rank`'s device: its own GPU on CUDA, the CPU otherwise."""
    if _on_cuda(spec.train):
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _threads_per_rank(world: int) -> int:
    return max(1, torch.get_num_threads() // world)


def _init(spec: TrialSpec, rank: int, world: int, port: int) -> None:
    backend = "nccl" if _on_cuda(spec.train) else "gloo"
    kwargs = {"device_id": torch.device("cuda", rank)} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=COLLECTIVE_TIMEOUT, **kwargs)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


@contextlib.contextmanager
def start_ranks(spec: TrialSpec, checkpoint_dir: Path | None) -> Iterator[Ranks]:
    """Make this process rank 0 of `spec.train.devices` ranks, the others child
    processes running the same trial, until the block ends (then the group is
    destroyed and the children waited for). Raises `RankError` for a child's failure."""
    world = spec.train.devices
    check_devices(spec)
    port = _free_port()
    threads = torch.get_num_threads()
    per_rank = _threads_per_rank(world)
    with tempfile.TemporaryDirectory(prefix="adastudy-ranks-") as tmp:
        folder = Path(tmp)
        (folder / "trial.json").write_text(spec.model_dump_json())
        children = []
        for rank in range(1, world):
            log = folder / f"rank{rank}.log"
            command = [sys.executable, "-m", "adastudy.distributed", str(folder), str(rank),
                       str(world), str(port), str(per_rank), str(checkpoint_dir or "")]
            with open(log, "w") as out:
                children.append((rank, log, subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})))

        def failure() -> RankError | None:
            for rank, log, child in children:
                if child.poll() not in (None, 0):
                    return RankError(f"rank {rank} failed (exit {child.returncode}): "
                                     f"{_last_line(log)}")
            return None

        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not all((folder / f"ready{rank}").exists() for rank, _, _ in children):
                if (error := failure()) is not None:
                    raise error
                if time.monotonic() > deadline:
                    raise RankError(f"ranks 1-{world - 1} were not ready after "
                                    f"{READY_TIMEOUT_S:g} s")
                time.sleep(0.02)
            torch.set_num_threads(per_rank)
            _init(spec, 0, world, port)
            try:
                yield Ranks(0, world)
            except Exception as error:
                time.sleep(0.5)  # a rank that died is what made the collective fail
                rank_error = failure()
                if rank_error is None:
                    raise
                raise rank_error from error
            else:
                dist.barrier()  # every rank is done before the group goes
            finally:
                dist.destroy_process_group()
            for rank, log, child in children:
                if child.wait(timeout=600) != 0:
                    raise RankError(f"rank {rank} failed (exit {child.returncode}): "
                                    f"{_last_line(log)}")
        finally:
            torch.set_num_threads(threads)
            for _, _, child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()


def _child(folder: Path, rank: int, world: int, port: int, threads: int,
           checkpoint_dir: str) -> None:
    """Rank `rank` (> 0): build the data, say ready, join the group, train its shard."""
    from adastudy.data import build_trial_data
    from adastudy.train import run_trial

    torch.set_num_threads(threads)
    spec = TrialSpec.model_validate(json.loads((folder / "trial.json").read_text()))
    data = build_trial_data(spec)
    (folder / f"ready{rank}").touch()
    _init(spec, rank, world, port)
    run_trial(spec, data=data, checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None)
    dist.barrier()  # rank 0 has evaluated: the group can go
    dist.destroy_process_group()


class _Step(nn.Module):
    """The trial's forward (backbone, then head) as one module, for DDP to wrap: the
    gradients of both are averaged over the ranks."""

    def __init__(self, model: nn.Module, head: nn.Module,
                 forward: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.model, self.head = model, head
        self._forward = forward

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self._forward(x, y)


def data_parallel(model: nn.Module, head: nn.Module,
                  forward: Callable[[Tensor, Tensor], Tensor],
                  device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    """`forward(x, y) -> loss` under DistributedDataParallel. Buffers are not
    broadcast: BatchNorm's statistics are global already and the head's scale is rank
    0's on every rank."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch 2.13 renamed broadcast_buffers; the buffers are equal at the start (the same
    # seed on every rank), so the sync at construction that the new name keeps is moot.
    takes = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in takes
               else {"broadcast_buffers": False})
    return DistributedDataParallel(
        _Step(model, head, forward),
        device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def lead_decides(decision: bool, device: torch.device) -> bool:
    """Rank 0's `decision` (pruning), on every rank."""
    flag = torch.tensor([1.0 if decision else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# -- BatchNorm over the global batch ------------------------------------------------------


class _SumOverRanks(torch.autograd.Function):
    """Σ over the ranks of a tensor, whose gradient is Σ over the ranks of theirs: each
    rank's loss depends on every rank's rows through the sum."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class _GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of every rank's rows together, for
    the CPU (torch's SyncBatchNorm runs on GPUs only). The sums travel through an
    autograd-aware all-reduce, so the gradient is the global batch's too."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        rows = x.new_tensor([x.numel() // channels], dtype=torch.float64)
        # Sums in float64: E[x²] − E[x]² loses digits in float32.
        wide = x.double()
        sums = _SumOverRanks.apply(torch.cat([wide.sum(dims), (wide * wide).sum(dims), rows]))
        count = sums[-1]
        mean = sums[:channels] / count
        var = (sums[channels:2 * channels] / count - mean * mean).clamp(min=0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (wide - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm normalising over all ranks' rows: torch's
    SyncBatchNorm on CUDA, `_GlobalBatchNorm` on the CPU. Parameters, buffers and
    state-dict keys are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = _GlobalBatchNorm(child.num_features, child.eps, child.momentum,
                                           child.affine, child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            if child.affine:
                replacement.weight.requires_grad_(child.weight.requires_grad)
                replacement.bias.requires_grad_(child.bias.requires_grad)
            replacement.train(child.training)
            setattr(module, name, replacement.to(device))
        else:
            sync_batchnorm(child, device)
    return module


if __name__ == "__main__":
    _folder, _rank, _world, _port, _threads, _checkpoints = sys.argv[1:7]
    _child(Path(_folder), int(_rank), int(_world), int(_port), int(_threads), _checkpoints)
    # Without the interpreter's teardown: gloo's threads can abort it ("terminate called
    # without an active exception") after a clean trial.
    sys.stdout.flush()
    os._exit(0)
