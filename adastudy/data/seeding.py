"""Local random generators, one independent stream per named part of a dataset.

Each part (the distortion network, the training codes, the test pool, the pairs ...)
draws from its own generator seeded from (dataset seed, stream name), so changing one
knob (say `test_pairs`) leaves every other part bit-identical, and nothing depends on
torch's or numpy's global random state.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["numpy_rng", "stream_seed", "torch_generator"]


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for `stream` of dataset seed `seed` (stable across runs and machines)."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(stream.encode()),))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU `torch.Generator` for `stream`."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(stream_seed(seed, stream))
    return generator


def numpy_rng(seed: int, stream: str) -> np.random.Generator:
    """A `numpy.random.Generator` for `stream`."""
    return np.random.default_rng(stream_seed(seed, stream))
