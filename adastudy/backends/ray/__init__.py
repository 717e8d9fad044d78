"""Sweeps on Ray Tune: the same trials and tables as every engine, on one machine or
on a Ray cluster. By job:

- `session`: where Ray runs. By default a local Ray started for the sweep, reachable
  from this machine only (loopback), no dashboard, shut down after; `address` ("auto"
  or "HOST:PORT") joins a running cluster and leaves it running. Token authentication:
  a cluster that this machine holds a token for (`RAY_AUTH_TOKEN`,
  `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`) is joined with it.
- `trainables`: a Tune trial is one grid point × seed (`tune.grid_search` over the
  record keys), or, with `search.method = "tpe"`, one configuration of a searched head
  run with every seed. Both write the store record before they tell Tune.
- `search`: the TPE configurations come from the shared rule (`sweep.propose`) through
  a Tune searcher, so Ray samples what the other engines sample.
- `pruning`: `search.pruner != "none"` puts ASHA on each epoch's validation accuracy;
  its "stop" reaches the trial as `should_stop()`, and a cut trial ends as `pruned`.
- `engine`: the experiments. A trial whose worker dies is retried (`max_failures`);
  rerunning the command restores the interrupted grid experiment (`Tuner.restore`)
  and never repeats a trial that has a record. Ray's files live in `RUN_DIR/ray/`.
"""

from adastudy.backends.ray.engine import EXPERIMENTS_DIR, REFUSALS, RayEngine, run_sweep
from adastudy.backends.ray.session import RayClusterError, init_local_ray

__all__ = ["EXPERIMENTS_DIR", "REFUSALS", "RayClusterError", "RayEngine", "init_local_ray",
           "run_sweep"]
