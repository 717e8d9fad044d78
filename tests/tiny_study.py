"""The tiny study both engines' tests sweep (a few seconds a run), and its plan."""

from __future__ import annotations

from pathlib import Path

from adastudy import spec as specs
from adastudy.backends import record_key

TINY = """
[study]
name = "tiny"
seeds = [0, 1]

[heads.cosface]
s = [16.0, 32.0]
m = [0.2]

[heads.adacos-fixed]

[data]
identities = 20
images_per_identity = 8
eval_identities = 20
eval_images_per_identity = 6
val_pairs = 100
test_pairs = 200
distractors = 20
feature_dim = 16

[model]
hidden = [32]
embedding_dim = 16

[train]
epochs = {epochs}
batch_size = 32
lr = 0.05
log_every = 5
"""


def write_spec(tmp_path: Path, text: str = TINY, epochs: int = 1, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("{epochs}", str(epochs)))
    return path


def planned_keys(spec_path: Path) -> list[str]:
    """The store keys of every trial the spec plans."""
    return sorted(record_key(t) for t in specs.load(spec_path).trials())
