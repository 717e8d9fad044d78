"""TPE on Ray: a Tune searcher that suggests exactly the configurations the shared rule
(`sweep.propose`) samples, so Ray and the other engines draw the same sequence."""

from __future__ import annotations

import math
import pickle
from typing import Any

from ray.tune.search import Searcher

from adastudy.backends.sweep import propose
from adastudy.spec import StudySpec

__all__ = ["SharedRuleSearcher"]


class SharedRuleSearcher(Searcher):
    """Suggests, for one searched head: first the `pending` configurations (interrupted,
    some seeds recorded), then `left` new ones, configuration k sampled by `propose`
    from the configurations finished so far (`history`, told as trials complete)."""

    def __init__(self, spec: StudySpec, head: str, *, pending: list[tuple[int, dict]],
                 history: list[tuple[int, dict, float]], next_number: int, left: int,
                 score: str) -> None:
        super().__init__()
        self.spec = spec
        self.head = head
        self.pending = list(pending)
        self.history = sorted(history, key=lambda item: item[0])
        self.next_number = next_number
        self.left = left
        self.score = score
        self.live: dict[str, tuple[int, dict]] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # the space is the spec's; metric and mode are Tune's

    def suggest(self, trial_id: str) -> dict | None:
        if self.pending:
            number, params = self.pending.pop(0)
        elif self.left > 0:
            number, self.next_number, self.left = self.next_number, self.next_number + 1, \
                self.left - 1
            params = propose(self.spec, self.head, number,
                             [(p, value) for _, p, value in self.history])
        else:
            return Searcher.FINISHED
        self.live[trial_id] = (number, params)
        return {**params, "number": number}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        number, params = self.live.pop(trial_id, (None, None))
        value = (result or {}).get(self.score)
        if number is None or error or value is None or not math.isfinite(value):
            return
        self.history.append((number, params, float(value)))
        self.history.sort(key=lambda item: item[0])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
