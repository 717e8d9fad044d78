"""Backbones: a batch of inputs to a batch of embeddings, for the cosine heads.

    get_backbone(name, embedding_dim=512)   ->  the module, for 112 × 112 RGB faces
    build_backbone(spec.model, input_shape) ->  the trial's module, for its data's inputs
    BACKBONES                               ->  name -> Backbone (the registry)

| name                              | input               | module                        |
|-----------------------------------|---------------------|-------------------------------|
| `mlp`                             | any (flattened)     | `small.MLP`                   |
| `cnn`                             | images (C, H, W)    | `small.SmallCNN`              |
| `iresnet18` / `34` / `50` / `100` | faces (3, 112, 112) | `iresnet.IResNet`             |
| `mobilefacenet`                   | faces (3, 112, 112) | `mobilefacenet.MobileFaceNet` |

The face backbones are insightface's (arcface_torch), to the parameter; `model.name =
"auto"` picks `mlp` for vectors and `cnn` for images. A new backbone is one
`@register_backbone(...)` function below (and its name in `spec.BACKBONE_NAMES`, the
schema's list, which an import-time check keeps equal to this registry).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from adastudy.errors import ParameterError
from adastudy.models.iresnet import INPUT_SIDE_PX, IResNet
from adastudy.models.mobilefacenet import MobileFaceNet
from adastudy.models.small import MLP, SmallCNN
from adastudy.spec import BACKBONE_NAMES, ModelSpec

__all__ = [
    "BACKBONES", "FACE_INPUT_SHAPE", "MLP", "Backbone", "IResNet", "MobileFaceNet",
    "SmallCNN", "build_backbone", "get_backbone", "register_backbone",
]

#: The input of the face backbones: aligned RGB crops of insightface's size.
FACE_INPUT_SHAPE = (3, INPUT_SIDE_PX, INPUT_SIDE_PX)


@dataclass(frozen=True)
class Backbone:
    """One registered backbone: `build(spec, input_shape)` makes it; `fixed_input`, when
    set, is the only input shape it takes (the face backbones' 112 × 112 crops)."""

    name: str
    build: Callable[[ModelSpec, tuple[int, ...]], nn.Module]
    fixed_input: tuple[int, ...] | None = None


BACKBONES: dict[str, Backbone] = {}


def register_backbone(
    name: str, fixed_input: tuple[int, ...] | None = None,
) -> Callable[[Callable[[ModelSpec, tuple[int, ...]], nn.Module]],
              Callable[[ModelSpec, tuple[int, ...]], nn.Module]]:
    """Register `build(spec, input_shape) -> nn.Module` as the backbone `name`."""
    def register(build: Callable[[ModelSpec, tuple[int, ...]], nn.Module]):
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = Backbone(name, build, fixed_input)
        return build
    return register


@register_backbone("mlp")
def _mlp(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Module:
    return MLP(math.prod(input_shape), spec.hidden, spec.embedding_dim, spec.dropout,
               spec.embedding_norm)


@register_backbone("cnn")
def _cnn(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Module:
    if len(input_shape) != 3:
        raise ParameterError(
            f"model.name: 'cnn' needs images (channels, H, W), the data gives shape {input_shape}"
        )
    side = min(input_shape[1:])
    if side < 2 ** len(spec.channels):
        raise ParameterError(
            f"model.channels: {len(spec.channels)} stages halve {side} px below 1 px; "
            f"use at most {max(1, side.bit_length() - 1)} stages"
        )
    return SmallCNN(input_shape[0], spec.channels, spec.embedding_dim, spec.dropout,
                    spec.embedding_norm)


#: insightface's residual blocks per stage of each IResNet depth.
IRESNET_STAGES = {
    "iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3), "iresnet100": (3, 13, 30, 3),
}


def _register_iresnet(name: str, blocks: tuple[int, int, int, int]) -> None:
    @register_backbone(name, fixed_input=FACE_INPUT_SHAPE)
    def build(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Module:
        return IResNet(blocks, spec.embedding_dim, spec.dropout, spec.embedding_norm)


for _name, _blocks in IRESNET_STAGES.items():
    _register_iresnet(_name, _blocks)


@register_backbone("mobilefacenet", fixed_input=FACE_INPUT_SHAPE)
def _mobilefacenet(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Module:
    return MobileFaceNet(spec.embedding_dim, spec.dropout, spec.embedding_norm)


if set(BACKBONES) != set(BACKBONE_NAMES):  # the schema and the registry must agree
    raise ImportError(f"spec.BACKBONE_NAMES {sorted(BACKBONE_NAMES)} != registered "
                      f"backbones {sorted(BACKBONES)}")


def build_backbone(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Module:
    """The backbone named by `spec` for inputs of `input_shape` ((F,) or (C, H, W)).

    `name = "auto"` picks the MLP for vectors and the CNN for images. Raises
    `ParameterError` when the backbone cannot take that input.
    """
    name = spec.name
    if name == "auto":
        name = "mlp" if len(input_shape) == 1 else "cnn"
    backbone = BACKBONES[name]
    if backbone.fixed_input is not None and tuple(input_shape) != backbone.fixed_input:
        channels, side, _ = backbone.fixed_input
        raise ParameterError(
            f"model.name: {name!r} takes {channels} × {side} × {side} images (insightface's "
            f"aligned faces), the data gives shape {tuple(input_shape)}"
            + ("; set data.image_size = 112" if len(input_shape) == 3 else ""))
    return backbone.build(spec, tuple(input_shape))


def get_backbone(name: str, embedding_dim: int = 512, *,
                 input_shape: tuple[int, ...] = FACE_INPUT_SHAPE, **options: Any) -> nn.Module:
    """The backbone `name` (see `BACKBONES`) ending in an `embedding_dim`-d embedding, for
    inputs of `input_shape` (default: 3 × 112 × 112 aligned faces, the face backbones'
    only input). `options` are other `[model]` keys (`dropout`, `embedding_norm`, the
    small models' `hidden` and `channels`). Raises `ParameterError` for an unknown name
    or an impossible option.
    """
    if name not in BACKBONES:
        raise ParameterError(f"backbone {name!r}: unknown; choose one of {', '.join(BACKBONES)}")
    try:
        spec = ModelSpec(name=name, embedding_dim=embedding_dim, **options)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise ParameterError(f"backbone {name!r}: {error}") from None
    return build_backbone(spec, input_shape)
