"""Synthetic identities for open-set, face-style evaluation, made on the machine.

An identity is a latent code `c` (`CODE_DIM` numbers). Codes are drawn `N(0, I / (2 d))`,
so the RMS distance between two identities is 1; a sample of identity `c` uses
`z = c + spread · ε`, `ε ~ N(0, I / d)`, so its RMS distance from `c` is `spread` times
the typical distance between identities (the `DataSpec.spread` knob).

Pools, each from its own random stream (`adastudy.data.seeding`), so no two pools share
an identity (codes are continuous draws):

| pool        | identities                                  | samples per identity        |
|-------------|---------------------------------------------|-----------------------------|
| train       | `identities`                                | `images_per_identity`       |
| val         | max(10, eval_identities // 2), or more when | `eval_images_per_identity`  |
|             | `val_pairs` needs more same pairs           |                             |
| test        | `eval_identities`                           | `eval_images_per_identity`  |
| distractors | `distractors`                               | 1                           |

At the defaults: train 100 x 20 = 2,000 samples, val 50 x 10 = 500, test 100 x 10 =
1,000, distractors 1,000. `val` pairs (600) come from the val pool; `test` pairs (6,000),
`impostor` pairs and identification from the test pool. `impostor` holds every genuine
pair of the test pool (4,500; at most `pairs.IMPOSTOR_GENUINE_CAP`) and 100,000 of its
495,000 impostor pairs (`pairs.IMPOSTOR_PAIRS_CAP`). Identification: one random sample
of each test identity goes to the gallery with the distractors (100 + 1,000), the other
900 are probes. A `DataError` names `data.test_pairs` when the test pool has too few
same pairs (`eval_identities` x C(`eval_images_per_identity`, 2) >= test_pairs / 2).

Two forms:

- "features": `feature_dim` numbers per sample, `tanh(W2 tanh(W1 [z; u] + b1) + b2)`
  with a fixed random network (seeded, shared by all identities) and `u` nuisance
  factors (`NUISANCE_DIM` standard normals, fresh per sample). The nuisance factors
  dominate the raw features, so raw cosine verification of the test pairs is mediocre
  (10-fold accuracy 0.78-0.81 at the defaults, seeds 0-4), while a small MLP trained for
  a few epochs with a cosine-softmax loss (NormFace, s = 16) reaches about 0.90.
- "images": `(3, image_size, image_size)` images in [0, 1]. The code sets the weights
  of `BLOBS` Gaussian blobs per colour channel; each blob sits at (|x|, y), i.e. mirrored
  about the vertical axis, so the clean identity image is exactly left-right symmetric
  and a horizontal flip preserves identity. Nuisances: pose (a random translation of
  up to `MAX_SHIFT` of the side), illumination (contrast, brightness, a linear gradient
  in a random direction) and pixel noise. Raw-pixel cosine verification: about 0.80 at
  the defaults; a small CNN trained 10 epochs reaches about 0.86.

Memory: features take `4 · feature_dim` bytes a sample (2 M samples, 100,000 identities
× 20, take 0.5 GB at feature_dim 64) and are made in chunks; images take
`12 · image_size²` bytes a sample (100,000 × 20 images of 32² would need 25 GB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from adastudy.data import pairs
from adastudy.data.base import TrialData
from adastudy.data.seeding import numpy_rng, torch_generator
from adastudy.spec import SyntheticData as DataSpec

__all__ = [
    "BLOBS",
    "CODE_DIM",
    "HIDDEN",
    "MAX_SHIFT",
    "NUISANCE_DIM",
    "build_synthetic",
    "identity_codes",
    "pool_identities",
    "val_identities",
]

#: Dimension of an identity code.
CODE_DIM = 32
#: Nuisance factors mixed into each feature vector (pose, lighting ... in the abstract).
NUISANCE_DIM = 8
#: Hidden width of the random distortion network of the "features" form.
HIDDEN = 128
#: Gains of the distortion network's first layer for the code and the nuisances.
CODE_GAIN = 1.0
NUISANCE_GAIN = 1.0
#: Gain of its second layer.
OUTPUT_GAIN = 1.0

#: Blobs per colour channel of the "images" form.
BLOBS = 24
#: Largest translation of an image, as a fraction of its side.
MAX_SHIFT = 0.1
#: Gain from blob weights to the logit of a pixel's intensity.
IMAGE_GAIN = 2.5
#: Illumination and noise of the images.
CONTRAST_LOG_STD = 0.25
BRIGHTNESS_STD = 0.1
GRADIENT_STD = 0.15
PIXEL_NOISE_STD = 0.05

#: Numbers per chunk of samples made at once (bounds the memory of intermediate tensors).
_CHUNK_NUMBERS = 1 << 23


def val_identities(spec: DataSpec) -> int:
    """Identities of the validation pool: max(10, eval_identities // 2), or enough for val_pairs."""
    per_identity = spec.eval_images_per_identity * (spec.eval_images_per_identity - 1) // 2
    needed = math.ceil(spec.val_pairs / 2 / per_identity)
    return max(10, spec.eval_identities // 2, needed)


def pool_identities(spec: DataSpec) -> dict[str, tuple[int, int]]:
    """(identities, samples per identity) of each pool."""
    return {
        "train": (spec.identities, spec.images_per_identity),
        "val": (val_identities(spec), spec.eval_images_per_identity),
        "test": (spec.eval_identities, spec.eval_images_per_identity),
        "distractor": (spec.distractors, 1),
    }


def identity_codes(spec: DataSpec) -> dict[str, torch.Tensor]:
    """The identity codes (identities, CODE_DIM) float64 of each pool, by pool name.

    Codes are N(0, I / (2 d)), so the RMS distance between two identities is 1. Each
    pool draws from its own stream, so no two pools share an identity.
    """
    codes = {}
    for name, (identities, _) in pool_identities(spec).items():
        generator = torch_generator(spec.seed, f"{name}-codes")
        normal = torch.randn(identities, CODE_DIM, generator=generator, dtype=torch.float64)
        codes[name] = normal / math.sqrt(2 * CODE_DIM)
    return codes


@dataclass(frozen=True)
class _Network:
    """The fixed random 2-layer tanh network of the "features" form."""

    w1: torch.Tensor  # (CODE_DIM + NUISANCE_DIM, HIDDEN)
    b1: torch.Tensor  # (HIDDEN,)
    w2: torch.Tensor  # (HIDDEN, feature_dim)
    b2: torch.Tensor  # (feature_dim,)

    @classmethod
    def make(cls, feature_dim: int, generator: torch.Generator) -> _Network:
        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        # The codes have per-coordinate scale ~1/sqrt(2d); rescale them to ~1 first.
        code_rows = normal(CODE_DIM, HIDDEN) * (CODE_GAIN * math.sqrt(2.0))
        nuisance_rows = normal(NUISANCE_DIM, HIDDEN) * (NUISANCE_GAIN / math.sqrt(NUISANCE_DIM))
        w1 = torch.cat([code_rows, nuisance_rows])
        b1 = normal(HIDDEN) * 0.5
        w2 = normal(HIDDEN, feature_dim) * (OUTPUT_GAIN / math.sqrt(HIDDEN / 2))
        b2 = normal(feature_dim) * 0.5
        return cls(w1, b1, w2, b2)

    def __call__(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(torch.cat([z, u], dim=1) @ self.w1 + self.b1)
        return torch.tanh(hidden @ self.w2 + self.b2)


@dataclass(frozen=True)
class _Renderer:
    """The fixed random blob basis and code-to-weight map of the "images" form."""

    basis: torch.Tensor  # (BLOBS, S, S): blobs mirrored about the vertical axis
    mixing: torch.Tensor  # (CODE_DIM, 3 * BLOBS)
    offset: torch.Tensor  # (3 * BLOBS,)
    grid_x: torch.Tensor  # (S, S) pixel-centre x in [-1, 1], exactly antisymmetric
    grid_y: torch.Tensor  # (S, S)

    @classmethod
    def make(cls, size: int, generator: torch.Generator) -> _Renderer:
        # Half-integers are exact in floating point, so |x| is exactly mirror-symmetric.
        axis = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
        grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
        centre_x = torch.rand(BLOBS, generator=generator) * 0.7
        centre_y = torch.rand(BLOBS, generator=generator) * 1.4 - 0.7
        width = torch.rand(BLOBS, generator=generator) * 0.25 + 0.15
        distance2 = (grid_x.abs()[None] - centre_x[:, None, None]) ** 2 + (
            grid_y[None] - centre_y[:, None, None]
        ) ** 2
        basis = torch.exp(-distance2 / (2 * width[:, None, None] ** 2))
        mixing = torch.randn(CODE_DIM, 3 * BLOBS, generator=generator) * math.sqrt(2.0)
        offset = torch.randn(3 * BLOBS, generator=generator) * 0.3
        return cls(basis, mixing, offset, grid_x, grid_y)

    def identity_images(self, z: torch.Tensor) -> torch.Tensor:
        """Clean images (n, 3, S, S) of codes z, before any nuisance: mirror-symmetric."""
        weights = (z.to(torch.float32) @ self.mixing + self.offset).view(-1, 3, BLOBS)
        field = torch.einsum("nck,khw->nchw", weights, self.basis)
        return torch.sigmoid(IMAGE_GAIN * field)

    def __call__(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, size = z.shape[0], self.basis.shape[-1]
        clean = self.identity_images(z)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator)

        # Pose: translate by up to MAX_SHIFT of the side (grid units: the side is 2).
        shift = (uniform(count, 2) * 2 - 1) * (2 * MAX_SHIFT)
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, [count, 3, size, size], align_corners=False)
        posed = F.grid_sample(clean, grid, padding_mode="border", align_corners=False)
        # Illumination: contrast about mid-grey, brightness, a gradient in any direction.
        contrast = torch.exp(normal(count) * CONTRAST_LOG_STD)
        brightness = normal(count) * BRIGHTNESS_STD
        slope = normal(count) * GRADIENT_STD
        angle = uniform(count) * (2 * math.pi)
        gradient = slope[:, None, None] * (
            torch.cos(angle)[:, None, None] * self.grid_x
            + torch.sin(angle)[:, None, None] * self.grid_y
        )
        lit = (posed - 0.5) * contrast[:, None, None, None] + 0.5
        lit = lit + (brightness[:, None, None] + gradient)[:, None]
        noisy = lit + normal(count, 3, size, size) * PIXEL_NOISE_STD
        return noisy.clamp_(0.0, 1.0)


def _pool(
    codes: torch.Tensor,
    per_identity: int,
    spec: DataSpec,
    stream: str,
    network: _Network | None,
    renderer: _Renderer | None,
) -> torch.Tensor:
    """Samples of each identity, identity-major: sample i belongs to identity i // per_identity."""
    generator = torch_generator(spec.seed, stream)
    count = codes.shape[0] * per_identity
    if spec.form == "features":
        out = torch.empty(count, spec.feature_dim, dtype=torch.float32)
    else:
        out = torch.empty(count, 3, spec.image_size, spec.image_size, dtype=torch.float32)
    if count == 0:  # e.g. data.distractors = 0
        return out
    numbers = max(HIDDEN, spec.feature_dim) if network is not None else out[0].numel()
    identities_per_chunk = max(1, _CHUNK_NUMBERS // (numbers * per_identity))
    for first in range(0, codes.shape[0], identities_per_chunk):
        centres = codes[first : first + identities_per_chunk].repeat_interleave(per_identity, 0)
        noise = torch.randn(centres.shape, generator=generator, dtype=torch.float64)
        z = centres + noise * (spec.spread / math.sqrt(CODE_DIM))
        rows = slice(first * per_identity, first * per_identity + z.shape[0])
        if network is not None:
            u = torch.randn(z.shape[0], NUISANCE_DIM, generator=generator, dtype=torch.float64)
            out[rows] = network(z, u).to(torch.float32)
        else:
            assert renderer is not None
            out[rows] = renderer(z, generator)
    return out


def _labels(identities: int, per_identity: int) -> np.ndarray:
    return np.repeat(np.arange(identities, dtype=np.int64), per_identity)


def build_synthetic(spec: DataSpec) -> TrialData:
    """The synthetic dataset of `spec` (see the module docstring)."""
    seed = spec.seed
    network = renderer = None
    if spec.form == "features":
        network = _Network.make(spec.feature_dim, torch_generator(seed, "features-network"))
        input_shape: tuple[int, ...] = (spec.feature_dim,)
    else:
        renderer = _Renderer.make(spec.image_size, torch_generator(seed, "images-renderer"))
        input_shape = (3, spec.image_size, spec.image_size)

    sizes = pool_identities(spec)
    labels = {name: _labels(*size) for name, size in sizes.items()}
    # Pairs first: they need only the labels, so an impossible count fails before any
    # sample is made.
    val_pool = f"the validation pool ({sizes['val'][0]} identities x {sizes['val'][1]})"
    test_pool = (
        f"the test pool (data.eval_identities = {spec.eval_identities} x "
        f"data.eval_images_per_identity = {spec.eval_images_per_identity})"
    )
    val = pairs.verification_pairs(
        labels["val"],
        spec.val_pairs,
        numpy_rng(seed, "val-pairs"),
        key="data.val_pairs",
        pool=val_pool,
    )
    test = pairs.verification_pairs(
        labels["test"],
        spec.test_pairs,
        numpy_rng(seed, "test-pairs"),
        key="data.test_pairs",
        pool=test_pool,
    )
    impostor = pairs.impostor_pairs(labels["test"], numpy_rng(seed, "impostor-pairs"))

    codes = identity_codes(spec)
    inputs = {
        name: _pool(codes[name], per_identity, spec, f"{name}-samples", network, renderer)
        for name, (_, per_identity) in sizes.items()
    }
    identification = pairs.identification_set(
        inputs["test"], labels["test"], numpy_rng(seed, "identification"), inputs["distractor"]
    )
    return TrialData(
        name="synthetic",
        form=spec.form,
        num_classes=spec.identities,
        input_shape=input_shape,
        train_inputs=inputs["train"],
        train_labels=torch.from_numpy(labels["train"]),
        val=pairs.pair_set(inputs["val"], val),
        test=pairs.pair_set(inputs["test"], test),
        impostor=pairs.pair_set(inputs["test"], impostor),
        identification=identification,
        flippable=spec.form == "images",
    )
