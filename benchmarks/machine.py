"""What the benchmark scripts print about the machine they ran on."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), as run manifests record it."""
    from adastudy.store import cpu_model

    return cpu_model() or platform.machine()
