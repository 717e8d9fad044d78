"""Small backbones for the embedded datasets: an MLP for feature vectors, a CNN for images.

Both end in a linear layer and, by default, a BatchNorm1d on the embedding (as
face-recognition backbones do: the "BN-neck" keeps the embedding centred and its scale
stable for the cosine heads); `model.embedding_norm = "none"` leaves it out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adastudy.errors import ParameterError

__all__ = ["MLP", "SmallCNN", "make_embedding_norm"]


class MLP(nn.Module):
    """Linear → BatchNorm → ReLU (→ Dropout) per hidden width, then the embedding."""

    def __init__(
        self, in_features: int, hidden: tuple[int, ...], embedding_dim: int, dropout: float = 0.0,
        embedding_norm: str = "batchnorm",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers += [nn.Linear(width, embedding_dim, bias=False), make_embedding_norm(
            embedding_norm, embedding_dim)]
        self.net = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """Stages of two 3×3 conv-BN-ReLU and a 2×2 max-pool, global average pool, embedding."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        embedding_dim: int,
        dropout: float = 0.0,
        embedding_norm: str = "batchnorm",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for c in channels:
            layers += [
                nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = c
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.embed = nn.Sequential(
            nn.Linear(width, embedding_dim, bias=False),
            make_embedding_norm(embedding_norm, embedding_dim),
        )
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.embed(self.dropout(pooled))


def make_embedding_norm(name: str, embedding_dim: int) -> nn.Module:
    """What follows a backbone's last linear layer (`ModelSpec.embedding_norm`)."""
    if name == "batchnorm":
        return nn.BatchNorm1d(embedding_dim)
    if name == "none":
        return nn.Identity()
    raise ParameterError(f"model.embedding_norm: must be batchnorm or none, got {name!r}")
