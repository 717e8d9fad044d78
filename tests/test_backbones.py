"""The backbones: insightface's face models to the parameter, the registry, the spec.

The pinned counts are those of arcface_torch's `backbones.get_model(name)` at
num_features = 512 (r18, r34, r50, r100, mbf), counted with its own code: a layer more or
less, a bias or a frozen gain, moves them.
"""

from __future__ import annotations

import math

import pytest
import torch

from adastudy.errors import ParameterError
from adastudy.models import BACKBONES, FACE_INPUT_SHAPE, build_backbone, get_backbone
from adastudy.spec import FACE_BACKBONES, ModelSpec, StudySpec

#: name -> (all parameters, trainable ones: the embedding BatchNorm's gain is frozen).
INSIGHTFACE_COUNTS = {
    "iresnet18": (24_025_600, 24_025_088),
    "iresnet34": (34_139_328, 34_138_816),
    "iresnet50": (43_590_848, 43_590_336),
    "iresnet100": (65_156_160, 65_155_648),
    "mobilefacenet": (2_059_520, 2_059_520),
}


def _counts(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.mark.parametrize("name", sorted(INSIGHTFACE_COUNTS))
def test_parameter_counts_are_insightfaces(name):
    assert _counts(get_backbone(name)) == INSIGHTFACE_COUNTS[name]


def test_every_face_backbone_is_pinned():
    assert set(FACE_BACKBONES) == set(INSIGHTFACE_COUNTS)
    assert {n for n, b in BACKBONES.items() if b.fixed_input} == set(FACE_BACKBONES)


@pytest.mark.parametrize("name", sorted(INSIGHTFACE_COUNTS))
def test_forward_of_a_112_batch_gives_512_d_embeddings(name):
    torch.manual_seed(0)
    model = get_backbone(name)
    out = model(torch.randn(2, *FACE_INPUT_SHAPE))
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()
    out.sum().backward()  # every trainable parameter takes part
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_embedding_dim_sets_the_last_layers():
    small, large = get_backbone("iresnet18", 128), get_backbone("iresnet18")
    assert small.fc.weight.shape == (128, 512 * 7 * 7)
    # fc and the embedding BatchNorm shrink by (512 - 128) rows: weight + bias + BN.
    difference = _counts(large)[0] - _counts(small)[0]
    assert difference == (512 - 128) * (512 * 7 * 7 + 1 + 2)
    assert get_backbone("mobilefacenet", 256).features.layers[2].weight.shape == (256, 512)


def test_state_dict_keys_are_insightfaces():
    """arcface_torch checkpoints load with a strict load_state_dict: its names and shapes."""
    iresnet = get_backbone("iresnet50").state_dict()
    assert iresnet["conv1.weight"].shape == (64, 3, 3, 3)
    assert iresnet["layer3.13.bn3.running_var"].shape == (256,)
    assert iresnet["layer1.0.downsample.0.weight"].shape == (64, 64, 1, 1)
    assert "layer3.14.bn1.weight" not in iresnet  # 14 blocks in stage 3
    assert iresnet["fc.weight"].shape == (512, 25088)
    assert iresnet["features.weight"].shape == (512,)
    mbf = get_backbone("mobilefacenet").state_dict()
    assert mbf["layers.0.layers.0.weight"].shape == (128, 3, 3, 3)
    assert mbf["layers.1.layers.0.weight"].shape == (128, 2, 3, 3)  # 64 groups
    assert mbf["conv_sep.layers.0.weight"].shape == (512, 256, 1, 1)
    assert mbf["features.layers.0.layers.0.weight"].shape == (512, 1, 7, 7)
    assert mbf["features.layers.2.weight"].shape == (512, 512)


def test_iresnet_embedding_gain_is_frozen_at_one():
    features = get_backbone("iresnet34").features
    assert not features.weight.requires_grad
    assert torch.equal(features.weight, torch.ones(512))


def test_face_backbones_refuse_other_inputs_in_one_line():
    with pytest.raises(ParameterError, match=r"takes 3 × 112 × 112 images.*data.image_size"):
        build_backbone(ModelSpec(name="iresnet18"), (3, 64, 64))
    with pytest.raises(ParameterError, match=r"data gives shape \(64,\)"):
        build_backbone(ModelSpec(name="mobilefacenet"), (64,))


def test_get_backbone_errors_are_parameter_errors():
    with pytest.raises(ParameterError, match="unknown; choose one of mlp, cnn, iresnet18"):
        get_backbone("resnet50")
    with pytest.raises(ParameterError, match="embedding_dim"):
        get_backbone("iresnet18", 1)
    with pytest.raises(ParameterError, match="flavour"):
        get_backbone("iresnet18", flavour="x")


def test_small_backbones_through_get_backbone():
    mlp = get_backbone("mlp", 16, input_shape=(10,), hidden=(8,))
    assert mlp(torch.randn(4, 10)).shape == (4, 16)
    cnn = get_backbone("cnn", 16, input_shape=(3, 16, 16), channels=(4,))
    assert cnn(torch.randn(4, 3, 16, 16)).shape == (4, 16)


def test_spec_face_backbone_embedding_defaults_to_512_unless_set():
    assert ModelSpec(name="iresnet50").embedding_dim == 512
    assert ModelSpec(name="iresnet50", embedding_dim=128).embedding_dim == 128
    assert ModelSpec(name="mlp").embedding_dim == 64
    assert ModelSpec().embedding_dim == 64


def test_a_variant_switching_to_a_face_backbone_takes_its_default():
    study = StudySpec.model_validate({
        "study": {"name": "x"}, "heads": {"adacos-fixed": {}},
        "data": {"form": "images", "image_size": 112},
        "model": {"name": "cnn", "channels": [8]},
        "variants": {"face": {"model": {"name": "iresnet18"}},
                     "face128": {"model": {"name": "iresnet18", "embedding_dim": 128}},
                     "wider": {"model": {"channels": [16]}}},
    })
    assert study.variant_sections("face")[1].embedding_dim == 512
    assert study.variant_sections("face128")[1].embedding_dim == 128
    wider = study.variant_sections("wider")[1]
    assert (wider.name, wider.embedding_dim, wider.channels) == ("cnn", 64, (16,))


def test_a_trial_trains_mobilefacenet_on_112_px_images():
    from adastudy.spec import TrialSpec
    from adastudy.train import run_trial

    trial = TrialSpec.model_validate({
        "head": "adacos-dynamic", "seed": 0,
        "data": {"form": "images", "image_size": 112, "identities": 10,
                 "images_per_identity": 2, "eval_identities": 10,
                 "eval_images_per_identity": 3, "val_pairs": 20, "test_pairs": 20,
                 "distractors": 0},
        "model": {"name": "mobilefacenet", "embedding_dim": 32},
        "train": {"epochs": 1, "batch_size": 10, "eval_every": 0},
    })
    result = run_trial(trial)
    assert result.state == "complete"
    assert 0.0 <= result.metrics["verification_accuracy"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_iresnet18_trial_on_cuda_in_bf16_with_channels_last():
    from adastudy.spec import TrialSpec
    from adastudy.train import run_trial

    trial = TrialSpec.model_validate({
        "head": "adacos-dynamic", "seed": 0,
        "data": {"form": "images", "image_size": 112, "identities": 20,
                 "images_per_identity": 8, "eval_identities": 10,
                 "eval_images_per_identity": 4, "val_pairs": 20, "test_pairs": 40,
                 "distractors": 0},
        "model": {"name": "iresnet18"},
        "train": {"epochs": 2, "batch_size": 32, "device": "cuda", "amp": "bf16"},
    })
    result = run_trial(trial)
    assert result.state == "complete"
    assert math.isfinite(result.metrics["final_loss"])
    assert math.isfinite(result.metrics["final_s"])
