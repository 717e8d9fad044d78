"""Pruning on Ray: ASHA's "stop" becomes a note on a board the trial reads, so that a
cut trial ends by itself as `pruned` and writes its record, as on the other engines."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import ray
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from adastudy.spec import StudySpec

__all__ = ["PRUNE_METRIC", "PruningBoard", "board_name", "scheduler"]

#: The validation accuracy is reported to ASHA under this name, once per epoch.
PRUNE_METRIC = "val_accuracy"


@ray.remote(num_cpus=0)
class PruningBoard:
    """The trials ASHA cut, until they have ended as `pruned` by themselves."""

    def __init__(self) -> None:
        self.cut: set[str] = set()

    def cut_trial(self, trial_id: str) -> None:
        self.cut.add(trial_id)

    def forget(self, trial_id: str) -> None:
        self.cut.discard(trial_id)

    def is_pruned(self, trial_id: str) -> bool:
        return trial_id in self.cut


class _PruningASHA(AsyncHyperBandScheduler):
    """ASHA whose "stop" before the last epoch becomes a note on the pruning board: the
    trial reads it right after its report returns (Tune reports synchronously), ends as
    `pruned` and writes its record. A stopped actor would be killed before that."""

    def __init__(self, board: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.board = board

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get("epoch", self._max_t) < self._max_t:
            ray.get(ray.get_actor(self.board).cut_trial.remote(trial.trial_id))
            return TrialScheduler.CONTINUE
        return action


def scheduler(spec: StudySpec, board: str) -> TrialScheduler | None:
    """ASHA in place of Optuna's pruner, on each epoch's validation accuracy (always
    maximised: the other engines prune lagging accuracy in either direction)."""
    if spec.search.pruner == "none" or spec.train.epochs < 2:
        return None
    grace = max(1, spec.search.warmup_epochs) if spec.search.pruner == "median" else 1
    return _PruningASHA(
        board, time_attr="epoch", metric=PRUNE_METRIC, mode="max",
        max_t=spec.train.epochs, grace_period=min(grace, spec.train.epochs),
        reduction_factor=3,
    )


def board_name(run_dir: Path) -> str:
    """The pruning board's actor name: one per run folder."""
    return "adastudy-pruning-" + hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
