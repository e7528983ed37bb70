"""orthogonal-init: bit-exact parity with torch.nn.init, the invariants both papers rest on, the hook, example.toml.

The reference implementation is PyTorch's ``torch.nn.init.orthogonal_`` (which cites
Saxe et al.) for the method and ``torch.nn.init.normal_`` for the Gaussian baseline; they
run on the CPU, so the parity tests compare tensors with ``torch.equal``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_orthogonal_init import OrthogonalInitConfig
from paperkit_orthogonal_init.functional import (
    CRITICAL_GAIN,
    critical_gain,
    detect_nonlinearity,
    gaussian_,
    init_layers,
    init_model_,
    orthogonal_,
)
from paperkit_orthogonal_init.hooks import OrthogonalInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
SHAPES = [(16, 16), (8, 32), (32, 8), (1, 5), (5, 1), (6, 3, 3, 3), (4, 12, 1, 1), (7, 2, 5), (3, 2, 2, 2, 2)]
GAINS = [1.0, 5.0 / 3.0, math.sqrt(2.0), 0.5]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(depth: int = 3, width: int = 16, activation: str = "tanh", bias: bool = True) -> MLP:
    config = SimpleNamespace(depth=depth, width=width, activation=activation, norm="none", residual=False, dropout=0.0, bias=bias)
    return MLP(64, 10, config)


def cnn() -> CNN:
    return CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none"))


# --- parity with torch.nn.init ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonal_equals_torch_orthogonal_bit_for_bit(shape, dtype):
    for gain in GAINS:
        ours, ref = torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)
        orthogonal_(ours, gain, gen(7))
        torch.nn.init.orthogonal_(ref, gain=gain, generator=gen(7))
        assert torch.equal(ours, ref), (shape, gain)


def test_consecutive_draws_leave_the_generator_where_torch_leaves_it():
    ours_g, ref_g = gen(3), gen(3)
    for shape in SHAPES:
        ours, ref = torch.empty(shape), torch.empty(shape)
        orthogonal_(ours, 1.0, ours_g)
        torch.nn.init.orthogonal_(ref, generator=ref_g)
        assert torch.equal(ours, ref), shape
    assert torch.equal(ours_g.get_state(), ref_g.get_state())


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_equals_torch_normal_with_std_gain_over_sqrt_fan_in(shape):
    fan_in = math.prod(shape[1:])
    for gain in GAINS:
        ours, ref = torch.empty(shape), torch.empty(shape)
        gaussian_(ours, gain, gen(5))
        torch.nn.init.normal_(ref, 0.0, gain / math.sqrt(fan_in), generator=gen(5))
        assert torch.equal(ours, ref), (shape, gain)
    # gain 1 is torch's fan-in Kaiming normal for a linear layer (LeCun normal)
    ours, ref = torch.empty(shape), torch.empty(shape)
    gaussian_(ours, 1.0, gen(5))
    torch.nn.init.kaiming_normal_(ref, mode="fan_in", nonlinearity="linear", generator=gen(5))
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("distribution", ["orthogonal", "gaussian"])
def test_whole_model_equals_torch_layer_by_layer_in_module_order(distribution):
    ours, ref = cnn(), cnn()
    init_model_(ours, distribution=distribution, gain=1.5, generator=gen(11))
    g = gen(11)
    for _name, module in init_layers(ref):
        if distribution == "orthogonal":
            torch.nn.init.orthogonal_(module.weight, gain=1.5, generator=g)
        else:
            torch.nn.init.normal_(module.weight, 0.0, 1.5 / math.sqrt(module.weight[0].numel()), generator=g)
        nn.init.zeros_(module.bias)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_weights_on_another_dtype_are_drawn_in_float32_and_cast():
    w = torch.empty(8, 8, dtype=torch.bfloat16)
    ref = torch.empty(8, 8)
    orthogonal_(w, 1.0, gen(2))
    torch.nn.init.orthogonal_(ref, generator=gen(2))
    assert torch.equal(w, ref.to(torch.bfloat16))


# --- invariants ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonal_has_orthonormal_rows_or_columns_times_the_gain(shape):
    w = orthogonal_(torch.empty(shape, dtype=torch.float64), 1.7, gen(0))
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    assert torch.allclose(gram, 1.7**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-12)


def test_orthogonal_is_haar_its_entries_have_mean_zero_and_variance_one_over_n():
    """Haar measure (the sign fix Q·sign(diag R)): E[Q] = 0 and E[Q_ij²] = 1/n. Without the fix the diagonal is biased."""
    n, draws = 4, 3000
    g = gen(0)
    qs = torch.stack([orthogonal_(torch.empty(n, n, dtype=torch.float64), 1.0, g) for _ in range(draws)])
    assert qs.mean(0).abs().max() < 4.0 / math.sqrt(n * draws)
    assert torch.allclose((qs**2).mean(0), torch.full((n, n), 1.0 / n, dtype=torch.float64), atol=0.03)


def test_gaussian_has_variance_gain_squared_over_fan_in():
    w = gaussian_(torch.empty(400, 50, 3, 3), 2.0, gen(0))
    assert w.mean().abs() < 0.002
    assert w.var().item() == pytest.approx(4.0 / 450, rel=0.01)


def test_same_per_entry_variance_for_square_weights_is_the_fair_baseline():
    """Saxe's comparison: orthogonal and Gaussian weights with the same variance per entry (g²/N)."""
    n, g = 64, gen(0)
    orth = torch.stack([orthogonal_(torch.empty(n, n), 1.3, g) for _ in range(50)])
    gauss = torch.stack([gaussian_(torch.empty(n, n), 1.3, g) for _ in range(50)])
    assert (orth**2).mean().item() == pytest.approx(1.3**2 / n, rel=1e-5)  # exact: ||Q||_F² = n
    assert (gauss**2).mean().item() == pytest.approx(1.3**2 / n, rel=0.02)


def _linear_net(depth: int, n: int, distribution: str, g: torch.Generator) -> torch.Tensor:
    """The end-to-end matrix of a deep linear net, W_L ... W_1."""
    total = torch.eye(n, dtype=torch.float64)
    draw = orthogonal_ if distribution == "orthogonal" else gaussian_
    for _ in range(depth):
        total = draw(torch.empty(n, n, dtype=torch.float64), 1.0, g) @ total
    return total


def test_deep_linear_net_from_orthogonal_weights_is_an_isometry_at_any_depth():
    """Saxe et al.: every singular value of the input-output map is 1 (dynamical isometry); with scaled
    Gaussian weights of the same variance the singular values spread further with every layer."""
    n, g = 32, gen(0)
    for depth in (1, 8, 32):
        s = torch.linalg.svdvals(_linear_net(depth, n, "orthogonal", g))
        assert torch.allclose(s, torch.ones_like(s), atol=1e-10), depth
    spread = [torch.linalg.svdvals(_linear_net(d, n, "gaussian", g)).log().std().item() for d in (1, 8, 32)]
    assert spread[0] < spread[1] < spread[2]
    assert spread[2] > 3.0


def _mean_square_fluctuation(distribution: str, activation, n: int = 16, depth: int = 24, draws: int = 200) -> torch.Tensor:
    """Var/mean² over initializations of G = |z^ℓ|²/n at each layer ℓ for one input: the normalized
    four-point vertex, the leading 1/width fluctuation that Day et al. follow with depth."""
    g = gen(0)
    x = torch.randn(n, generator=gen(1))
    x = x * math.sqrt(n) / x.norm()
    draw = orthogonal_ if distribution == "orthogonal" else gaussian_
    w = torch.empty(n, n)
    out = torch.zeros(draws, depth)
    for d in range(draws):
        h = x
        for layer in range(depth):
            z = draw(w, 1.0, g) @ h
            out[d, layer] = z.dot(z) / n
            h = activation(z)
    return out.var(0) / out.mean(0) ** 2


def test_critical_tanh_fluctuations_grow_with_depth_for_gaussian_and_not_for_orthogonal():
    """Day et al. (abstract): at criticality (σ_w = 1, σ_b = 0) IID Gaussian fluctuations grow
    linearly with depth; with orthogonal weights they are independent of depth (and much smaller)."""
    gauss = _mean_square_fluctuation("gaussian", torch.tanh)
    orth = _mean_square_fluctuation("orthogonal", torch.tanh)
    assert gauss[23] > 4 * gauss[2]
    assert orth[5:].max() < 0.05 and orth[23] <= orth[5]
    assert orth[23] < 0.05 * gauss[23]


# --- critical gain and options --------------------------------------------------------------------


def test_critical_gains():
    assert CRITICAL_GAIN == {"linear": 1.0, "tanh": 1.0, "relu": math.sqrt(2.0)}
    assert critical_gain("tanh") != torch.nn.init.calculate_gain("tanh") == 5.0 / 3.0  # torch's is not critical
    assert critical_gain("relu") == torch.nn.init.calculate_gain("relu")
    assert critical_gain("linear") == torch.nn.init.calculate_gain("linear")
    with pytest.raises(ValueError, match="no critical gain"):
        critical_gain("gelu")  # type: ignore[arg-type]


def test_detect_nonlinearity():
    assert detect_nonlinearity(mlp(activation="tanh")) == "tanh"
    assert detect_nonlinearity(mlp(activation="relu")) == "relu"
    assert detect_nonlinearity(mlp(activation="identity")) == "linear"
    assert detect_nonlinearity(cnn()) == "relu"
    with pytest.raises(ValueError, match="GELU"):
        detect_nonlinearity(mlp(activation="gelu"))
    with pytest.raises(ValueError, match="mixes"):
        detect_nonlinearity(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2), nn.ReLU()))


def test_zero_bias_and_keep_bias():
    model = mlp()
    init_model_(model, generator=gen(0))
    assert all(torch.count_nonzero(m.bias) == 0 for _n, m in init_layers(model))
    model = mlp()
    before = {n: m.bias.clone() for n, m in init_layers(model)}
    init_model_(model, zero_bias=False, generator=gen(0))
    assert all(torch.equal(m.bias, before[n]) for n, m in init_layers(model))


def test_layer_kinds_select_what_is_redrawn():
    model = cnn()
    conv_before = {n: m.weight.clone() for n, m in init_layers(model, ["conv"])}
    records = init_model_(model, layers=["linear"], generator=gen(0))
    assert [r.name for r in records] == [n for n, _ in init_layers(model, ["linear"])]
    assert all(torch.equal(m.weight, conv_before[n]) for n, m in init_layers(model, ["conv"]))
    conv = init_model_(cnn(), layers=["conv"], generator=gen(0))
    assert [r.shape for r in conv] == [(4, 9), (8, 36)]  # (out, in·k·k), torch's flattening
    with pytest.raises(ValueError, match="unknown layer kind"):
        list(init_layers(model, ["embedding"]))
    with pytest.raises(ValueError, match="no layer"):
        init_model_(nn.Sequential(nn.Tanh()))


def test_rejects_vectors_and_unknown_distributions():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthogonal_(torch.empty(5))
    with pytest.raises(ValueError, match="distribution"):
        init_model_(mlp(), distribution="uniform")  # type: ignore[arg-type]


# --- the hook ------------------------------------------------------------------------------------


def _ctx(tmp_path: Path, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(generator=lambda name: gen(seed + len(name)), is_main_process=True, run_dir=tmp_path)


def test_hook_resolves_the_critical_gain_from_the_model_and_records_it(tmp_path):
    hook = OrthogonalInit(OrthogonalInitConfig())
    model = mlp(depth=2, activation="relu")
    hook.init(model, _ctx(tmp_path))
    report = json.loads((tmp_path / "orthogonal-init.json").read_text())
    assert report["gain"] == math.sqrt(2.0) and report["critical_for"] == "relu"
    assert [layer["name"] for layer in report["layers"]] == ["stem.0", "blocks.0.linear1", "blocks.1.linear1", "head"]
    square = model.blocks[0].linear1.weight.detach().double()
    assert torch.allclose(square @ square.T, 2.0 * torch.eye(16, dtype=torch.float64), atol=1e-5)


def test_hook_explicit_gain_and_nonlinearity(tmp_path):
    hook = OrthogonalInit(OrthogonalInitConfig(gain=5.0 / 3.0))
    assert hook.resolve_gain(mlp()) == (5.0 / 3.0, None)
    hook = OrthogonalInit(OrthogonalInitConfig(nonlinearity="relu"))
    assert hook.resolve_gain(mlp(activation="tanh")) == (math.sqrt(2.0), "relu")
    with pytest.raises(ValueError, match="set only one"):
        OrthogonalInitConfig(gain=1.0, nonlinearity="tanh")
    with pytest.raises(PluginError, match="orthogonal-init: .*GELU"):
        OrthogonalInit(OrthogonalInitConfig()).init(mlp(activation="gelu"), _ctx(tmp_path))


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert "orthogonal-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
