"""Closed forms of adastudy.theory against slow float64 references, and the paper's claims."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from adastudy import theory
from adastudy.errors import AdastudyError, ParameterError
from adastudy.theory_plot import figure_paths, plot_target_probability

PROBABILITY_HEADS = ("normface", "cosface", "arcface", "adacos-fixed", "adacos-dynamic")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def reference_target_cosine(theta_rad: float, margin_rad: float, head: str) -> float:
    """The heads table of PAPER.md, one angle at a time."""
    if head == "cosface":
        return math.cos(theta_rad) - margin_rad
    if head == "arcface":
        if theta_rad < math.pi - margin_rad:
            return math.cos(theta_rad + margin_rad)
        return math.cos(theta_rad) - margin_rad * math.sin(margin_rad)
    return math.cos(theta_rad)


def reference_probability(
    theta_rad: float, s: float, num_classes: int, m: float, head: str
) -> float:
    """P = e^f / (e^f + C - 1), written out with no logistic trick."""
    e_f = math.exp(s * reference_target_cosine(theta_rad, m, head))
    return e_f / (e_f + (num_classes - 1))


def theta_grid(margin_rad: float) -> list[float]:
    """0…π in 1° steps plus angles at and just beyond π − m (ArcFace's fallback)."""
    grid = [math.radians(d) for d in range(181)]
    edge = math.pi - margin_rad
    grid += [edge - 1e-3, edge, edge + 1e-9, edge + 1e-3, (edge + math.pi) / 2, math.pi - 1e-6]
    return sorted(t for t in grid if 0.0 <= t <= math.pi)


# --------------------------------------------------------------------------- fixed_scale


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(10, 3.11), (1000, 9.77), (10575, 13.10), (85742, 16.06)],
)
def test_fixed_scale_matches_the_paper(num_classes: int, expected: float) -> None:
    assert round(theory.fixed_scale(num_classes), 2) == expected


def test_fixed_scale_is_sqrt2_ln_c_minus_1() -> None:
    assert theory.fixed_scale(3) == pytest.approx(math.sqrt(2) * math.log(2), rel=1e-15)
    assert theory.fixed_scale(np.int64(1000)) == pytest.approx(theory.fixed_scale(1000))


@pytest.mark.parametrize("num_classes", [2, 1, 0, -5])
def test_fixed_scale_rejects_c_up_to_2(num_classes: int) -> None:
    with pytest.raises(ParameterError, match="num_classes must be > 2") as info:
        theory.fixed_scale(num_classes)
    assert f"got {num_classes}" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("num_classes", [True, 10.0, "10", None])
def test_fixed_scale_rejects_non_integers(num_classes: object) -> None:
    with pytest.raises(ParameterError, match="num_classes"):
        theory.fixed_scale(num_classes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- target_cosine


@pytest.mark.parametrize("head", theory.HEAD_NAMES)
def test_target_cosine_matches_reference(head: str) -> None:
    margins = [0.0, 0.2, 0.5, 1.0] if head in theory.MARGIN_HEADS else [0.0]
    for m in margins:
        # Away from θ = π − m, where a round trip through cos could pick the other branch.
        grid = [t for t in theta_grid(m) if abs(t - (math.pi - m)) > 1e-6]
        cos = np.cos(np.array(grid))
        got = theory.target_cosine(cos, m=m, head=head)
        want = [reference_target_cosine(t, m, head) for t in grid]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_target_cosine_keeps_scalars_and_shapes() -> None:
    value = theory.target_cosine(0.5, m=0.35, head="cosface")
    assert isinstance(value, float)
    assert value == pytest.approx(0.15)
    grid = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    assert theory.target_cosine(grid, m=0.5, head="arcface").shape == (3, 4)
    # Cosines a hair outside [-1, 1] (rounding) are clipped, not NaN.
    assert math.isfinite(theory.target_cosine(1.0 + 1e-12, m=0.5, head="arcface"))


@pytest.mark.parametrize("margin_rad", [0.1, 0.3, 0.5, 0.8, 1.2, 1.5])
def test_arcface_target_cosine_is_non_increasing_in_theta(margin_rad: float) -> None:
    theta_rad = np.linspace(0.0, math.pi, 100_001)
    target = theory.target_cosine(np.cos(theta_rad), m=margin_rad, head="arcface")
    assert np.all(np.diff(target) <= 0.0)
    # Both branches are in use on this grid.
    assert theta_rad.max() >= math.pi - margin_rad


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"head": "sphereface"}, "head"),
        ({"head": "cosface", "m": -0.1}, "m"),
        ({"head": "arcface", "m": math.pi}, "m"),
        ({"head": "arcface", "m": float("nan")}, "m"),
        ({"head": "normface", "m": 0.2}, "m"),
    ],
)
def test_target_cosine_rejects_bad_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}\b"):
        theory.target_cosine(0.5, **kwargs)


# --------------------------------------------------------------------------- target_probability


def _cases() -> list[tuple[str, float | None, float, int]]:
    """(head, s, m, C) for every head accepted; s None means the AdaCos default (C > 2)."""
    cases: list[tuple[str, float | None, float, int]] = []
    for num_classes in (2, 10, 10575):
        for s in (2.0, 13.1, 30.0, 64.0):
            cases.append(("normface", s, 0.0, num_classes))
            for m in (0.0, 0.2, 0.35, 0.5, 1.0):
                cases += [("cosface", s, m, num_classes), ("arcface", s, m, num_classes)]
        for head in theory.ADACOS_HEADS:
            cases.append((head, 9.0, 0.0, num_classes))
            if num_classes > 2:
                cases.append((head, None, 0.0, num_classes))
    return cases


@pytest.mark.parametrize(("head", "s", "m", "num_classes"), _cases())
def test_target_probability_matches_slow_reference(
    head: str, s: float | None, m: float, num_classes: int
) -> None:
    scale = theory.fixed_scale(num_classes) if s is None else s
    grid = theta_grid(m)
    got = theory.target_probability(np.array(grid), s=s, num_classes=num_classes, m=m, head=head)
    want = [reference_probability(t, scale, num_classes, m, head) for t in grid]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    # The scalar path agrees with the array path.
    for t, p in zip(grid[::17], want[::17], strict=True):
        value = theory.target_probability(t, s=s, num_classes=num_classes, m=m, head=head)
        assert isinstance(value, float)
        assert value == pytest.approx(p, rel=1e-10, abs=1e-300)


def test_target_probability_keeps_shape() -> None:
    theta_rad = np.linspace(0.0, math.pi, 6).reshape(2, 3)
    p = theory.target_probability(theta_rad, s=30.0, num_classes=100, m=0.3, head="arcface")
    assert isinstance(p, np.ndarray)
    assert p.shape == (2, 3)
    assert p.dtype == np.float64


def test_fixed_adacos_puts_p_one_half_at_theta0() -> None:
    """The defining property of s_f: P(π/4) = 1/2 with B = C − 1."""
    for num_classes in (3, 10, 1000, 10575, 85742):
        p = theory.target_probability(
            theory.THETA0_RAD, num_classes=num_classes, head="adacos-fixed"
        )
        assert p == pytest.approx(0.5, abs=1e-12)


def test_c1_small_scale_caps_p_at_theta_zero() -> None:
    """C1: P(0) = e^s / (e^s + C − 1) stays well below 1 for a small s."""
    p0 = theory.target_probability(0.0, s=2.0, num_classes=1000, head="normface")
    assert p0 == pytest.approx(math.exp(2.0) / (math.exp(2.0) + 999), rel=1e-12)
    assert p0 < 0.01
    # ...and a larger scale lifts the cap.
    assert theory.target_probability(0.0, s=16.0, num_classes=1000, head="normface") > 0.99


def test_c2_large_scale_keeps_p_near_one_far_from_the_centre() -> None:
    """C2: with s = 64, a sample at 60° still gets P ≈ 1 (almost no gradient)."""
    for head in ("normface", "cosface", "arcface"):
        m = 0.0 if head == "normface" else 0.2
        p = theory.target_probability(math.pi / 3, s=64.0, num_classes=10575, m=m, head=head)
        assert p > 0.999
    # The fixed AdaCos scale does not: P(60°) is small.
    p_fixed = theory.target_probability(math.pi / 3, num_classes=10575, head="adacos-fixed")
    assert p_fixed < 0.2


def _theta_half_rad(head: str, m: float, s: float, num_classes: int) -> float:
    theta_rad = np.linspace(0.0, math.pi, 200_001)
    p = theory.target_probability(theta_rad, s=s, num_classes=num_classes, m=m, head=head)
    return float(theta_rad[np.argmax(p < 0.5)])


@pytest.mark.parametrize("head", theory.MARGIN_HEADS)
def test_c3_larger_margin_shifts_the_curve_to_smaller_angles(head: str) -> None:
    """C3: θ where P = 1/2 falls as m grows."""
    margins = [0.0, 0.1, 0.2, 0.35, 0.5, 0.7]
    halves = [_theta_half_rad(head, m, 64.0, 10575) for m in margins]
    assert all(a > b for a, b in zip(halves, halves[1:], strict=False))
    if head == "cosface":  # closed form: cos θ_½ = ln(C − 1)/s + m
        for m, half in zip(margins, halves, strict=True):
            assert half == pytest.approx(math.acos(math.log(10574) / 64.0 + m), abs=1e-4)


@pytest.mark.parametrize("head", PROBABILITY_HEADS)
def test_no_warnings_and_exact_limits_at_huge_scale(head: str) -> None:
    m = 0.5 if head in theory.MARGIN_HEADS else 0.0
    theta_rad = np.linspace(0.0, math.pi, 1001)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        p = theory.target_probability(theta_rad, s=1e4, num_classes=85742, m=m, head=head)
    assert np.all(np.isfinite(p))
    assert p[0] == 1.0
    assert p[-1] == 0.0
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert np.all(np.diff(p) <= 0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"head": "softmax", "s": 30.0}, "head"),
        ({"head": "sphereface", "s": 30.0}, "head"),
        ({"head": "cosface"}, "s"),
        ({"head": "cosface", "s": 0.0}, "s"),
        ({"head": "cosface", "s": -1.0}, "s"),
        ({"head": "normface", "s": float("nan")}, "s"),
        ({"head": "normface", "s": float("inf")}, "s"),
        ({"head": "cosface", "s": 30.0, "m": -0.01}, "m"),
        ({"head": "arcface", "s": 30.0, "m": math.pi}, "m"),
        ({"head": "arcface", "s": 30.0, "m": 4.0}, "m"),
        ({"head": "normface", "s": 30.0, "m": 0.2}, "m"),
        ({"head": "adacos-fixed", "m": 0.2}, "m"),
        ({"head": "adacos-dynamic", "m": 0.2}, "m"),
        ({"head": "cosface", "s": 30.0, "num_classes": 1}, "num_classes"),
        ({"head": "cosface", "s": 30.0, "num_classes": True}, "num_classes"),
        ({"head": "cosface", "s": 30.0, "num_classes": 10.5}, "num_classes"),
        ({"head": "adacos-fixed", "num_classes": 2}, "num_classes"),
    ],
)
def test_target_probability_rejects_bad_parameters(kwargs: dict, name: str) -> None:
    kwargs = {"num_classes": 100, **kwargs}
    with pytest.raises(ParameterError, match=rf"^{name}\b"):
        theory.target_probability(0.3, **kwargs)


def test_softmax_is_rejected_with_a_reason() -> None:
    with pytest.raises(ParameterError, match="softmax.*no scale"):
        theory.target_probability(0.3, s=30.0, num_classes=100, head="softmax")


@pytest.mark.parametrize("theta", [-0.1, math.pi + 0.01, float("nan"), [0.1, 4.0]])
def test_target_probability_rejects_angles_outside_0_pi(theta: object) -> None:
    with pytest.raises(ParameterError, match="theta"):
        theory.target_probability(theta, s=30.0, num_classes=100, head="normface")


def test_head_name_constants() -> None:
    assert theory.HEAD_NAMES == (
        "softmax",
        "normface",
        "cosface",
        "arcface",
        "adacos-fixed",
        "adacos-dynamic",
    )
    assert set(theory.MARGIN_HEADS) == {"cosface", "arcface"}


def test_theory_imports_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys, adastudy.theory; "
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- rows and figure


def test_target_probability_rows() -> None:
    rows = theory.target_probability_rows(10575, [8, 16], [0.2, 0.5], margin_scale=64.0)
    assert [(r.head, r.s, r.m) for r in rows] == [
        ("adacos-fixed", pytest.approx(13.1043, abs=1e-4), 0.0),
        ("normface", 8.0, 0.0),
        ("normface", 16.0, 0.0),
        ("cosface", 64.0, 0.2),
        ("arcface", 64.0, 0.2),
        ("cosface", 64.0, 0.5),
        ("arcface", 64.0, 0.5),
    ]
    assert rows[0].p_theta_pi_4 == pytest.approx(0.5)
    cosface = rows[3]
    assert cosface.p_theta_pi_2 == pytest.approx(
        reference_probability(math.pi / 2, 64.0, 10575, 0.2, "cosface"), rel=1e-10
    )
    assert set(cosface.as_dict()) == {
        "head",
        "s",
        "m",
        "p_theta_0",
        "p_theta_pi_4",
        "p_theta_pi_2",
    }


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((2, [8], [0.2]), {"margin_scale": 64.0}, "num_classes"),
        ((100, [0.0], [0.2]), {"margin_scale": 64.0}, "s"),
        ((100, [8], [3.5]), {"margin_scale": 64.0}, "m"),
        ((100, [8], []), {"margin_scale": -1.0}, "margin_scale"),
    ],
)
def test_target_probability_rows_validate(args: tuple, kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}\b"):
        theory.target_probability_rows(*args, **kwargs)


def test_plot_writes_png_and_svg(tmp_path) -> None:
    out_dir = tmp_path / "deep" / "figures"
    paths = plot_target_probability(
        10575, [8, 16, 32, 64], [0.2, 0.35, 0.5], margin_scale=64.0, out_dir=out_dir
    )
    assert paths == figure_paths(10575, out_dir)
    assert [p.name for p in paths] == [
        "target_probability_C10575.png",
        "target_probability_C10575.svg",
    ]
    png, svg = paths
    assert png.read_bytes().startswith(PNG_MAGIC)
    svg_text = svg.read_text()
    assert "<svg" in svg_text
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize(
    ("num_classes", "scales", "margins", "margin_scale"),
    [(2, [8], [0.2], 64.0), (100, [-1], [0.2], 64.0), (100, [8], [4.0], 64.0), (100, [8], [], 0)],
)
def test_plot_validates_before_writing(
    tmp_path, num_classes, scales, margins, margin_scale
) -> None:
    out_dir = tmp_path / "figures"
    with pytest.raises(ParameterError):
        plot_target_probability(
            num_classes, scales, margins, margin_scale=margin_scale, out_dir=out_dir
        )
    assert not out_dir.exists()


def test_plot_reports_an_unwritable_folder(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(AdastudyError, match="cannot write figures"):
        plot_target_probability(10, [8], [0.2], margin_scale=30.0, out_dir=blocker / "figures")
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# -- dynamic AdaCos: the fixed point of its scale update -----------------------------------


def _iterate_scale_map(C: int, var: float, mu: float, theta: float, steps: int = 20_000,
                       start: float | None = None) -> float:
    """s ↦ k (ln(C-1) + s μ + s² σ²/2) iterated from s_f (or `start`): its limit, or inf
    once it runs past 1e6 (the slow, obviously correct reference)."""
    k = 1.0 / math.cos(min(math.pi / 4, theta))
    s = k * math.log(C - 1) if start is None else start
    for _ in range(steps):
        nxt = k * (math.log(C - 1) + s * mu + s * s * var / 2)
        if nxt > 1e6:
            return math.inf
        if abs(nxt - s) < 1e-12 * max(1.0, s):
            return nxt
        s = nxt
    return s


@pytest.mark.parametrize("C", [10, 100, 4000, 10_575])
@pytest.mark.parametrize("dim", [8, 24, 40, 64, 512])
@pytest.mark.parametrize(("mu", "theta"), [(0.0, math.pi / 4), (0.0, 1.2), (0.01, 1.0),
                                           (-0.02, 0.5), (0.05, 0.3)])
def test_the_fixed_point_is_where_the_map_converges(C, dim, mu, theta):
    var = 1.0 / dim
    closed = theory.dynamic_scale_fixed_point(C, var, mu, theta)
    limit = _iterate_scale_map(C, var, mu, theta)
    if math.isnan(closed):
        assert limit == math.inf  # no fixed point: the scale runs away
    else:
        assert limit == pytest.approx(closed, rel=1e-8)
        k = 1.0 / math.cos(min(math.pi / 4, theta))
        assert closed == pytest.approx(k * (math.log(C - 1) + closed * mu
                                            + closed**2 * var / 2), rel=1e-10)


@pytest.mark.parametrize("C", [3, 100, 4000, 85_742])
@pytest.mark.parametrize(("mu", "theta"), [(0.0, math.pi / 4), (0.0, 1.5), (0.02, 0.6),
                                           (-0.05, math.pi / 4)])
def test_the_bound_separates_runaway_from_convergence(C, mu, theta):
    d_min = theory.min_stable_effective_dim(C, mu, theta)
    k = 1.0 / math.cos(min(math.pi / 4, theta))
    assert d_min == pytest.approx(2 * k * k * math.log(C - 1) / (1 - k * mu) ** 2)
    above, below = 1.0 / (d_min * 1.01), 1.0 / (d_min * 0.99)
    assert math.isfinite(theory.dynamic_scale_fixed_point(C, above, mu, theta))
    assert _iterate_scale_map(C, above, mu, theta) < math.inf
    assert math.isnan(theory.dynamic_scale_fixed_point(C, below, mu, theta))
    assert _iterate_scale_map(C, below, mu, theta) == math.inf


def test_the_bound_is_four_ln_c_minus_1_at_theta0_and_the_fixed_point_tends_to_s_f():
    for C in (100, 4000, 10_575):
        assert theory.min_stable_effective_dim(C) == pytest.approx(4 * math.log(C - 1))
        assert theory.dynamic_scale_fixed_point(C, 0.0) == pytest.approx(theory.fixed_scale(C))
        # More variance, a larger fixed scale: the map's quadratic term lifts it.
        points = [theory.dynamic_scale_fixed_point(C, 1 / d) for d in (4096, 512, 64)]
        assert points == sorted(points) and points[0] > theory.fixed_scale(C)
    # The measurements: C = 4000 with D = 32 runs away, D = 128 does not.
    assert math.isnan(theory.dynamic_scale_fixed_point(4000, 1 / 32))
    assert math.isfinite(theory.dynamic_scale_fixed_point(4000, 1 / 128))


def test_a_mean_cosine_that_fills_the_gain_leaves_no_fixed_point():
    mu = 0.75  # k μ = √2 · 0.75 > 1: the linear term alone outgrows the identity
    assert theory.min_stable_effective_dim(100, mu) == math.inf
    assert math.isnan(theory.dynamic_scale_fixed_point(100, 0.0, mu))
    assert _iterate_scale_map(100, 0.0, mu, math.pi / 4) == math.inf


@pytest.mark.parametrize(("args", "match"), [
    ((2, 0.01), "num_classes"), ((100, -0.1), "cos_var"), ((100, math.nan), "cos_var"),
    ((100, 0.01, 1.5), "cos_mean"), ((100, 0.01, 0.0, -0.1), "theta_med_rad"),
    ((100, 0.01, 0.0, 4.0), "theta_med_rad"),
])
def test_impossible_stability_parameters_are_parameter_errors(args, match):
    with pytest.raises(ParameterError, match=match):
        theory.dynamic_scale_fixed_point(*args)


def test_the_theory_command_says_whether_a_head_of_dim_d_is_inside_the_bound():
    from typer.testing import CliRunner

    from adastudy.cli import app

    out = CliRunner().invoke(app, ["theory", "--classes", "4000", "--dim", "32", "--no-plot",
                                   "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["min_stable_effective_dim"] == pytest.approx(4 * math.log(3999))
    assert data["dim"] == {"embedding_dim": 32, "inside": False, "fixed_point": None}
    text = CliRunner().invoke(app, ["theory", "--classes", "4000", "--dim", "128", "--no-plot"])
    assert text.exit_code == 0
    s_star = theory.dynamic_scale_fixed_point(4000, 1 / 128)
    assert f"inside the bound, fixed point s* = {s_star:.2f}" in text.stdout
    assert "d_eff ≥ 4 ln(C − 1) = 33.2" in text.stdout
