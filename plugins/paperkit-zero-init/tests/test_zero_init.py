"""ZerO: Hadamard parity with scipy (the matrix the authors' code uses), the
exact weights of Algorithms 1 and 2, the residual rule, determinism across
seeds bit for bit, and an end-to-end run of example.toml."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_zero_init.functional import (
    hadamard,
    hadamard_scale,
    partial_identity,
    zero_conv_kernel,
    zero_init_,
    zero_matrix,
)
from torch import nn

from paperkit import CNN, MLP

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def mlp(depth: int = 8, width: int = 32, residual: bool = True, activation: str = "relu") -> MLP:
    config = SimpleNamespace(depth=depth, width=width, activation=activation, norm="none", residual=residual, dropout=0.0, bias=True)
    return MLP(64, 10, config)


# -- Hadamard matrices -------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 256])
def test_hadamard_rows_are_orthogonal(n):
    h = hadamard(n)
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * torch.eye(n))


@pytest.mark.parametrize("n", [1, 2, 16, 128])
def test_hadamard_equals_scipy(n):
    scipy_linalg = importlib.import_module("scipy.linalg")
    assert torch.equal(hadamard(n), torch.tensor(scipy_linalg.hadamard(n), dtype=torch.float32))


@pytest.mark.parametrize("n", [0, 3, 12, 100])
def test_hadamard_needs_a_power_of_two(n):
    with pytest.raises(ValueError, match="power of 2"):
        hadamard(n)


# -- Algorithm 1 ---------------------------------------------------------------------------
def test_square_layers_are_exact_identities():
    assert torch.equal(zero_matrix(16, 16), torch.eye(16))


def test_narrowing_layers_are_partial_identities():
    w = zero_matrix(10, 64)
    assert torch.equal(w, partial_identity(10, 64))
    assert torch.equal(w[:, :10], torch.eye(10)) and torch.count_nonzero(w[:, 10:]) == 0


@pytest.mark.parametrize("out_features, in_features", [(128, 64), (100, 64), (32, 1), (5, 3)])
def test_widening_layers_are_scaled_hadamard_blocks(out_features, in_features):
    """P > Q: W = c · I*(P×2^m) H_m I*(2^m×Q), m = ⌈log2 P⌉, c = 2^(-(m-1)/2) (Algorithm 1)."""
    m = math.ceil(math.log2(out_features))
    w = zero_matrix(out_features, in_features).double()
    c = 2.0 ** (-(m - 1) / 2)
    assert torch.allclose(w, c * hadamard(2**m, torch.float64)[:out_features, :in_features], atol=0, rtol=1e-7)
    assert hadamard_scale(m) == c


def test_paper_and_notebook_normalizations_differ_by_sqrt_two():
    paper, notebook = zero_matrix(128, 64, "paper"), zero_matrix(128, 64, "orthonormal")
    assert torch.allclose(paper, math.sqrt(2.0) * notebook)
    # the notebook's factor makes c·H orthonormal: the columns of W are orthonormal
    assert torch.allclose(notebook.T @ notebook, torch.eye(64), atol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        hadamard_scale(3, "random")  # type: ignore[arg-type]


def test_hadamard_breaks_the_rank_bottleneck_of_a_partial_identity():
    """The point of the Hadamard (Theorem 1): a widening layer must not leave output units dead."""
    assert torch.count_nonzero(partial_identity(128, 64).abs().sum(1)) == 64
    assert torch.count_nonzero(zero_matrix(128, 64).abs().sum(1)) == 128


# -- Algorithm 2 ---------------------------------------------------------------------------
@pytest.mark.parametrize("out_c, in_c", [(8, 8), (4, 8), (16, 3)])
def test_conv_kernels_hold_algorithm_1_at_the_centre(out_c, in_c):
    kernel = zero_conv_kernel(out_c, in_c, (3, 3))
    assert torch.equal(kernel[:, :, 1, 1], zero_matrix(out_c, in_c))
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    assert torch.count_nonzero(kernel[:, :, ~centre]) == 0


def test_square_conv_is_the_identity_map():
    conv = nn.Conv2d(6, 6, 3, padding=1)
    zero_init_(conv)
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(conv(x), x)


def test_even_kernels_and_grouped_convs_are_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        zero_conv_kernel(4, 4, (2, 2))
    with pytest.raises(ValueError, match="groups"):
        zero_init_(nn.Conv2d(4, 4, 3, groups=2))


# -- whole networks --------------------------------------------------------------------------
def test_mlp_layers_get_the_rule_for_their_shape_and_residual_ends_are_zero():
    model = mlp(depth=3, width=128)
    done = zero_init_(model)
    assert done["stem.0"] == "hadamard 128x64"
    assert done["head"] == "partial identity 10x128"
    for block in model.blocks:
        assert torch.equal(block.linear1.weight, torch.eye(128))
        assert torch.count_nonzero(block.linear2.weight) == 0
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Linear))


def test_every_residual_block_starts_as_the_identity():
    model = mlp(depth=6)
    zero_init_(model)
    h = torch.randn(16, 32)
    for block in model.blocks:
        assert torch.equal(block(h), h)


def test_weights_hold_only_zeros_ones_and_the_hadamard_factor():
    model = mlp(depth=4, width=128)
    zero_init_(model)
    c = hadamard_scale(7)
    allowed = torch.tensor([0.0, 1.0, c, -c])
    for name, p in model.named_parameters():
        assert torch.isin(p.detach(), allowed).all(), name


def test_initialization_is_identical_for_every_seed_bit_for_bit():
    states = []
    for seed in (0, 1, 12345):
        torch.manual_seed(seed)
        model = mlp(depth=8)
        zero_init_(model)
        states.append(model.state_dict())
    for other in states[1:]:
        assert states[0].keys() == other.keys()
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_deep_residual_net_computes_a_seed_independent_function():
    """The ZerO net is the same function whatever the seed; here it is exactly head(relu(stem x))."""
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(7))
    outputs = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = mlp(depth=8, width=32)
        zero_init_(model)
        with torch.no_grad():
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    with torch.no_grad():
        expected = torch.relu(x @ zero_matrix(32, 64).T)[:, :10]
    assert torch.equal(outputs[0], expected)


def test_cnn_is_covered():
    model = CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="batch"))
    done = zero_init_(model)
    assert done["conv.0"] == "hadamard 4x1 at kernel centre"
    assert done["conv.3"] == "hadamard 8x4 at kernel centre"
    assert done["conv.1"] == "norm defaults"
    assert done["fc.1"] == "partial identity 16x128"


def test_modules_without_a_rule_are_an_error_unless_not_strict():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"no rule for 0 \(Embedding\)"):
        zero_init_(model)
    done = zero_init_(model, strict=False)
    assert torch.equal(model[1].weight, torch.eye(4)) and "0" not in done


def test_zero_layers_patterns_choose_the_residual_ends():
    model = mlp(depth=2, width=16)
    zero_init_(model, zero_layers=["head"])
    assert torch.count_nonzero(model.head.weight) == 0
    assert torch.equal(model.blocks[0].linear2.weight, torch.eye(16))


def test_zero_layers_patterns_that_name_no_layer_are_a_one_line_error():
    from paperkit_zero_init import ZerOConfig
    from paperkit_zero_init.hooks import ZerO

    from paperkit import PluginError

    with pytest.raises(PluginError, match=r"zero_layers pattern\(s\) 'blocks\.\*\.linear3' match no Linear"):
        ZerO(ZerOConfig(zero_layers=["blocks.*.linear3"])).init(mlp(depth=2))
    plain = mlp(depth=2, residual=False)  # the default names residual ends; a plain mlp has none
    ZerO(ZerOConfig()).init(plain)
    assert torch.equal(plain.blocks[1].linear1.weight, torch.eye(32))


def test_a_zero_init_residual_mlp_learns():
    """Gradients reach every layer after the first step even though the residual ends start at 0."""
    torch.manual_seed(0)
    model = mlp(depth=4, width=32)
    zero_init_(model)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    for block in model.blocks:
        assert torch.count_nonzero(block.linear2.weight) > 0
        assert not torch.equal(block.linear1.weight, torch.eye(32))


def test_example_plan_runs_end_to_end_and_identically_for_two_seeds(run_plan):
    text = EXAMPLE.read_text()
    results, manifest = run_plan(text, seed=0, overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert manifest["methods"][0] == "zero-init"
    initial = run_plan(text, seed=0, overrides=("run.train=false",))[0]["final"]
    assert initial == run_plan(text, seed=1, overrides=("run.train=false",))[0]["final"]
