"""eoc-init: the mean-field maps against closed forms, Gauss–Hermite and Monte Carlo; the EoC values of the
literature; the paper's propagation rates; a wide random net against the mean-field prediction; the draw
against torch.nn.init bit for bit; the hook; example.toml.

No reference implementation of the paper runs here (the paper ships none), so every number is pinned to an
independent computation: closed forms (ReLU, identity, erf), plain Gauss–Hermite quadrature (numpy), Monte
Carlo over Gaussian samples, and measurements in random networks drawn by this plugin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paperkit_eoc_init import EocInitConfig
from paperkit_eoc_init import functional as F
from paperkit_eoc_init.hooks import EocInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
SMOOTH = ("tanh", "gelu", "elu", "silu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(activation: str = "tanh", depth: int = 3, width: int = 16, bias: bool = True) -> MLP:
    config = SimpleNamespace(
        depth=depth, width=width, activation=activation, norm="none", residual=False, dropout=0.0, bias=bias
    )
    return MLP(64, 10, config)


def hermite(g, q: float, n: int = 100) -> float:  # noqa: ANN001
    """Plain probabilists' Gauss–Hermite, E[g(√q Z)]: an independent rule, accurate for q <= 1."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    z = torch.from_numpy(x)
    return float((torch.from_numpy(w) / math.sqrt(2 * math.pi) * g(math.sqrt(q) * z)).sum())


def monte_carlo(g, q: float, n: int = 1_000_000, seed: int = 0) -> tuple[float, float]:  # noqa: ANN001
    """E[g(√q Z)] by Monte Carlo, with its standard error."""
    z = torch.randn(n, generator=gen(seed), dtype=torch.float64)
    v = g(math.sqrt(q) * z)
    return float(v.mean()), float(v.std() / math.sqrt(n))


# --- activations and quadrature ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, module",
    [("relu", nn.ReLU()), ("tanh", nn.Tanh()), ("gelu", nn.GELU()), ("elu", nn.ELU()), ("silu", nn.SiLU())],
)
def test_activation_and_its_derivatives_are_torchs(name, module):
    act = F.get_activation(name)
    u = torch.linspace(-6, 6, 2401, dtype=torch.float64)
    u = u[u.abs() > 1e-3].requires_grad_(True)  # ReLU and ELU: no derivative at 0
    y = module(u)
    assert torch.equal(act.phi(u), y)
    (d1,) = torch.autograd.grad(y.sum(), u, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), u)
    assert torch.allclose(act.dphi(u), d1, atol=1e-12)
    assert torch.allclose(act.d2phi(u), d2, atol=1e-12)


@pytest.mark.parametrize("q", [1e-8, 0.3, 1.0, 7.0, 400.0])
def test_gaussian_rule_integrates_the_gaussian_moments(q):
    assert F.gaussian_expectation(torch.ones_like, q) == pytest.approx(1.0, abs=1e-13)
    assert F.gaussian_expectation(lambda u: u**2, q) == pytest.approx(q, rel=1e-12)
    assert F.gaussian_expectation(lambda u: u**4, q) == pytest.approx(3 * q**2, rel=1e-12)
    assert F.gaussian_expectation(lambda u: u**3, q) == pytest.approx(0.0, abs=1e-12 * q**1.5)
    # ReLU's kink at 0 is a panel boundary: exact
    assert F.gaussian_expectation(lambda u: torch.relu(u) ** 2, q) == pytest.approx(q / 2, rel=1e-12)
    assert F.gaussian_expectation(lambda u: torch.relu(u), q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-12)


@pytest.mark.parametrize("q", [0.05, 1.0, 30.0, 1000.0])
def test_gaussian_rule_matches_the_closed_form_of_erf_at_any_variance(q):
    """E[erf(aU)²] = (2/π) arcsin(2a²q / (1 + 2a²q)): a sigmoid-shaped feature of width 1 under a wide Gaussian,
    where plain Gauss–Hermite with 100 nodes fails (checked below)."""
    a = 1.3
    exact = 2 / math.pi * math.asin(2 * a * a * q / (1 + 2 * a * a * q))
    assert F.gaussian_expectation(lambda u: torch.erf(a * u) ** 2, q) == pytest.approx(exact, rel=1e-10)
    if q <= 1.0:
        assert hermite(lambda u: torch.erf(a * u) ** 2, q) == pytest.approx(exact, rel=1e-9)
    if q >= 1000.0:
        assert abs(hermite(lambda u: torch.erf(a * u) ** 2, q) - exact) > 1e-3  # why not plain Gauss–Hermite


@pytest.mark.parametrize("name", SMOOTH)
def test_variance_map_matches_gauss_hermite_and_monte_carlo(name):
    act = F.get_activation(name)
    rel = 1e-4 if name == "elu" else 1e-8  # ELU's φ'' jumps at 0: plain Gauss–Hermite converges slowly there
    for q in (0.1, 0.8):
        ours = F.variance_map(q, 1.3, 0.2, name)
        assert ours == pytest.approx(0.04 + 1.69 * hermite(lambda u: act.phi(u) ** 2, q), rel=rel)
    ours = F.variance_map(6.0, 1.3, 0.2, name)
    mc, se = monte_carlo(lambda u: act.phi(u) ** 2, 6.0)
    assert abs(ours - (0.04 + 1.69 * mc)) < 4 * 1.69 * se


# --- the Edge of Chaos ----------------------------------------------------------------------------------


def test_relu_and_identity_eoc_points_are_the_known_ones():
    """Paper Sec. 3: ReLU's EoC is the single point (σ_b, σ_w) = (0, √2) (He et al.'s init); identity: (0, 1)."""
    relu = F.eoc_point("relu")
    assert (relu.sigma_b, relu.sigma_w, relu.chi) == (0.0, pytest.approx(math.sqrt(2), rel=1e-14), 1.0)
    assert math.isnan(relu.q)  # every variance is a fixed point of q -> q
    assert F.eoc_point("identity").sigma_w == pytest.approx(1.0, rel=1e-14)
    with pytest.raises(ValueError, match=r"single point \(sigma_b, sigma_w\) = \(0, 1.414\)"):
        F.eoc_point("relu", 0.2)
    ordered = F.eoc_point("relu", 0.5, chi=0.5)  # closed form: σ_w² = 2χ, q* = σ_b² / (1 − χ)
    assert (ordered.sigma_w, ordered.q) == (pytest.approx(1.0), pytest.approx(0.5))
    assert F.variance_map(ordered.q, ordered.sigma_w, 0.5, "relu") == pytest.approx(ordered.q)


def test_tanh_eoc_values_of_the_literature_and_a_monte_carlo_check():
    """σ_b = 0: σ_w = 1 (Poole et al. 2016; q* = 0). σ_b² = 0.05: σ_w² ≈ 1.76, the critical point of Schoenholz
    et al. 2017 (Fig. 1). Both EoC conditions re-checked at σ_b = 0.2 by Monte Carlo: F(q*) = q*, χ₁ = 1."""
    zero = F.eoc_point("tanh", 0.0)
    assert (zero.sigma_w, zero.q) == (1.0, 0.0)
    assert F.eoc_point("tanh", math.sqrt(0.05)).sigma_w ** 2 == pytest.approx(1.761, abs=1e-3)
    p = F.eoc_point("tanh", 0.2)
    assert (round(p.sigma_w, 4), round(p.q, 4)) == (1.3041, 0.5121)
    act = F.get_activation("tanh")
    e_phi2, se1 = monte_carlo(lambda u: act.phi(u) ** 2, p.q)
    e_dphi2, se2 = monte_carlo(lambda u: act.dphi(u) ** 2, p.q, seed=1)
    assert abs(0.04 + p.sigma_w**2 * e_phi2 - p.q) < 4 * p.sigma_w**2 * se1
    assert abs(p.sigma_w**2 * e_dphi2 - 1.0) < 4 * p.sigma_w**2 * se2


@pytest.mark.parametrize("name, sigma_b", [("tanh", 0.05), ("tanh", 1.0), ("elu", 0.2), ("gelu", 0.5), ("silu", 1.0)])
def test_eoc_point_is_an_attracting_fixed_point_with_chi_one(name, sigma_b):
    p = F.eoc_point(name, sigma_b)
    assert p.phase == "edge of chaos"
    assert F.variance_map(p.q, p.sigma_w, sigma_b, name) == pytest.approx(p.q, rel=1e-9)
    assert F.chi1(p.sigma_w, p.q, name) == pytest.approx(1.0, abs=1e-9)
    assert F.variance_map_slope(p.q, p.sigma_w, name) < 1.0
    again = F.point_for(p.sigma_w, sigma_b, name, q0=3.0)  # the independent, iterative solve finds the same q*
    assert again.q == pytest.approx(p.q, rel=1e-7) and again.chi == pytest.approx(1.0, abs=1e-7)


def test_tanh_eoc_curve_rises_with_sigma_b():
    curve = F.eoc_curve("tanh", [0.0, 0.1, 0.2, 0.5, 1.0, 2.0])
    ws, qs = [p.sigma_w for p in curve], [p.q for p in curve]
    assert ws == sorted(ws) and qs == sorted(qs) and ws[0] == 1.0


def test_gelu_and_silu_have_no_attracting_eoc_point_at_small_sigma_b():
    """At σ_b = 0.2 the EoC solution of GELU is a repelling fixed point of the variance: a net started just above
    it blows up, just below it falls to a fixed point in the ordered phase."""
    with pytest.raises(ValueError, match="not attracting"):
        F.eoc_point("gelu", 0.2)
    with pytest.raises(ValueError, match="no point with chi = 1.0 at sigma_b = 0.0"):
        F.eoc_point("silu", 0.0)
    q = 0.5756  # the repelling solution (σ_b, σ_w) = (0.2, 1.547)
    sigma_w = F.eoc_sigma_w(q, "gelu")
    assert F.eoc_sigma_b2(q, "gelu") == pytest.approx(0.04, abs=1e-4)
    assert math.isinf(F.point_for(sigma_w, 0.2, "gelu", q0=1.1 * q).q)
    below = F.point_for(sigma_w, 0.2, "gelu", q0=0.9 * q)
    assert below.q < 0.5 * q and below.phase == "ordered"


def test_ordered_and_chaotic_points_have_the_chi_asked_for():
    eoc = F.eoc_point("tanh", 0.2)
    ordered, chaotic = F.eoc_point("tanh", 0.2, chi=0.8), F.eoc_point("tanh", 0.2, chi=1.5)
    assert ordered.sigma_w < eoc.sigma_w < chaotic.sigma_w
    assert (ordered.phase, chaotic.phase) == ("ordered", "chaotic")
    for p in (ordered, chaotic):
        assert F.chi1(p.sigma_w, p.q, "tanh") == pytest.approx(p.chi, abs=1e-9)
        assert F.point_for(p.sigma_w, 0.2, "tanh").q == pytest.approx(p.q, rel=1e-7)
    assert (round(ordered.sigma_w, 4), round(chaotic.sigma_w, 4)) == (1.0215, 2.3077)  # the claim plans' points


# --- the correlation map and depth scales ------------------------------------------------------------------


def test_correlation_map_of_relu_is_the_arc_cosine_kernel():
    """σ_b = 0, σ_w = √2: f(c) = (√(1 − c²) + (π − arccos c) c) / π (Cho & Saul 2009), at any q."""
    for c in (0.0, 0.5, 0.9):
        exact = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
        assert F.correlation_map(c, 2.0, math.sqrt(2), 0.0, "relu") == pytest.approx(exact, abs=2e-4)


def test_correlation_map_fixes_one_with_slope_chi_and_matches_monte_carlo():
    p = F.eoc_point("tanh", 0.2, chi=1.5)
    assert F.correlation_map(1.0, p.q, p.sigma_w, 0.2, "tanh") == pytest.approx(1.0, abs=1e-10)
    assert F.correlation_map_slope(1.0, p.q, p.sigma_w, "tanh") == pytest.approx(1.5, abs=1e-9)
    assert F.correlation_map(0.3, 1.0, 1.0, 0.0, "identity") == pytest.approx(0.3, abs=1e-12)
    z1, z2 = torch.randn(2, 1_000_000, generator=gen(3), dtype=torch.float64)
    c, root = 0.4, math.sqrt(p.q)
    v = torch.tanh(root * z1) * torch.tanh(root * (c * z1 + math.sqrt(1 - c * c) * z2))
    mc = (0.04 + p.sigma_w**2 * float(v.mean())) / p.q
    assert F.correlation_map(c, p.q, p.sigma_w, 0.2, "tanh") == pytest.approx(
        mc, abs=4 * p.sigma_w**2 * float(v.std()) / 1000 / p.q
    )
    c_star = F.correlation_fixed_point(p.q, p.sigma_w, 0.2, "tanh")
    assert 0.0 < c_star < 1.0
    assert F.correlation_map(c_star, p.q, p.sigma_w, 0.2, "tanh") == pytest.approx(c_star, abs=1e-10)
    assert F.correlation_depth_scale(p) == pytest.approx(
        -1 / math.log(F.correlation_map_slope(c_star, p.q, p.sigma_w, "tanh"))
    )
    assert F.correlation_depth_scale(F.eoc_point("tanh", 0.2, chi=0.8)) == pytest.approx(-1 / math.log(0.8))
    assert math.isinf(F.correlation_depth_scale(F.eoc_point("tanh", 0.2)))


def test_on_the_eoc_correlations_approach_one_polynomially_at_the_papers_rates():
    """Paper Sec. 4: smooth φ on the EoC, 1 − c^l ~ β_q / l; Sec. 3: ReLU, 1 − c^l ~ 9π²/(2 l²).
    The tanh map is iterated with our quadrature; ReLU's with its closed form (the constant is the paper's)."""
    p = F.eoc_point("tanh", 0.2)
    beta = F.eoc_rate(p)
    c = F.correlation_trajectory(p, 0.0, 300)
    assert 300 * (1 - c[300]) == pytest.approx(beta, rel=0.06)
    assert abs(150 * (1 - c[150]) - beta) > abs(300 * (1 - c[300]) - beta)  # l (1 − c^l) settles on β_q
    assert beta == pytest.approx(7.084, abs=1e-3)
    c = 0.0
    for _ in range(3000):
        c = (math.sqrt(max(0.0, 1 - c * c)) + (math.pi - math.acos(c)) * c) / math.pi
    assert 3000**2 * (1 - c) == pytest.approx(F.eoc_rate(F.eoc_point("relu")), rel=0.03)
    assert F.eoc_rate(F.eoc_point("relu")) == pytest.approx(9 * math.pi**2 / 2)


@pytest.mark.parametrize("chi", [0.8, 1.0, 1.5])
def test_random_nets_follow_the_mean_field_correlations(chi):
    """Pairs of inputs through width-512 tanh nets drawn by init_model_ (the first layer already at q*): the measured
    correlation of their pre-activations, averaged over 4 nets x 16 pairs, follows f's iterates layer by layer
    (after 8 layers: 0.90 ordered, 0.64 EoC, 0.22 chaotic)."""
    p = F.eoc_point("tanh", 0.2, chi)
    width, depth, nets, pairs, g = 512, 8, 4, 16, gen(1)
    measured = torch.zeros(depth, dtype=torch.float64)
    norm = math.sqrt((p.q - 0.04) / p.sigma_w**2 * width)
    cos = (0.5 * p.q - 0.04) / (p.q - 0.04)  # so that c¹ = 0.5
    for _ in range(nets):
        layers: list[nn.Module] = [nn.Linear(width, width, dtype=torch.float64)]
        for _ in range(depth - 1):
            layers += [nn.Tanh(), nn.Linear(width, width, dtype=torch.float64)]
        net = nn.Sequential(*layers)
        F.init_model_(net, p.sigma_w, 0.2, generator=g)
        for _ in range(pairs):
            a, b = torch.randn(2, width, generator=g, dtype=torch.float64)
            a, b = a / a.norm(), b - a.dot(b) / a.dot(a) * a
            x = torch.stack([a, cos * a + math.sqrt(1 - cos * cos) * b / b.norm()]) * norm
            measured += torch.tensor(F.measured_correlations(net, x)) / (nets * pairs)
    predicted = torch.tensor(F.correlation_trajectory(p, 0.5, depth - 1), dtype=torch.float64)
    assert (measured - predicted).abs().max() < 0.025


# --- the draw ----------------------------------------------------------------------------------------------


def test_draw_equals_torch_normal_weight_then_bias_bit_for_bit():
    ours, ref = mlp(depth=2), mlp(depth=2)
    F.init_model_(ours, 1.3, 0.2, generator=gen(9))
    g = gen(9)
    for _name, m in F.init_layers(ref):
        torch.nn.init.normal_(m.weight, 0.0, 1.3 / math.sqrt(m.weight.shape[1]), generator=g)
        torch.nn.init.normal_(m.bias, 0.0, 0.2, generator=g)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_draw_statistics_fan_in_and_zero_bias():
    layer = nn.Linear(500, 400)
    F.eoc_normal_(layer.weight, layer.bias, 1.5, 0.3, gen(0))
    assert layer.weight.std().item() == pytest.approx(1.5 / math.sqrt(500), rel=0.01)
    assert layer.bias.std().item() == pytest.approx(0.3, rel=0.1)
    records = F.init_model_(
        CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none")), 1.0, 0.0, generator=gen(0)
    )
    assert [r.shape for r in records][:2] == [(4, 9), (8, 36)]  # conv fan-in = in·k·k
    model = mlp()
    F.init_model_(model, math.sqrt(2), 0.0, generator=gen(0))
    assert all(torch.count_nonzero(m.bias) == 0 for _n, m in F.init_layers(model))
    F.init_model_(mlp(bias=False), 1.0, 0.0, generator=gen(0))
    with pytest.raises(ValueError, match="has no bias but sigma_b"):
        F.init_model_(mlp(bias=False), 1.0, 0.2, generator=gen(0))
    with pytest.raises(ValueError, match="no layer"):
        F.init_model_(nn.Sequential(nn.Tanh()), 1.0, 0.0)


def test_detect_activation():
    for name in ("relu", "tanh", "gelu"):
        assert F.detect_activation(mlp(name)) == name
    assert F.detect_activation(mlp("identity")) == "identity"
    assert F.detect_activation(nn.Sequential(nn.Linear(2, 2), nn.SiLU(), nn.Linear(2, 2), nn.SiLU())) == "silu"
    assert F.detect_activation(nn.Sequential(nn.Linear(2, 2), nn.ELU())) == "elu"
    with pytest.raises(ValueError, match="alpha"):
        F.detect_activation(nn.Sequential(nn.ELU(alpha=0.5)))
    with pytest.raises(ValueError, match="mixes"):
        F.detect_activation(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.ReLU()))
    with pytest.raises(ValueError, match="approximate"):
        F.detect_activation(nn.Sequential(nn.GELU(approximate="tanh")))
    with pytest.raises(ValueError, match="LeakyReLU"):
        F.detect_activation(nn.Sequential(nn.LeakyReLU()))
    with pytest.raises(ValueError, match="TransformerEncoderLayer"):
        F.detect_activation(nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16)))


# --- config and hook ---------------------------------------------------------------------------------------


def _ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(generator=lambda name: gen(len(name)), is_main_process=True, run_dir=tmp_path)


@pytest.mark.parametrize(
    "activation, sigma_b, sigma_w", [("tanh", 0.2, 1.3041), ("relu", 0.0, 1.4142), ("gelu", 0.5, 1.3999)]
)
def test_hook_resolves_the_eoc_point_of_the_models_activation(tmp_path, activation, sigma_b, sigma_w):
    hook = EocInit(EocInitConfig())
    model = mlp(activation)
    hook.init(model, _ctx(tmp_path))
    report = json.loads((tmp_path / "eoc-init.json").read_text())
    assert (report["activation"], report["sigma_b"], round(report["sigma_w"], 4)) == (activation, sigma_b, sigma_w)
    assert report["phase"] == "edge of chaos" and report["depth_scale_xi_c"] == "inf"
    assert [layer["name"] for layer in report["layers"]] == [
        "stem.0",
        "blocks.0.linear1",
        "blocks.1.linear1",
        "blocks.2.linear1",
        "head",
    ]


def test_hook_baselines_and_errors(tmp_path):
    hook = EocInit(EocInitConfig(chi=0.8))
    hook.init(mlp(), _ctx(tmp_path))
    assert hook.report["phase"] == "ordered" and hook.report["depth_scale_xi_c"] == pytest.approx(4.48, abs=0.01)
    hook = EocInit(EocInitConfig(sigma_w=2.5))
    assert hook.resolve(mlp()).phase == "chaotic"
    assert EocInit(EocInitConfig(activation="tanh", sigma_b=0.0)).resolve(mlp("relu")).sigma_w == 1.0
    with pytest.raises(PluginError, match="eoc-init: relu with sigma_b = 0.2"):
        EocInit(EocInitConfig(sigma_b=0.2)).init(mlp("relu"), _ctx(tmp_path))
    with pytest.raises(ValueError, match="set only one"):
        EocInitConfig(chi=0.8, sigma_w=1.0)
    for bad in ({"chi": 0.0}, {"sigma_b": -0.1}, {"sigma_w": float("inf")}, {"layers": []}, {"activation": "sigmoid"}):
        with pytest.raises((ValueError, TypeError)):
            EocInitConfig(**bad)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert "eoc-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
