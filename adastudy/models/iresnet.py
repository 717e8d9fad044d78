"""insightface's IResNet, the ArcFace paper's backbone, for 112 × 112 aligned faces.

A re-implementation of arcface_torch's `backbones/iresnet.py` (Deng et al., ArcFace; the
"improved" residual block of Duta et al., 2020), with the same layers, initialisation
and parameter counts. Each residual block is pre-normalised and ends in a BatchNorm,
not an activation:

    out = BN(conv3×3_stride(PReLU(BN(conv3×3(BN(x)))))) + shortcut(x)

The stem keeps the full resolution (a stride-1 3×3 conv), each of the four stages halves
it, 112 → 56 → 28 → 14 → 7 px, and the head flattens the whole 512 × 7 × 7 map (after a
BatchNorm2d and dropout) into one fully-connected layer: unlike global pooling, that
layer gives every position of the face its own weights, which is why the input must be
112 × 112 (`INPUT_SIDE_PX`). A BatchNorm1d with its weight frozen at 1 ends the
embedding: it centres the features (the cosine heads want a mean near 0) without a
learned per-feature gain.

Attribute names are insightface's (`conv1`, `layer1`, ..., `fc`, `features`), so a state
dict trained with arcface_torch loads here with a strict `load_state_dict`. Not taken:
its `fp16` switch (the trial loop runs autocast itself), activation checkpointing,
dilation and grouped blocks (no insightface config uses them).
"""

from __future__ import annotations

from torch import Tensor, nn

from adastudy.models.small import make_embedding_norm

__all__ = ["INPUT_SIDE_PX", "IBasicBlock", "IResNet"]

#: Side of the square input images, in pixels (insightface's alignment crop).
INPUT_SIDE_PX = 112
#: Side of the last stage's feature map: 112 px halved by four stride-2 stages.
FINAL_MAP_SIDE_PX = 7
#: Output channels of the stem and of each stage.
STAGE_WIDTHS = (64, 128, 256, 512)
#: insightface's initialisation of every convolution: N(0, 0.1²).
CONV_INIT_STD = 0.1


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN → conv3×3 → BN → PReLU → conv3×3 (carries the stride) → BN, plus the shortcut.

    The shortcut is the identity, or a strided 1×1 conv and BN where the block changes
    the width or the resolution (the first block of each stage).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, stride)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """(N, 3, 112, 112) faces → (N, embedding_dim) embeddings, in four residual stages.

    `blocks_per_stage`: (2, 2, 2, 2) is iresnet18, (3, 4, 6, 3) iresnet34, (3, 4, 14, 3)
    iresnet50, (3, 13, 30, 3) iresnet100. `dropout` acts on the flattened 512 × 7 × 7
    map before the FC (insightface: 0); `embedding_norm = "none"` drops the final
    BatchNorm1d (and its 2 · embedding_dim parameters).
    """

    def __init__(
        self,
        blocks_per_stage: tuple[int, int, int, int],
        embedding_dim: int = 512,
        dropout: float = 0.0,
        embedding_norm: str = "batchnorm",
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(STAGE_WIDTHS) or min(blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage: four counts >= 1, got {blocks_per_stage}")
        stem_width = STAGE_WIDTHS[0]
        self.conv1 = _conv3x3(3, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.prelu = nn.PReLU(stem_width)
        stages = []
        width = stem_width
        for stage_width, blocks in zip(STAGE_WIDTHS, blocks_per_stage, strict=True):
            stage = [IBasicBlock(width, stage_width, stride=2)]
            stage += [IBasicBlock(stage_width, stage_width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            width = stage_width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width * FINAL_MAP_SIDE_PX**2, embedding_dim)
        self.features = make_embedding_norm(embedding_norm, embedding_dim)
        if isinstance(self.features, nn.BatchNorm1d):
            # insightface freezes the gain: the neck only centres (and learns a shift).
            nn.init.ones_(self.features.weight)
            self.features.weight.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, CONV_INIT_STD)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))
        return self.features(self.fc(x))
