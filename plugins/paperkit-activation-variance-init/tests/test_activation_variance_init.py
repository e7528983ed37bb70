"""activation-variance-init: the paper's formula and its numbers, g(0) and g'(0) by autograd against closed forms,
the refusals, the draw against torch.nn.init bit for bit and its statistics, the forward signal through deep random
nets, the hook and example.toml.

The paper ships no code. Its formula is pinned to the paper's own numbers (sigmoid v ≈ 3.6/√N, ReLU 2/N, tanh 1/N;
third-party initializers citing the paper ship 3.6² = 12.96, 2 and 1) and to closed forms of g(0), g'(0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_activation_variance_init import ActivationVarianceInitConfig
from paperkit_activation_variance_init import functional as F
from paperkit_activation_variance_init.hooks import ActivationVarianceInit
from torch import nn

from paperkit import CNN, MLP, PlanError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(activation: str = "tanh", depth: int = 3, width: int = 16, bias: bool = True) -> MLP:
    config = SimpleNamespace(
        depth=depth, width=width, activation=activation, norm="none", residual=False, dropout=0.0, bias=bias,
        maxout_pieces=2, sine_w0=30.0,
    )
    return MLP(64, 10, config)


def deep(activation: type[nn.Module], depth: int, width: int = 512) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers)


# --- the formula and the paper's numbers ------------------------------------------------------------------


def test_the_papers_numbers():
    """Sigmoid: g(0) = 1/2, g'(0) = 1/4 -> N v² = 1/(1/16 · 5/4) = 12.8, v = 3.578/√N ≈ the paper's 3.6/√N;
    tanh and the identity: 1/N (Xavier's value); ReLU: the paper's separate 2/N."""
    sigmoid = F.resolve(nn.Sigmoid(), "sigmoid")
    assert (sigmoid.g0, sigmoid.g1, sigmoid.rule) == (0.5, 0.25, "general")
    assert sigmoid.n_var == pytest.approx(12.8, rel=1e-12)
    assert sigmoid.sigma_w == pytest.approx(3.6, abs=0.025)  # 3.5777: the paper rounds to 3.6
    assert sigmoid.n_var == pytest.approx(3.6**2, rel=0.013)  # the 12.96 that third-party ports ship
    assert F.resolve(nn.Tanh()).n_var == 1.0 and F.resolve(nn.Identity()).n_var == 1.0
    relu = F.resolve(nn.ReLU())
    assert (relu.rule, relu.n_var) == ("relu", 2.0)
    assert F.kumar_variance(0.0, 1.0) == 1.0 and F.kumar_variance(0.5, 0.25) == pytest.approx(12.8)
    assert F.kumar_variance(1.0, 2.0) == pytest.approx(1 / 8)  # 1/(4·2)


@pytest.mark.parametrize(
    "module, g0, g1",
    [
        (nn.Sigmoid(), 0.5, 0.25),
        (nn.Tanh(), 0.0, 1.0),
        (nn.GELU(), 0.0, 0.5),  # Φ(0) + 0·φ(0)
        (nn.SiLU(), 0.0, 0.5),
        (nn.Softplus(), math.log(2.0), 0.5),
        (nn.ELU(), 0.0, 1.0),
        (nn.Hardtanh(), 0.0, 1.0),
    ],
)
def test_autograd_values_at_zero_equal_the_closed_forms(module, g0, g1):
    r = F.resolve(module)
    assert (r.g0, r.g1) == (pytest.approx(g0, abs=1e-15), pytest.approx(g1, abs=1e-15))
    assert r.n_var == pytest.approx(1 / (g1**2 * (1 + g0**2)), rel=1e-12)


def test_sine_and_the_models_own_activations():
    """sin(ω0 x): g(0) = 0, g'(0) = ω0 -> N v² = 1/ω0²; read from the mlp's modules by autograd."""
    for activation, n_var in (("relu", 2.0), ("tanh", 1.0), ("gelu", 4.0), ("identity", 1.0), ("sine", 1 / 900)):
        name, fn = F.detect_activation(mlp(activation))
        assert F.resolve(fn, name).n_var == pytest.approx(n_var, rel=1e-12), activation


def test_linearized_map_keeps_the_variance_or_has_the_fixed_point_one_over_g1_squared():
    for g0, g1 in ((0.0, 1.0), (0.0, 30.0), (0.5, 0.25), (math.log(2), 0.5)):
        n_var = F.kumar_variance(g0, g1)
        if g0 == 0.0:
            assert F.linearized_variance_map(0.37, g0, g1, n_var) == pytest.approx(0.37, rel=1e-12)
        else:
            q = 1 / g1**2
            assert F.linearized_variance_map(q, g0, g1, n_var) == pytest.approx(q, rel=1e-12)


# --- refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation, match",
    [("square", r"g'\(0\) = 0"), ("maxout", "not a pointwise function.*maxout-init")],
)
def test_the_mlps_activations_the_formula_does_not_cover_are_plan_errors(tmp_path, activation, match):
    with pytest.raises(PlanError, match=match) as info:
        ActivationVarianceInit(ActivationVarianceInitConfig()).init(mlp(activation), _ctx(tmp_path))
    assert "\n" not in str(info.value) and "[init] activation-variance-init activation" in str(info.value)


@pytest.mark.parametrize(
    "module", [nn.LeakyReLU(), nn.SELU(), nn.ELU(alpha=0.5), nn.PReLU(), nn.ReLU6(), nn.Softmax(dim=-1)]
)
def test_kinks_other_than_relus_and_non_pointwise_functions_are_refused(module):
    with pytest.raises(F.UnsupportedActivation, match="not differentiable at 0 and is not ReLU|not a pointwise"):
        F.resolve(module, repr(module))


def test_kink_and_relu_checks():
    assert F.kink_at_zero(torch.relu) and F.is_relu(torch.relu) and F.is_relu(nn.ReLU())
    assert not F.kink_at_zero(torch.tanh) and not F.kink_at_zero(lambda x: x * x) and not F.is_relu(nn.ReLU6())
    assert F.is_pointwise(torch.tanh) and not F.is_pointwise(nn.Softmax(dim=-1))


def test_detect_activation():
    assert F.detect_activation(mlp("tanh"))[0] == "Tanh()"
    assert F.detect_activation(nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.LayerNorm(2)))[0] == "identity"
    assert F.detect_activation(CNN((1, 8, 8), 10, SimpleNamespace(channels=2, width=8, norm="batch")))[0] == "ReLU()"
    with pytest.raises(F.UnsupportedActivation, match="mixes"):
        F.detect_activation(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.Sigmoid()))
    with pytest.raises(F.UnsupportedActivation, match="TransformerEncoderLayer"):
        F.detect_activation(nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16)))


# --- the draw ----------------------------------------------------------------------------------------------


def test_draw_equals_torch_normal_bit_for_bit_with_zero_biases():
    ours, ref = mlp("relu", depth=2), mlp("relu", depth=2)
    records = F.init_model_(ours, 2.0, generator=gen(9))
    g = gen(9)
    for _name, m in F.init_layers(ref):
        torch.nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.weight.shape[1]), generator=g)
        m.bias.data.zero_()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r.std for r in records] == [math.sqrt(2 / 64), *[math.sqrt(2 / 16)] * 3]


def test_drawn_weights_have_the_formulas_std():
    for module, n_var in ((nn.Sigmoid(), 12.8), (nn.Tanh(), 1.0), (nn.ReLU(), 2.0)):
        layer = nn.Linear(500, 400)
        F.kumar_normal_(layer.weight, F.resolve(module).n_var, gen(0))
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=4 * math.sqrt(n_var / 500) / 447)
        assert layer.weight.std().item() == pytest.approx(math.sqrt(n_var / 500), rel=0.005)
    records = F.init_model_(CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none")), 2.0)
    assert [r.shape for r in records][:2] == [(4, 9), (8, 36)]  # conv fan-in = in·k·k
    model = mlp(bias=True)
    before = [m.bias.clone() for _n, m in F.init_layers(model)]
    F.init_model_(model, 1.0, zero_bias=False, generator=gen(0))
    assert all(torch.equal(b, m.bias) for b, (_n, m) in zip(before, F.init_layers(model)))
    with pytest.raises(ValueError, match="no layer"):
        F.init_model_(nn.Sequential(nn.Tanh()), 1.0)


# --- the forward signal through deep random nets -----------------------------------------------------------


def test_forward_variance_is_kept_across_depth_and_lost_with_an_ill_scaled_variance():
    """Width 512, 20 layers, unit-variance inputs, zero biases. The paper's variance keeps the pre-activation second
    moment: exactly for the identity and ReLU (up to finite-width drift), polynomially for tanh (q_l ≈ 1/(2l): the
    linearization is exact only at 0), at a fixed point for the sigmoid; an ill-scaled variance loses it exponentially
    (Xavier's 1/N halves it at every ReLU layer; 1/(4N) divides a tanh net's by 4)."""
    x = torch.randn(256, 512, generator=gen(1))

    def moments(activation: type[nn.Module], n_var: float) -> list[float]:
        torch.manual_seed(0)
        net = deep(activation, 20)
        F.init_model_(net, n_var, generator=gen(2))
        return F.forward_second_moments(net, x)

    identity = moments(nn.Identity, F.resolve(nn.Identity()).n_var)
    assert max(abs(math.log(q)) for q in identity) < 0.1
    relu, xavier = moments(nn.ReLU, F.resolve(nn.ReLU()).n_var), moments(nn.ReLU, 1.0)
    assert max(abs(math.log(q / relu[0])) for q in relu) < math.log(3.0)
    assert xavier[-1] / xavier[0] == pytest.approx(2.0**-19, rel=1.0)  # halved at each of 19 ReLU layers
    tanh, small = moments(nn.Tanh, F.resolve(nn.Tanh()).n_var), moments(nn.Tanh, 0.25)
    assert 20 * tanh[-1] == pytest.approx(0.5, rel=0.25)  # q_l ~ 1/(2l)
    assert small[-1] < 1e-10
    sigmoid = moments(nn.Sigmoid, F.resolve(nn.Sigmoid()).n_var)
    assert all(3.0 < q < 6.0 for q in sigmoid[5:])  # a fixed point near 4.5 (the linearization's 1/g'(0)² = 16)


def test_gelu_variance_grows_with_the_formula():
    """GELU's g'(0) = 1/2 gives 4/N, but GELU behaves like ReLU (2/N) for large inputs: the variance of a deep GELU net
    drawn with the formula grows from layer to layer (a limit of the linearization, reported in the card)."""
    torch.manual_seed(0)
    net = deep(nn.GELU, 10)
    F.init_model_(net, F.resolve(nn.GELU()).n_var, generator=gen(2))
    q = F.forward_second_moments(net, torch.randn(256, 512, generator=gen(1)))
    assert all(b > a for a, b in zip(q, q[1:])) and q[-1] > 100 * q[0]  # ×2 per layer at large q (2148 from 4.0)


# --- config and hook ---------------------------------------------------------------------------------------


def _ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        generator=lambda name: gen(len(name)), is_main_process=True, run_dir=tmp_path,
        plan=SimpleNamespace(path="plan.toml"),
    )


@pytest.mark.parametrize("activation, n_var, rule", [("tanh", 1.0, "general"), ("relu", 2.0, "relu")])
def test_hook_reads_the_models_activation_and_writes_the_report(tmp_path, activation, n_var, rule):
    hook = ActivationVarianceInit(ActivationVarianceInitConfig())
    model = mlp(activation)
    hook.init(model, _ctx(tmp_path))
    report = json.loads((tmp_path / "activation-variance-init.json").read_text())
    assert (report["n_var"], report["rule"]) == (n_var, rule)
    assert [layer["name"] for layer in report["layers"]] == [
        "stem.0", "blocks.0.linear1", "blocks.1.linear1", "blocks.2.linear1", "head",
    ]
    assert all(torch.count_nonzero(m.bias) == 0 for _n, m in F.init_layers(model))
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(n_var / 16), rel=0.3)


def test_hook_options_and_config_errors(tmp_path):
    assert ActivationVarianceInit(ActivationVarianceInitConfig(sigma_w=1.0)).resolve(mlp("relu")).n_var == 1.0
    hook = ActivationVarianceInit(ActivationVarianceInitConfig(activation="sigmoid"))
    hook.init(mlp("relu"), _ctx(tmp_path))
    assert hook.report["n_var"] == pytest.approx(12.8) and hook.report["g0"] == 0.5
    with pytest.raises(ValueError, match="set only one"):
        ActivationVarianceInitConfig(activation="tanh", sigma_w=1.0)
    for bad in ({"sigma_w": 0.0}, {"sigma_w": float("inf")}, {"layers": []}, {"layers": ["rnn"]}, {"activation": "x"}):
        with pytest.raises((ValueError, TypeError)):
            ActivationVarianceInitConfig(**bad)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert "activation-variance-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
