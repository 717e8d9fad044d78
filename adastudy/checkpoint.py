"""A trial's checkpoint: everything that makes its next epoch, in one file, atomically.

    save(folder, state)            # folder/last.pt, replacing the one before
    state, problem = load(folder, trial_digest)   # (None, reason) when unusable

A checkpoint is written at the end of an epoch (after its validation report), so the
log window is empty and the next step starts an epoch. It holds the model, the head
(with dynamic AdaCos's scale buffer), the optimiser, the schedule, the gradient scaler,
torch's random states, the trial's bookkeeping (step, first steps below the θ_med
levels, the scale guards, the last window's means, the training time) and every report
made so far, which a resumed trial hands its reporter again: the series, and an Optuna
pruner's intermediate values, come out as an uninterrupted trial's.

The file carries the digest of the trial's spec: a checkpoint of another trial (another
spec, s, m or seed) is refused, as is a truncated or unreadable file; the trial then
starts from step 0, never mixing states. Only the last checkpoint is kept.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["FILE", "FORMAT", "load", "save", "save_model", "trial_digest"]

FILE = "last.pt"
#: The layout of the saved dictionary; another one is refused, not guessed at.
FORMAT = 1


def trial_digest(trial: Any) -> str:
    """SHA-256 of a `TrialSpec`'s canonical JSON: what a checkpoint belongs to."""
    return hashlib.sha256(trial.model_dump_json().encode()).hexdigest()


def _write(path: Path, state: dict[str, Any]) -> Path:
    """torch.save `state` to `path` atomically (a temporary file, fsync, rename): a kill
    mid-write leaves the file before it whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save({**state, "format": FORMAT}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def save(folder: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `folder/last.pt`, replacing the checkpoint before."""
    return _write(folder / FILE, state)


def save_model(path: Path, trial: Any, model: torch.nn.Module, head: torch.nn.Module) -> Path:
    """A finished trial's final weights (`--save-models`): the backbone's and the head's
    state dicts, with the trial's spec (JSON) that says how to build them."""
    return _write(path, {"trial": trial.model_dump_json(), "model": model.state_dict(),
                         "head": head.state_dict()})


def load(folder: Path, digest: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the state, None) of `folder/last.pt` when it belongs to the trial with `digest`;
    (None, None) when there is none; (None, why) when it cannot be used."""
    path = folder / FILE
    if not path.is_file():
        return None, None
    try:
        # weights_only: a checkpoint holds tensors and plain values, nothing to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        return None, f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None, f"{path}: not a checkpoint of format {FORMAT}"
    if state.get("trial") != digest:
        return None, f"{path}: the checkpoint of another trial (its spec's digest differs)"
    return state, None
