"""The spec file: defaults, round trips, and one-line errors naming the file and key."""

from __future__ import annotations

import pytest

from adastudy import spec as specs
from adastudy.errors import AdastudyError


def write(tmp_path, text: str):
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_defaults_and_values_are_read(tmp_path):
    path = write(tmp_path, """
[data]
name = "synthetic"
form = "images"
identities = 50

[model]
embedding_dim = 32
hidden = [128]

[train]
epochs = 3
lr = 0.05
schedule = "step"
milestones = [1, 2]
""")
    study = specs.load(path)
    assert study.data.form == "images" and study.data.identities == 50
    assert study.data.eval_identities == specs.DataSpec().eval_identities
    assert study.model.hidden == (128,)
    assert study.train.milestones == (1.0, 2.0)
    assert specs.load(write(tmp_path, "")) == specs.StudySpec()


def test_digest_is_stable_and_changes_with_the_spec(tmp_path):
    a = specs.load(write(tmp_path, "[train]\nepochs = 3\n"))
    b = specs.parse({"train": {"epochs": 3}})
    c = specs.parse({"train": {"epochs": 4}})
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[train]\nlr = -1\n", "x.toml: train.lr: must be > 0, got -1"),
        ("[train]\nlrr = 0.1\n", "x.toml: train.lrr: unknown key; did you mean lr?"),
        ("[trian]\nlr = 0.1\n", "x.toml: trian: unknown key; did you mean train?"),
        ("[data]\nname = 'mnist'\n", "x.toml: data.name: must be one of 'synthetic', 'digits', "
                                     "'recordio', 'folder', got 'mnist'"),
        ("[data]\nidentities = 5\n", "x.toml: data.identities: must be >= 10, got 5"),
        ("[data]\ntest_pairs = 6001\n", "x.toml: data.test_pairs: must be a multiple of 20, "
                                        "got 6001"),
        ("[train]\nepochs = 'ten'\n", "x.toml: train.epochs: must be an integer, got 'ten'"),
        ("[train]\nepochs = 2\nwarmup_epochs = 2\n",
         "x.toml: train.warmup_epochs: must be < epochs (2), got 2"),
        ("[train]\nepochs = 4\nmilestones = [5]\n",
         "x.toml: train.milestones: must lie in (0, epochs = 4)"),
        ("[model]\nhidden = []\n",
         "x.toml: model.hidden: must be a non-empty list of integers >= 1"),
        ("[train]\nlr = \n", "x.toml: invalid TOML"),
        ("[claims]\nc7_level_deg = 90\n",
         "x.toml: claims.c7_level_deg: must lie in (0, 90) degrees, got 90"),
        ("[claims]\nc7_level_deg = -5\n",
         "x.toml: claims.c7_level_deg: must lie in (0, 90) degrees, got -5"),
        ("[claims]\nc7_level_deg = 40\n",
         "x.toml: claims.c7_level_deg: 40 is not one of train.theta_levels_deg (60, 45, 30); "
         "add it there so that every trial records when θ_med first falls below it"),
        ("[claims]\nlevel = 40\n", "x.toml: claims.level: unknown key"),
    ],
)
def test_errors_are_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(specs.SpecError) as err:
        specs.load(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path.parent / expected.split(":")[0]))
    assert message.endswith(expected.split("x.toml", 1)[1]) or "invalid TOML" in message
    assert isinstance(err.value, AdastudyError)


def test_missing_file_and_folder_are_clear(tmp_path):
    with pytest.raises(specs.SpecError, match="no such spec file"):
        specs.load(tmp_path / "nope.toml")
    with pytest.raises(specs.SpecError, match="is a folder"):
        specs.load(tmp_path)


def test_trial_spec_head_params():
    trial = specs.TrialSpec(head="cosface", s=30.0, seed=3)
    assert trial.head_params() == {"s": 30.0}
    assert specs.TrialSpec().head_params() == {}


def test_the_documented_trial_spec_lists_exactly_the_defaults():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "studies" / "trial.toml"
    assert specs.load(path) == specs.StudySpec()
    text = path.read_text()
    listed = specs.tomllib.loads(text)
    # A key whose default is "unset" (None) cannot be written in TOML: it is listed as a
    # comment, "# key = example".
    import re

    commented = set(re.findall(r"^# ([a-z_]+) = ", text, re.M))
    for section, model in (("data", specs.SyntheticData), ("model", specs.ModelSpec),
                           ("train", specs.TrainSpec)):
        unset = {k for k, f in model.model_fields.items() if f.default is None}
        assert set(listed[section]) == set(model.model_fields) - unset, section
        assert unset <= commented, section


VARIANTS = """
[study]
seeds = [0, 1]

[heads.normface]
s = [4.0, 8.0]

[heads.adacos-fixed]

[data]
identities = 50

[variants.c200]
data = { identities = 200 }
heads = ["normface"]

[variants.images]
data = { form = "images" }
train = { epochs = 2 }

[variants.images.grids.normface]
s = [16.0]
"""


def test_variants_run_the_chosen_heads_again_on_their_own_data(tmp_path):
    study = specs.load(write(tmp_path, VARIANTS))
    trials = study.trials()
    by_variant: dict[str, list] = {}
    for trial in trials:
        by_variant.setdefault(trial.variant, []).append(trial)
    assert list(by_variant) == [specs.MAIN_VARIANT, "c200", "images"]
    # main: 2 normface scales + adacos-fixed, × 2 seeds; c200: normface only
    assert len(by_variant["main"]) == 6
    # images: normface on its own grid (one scale) + adacos-fixed, × 2 seeds
    assert len(by_variant["images"]) == 4
    assert {t.s for t in by_variant["images"] if t.head == "normface"} == {16.0}
    assert {t.head for t in by_variant["c200"]} == {"normface"}
    assert len(by_variant["c200"]) == 4
    assert {t.data.identities for t in by_variant["c200"]} == {200}
    # overrides change only the keys given; the rest is the main section's
    images = by_variant["images"][0]
    assert images.data.form == "images" and images.data.identities == 50
    assert images.train.epochs == 2 and images.train.lr == study.train.lr
    assert by_variant["main"][0].data == study.data


#: Digests taken with the code before [data] became one table per dataset and [eval]
#: and study.selection existed: a run folder made then must still be recognised.
PINNED_DIGESTS = {
    "claims-cpu.toml": "90e095749ee5008401951465854a64c1e35577ed1ca1a56c8ad9c0fc8b2b5203",
    "quick.toml": "026b5277ea1bdc78a7f57704d811bb2692ae387bbecd6ebb19ef1618853d5c1e",
    "stability.toml": "115c989168733032a829df4a6d4cb3a868b4c237704ec8baa1bcef54d5d3ffa2",
    "trial.toml": "f946e9b7cc43f24c335d65422505f9d17d32799cb3487e87359639b8f04c71ce",
}


def test_specs_keep_the_digest_they_had():
    from pathlib import Path

    studies = Path(__file__).resolve().parents[1] / "studies"
    for name, digest in PINNED_DIGESTS.items():
        assert specs.load(studies / name).digest() == digest, name
    digits = {"data": {"name": "digits", "form": "images", "seed": 2}, "train": {"epochs": 2}}
    assert specs.parse(digits).digest() == (
        "581ed0688a1a9459011b4913c4ca7c13a1bc283cf126eb6de1e67f61f764469f")
    variant = {"data": {"identities": 300}, "variants": {"d": {"data": {"name": "digits"}}}}
    assert specs.parse(variant).digest() == (
        "76448d6002a499a5c9b86b6f69b6fe9c1510134983d63bb38c3e02b6c417bf74")


def test_a_spec_without_variants_keeps_its_digest():
    # Run folders made before variants existed must still be recognised: the digest of
    # a spec without them is the digest of its dump without the (empty) key.
    import hashlib
    import json

    study = specs.parse({"train": {"epochs": 3}})
    dumped = study.model_dump(mode="json")
    del dumped["variants"]
    del dumped["claims"]  # nor before [claims]
    del dumped["eval"]  # nor before [eval]
    del dumped["study"]["selection"]  # nor before study.selection
    del dumped["model"]["embedding_norm"]  # nor before model.embedding_norm
    del dumped["train"]["adacos_scale_max"]  # nor before the dynamic scale's guards
    del dumped["train"]["stability_stop_windows"]
    del dumped["train"]["checkpoint_every"]  # nor before checkpoints
    del dumped["train"]["devices"]  # nor before train.devices
    del dumped["reproduce"]  # how a study is checked and run is never in it
    del dumped["train"]["deterministic"]
    expected = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()
    assert study.digest() == expected
    with_variant = specs.parse({"train": {"epochs": 3}, "variants": {"v": {}}})
    assert with_variant.digest() != study.digest()
    gated = specs.parse({"train": {"epochs": 3, "deterministic": True},
                         "reproduce": {"k": 4.0, "seeds": [0]}})
    assert gated.digest() == study.digest()
    assert study.with_determinism(True).digest() == study.digest()
    guarded = specs.parse({"train": {"epochs": 3, "adacos_scale_max": 50.0}})
    assert guarded.digest() != study.digest()
    with_level = specs.parse({"train": {"epochs": 3}, "claims": {"c7_level_deg": 30}})
    assert with_level.digest() != study.digest()
    # Nor before model.embedding_norm: its default leaves the digest alone.
    plain = specs.parse({"train": {"epochs": 3}, "model": {"embedding_norm": "none"}})
    assert plain.digest() != study.digest()
    named = specs.parse({"train": {"epochs": 3}, "model": {"embedding_norm": "batchnorm"}})
    assert named.digest() == study.digest()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[variants.c5]\ndata = { identities = 5 }\n",
         "variants.c5.data.identities: must be >= 10, got 5"),
        ("[variants.x]\ntrain = { epochs = 2, warmup_epochs = 3 }\n",
         "variants.x.train.warmup_epochs: must be < epochs (2), got 3"),
        ("[variants.x]\nheads = ['arcface']\n",
         "variants.x.heads: 'arcface' is not one of the study's heads (normface, adacos-fixed)"),
        ("[variants.x]\nheads = []\n", "variants.x.heads: must not be empty"),
        ("[variants.main]\n", "variants.main: 'main' names the main sections; choose another"),
        ("[variants.x]\ndata = { colour = 1 }\n", "variants.x.data.colour: unknown key"),
        ("[variants.x]\nseeds = [1]\n", "variants.x.seeds: unknown key"),
        ("[variants.x]\nheads = ['normface']\n[variants.x.grids.adacos-fixed]\n",
         "variants.x.grids.adacos-fixed: adacos-fixed does not run in this variant"),
        ("[variants.x.grids.normface]\ns = [-1.0]\n",
         "variants.x.grids.normface.s: "),
        ("[variants.x.grids.normface]\nm = [0.1]\n",
         "variants.x.grids.normface.m: normface takes no m"),
    ],
)
def test_bad_variants_are_one_line_errors(tmp_path, extra, expected):
    path = write(tmp_path, VARIANTS.split("[variants.c200]")[0] + extra)
    with pytest.raises(specs.SpecError) as err:
        specs.load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert expected in message, message
