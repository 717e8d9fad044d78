"""The heads against a slow, obviously-correct float64 loop reference, plus the contract
every head must keep (shapes, eval mode, gradients, labels -1, statistics, state)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adastudy import theory
from adastudy.errors import AdastudyError, ParameterError
from adastudy.heads import (
    DEFAULTS,
    HEAD_NAMES,
    ROW_STATISTICS,
    SPREAD_STATISTICS,
    STATISTICS,
    build_head,
)
from adastudy.theory import min_stable_effective_dim

PARAMS = {"normface": {"s": 12.0}, "cosface": {"s": 12.0, "m": 0.35},
          "arcface": {"s": 12.0, "m": 0.5}}


def make(name: str, num_classes: int = 7, dim: int = 5, seed: int = 0, **params):
    torch.manual_seed(seed)
    head = build_head(name, num_classes, dim, **(params or PARAMS.get(name, {})))
    if name == "softmax":  # a non-zero bias, so a test would see it missing
        with torch.no_grad():
            head.bias.normal_()
    return head.train()


def batch(num_classes: int = 7, dim: int = 5, n: int = 9, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y


# -- the reference: scalar loops in float64, one formula per line -----------------------

def ref_cos(x: torch.Tensor, w: torch.Tensor) -> list[list[torch.Tensor]]:
    """cos θ_ij by explicit sums (scalar autograd ops, so gradients come out too)."""
    rows = []
    for i in range(x.shape[0]):
        nx = torch.sqrt(sum(x[i, d] * x[i, d] for d in range(x.shape[1])))
        row = []
        for j in range(w.shape[0]):
            nw = torch.sqrt(sum(w[j, d] * w[j, d] for d in range(w.shape[1])))
            row.append(sum(x[i, d] * w[j, d] for d in range(x.shape[1])) / (nx * nw))
        rows.append(row)
    return rows


def ref_target(name: str, c: torch.Tensor, m: float) -> torch.Tensor:
    if name == "cosface":
        return c - m
    if name == "arcface":
        theta = torch.acos(c)
        if theta.item() < math.pi - m:
            return torch.cos(theta + m)
        return c - m * math.sin(m)
    return c


def lower_median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def ref_forward(name, x, w, bias, y, s_prev, params):
    """Logits (list of rows), the scale used, and the paper's statistics, by loops."""
    n, num_classes = x.shape[0], w.shape[0]
    m = params.get("m", 0.0)
    if name == "softmax":
        cos = ref_cos(x.detach(), w.detach())  # for the angle statistics only
        sims = [[sum(x[i, d] * w[j, d] for d in range(x.shape[1])) + bias[j]
                 for j in range(num_classes)] for i in range(n)]
        s = 1.0
    else:
        cos = sims = ref_cos(x, w)
        s = s_prev
    labelled = [i for i in range(n) if y[i] >= 0]

    def b_row(i, scale):
        return sum(math.exp(scale * sims[i][k].item()) for k in range(num_classes) if k != y[i])

    b_avg_prev = sum(b_row(i, s) for i in labelled) / len(labelled)
    thetas = [math.acos(max(-1.0, min(1.0, cos[i][int(y[i])].item()))) for i in labelled]
    if name == "adacos-dynamic":
        s = math.log(b_avg_prev) / math.cos(min(math.pi / 4, lower_median(thetas)))
    logits = []
    for i in range(n):
        row = []
        for j in range(num_classes):
            t = sims[i][j]
            if j == y[i]:
                t = ref_target(name, t, m)
            row.append(s * t)
        logits.append(row)
    p_target = []
    for i in labelled:
        exps = [math.exp(v.item()) for v in logits[i]]
        p_target.append(exps[int(y[i])] / sum(exps))
    nontarget = [cos[i][k].item() for i in labelled for k in range(num_classes) if k != y[i]]
    stats = {
        "s": s,
        "theta_med_rad": lower_median(thetas),
        "theta_mean_rad": sum(thetas) / len(thetas),
        "cos_nontarget_mean": sum(nontarget) / len(nontarget),
        "p_target_mean": sum(p_target) / len(p_target),
        "ln_b_avg": math.log(b_avg_prev),
        "ln_b_avg_ratio": math.log(b_avg_prev) / math.log(num_classes - 1),
    }
    # The pooled variance of the non-target cosines, two-pass (no E[x²] - E[x]²), and
    # the stability margin from theory's bound at this batch's θ_med and mean cosine.
    mu = stats["cos_nontarget_mean"]
    var = sum((c - mu) ** 2 for c in nontarget) / len(nontarget)
    bound = min_stable_effective_dim(num_classes, mu, lower_median(thetas))
    # The update map's slope k · d ln B_avg / ds at the starting scale, from the
    # derivative of the sum of exponentials term by term.
    k = 1 / math.cos(min(math.pi / 4, lower_median(thetas)))
    pairs = [(cos[i][k_].item(), math.exp(s_prev * cos[i][k_].item()))
             for i in labelled for k_ in range(num_classes) if k_ != y[i]]
    slope = k * sum(c * e for c, e in pairs) / sum(e for _, e in pairs)
    if name != "adacos-dynamic":  # only the head whose scale moves records it
        slope = math.nan
    if name == "softmax":  # its logits are not cosines: no variance is recorded
        var = bound = math.nan
    stats |= {"cos_nontarget_var": var, "d_eff": 1 / var if var == var else math.nan,
              "stability_margin": (1 / var) / bound if var == var else math.nan,
              "update_slope": slope}
    return logits, s, stats


@pytest.fixture(params=HEAD_NAMES)
def head_name(request) -> str:
    return request.param


# -- formulas -----------------------------------------------------------------------------

def test_logits_gradients_and_statistics_match_the_float64_loop_reference(head_name):
    head = make(head_name).double()
    x, y = batch()
    y[3] = -1  # an unlabelled row on the way
    x.requires_grad_(True)
    s_prev = head.scale
    logits = head(x, y)

    w_ref = head.weight.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias = head.bias.detach() if head_name == "softmax" else None
    ref_logits, ref_s, ref_stats = ref_forward(head_name, x_ref, w_ref, bias, y, s_prev,
                                               PARAMS.get(head_name, {}))
    expected = torch.stack([torch.stack(row) for row in ref_logits])
    torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    assert head.scale == pytest.approx(ref_s, rel=1e-12)

    # Same loss, same gradients for the embeddings and the class weights.
    F.cross_entropy(logits, y, ignore_index=-1).backward()
    F.cross_entropy(expected, y, ignore_index=-1).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head.weight.grad, w_ref.grad, rtol=1e-10, atol=1e-12)

    assert set(head.statistics) == set(STATISTICS)
    for key in STATISTICS:
        assert head.statistics[key].item() == pytest.approx(ref_stats[key], rel=1e-5,
                                                            nan_ok=True), key


def test_the_fused_loss_matches_the_float64_loop_reference(head_name):
    # head.loss against the scalar reference's logits and F.cross_entropy: the loss, both
    # gradients, the statistics and the AdaCos update.
    head = make(head_name).double()
    x, y = batch()
    y[3] = -1
    x.requires_grad_(True)
    s_prev = head.scale
    loss = head.loss(x, y)
    w_ref = head.weight.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias = head.bias.detach() if head_name == "softmax" else None
    ref_logits, ref_s, ref_stats = ref_forward(head_name, x_ref, w_ref, bias, y, s_prev,
                                               PARAMS.get(head_name, {}))
    expected = torch.stack([torch.stack(row) for row in ref_logits])
    ref_loss = F.cross_entropy(expected, y, ignore_index=-1)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert head.scale == pytest.approx(ref_s, rel=1e-12)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head.weight.grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    for key in STATISTICS:
        assert head.statistics[key].item() == pytest.approx(ref_stats[key], rel=1e-5,
                                                            nan_ok=True), key
    labelled = y >= 0
    assert head.correct.item() == (expected.argmax(dim=1) == y)[labelled].sum().item()


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_the_fused_loss_equals_cross_entropy_of_the_forward(head_name, dtype, rtol):
    # The same head twice: F.cross_entropy(head(x, y), y) and head.loss(x, y), over
    # three steps of SGD, so that AdaCos's scale moves: values, gradients, statistics
    # and the scale agree step by step.
    C, D, N = 300, 24, 64
    torch.manual_seed(3)
    unfused = build_head(head_name, C, D, **PARAMS.get(head_name, {})).to(dtype).train()
    fused = build_head(head_name, C, D, **PARAMS.get(head_name, {})).to(dtype).train()
    fused.load_state_dict(unfused.state_dict())
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.randn(N, D, generator=gen, dtype=dtype) * 0.3
        y = torch.randint(0, C, (N,), generator=gen)
        y[::7] = -1
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        reference = F.cross_entropy(unfused(xa, y), y, ignore_index=-1)
        loss = fused.loss(xb, y)
        torch.testing.assert_close(loss, reference, rtol=rtol, atol=rtol)
        reference.backward()
        loss.backward()
        torch.testing.assert_close(xb.grad, xa.grad, rtol=rtol, atol=rtol * 1e-2)
        torch.testing.assert_close(fused.weight.grad, unfused.weight.grad, rtol=rtol,
                                   atol=rtol * 1e-2)
        torch.testing.assert_close(fused.statistics_vector, unfused.statistics_vector,
                                   rtol=rtol, atol=rtol, equal_nan=True)
        assert fused.scale == pytest.approx(unfused.scale, rel=rtol)
        with torch.no_grad():
            for head in (unfused, fused):
                head.weight -= 0.5 * head.weight.grad
                head.weight.grad = None


def test_the_fused_loss_in_eval_mode_is_the_plain_cross_entropy(head_name):
    head = make(head_name).double().eval()
    x, y = batch()
    torch.testing.assert_close(head.loss(x, y), F.cross_entropy(head(x), y))
    with pytest.raises(ParameterError, match="labels"):
        head.train().loss(x, None)


def test_under_bfloat16_autocast_the_loss_and_statistics_stay_float32(head_name):
    # bfloat16 keeps 3 significant digits: a loss, a B-weighted mean or a sum over the
    # batch computed under the caller's autocast would be off by about 1e-3.
    C, D, N = 2000, 32, 256
    plain, cast = make(head_name, C, D), make(head_name, C, D)
    x, y = batch(C, D, N)
    x = x.float()
    y[::5] = -1
    for method in ("loss", "forward"):
        want = getattr(plain, method)(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = getattr(cast, method)(x, y)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cast.statistics_vector, plain.statistics_vector,
                                   rtol=1e-5, atol=1e-6, equal_nan=True)
        assert cast.scale == pytest.approx(plain.scale, rel=1e-6)


def test_a_windows_rows_finish_to_each_steps_statistics(head_name):
    # The trainer finishes a log window's rows at once, the narrower batches padded
    # with zeros: row by row, that must be each step's own statistics, whatever the
    # other steps hold (NaN, no labels, more samples).
    head = make(head_name, 40, 6)
    rows, finished = [], []
    for step, n in enumerate((16, 16, 11, 16)):
        x, y = batch(40, 6, n, seed=step)
        if step == 1:
            y[:] = -1  # a batch without labels: its statistics are NaN, not the others'
        head.loss(x.float(), y).backward()
        assert head.statistics_rows.shape == (len(ROW_STATISTICS), n)
        rows.append(torch.nn.functional.pad(head.statistics_rows, (0, 16 - n)))
        finished.append(head.statistics_vector)
    window = head.finish_statistics(torch.stack(rows))
    assert window.shape == (4, len(STATISTICS))
    for step in range(4):
        torch.testing.assert_close(window[step], finished[step], equal_nan=True)
    assert torch.isnan(window[1, STATISTICS.index("theta_mean_rad")])
    assert torch.isfinite(window[2, STATISTICS.index("theta_mean_rad")])


def test_two_losses_before_one_backward_fail_loudly_not_silently(head_name):
    # Both losses would share the head's scratch tensor: the first one's gradient must
    # not be computed from the second batch's exponentials.
    head = make(head_name, 40, 6)
    (x1, y1), (x2, y2) = batch(40, 6, 16, seed=1), batch(40, 6, 16, seed=2)
    total = head.loss(x1, y1) + head.loss(x2, y2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        total.backward()


def test_arcface_beyond_pi_minus_m_matches_the_reference_and_falls():
    m = 0.5
    head = make("arcface", num_classes=4, dim=3, s=10.0, m=m).double()
    w = F.normalize(head.weight.detach(), dim=1)
    # Targets at angles around π - m = 2.64 rad, on both sides: near -W_y.
    angles = torch.tensor([2.3, 2.6, 2.7, 3.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    ortho = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64)).Q
    x = []
    for i, a in enumerate(angles):
        u = w[y[i]]
        v = ortho[:, 0] - (ortho[:, 0] @ u) * u
        v = v / v.norm()
        x.append(torch.cos(a) * u + torch.sin(a) * v)
    x = torch.stack(x).requires_grad_(True)
    logits = head(x, y)
    got = logits.gather(1, y[:, None]).squeeze(1) / 10.0
    for i, a in enumerate(angles.tolist()):
        c = math.cos(a)
        want = math.cos(a + m) if a < math.pi - m else c - m * math.sin(m)
        assert got[i].item() == pytest.approx(want, abs=1e-12)
    assert torch.all(got[2:] < -1.0)  # the fallback side is below cos(π) = -1
    F.cross_entropy(logits, y).backward()
    assert torch.isfinite(x.grad).all()


def test_arcface_target_is_non_increasing_on_a_dense_grid_and_agrees_with_theory():
    theta = torch.linspace(0.0, math.pi, 100_001, dtype=torch.float64)
    for m in (0.1, 0.35, 0.5, 1.0, 1.5):
        head = make("arcface", s=64.0, m=m).double()
        target = head.target_cosine(torch.cos(theta))
        assert torch.all(target[1:] <= target[:-1]), m
        np.testing.assert_allclose(
            target.numpy(), theory.target_cosine(np.cos(theta.numpy()), m=m, head="arcface"),
            atol=1e-6,  # the head's sin θ has a 1e-12 floor under the square root
        )


# -- dynamic AdaCos, by hand ---------------------------------------------------------------

def planar_head(angles_rad):
    """adacos-dynamic in 2-D with class centres at the given angles."""
    head = build_head("adacos-dynamic", len(angles_rad), 2).double().train()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[math.cos(a), math.sin(a)] for a in angles_rad]))
    return head


def planar(angles_rad):
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles_rad], dtype=torch.float64)


def test_dynamic_adacos_update_on_a_hand_computed_batch():
    centres = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]  # C = 4
    head = planar_head(centres)
    s0 = math.sqrt(2) * math.log(3)
    assert head.scale == pytest.approx(s0, rel=1e-7)  # the float32 buffer holds s(0)

    # Step 1: target angles 0.3, 1.0, 1.1416, so θ_med = 1.0 > π/4 and cos(π/4) is used.
    x = planar([0.3, math.pi / 2 + 1.0, 2.0])
    y = torch.tensor([0, 1, 2])
    s_prev = head.scale
    b = [sum(math.exp(s_prev * math.cos(a - centres[k])) for k in range(4) if k != int(c))
         for a, c in zip([0.3, math.pi / 2 + 1.0, 2.0], y, strict=True)]
    s1 = math.log(sum(b) / 3) / math.cos(math.pi / 4)
    logits = head(x, y)
    assert head.scale == pytest.approx(s1, rel=1e-6)
    torch.testing.assert_close(logits, s1 * (x @ head.weight.detach().t()), rtol=1e-6, atol=0)

    # Step 2, with an even count: the lower median (0.1) is below π/4 and is used, and
    # B_avg uses the scale of step 1, not s(0).
    angles = [0.1, math.pi / 2 + 0.05, math.pi - 0.2, 3 * math.pi / 2 + 0.4]
    x = planar(angles)
    y = torch.tensor([0, 1, 2, 3])
    s_prev = head.scale
    b = [sum(math.exp(s_prev * math.cos(a - centres[k])) for k in range(4) if k != c)
         for c, a in enumerate(angles)]
    s2 = math.log(sum(b) / 4) / math.cos(0.1)
    head(x, y)
    assert head.scale == pytest.approx(s2, rel=1e-6)
    assert head.statistics["theta_med_rad"].item() == pytest.approx(0.1, abs=1e-6)


def test_dynamic_adacos_updates_only_in_training_with_labels():
    head = make("adacos-dynamic")
    x, y = batch()
    x = x.float()
    s0 = head.scale
    head(x)  # no labels
    assert head.scale == s0
    head.eval()
    head(x, y)
    assert head.scale == s0
    head.train()
    head(x, torch.full_like(y, -1))  # nothing labelled: keeps its scale
    assert head.scale == s0
    head(x, y)
    assert head.scale != s0


def test_dynamic_adacos_does_not_overflow_at_100k_classes_under_float16_autocast():
    num_classes, dim = 100_000, 16
    head = make("adacos-dynamic", num_classes=num_classes, dim=dim)
    x = torch.randn(32, dim).half()
    y = torch.randint(0, num_classes, (32,))
    with torch.autocast("cpu", dtype=torch.float16):
        for _ in range(3):
            logits = head(x, y)
            F.cross_entropy(logits.float(), y).backward()
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(v) for v in head.statistics.values())
    assert 0 < head.scale < 100

    # Non-target cosines drifted positive with a large scale: Σ exp(100 · 0.99) over 1e5
    # classes is ~1e48, past float32's 3e38; the log-sum-exp still gives its logarithm.
    with torch.no_grad():
        head.weight.copy_(x[0].float().expand(num_classes, dim))
        head.current_scale.fill_(100.0)
    head(x[:1], y[:1])
    ln_b = head.statistics["ln_b_avg"].item()
    assert ln_b == pytest.approx(100.0 + math.log(num_classes - 1), rel=1e-4)
    assert math.isfinite(head.scale)


# -- the contract every head keeps ---------------------------------------------------------

def test_shapes_and_eval_mode_give_s_times_cos_without_margin(head_name):
    head = make(head_name)
    x, y = batch()
    x = x.float()
    s = head.scale
    train_logits = head(x, y)
    assert train_logits.shape == (9, 7)
    s_after = head.scale
    if head_name == "softmax":
        plain = x @ head.weight.detach().t() + head.bias.detach()
    else:
        plain = s_after * F.normalize(x, dim=1) @ F.normalize(head.weight.detach(), dim=1).t()
    head.eval()
    torch.testing.assert_close(head(x, y), plain, rtol=1e-5, atol=1e-5)
    head.train()
    torch.testing.assert_close(head(x), plain, rtol=1e-5, atol=1e-5)
    if head_name != "adacos-dynamic":
        assert s == s_after
    if head_name in ("cosface", "arcface"):  # in training the margin lowers the target
        target = train_logits.gather(1, y[:, None])
        assert torch.all(target < plain.gather(1, y[:, None]))


def test_weight_gets_a_gradient_and_one_step_changes_it(head_name):
    head = make(head_name)
    x, y = batch()
    before = head.weight.detach().clone()
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    F.cross_entropy(head(x.float(), y), y).backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, head.weight.detach())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gradients_are_finite_at_cos_plus_and_minus_one(head_name, dtype):
    head = make(head_name, num_classes=4, dim=3).to(dtype)
    w = head.weight.detach()
    # cos = +1 (x on its own centre) and cos = -1 (x opposite its centre).
    x = torch.stack([w[0], -w[1], w[2] * 3.0, -w[3]]).clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3])
    logits = head(x, y)
    assert logits.dtype == torch.float32
    F.cross_entropy(logits, y).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(head.weight.grad).all()
    assert all(torch.isfinite(v) for k, v in head.statistics.items()
               if not (head_name == "softmax" and k in SPREAD_STATISTICS)
               and not (head_name != "adacos-dynamic" and k == "update_slope"))


def test_labels_minus_one_leave_their_rows_untouched(head_name):
    head = make(head_name)
    x, y = batch()
    x = x.float().requires_grad_(True)
    y[[2, 5]] = -1
    logits = head(x, y)
    plain = make(head_name).eval()(x.detach())
    if head_name == "adacos-dynamic":  # same rule, but with the scale of this batch
        plain = plain / plain.new_tensor(math.sqrt(2) * math.log(6)) * head.scale
    torch.testing.assert_close(logits[[2, 5]], plain[[2, 5]], rtol=1e-5, atol=1e-5)

    # The statistics (and the AdaCos update) are those of the labelled rows alone.
    keep = y >= 0
    other = make(head_name)
    other(x.detach()[keep], y[keep])
    for key in STATISTICS:
        torch.testing.assert_close(head.statistics[key], other.statistics[key],
                                   rtol=1e-5, atol=1e-6, equal_nan=True)


def test_statistics_are_device_tensors_and_can_be_switched_off(head_name):
    head = make(head_name)
    x, y = batch()
    head(x.float(), y)
    assert set(head.statistics) == set(STATISTICS)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in head.statistics.values())
    head.statistics_rows = None
    head.track_statistics = False
    head(x.float(), y)
    assert head.statistics == {}


def test_scale_is_saved_in_the_state_dict_and_kept_in_float32(head_name):
    head = make(head_name)
    x, y = batch()
    head(x.float(), y)
    state = head.state_dict()
    assert "current_scale" in state
    fresh = make(head_name, seed=5)
    fresh.load_state_dict(state)
    assert fresh.scale == head.scale
    half = make(head_name).half()
    assert half.current_scale.dtype == torch.float32
    assert half.weight.dtype == torch.float16


def test_fixed_scales_and_defaults():
    assert make("adacos-fixed", num_classes=10_575).scale == pytest.approx(
        math.sqrt(2) * math.log(10_574), rel=1e-7)
    assert make("adacos-dynamic", num_classes=1000).scale == pytest.approx(9.77, abs=5e-3)
    assert tuple(DEFAULTS) == HEAD_NAMES
    cos = build_head("cosface", 10, 4)
    assert (cos.scale, cos.margin_rad) == (64.0, 0.35)


@pytest.mark.parametrize(
    ("name", "kwargs", "needle"),
    [
        ("sphereface", {}, "unknown head"),
        ("adacos-fixed", {"num_classes": 2}, "num_classes"),
        ("adacos-dynamic", {"num_classes": 1}, "num_classes"),
        ("cosface", {"s": 0.0}, "s (scale)"),
        ("cosface", {"s": -3.0}, "s (scale)"),
        ("normface", {"s": float("nan")}, "s (scale)"),
        ("arcface", {"m": -0.1}, "m (margin"),
        ("arcface", {"m": math.pi}, "m (margin"),
        ("cosface", {"m": 4.0}, "m (margin"),
        ("adacos-fixed", {"s": 30.0}, "'s'"),
        ("normface", {"m": 0.2}, "'m'"),
        ("cosface", {"num_classes": 1}, "num_classes"),
        ("cosface", {"embedding_dim": 0}, "embedding_dim"),
        ("cosface", {"num_classes": 10.0}, "num_classes"),
    ],
)
def test_impossible_parameters_raise_a_clear_error(name, kwargs, needle):
    args = {"num_classes": 10, "embedding_dim": 4, **kwargs}
    with pytest.raises(ParameterError, match="^.*" + __import__("re").escape(needle)) as err:
        build_head(name, args.pop("num_classes"), args.pop("embedding_dim"), **args)
    assert isinstance(err.value, AdastudyError)
    assert "\n" not in str(err.value)


# -- data parallel --------------------------------------------------------------------------

def _dynamic_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        head = make("adacos-dynamic", num_classes=50, dim=8, seed=0)
        x, y = batch(num_classes=50, dim=8, n=6 + 3 * rank, seed=10 + rank)  # uneven batches
        for _ in range(2):
            head(x.float(), y)
        torch.save({"scale": head.current_scale.clone(), "x": x, "y": y,
                    "weight": head.weight.detach().clone()}, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_dynamic_scale_is_identical_across_ranks_and_uses_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dynamic_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(results[0]["scale"], results[1]["scale"])

    # The rule by hand, twice: B_avg over both ranks' rows, θ_med the mean of their medians.
    w = F.normalize(results[0]["weight"].double(), dim=1)
    s = math.sqrt(2) * math.log(49)
    for _ in range(2):
        b_total, rows, medians = 0.0, 0, []
        for r in results:
            cos = F.normalize(r["x"].double(), dim=1) @ w.t()
            for i, c in enumerate(r["y"].tolist()):
                b_total += sum(math.exp(s * cos[i, k].item()) for k in range(50) if k != c)
            rows += len(r["y"])
            medians.append(lower_median([math.acos(cos[i, c].item())
                                         for i, c in enumerate(r["y"].tolist())]))
        s = math.log(b_total / rows) / math.cos(min(math.pi / 4, sum(medians) / 2))
    assert results[0]["scale"].item() == pytest.approx(s, rel=1e-5)


def _equal_shard_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        out = {}
        for name in HEAD_NAMES:
            head = make(name, num_classes=30, dim=6, seed=0)
            head.equal_rank_batches = True
            steps = []
            for step in range(3):
                x, y = batch(num_classes=30, dim=6, n=8, seed=100 + step)
                if step == 1:
                    y = y.clone()
                    y[rank * 7] = -1  # an unlabelled row in each rank's shard
                shard = slice(rank * 4, (rank + 1) * 4)
                logits = head(x[shard], y[shard])
                steps.append((head.statistics_vector.clone(), logits.detach().clone()))
            out[name] = steps
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_with_equal_shards_every_statistic_is_the_global_batchs(tmp_path):
    """Two gloo ranks holding halves of each batch: the same scale and statistics, on
    every rank, as one process holding the whole batch (θ_med the exact median)."""
    import torch.multiprocessing as mp

    mp.spawn(_equal_shard_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in HEAD_NAMES:
        head = make(name, num_classes=30, dim=6, seed=0)
        for step in range(3):
            x, y = batch(num_classes=30, dim=6, n=8, seed=100 + step)
            if step == 1:
                y = y.clone()
                y[0] = y[7] = -1  # rank 0's first row, rank 1's last
            logits = head(x, y)
            whole = head.statistics_vector
            for r, shard in ((0, slice(0, 4)), (1, slice(4, 8))):
                stats, rank_logits = ranks[r][name][step]
                torch.testing.assert_close(stats, whole, rtol=1e-5, atol=1e-6,
                                           equal_nan=True, msg=f"{name} step {step}")
                torch.testing.assert_close(rank_logits, logits.detach()[shard],
                                           rtol=1e-6, atol=1e-6)


def _unequal_shard_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        out = {}
        for name in ("normface", "cosface", "softmax"):
            head = make(name, num_classes=30, dim=6, seed=0)
            x, y = batch(num_classes=30, dim=6, n=7, seed=200)
            shard = slice(0, 4) if rank == 0 else slice(4, 7)  # 4 rows and 3 rows
            head(x[shard], y[shard])
            out[name] = head.statistics_vector.clone()
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_with_unequal_shards_the_statistics_still_gather_the_whole_batch(tmp_path):
    """Ranks holding 4 and 3 rows of a batch: the narrower rank's rows are padded with
    unlabelled columns before the gather, and every rank reads the whole batch's
    statistics (fixed-scale heads, whose statistics do not depend on the update)."""
    import torch.multiprocessing as mp

    mp.spawn(_unequal_shard_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in ("normface", "cosface", "softmax"):
        head = make(name, num_classes=30, dim=6, seed=0)
        x, y = batch(num_classes=30, dim=6, n=7, seed=200)
        head(x, y)
        for r in range(2):
            torch.testing.assert_close(ranks[r][name], head.statistics_vector, rtol=1e-5,
                                       atol=1e-6, equal_nan=True, msg=f"{name} rank {r}")
