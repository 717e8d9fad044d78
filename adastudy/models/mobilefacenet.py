"""insightface's MobileFaceNet ("mbf"), a 2 M-parameter backbone for 112 × 112 faces.

A re-implementation of arcface_torch's `backbones/mobilefacenet.py` (itself after
cavaface; Chen et al., MobileFaceNets, 2018) at its defaults, blocks (1, 4, 6, 2) and
width scale 2, with the same layers, initialisation and parameter counts. The body is
MobileNetV2-style inverted bottlenecks,

    expand: 1×1 conv-BN-PReLU → depthwise k×k conv-BN-PReLU → project: 1×1 conv-BN

(residual where the shape is kept), which take 112 px down to 7 px in four stride-2
steps. The head is the paper's "global depthwise convolution" (GDC): a 7 × 7 depthwise
conv with no padding turns the 512 × 7 × 7 map into 512 numbers, weighting each
position of the face (global average pooling would weight them alike), then a linear
layer and a BatchNorm1d give the embedding. The 7 × 7 kernel is why the input must be
112 × 112.

The expansion widths (128, 128, 256, 512, 256) and the second stem conv's 64 groups are
insightface's constants; they do not follow `width_scale`. Module nesting (`layers`,
`conv_sep`, `features.layers`) is insightface's, so an arcface_torch state dict loads
here with a strict `load_state_dict`. Added: `dropout` before the head's linear layer
(insightface has none; 0 keeps it out) and `embedding_norm`.
"""

from __future__ import annotations

from torch import Tensor, nn

from adastudy.models.small import make_embedding_norm

__all__ = ["MobileFaceNet"]

#: Channels of the map that the GDC head reduces, and its side in pixels at 112 px input.
HEAD_CHANNELS = 512
FINAL_MAP_SIDE_PX = 7


class ConvBNPReLU(nn.Module):
    """Conv (no bias) → BatchNorm2d → PReLU: insightface's `ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_px: int = 1,
                 stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_px, stride=stride,
                      padding=kernel_px // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvBN(nn.Module):
    """Conv (no bias) → BatchNorm2d, no activation: insightface's `LinearBlock`.

    Linear, so that projecting back to few channels loses nothing to a ReLU-like cut.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_px: int = 1,
                 groups: int = 1, padding_px: int = 0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_px, padding=padding_px,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class InvertedBottleneck(nn.Module):
    """1×1 expand to `expanded` → depthwise 3×3 (carries the stride) → 1×1 linear project.

    insightface's `DepthWise` (its `groups` argument is the expanded width). With
    `residual`, the input is added back (only where the shape is kept).
    """

    def __init__(self, in_channels: int, out_channels: int, expanded: int,
                 stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBNPReLU(in_channels, expanded),
            ConvBNPReLU(expanded, expanded, kernel_px=3, stride=stride, groups=expanded),
            ConvBN(expanded, out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class ResidualStage(nn.Module):
    """`blocks` shape-keeping residual bottlenecks: insightface's `Residual`."""

    def __init__(self, channels: int, blocks: int, expanded: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(
            InvertedBottleneck(channels, channels, expanded, residual=True)
            for _ in range(blocks)
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class GlobalDepthwiseHead(nn.Module):
    """7 × 7 depthwise conv-BN (GDC) → flatten (→ dropout) → linear → embedding norm."""

    def __init__(self, embedding_dim: int, dropout: float = 0.0,
                 embedding_norm: str = "batchnorm") -> None:
        super().__init__()
        # Index 1 holds no parameters, so the dropout can share it with the flatten and
        # the state-dict keys (layers.0, layers.2, layers.3) stay insightface's.
        flatten: nn.Module = nn.Flatten(1)
        if dropout > 0:
            flatten = nn.Sequential(flatten, nn.Dropout(dropout))
        self.layers = nn.Sequential(
            ConvBN(HEAD_CHANNELS, HEAD_CHANNELS, kernel_px=FINAL_MAP_SIDE_PX,
                   groups=HEAD_CHANNELS),
            flatten,
            nn.Linear(HEAD_CHANNELS, embedding_dim, bias=False),
            make_embedding_norm(embedding_norm, embedding_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """(N, 3, 112, 112) faces → (N, embedding_dim) embeddings.

    `blocks_per_stage` counts the residual bottlenecks of the four stages (a first
    count of 1 means a single grouped 3×3 conv instead); `width_scale` multiplies the
    stage widths 64 and 128. insightface's "mbf" is (1, 4, 6, 2) at scale 2 (the
    default here), its "mbf_large" (2, 8, 12, 4) at scale 4.
    """

    def __init__(
        self,
        embedding_dim: int = 512,
        dropout: float = 0.0,
        embedding_norm: str = "batchnorm",
        blocks_per_stage: tuple[int, int, int, int] = (1, 4, 6, 2),
        width_scale: int = 2,
    ) -> None:
        super().__init__()
        narrow, wide = 64 * width_scale, 128 * width_scale
        first, second, third, fourth = blocks_per_stage
        stem2: nn.Module = (
            ConvBNPReLU(narrow, narrow, kernel_px=3, groups=64) if first == 1
            else ResidualStage(narrow, first, expanded=128)
        )
        self.layers = nn.ModuleList([
            ConvBNPReLU(3, narrow, kernel_px=3, stride=2),
            stem2,
            InvertedBottleneck(narrow, narrow, expanded=128, stride=2),
            ResidualStage(narrow, second, expanded=128),
            InvertedBottleneck(narrow, wide, expanded=256, stride=2),
            ResidualStage(wide, third, expanded=256),
            InvertedBottleneck(wide, wide, expanded=512, stride=2),
            ResidualStage(wide, fourth, expanded=256),
        ])
        self.conv_sep = ConvBNPReLU(wide, HEAD_CHANNELS)
        self.features = GlobalDepthwiseHead(embedding_dim, dropout, embedding_norm)
        self._init_like_insightface()
        self.embedding_dim = embedding_dim

    def _init_like_insightface(self) -> None:
        # He initialisation (fan-out) of every conv and linear weight, zero biases.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))
