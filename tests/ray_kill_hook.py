"""Tests only: a Ray worker setup hook (`runtime_env["worker_process_setup_hook"]`) that
lets a test SIGKILL the worker of one trial mid-trial, with no hook in adastudy itself.

The test arms it by creating the file `armed` in the folder named by `ARM_ENV`; the
first trial to start after that renames it to `fired` (atomic: one worker wins) and
kills its own process before the trial writes anything. With `armed_after_checkpoint`
instead, the first trial to write a checkpoint kills its process just after.
"""

from __future__ import annotations

import os
import signal

ARM_ENV = "ADASTUDY_TEST_KILL_DIR"


def install() -> None:
    folder = os.environ.get(ARM_ENV)
    if not folder:
        return
    from adastudy.backends import sweep

    original = sweep.TrialRunner.execute

    def execute(self, trial, reporter, number):
        try:
            os.rename(os.path.join(folder, "armed"), os.path.join(folder, "fired"))
        except FileNotFoundError:
            return original(self, trial, reporter, number)
        os.kill(os.getpid(), signal.SIGKILL)

    sweep.TrialRunner.execute = execute

    from adastudy import checkpoint

    original_save = checkpoint.save

    def save(*args, **kwargs):
        original_save(*args, **kwargs)
        try:
            os.rename(os.path.join(folder, "armed_after_checkpoint"),
                      os.path.join(folder, "fired"))
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save = save
