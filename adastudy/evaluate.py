"""Face-recognition evaluation: LFW verification, TAR at FAR, rank-1 identification.

The protocols are the ones face-recognition users compare against (PAPER.md, "Evaluation
protocols"):

- `verification_accuracy`: the insightface LFW protocol, 10 consecutive folds, squared L2
  distance of L2-normalised embeddings, thresholds 0, 0.01, ..., 3.99, first best
  threshold chosen on the other folds; mean and std of the fold accuracies.
- `tar_at_far`: IJB-C style 1:1 true-accept rate at a false-accept rate, from sorted
  impostor scores, never interpolating between duplicates.
- `rank1_identification`: MegaFace style, probes against a gallery with distractors.
- `embed`: a model's embeddings of a set of inputs, optionally summed with those of the
  horizontally flipped inputs (insightface).

Every array argument may be a numpy array or a torch tensor (CPU or CUDA). Pair-level
work (a few thousand to a few million numbers) runs in float64 numpy; identification,
whose cost is a (probes x gallery) matmul, runs in float32 torch on the embeddings' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adastudy.data.base import normalize_images
from adastudy.errors import ParameterError

__all__ = [
    "DEFAULT_FARS",
    "LFW_THRESHOLDS",
    "VerificationFolds",
    "best_gallery_match",
    "embed",
    "measurable_fars",
    "pair_scores",
    "rank1_identification",
    "tar_at_far",
    "verification_accuracy",
    "verification_folds",
]

# insightface's threshold grid: np.arange(0, 4, 0.01) exactly as numpy builds it (note that
# some of these differ from the decimal i / 100 in the last bit, e.g. 0.35000000000000003).
LFW_THRESHOLDS: np.ndarray = np.arange(0, 4, 0.01)
LFW_THRESHOLDS.flags.writeable = False

DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)

# floor(far * n + eps): far * n is exact in decimal but not always in binary
# (e.g. 0.3 * 10 = 2.9999999999999996); eps keeps such products on the right integer.
_FAR_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view/copy of an array or tensor (tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} must be an array or tensor: {exc}") from None


def _float64_matrix_copy(x: Any, name: str) -> np.ndarray:
    """A float64 copy that the caller owns (and may change in place)."""
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise ParameterError(f"{name} must be 2-D (pairs, dim); got shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ParameterError(f"{name} must hold numbers; got dtype {a.dtype}")
    return np.array(a, dtype=np.float64, order="C", copy=True)


def _float64_vector(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ParameterError(f"{name} must be 1-D; got shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ParameterError(f"{name} must hold numbers; got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _bool_vector(x: Any, name: str, length: int, length_name: str) -> np.ndarray:
    """issame as booleans; accepts bool or 0/1 numbers, nothing else."""
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ParameterError(f"{name} must be 1-D; got shape {tuple(a.shape)}")
    if a.shape[0] != length:
        raise ParameterError(f"{name} has {a.shape[0]} entries but {length_name} has {length}")
    if a.dtype == np.bool_:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ParameterError(f"{name} must be booleans or 0/1; got dtype {a.dtype}")
    if not np.all((a == 0) | (a == 1)):
        raise ParameterError(f"{name} must be booleans or 0/1; found other values")
    return a.astype(bool)


def _l2_normalise_rows_(a: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, in place; all-zero rows stay zero.

    The same arithmetic as sklearn's `normalize` (which insightface uses).
    """
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    norms[norms == 0.0] = 1.0
    a /= norms[:, np.newaxis]
    return a


def _pair_matrices(emb1: Any, emb2: Any) -> tuple[np.ndarray, np.ndarray]:
    e1 = _float64_matrix_copy(emb1, "emb1")
    e2 = _float64_matrix_copy(emb2, "emb2")
    if e1.shape != e2.shape:
        raise ParameterError(
            f"emb1 and emb2 must have the same shape; got {tuple(e1.shape)} and {tuple(e2.shape)}"
        )
    if e1.shape[0] == 0:
        raise ParameterError("emb1 and emb2 hold no pairs")
    return _l2_normalise_rows_(e1), _l2_normalise_rows_(e2)


def _require_both_kinds(same: np.ndarray, name: str) -> None:
    n_genuine = int(np.count_nonzero(same))
    if n_genuine == 0:
        raise ParameterError(f"{name} has no genuine pairs (no True entries)")
    if n_genuine == same.shape[0]:
        raise ParameterError(f"{name} has no impostor pairs (no False entries)")


# ---------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerificationFolds:
    """Per-fold detail of the LFW protocol.

    accuracies: accuracy of each fold at its threshold (fraction in [0, 1]).
    thresholds_sq_dist: the squared-L2-distance threshold chosen for each fold on the
        other folds ("same" when distance < threshold).
    fold_sizes: number of pairs in each fold.
    """

    accuracies: np.ndarray
    thresholds_sq_dist: np.ndarray
    fold_sizes: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population std (ddof=0), as insightface reports it."""
        return float(np.std(self.accuracies))


def _kfold_sizes(num_pairs: int, folds: int) -> np.ndarray:
    """Fold sizes of sklearn's KFold(shuffle=False): the first num_pairs % folds are one larger."""
    sizes = np.full(folds, num_pairs // folds, dtype=np.int64)
    sizes[: num_pairs % folds] += 1
    return sizes


def _folds_from_squared_distances(
    dist_sq: np.ndarray, same: np.ndarray, folds: int
) -> VerificationFolds:
    """The LFW protocol on precomputed squared distances (the vectorised core).

    For every fold and every threshold t, the number of correct decisions is
    #genuine(d < t) + #impostor(d >= t), read off the fold's sorted distances with
    searchsorted (side="left" counts d < t with the same float comparison as np.less;
    NaN sorts last and so counts as "not less", as np.less does). Counts on the other
    folds are total minus own; argmax picks the lowest best index, like insightface's
    argmax over accuracies (same denominator for all thresholds, so same order).
    """
    num_pairs = dist_sq.shape[0]
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
        raise ParameterError(f"folds must be an integer; got {folds!r}")
    if folds < 2:
        raise ParameterError(f"folds must be at least 2; got {folds}")
    if folds > num_pairs:
        raise ParameterError(f"folds={folds} is more than the {num_pairs} pairs")
    _require_both_kinds(same, "issame")

    thresholds = LFW_THRESHOLDS
    sizes = _kfold_sizes(num_pairs, folds)
    stops = np.cumsum(sizes)
    correct = np.empty((folds, thresholds.shape[0]), dtype=np.int64)
    start = 0
    for f, stop in enumerate(stops):
        d = dist_sq[start:stop]
        s = same[start:stop]
        genuine = np.sort(d[s])
        impostor = np.sort(d[~s])
        true_accepts = np.searchsorted(genuine, thresholds, side="left")
        true_rejects = impostor.shape[0] - np.searchsorted(impostor, thresholds, side="left")
        correct[f] = true_accepts + true_rejects
        start = stop
    correct_elsewhere = correct.sum(axis=0)[np.newaxis, :] - correct
    best = np.argmax(correct_elsewhere, axis=1)
    accuracies = correct[np.arange(folds), best] / sizes
    return VerificationFolds(
        accuracies=accuracies, thresholds_sq_dist=thresholds[best], fold_sizes=sizes
    )


def verification_folds(
    emb1: Any, emb2: Any, issame: Any, folds: int = 10
) -> VerificationFolds:
    """Per-fold accuracies and thresholds of the insightface LFW protocol.

    Pair i is (emb1[i], emb2[i]); rows are L2-normalised, distance = ||e1 - e2||^2 (float64),
    "same" when distance < threshold; folds are consecutive blocks (KFold, no shuffle).
    """
    e1, e2 = _pair_matrices(emb1, emb2)
    same = _bool_vector(issame, "issame", e1.shape[0], "emb1")
    diff = np.subtract(e1, e2, out=e1)  # e1 is our own copy
    dist_sq = np.sum(np.square(diff, out=diff), axis=1)
    return _folds_from_squared_distances(dist_sq, same, folds)


def verification_accuracy(
    emb1: Any, emb2: Any, issame: Any, folds: int = 10
) -> tuple[float, float]:
    """(mean, std) accuracy of the insightface LFW protocol over `folds` consecutive folds.

    Squared L2 distance of normalised embeddings, thresholds np.arange(0, 4, 0.01); each
    fold uses the first best threshold of the other folds; std is np.std (ddof=0).
    """
    result = verification_folds(emb1, emb2, issame, folds)
    return result.mean, result.std


def pair_scores(emb1: Any, emb2: Any) -> np.ndarray:
    """Cosine similarity of each pair (emb1[i], emb2[i]), float64, shape (pairs,)."""
    e1, e2 = _pair_matrices(emb1, emb2)
    return np.einsum("ij,ij->i", e1, e2)


# -------------------------------------------------------------------------- TAR @ FAR


def _check_far(far: Any) -> float:
    try:
        far_f = float(far)
    except (TypeError, ValueError):
        raise ParameterError(f"far must be a number in (0, 1]; got {far!r}") from None
    if not (0.0 < far_f <= 1.0):
        raise ParameterError(f"far must be in (0, 1]; got {far!r}")
    return far_f


def _accepted_impostor_count(far: float, num_impostors: int) -> int:
    """k = floor(far * n): how many impostors the FAR allows to be accepted."""
    return math.floor(far * num_impostors + _FAR_COUNT_EPS)


def _impostors_needed(far: float) -> int:
    """The fewest impostor pairs n with floor(far * n) >= 1."""
    return max(1, math.ceil((1.0 - _FAR_COUNT_EPS) / far))


def measurable_fars(
    num_impostors: int, fars: Sequence[float] = DEFAULT_FARS
) -> tuple[float, ...]:
    """The FARs among `fars` that `tar_at_far` can measure with `num_impostors` impostor pairs.

    A FAR is measurable when it allows at least one accepted impostor: far * n >= 1.
    """
    if isinstance(num_impostors, bool) or not isinstance(num_impostors, (int, np.integer)):
        raise ParameterError(f"num_impostors must be an integer; got {num_impostors!r}")
    if num_impostors < 0:
        raise ParameterError(f"num_impostors must be >= 0; got {num_impostors}")
    checked = [_check_far(far) for far in fars]
    return tuple(far for far in checked if _accepted_impostor_count(far, int(num_impostors)) >= 1)


def tar_at_far(scores: Any, issame: Any, far: float) -> float:
    """True-accept rate at false-accept rate `far`; scores are similarities (higher = alike).

    With n impostors, k = floor(far * n) may be accepted: the threshold t is the (k+1)-th
    highest impostor score and a pair is accepted when score > t, so ties at t are all
    rejected and at most k impostors pass (no interpolation). k >= n accepts every pair.
    """
    far_f = _check_far(far)
    s = _float64_vector(scores, "scores")
    same = _bool_vector(issame, "issame", s.shape[0], "scores")
    if np.isnan(s).any():
        raise ParameterError("scores contain NaN")
    _require_both_kinds(same, "issame")
    impostor = s[~same]
    genuine = s[same]
    n_imp = impostor.shape[0]
    k = _accepted_impostor_count(far_f, n_imp)
    if k < 1:
        raise ParameterError(
            f"far={far_f:g} needs at least {_impostors_needed(far_f)} impostor pairs; got {n_imp}"
        )
    if k >= n_imp:
        return 1.0
    # The (k+1)-th highest impostor score: index k of the descending order, i.e. index
    # n_imp - 1 - k of the ascending one. partition finds exactly the value a full sort
    # puts there, in O(n) (IJB-C has ~15.6 million impostor pairs).
    threshold = np.partition(impostor, n_imp - 1 - k)[n_imp - 1 - k]
    return float(np.count_nonzero(genuine > threshold) / genuine.shape[0])


# -------------------------------------------------------------------- identification


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ParameterError(f"{name} must be an array or tensor: {exc}") from None
    if t.ndim != 2:
        raise ParameterError(f"{name} must be 2-D (rows, dim); got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ParameterError(f"{name} is empty")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                  torch.int64, torch.uint8)):
        raise ParameterError(f"{name} must hold real numbers; got dtype {t.dtype}")
    return t


def _probe_chunk_rows(
    gallery_size: int, element_bytes: int, max_chunk_bytes: int, chunk_size: int | None
) -> int:
    """Probe rows per chunk so that a (rows, gallery_size) block fits max_chunk_bytes (>= 1)."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
            raise ParameterError(f"chunk_size must be an integer; got {chunk_size!r}")
        if chunk_size < 1:
            raise ParameterError(f"chunk_size must be >= 1; got {chunk_size}")
        return int(chunk_size)
    if max_chunk_bytes < 1:
        raise ParameterError(f"max_chunk_bytes must be >= 1; got {max_chunk_bytes}")
    return max(1, int(max_chunk_bytes) // (gallery_size * element_bytes))


def best_gallery_match(
    probe_emb: Any,
    gallery_emb: Any,
    *,
    chunk_size: int | None = None,
    max_chunk_bytes: int = 256 * 2**20,
) -> torch.Tensor:
    """Index of the most cosine-similar gallery row for each probe (int64, CPU, shape (P,)).

    Float32 on the gallery's device; probes go in chunks so that only a (chunk, G) block
    exists at a time. Ties go to the lowest gallery index (torch.argmax semantics).
    """
    probes = _as_tensor(probe_emb, "probe_emb")
    gallery = _as_tensor(gallery_emb, "gallery_emb")
    if probes.shape[1] != gallery.shape[1]:
        raise ParameterError(
            f"probe_emb has dim {probes.shape[1]} but gallery_emb has dim {gallery.shape[1]}"
        )
    device = gallery.device
    dtype = torch.float32
    num_probes, gallery_size = probes.shape[0], gallery.shape[0]
    rows = _probe_chunk_rows(
        gallery_size, torch.finfo(dtype).bits // 8, max_chunk_bytes, chunk_size
    )
    rows = min(rows, num_probes)

    # One normalised float32 copy of the gallery, transposed once for the matmuls.
    gallery_t = F.normalize(gallery.to(dtype), dim=1).t()
    block = torch.empty((rows, gallery_size), dtype=dtype, device=device)
    best = torch.empty(num_probes, dtype=torch.int64, device=device)
    for start in range(0, num_probes, rows):
        stop = min(start + rows, num_probes)
        chunk = F.normalize(probes[start:stop].to(device=device, dtype=dtype), dim=1)
        sims = block[: stop - start]
        torch.mm(chunk, gallery_t, out=sims)
        best[start:stop] = torch.argmax(sims, dim=1)
    return best.cpu()


def _labels(x: Any, name: str, length: int, length_name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise ParameterError(f"{name} must be 1-D; got shape {tuple(a.shape)}")
    if a.shape[0] != length:
        raise ParameterError(f"{name} has {a.shape[0]} entries but {length_name} has {length}")
    return a


def rank1_identification(
    probe_emb: Any,
    probe_labels: Any,
    gallery_emb: Any,
    gallery_labels: Any,
    *,
    chunk_size: int | None = None,
    max_chunk_bytes: int = 256 * 2**20,
) -> float:
    """Fraction of probes whose most cosine-similar gallery entry has the probe's label.

    The gallery may hold distractors (labels no probe has). Ties go to the lowest gallery
    index. Probes run in chunks whose (chunk, G) float32 block stays within
    `max_chunk_bytes` (at least one probe per chunk), unless `chunk_size` is given.
    """
    probes = _as_tensor(probe_emb, "probe_emb")
    gallery = _as_tensor(gallery_emb, "gallery_emb")
    p_labels = _labels(probe_labels, "probe_labels", probes.shape[0], "probe_emb")
    g_labels = _labels(gallery_labels, "gallery_labels", gallery.shape[0], "gallery_emb")
    best = best_gallery_match(
        probes, gallery, chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes
    ).numpy()
    return float(np.count_nonzero(g_labels[best] == p_labels) / p_labels.shape[0])


# ------------------------------------------------------------------------- embedding


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def embed(
    model: torch.nn.Module,
    inputs: Any,
    *,
    batch_size: int = 1024,
    flip: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Embeddings (N, D) float32 on the CPU of `model` over `inputs` (N, ...), in eval mode.

    With flip=True (images (N, C, H, W)) each row is model(x) + model(x flipped along the
    last axis), summed before any normalisation (insightface). uint8 images (the face
    readers' form) are normalised batch by batch, `(x / 255 - 0.5) / 0.5`. Every module's
    train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ParameterError(f"batch_size must be an integer; got {batch_size!r}")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1; got {batch_size}")
    if isinstance(inputs, torch.Tensor):
        data = inputs.detach()
    else:
        try:
            data = torch.as_tensor(np.asarray(inputs))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ParameterError(f"inputs must be an array or tensor: {exc}") from None
    if data.ndim < 1 or data.shape[0] == 0:
        raise ParameterError(f"inputs must hold at least one row; got shape {tuple(data.shape)}")
    if flip and data.ndim < 2:
        raise ParameterError("flip=True needs inputs with a last (width) axis")
    target = torch.device(device) if device is not None else _model_device(model)

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    outputs: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, data.shape[0], batch_size):
                batch = data[start : start + batch_size].to(target, non_blocking=True)
                batch = normalize_images(batch)  # uint8 face images, as readers give them
                out = model(batch)
                if flip:
                    out = out + model(torch.flip(batch, dims=[-1]))
                outputs.append(out.to(device="cpu", dtype=torch.float32))
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(outputs, dim=0)
