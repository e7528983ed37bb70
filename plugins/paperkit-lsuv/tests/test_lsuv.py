"""LSUV: invariants of Algorithm 1 and an end-to-end run of example.toml.

No reference implementation is installable (the authors' code is a Caffe
script and a PyTorch port driven by module-level globals), so the tests pin the
algorithm's defining properties instead: orthonormal pre-initialization, unit
output variance of every conv/linear layer on the batch, biases untouched by
the variance loop, the T_max cap, and layer-sequential order.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_lsuv.functional import (
    LAYER_TYPES,
    T_MAX,
    TOL_VAR,
    lsuv_init,
    lsuv_layers,
    orthonormal_,
    output_variance,
)
from torch import nn

from paperkit import CNN, MLP

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def mlp(depth: int = 6, width: int = 32, activation: str = "tanh", residual: bool = False) -> MLP:
    config = SimpleNamespace(depth=depth, width=width, activation=activation, norm="none", residual=residual, dropout=0.0, bias=True)
    return MLP(64, 10, config)


def cnn() -> CNN:
    return CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none"))


def batch(n: int = 64, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def is_orthonormal(w: torch.Tensor) -> bool:
    """Orthonormal rows (wide or square) or orthonormal columns (tall) of w viewed as out × rest."""
    m = w.reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (8, 32), (32, 8), (6, 3, 3, 3), (4, 12, 1, 1)])
def test_orthonormal_pre_init_has_orthonormal_rows_or_columns(shape):
    w = torch.empty(shape)
    orthonormal_(w, torch.Generator().manual_seed(0))
    assert is_orthonormal(w)


def test_orthonormal_is_reproducible_from_a_generator_and_differs_between_seeds():
    a, b, c = (torch.empty(8, 8) for _ in range(3))
    orthonormal_(a, torch.Generator().manual_seed(1))
    orthonormal_(b, torch.Generator().manual_seed(1))
    orthonormal_(c, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_orthonormal_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthonormal_(torch.empty(5))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_every_layer_output_has_unit_variance_within_tol(activation):
    torch.manual_seed(0)
    model, x = mlp(activation=activation), batch()
    reports = lsuv_init(model, x)
    assert [r.name for r in reports] == [name for name, _ in lsuv_layers(model)]
    for (name, layer), report in zip(lsuv_layers(model), reports):
        variance = output_variance(model, layer, x)
        assert report.converged and report.reached, name
        assert abs(variance - 1.0) < TOL_VAR, name
        assert variance == pytest.approx(report.variance, abs=1e-6)


def test_conv_layers_are_processed_in_module_order():
    torch.manual_seed(0)
    model, x = cnn(), batch()
    reports = lsuv_init(model, x)
    assert [r.name for r in reports] == ["conv.0", "conv.3", "fc.1", "head"]
    for name, layer in lsuv_layers(model):
        assert abs(output_variance(model, layer, x) - 1.0) < TOL_VAR, name


def test_weights_are_orthonormal_up_to_the_lsuv_scale():
    """LSUV only rescales the orthonormal matrix: W / scale is orthonormal again."""
    torch.manual_seed(0)
    model = mlp()
    reports = lsuv_init(model, batch())
    assert any(report.iterations > 0 for report in reports)
    for (name, layer), report in zip(lsuv_layers(model), reports):
        assert is_orthonormal(layer.weight.detach() / report.scale), name


def test_variance_loop_never_touches_biases():
    torch.manual_seed(0)
    model = mlp(depth=3)
    biases = {name: torch.full_like(layer.bias, 0.01 * i) for i, (name, layer) in enumerate(lsuv_layers(model))}
    with torch.no_grad():
        for name, layer in lsuv_layers(model):
            layer.bias.copy_(biases[name])
    lsuv_init(model, batch(), zero_bias=False)
    for name, layer in lsuv_layers(model):
        assert torch.equal(layer.bias, biases[name]), name


def test_zero_bias_sets_biases_to_zero():
    torch.manual_seed(0)
    model = mlp(depth=3)
    lsuv_init(model, batch())
    assert all(torch.count_nonzero(layer.bias) == 0 for _n, layer in lsuv_layers(model))


def test_each_rescaling_divides_by_the_measured_std():
    """One step of the inner loop: W <- W / sqrt(Var(B_L)); a linear layer without bias then has variance exactly 1."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 32, bias=False)
    model = nn.Sequential(layer)
    x = batch() * 3.0
    orthonormal_(layer.weight)
    before = output_variance(model, layer, x)
    reports = lsuv_init(model, x, orthonormal=False)
    assert reports[0].iterations == 1
    assert reports[0].scale == pytest.approx(1.0 / math.sqrt(before))
    assert reports[0].variance == pytest.approx(1.0, abs=1e-6)


class _Saturating(nn.Module):
    """A layer whose output variance cannot reach 1: its bias alone has variance 4."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.bias.copy_(torch.tensor([2.0, -2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_gives_up_after_t_max_rescalings_and_reports_it():
    model = _Saturating()
    reports = lsuv_init(model, batch(d=4), zero_bias=False, max_iters=T_MAX)
    assert reports[0].iterations == T_MAX
    assert not reports[0].converged


def test_max_iters_zero_is_the_orthonormal_ablation():
    torch.manual_seed(0)
    model = mlp(depth=2)
    reports = lsuv_init(model, batch(), max_iters=0)
    assert all(r.iterations == 0 and r.scale == 1.0 for r in reports)
    assert all(is_orthonormal(layer.weight) for _n, layer in lsuv_layers(model))


def test_layers_the_forward_never_calls_are_reported_not_reached():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(64, 8)
            self.unused = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    reports = lsuv_init(Unused(), batch())
    assert [r.reached for r in reports] == [True, False]


def test_restores_training_mode_and_needs_a_layer():
    model = mlp(depth=1)
    model.train()
    lsuv_init(model, batch())
    assert model.training
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv1d/2d/3d"):
        lsuv_init(nn.Sequential(nn.Tanh()), batch())


def test_layer_types_are_conv_and_fully_connected():
    assert LAYER_TYPES == (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.ConvTranspose1d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 16, 5))
    x = torch.randn(32, 3, 16, generator=torch.Generator().manual_seed(0))
    reports = lsuv_init(model, x)
    assert [r.name for r in reports] == ["0", "4"]  # the transposed conv is not an LSUV layer
    assert all(r.converged for r in reports)


def test_defaults_are_the_papers():
    from paperkit_lsuv import LSUVConfig

    config = LSUVConfig()
    assert (config.tol, config.max_iters) == (TOL_VAR, T_MAX) == (0.1, 10)


def test_lsuv_makes_a_deep_tanh_mlp_propagate_signal():
    """Why LSUV exists: with PyTorch's default init a deep net's output hardly depends on its input."""
    torch.manual_seed(0)
    x = batch()
    default = mlp(depth=16, width=64)
    lsuv = mlp(depth=16, width=64)
    lsuv_init(lsuv, x)
    with torch.no_grad():
        assert default(x).var(dim=0).mean().item() < 1e-3
        assert lsuv(x).var(dim=0).mean().item() > 0.1


def test_example_plan_runs_end_to_end(run_plan, tmp_path):
    results, manifest = run_plan(EXAMPLE.read_text(), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert manifest["methods"][0] == "lsuv"
    assert 0.0 <= results["final"]["classification/accuracy"] <= 1.0
    report = next(Path(tmp_path).rglob("lsuv.json"))
    assert '"converged": true' in report.read_text()
