"""maxout-init: the constant against closed forms, Monte Carlo and the authors' values; one maxout layer's moments
(forward, and the input-dependent Jacobian); the draw against torch.nn.init bit for bit; which layers feed a maxout;
the forward and backward second moments across depth of deep maxout MLPs (maxout-init against He); the hook;
example.toml.

The authors' code is a TensorFlow training script (BSD-2-Clause), not a library to call, so the numbers are pinned to
the constants it ships (its M_DICT, S_DICT, L_DICT and the Mathematica moments of its notebook), to closed forms, to
Monte Carlo over Gaussian samples and to measurements in random networks drawn by this plugin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_maxout_init import MaxoutInitConfig
from paperkit_maxout_init import functional as F
from paperkit_maxout_init.hooks import MaxoutInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"

#: E[(largest of K standard normals)²] for K = 2..100, computed with Mathematica by the authors, 6 significant digits
#: (their notebook "figure second moments of the gaussian largest order statistic/second_moment.ipynb").
AUTHORS_MOMENTS = dict(zip(range(2, 101), [
    1.0, 1.27566, 1.55133, 1.80002, 2.02174, 2.2203, 2.39954, 2.56262, 2.7121, 2.85003, 2.97802, 3.0974, 3.20924,
    3.31444, 3.41374, 3.50776, 3.59705, 3.68205, 3.76316, 3.84072, 3.91504, 3.98637, 4.05494, 4.12097, 4.18464, 4.2461,
    4.30551, 4.36301, 4.41871, 4.47272, 4.52515, 4.57608, 4.62559, 4.67377, 4.72069, 4.76641, 4.81099, 4.85449,
    4.89695, 4.93843, 4.97897, 5.01862, 5.05741, 5.09538, 5.13256, 5.16899, 5.2047, 5.2397, 5.27404, 5.30774, 5.34082,
    5.3733, 5.4052, 5.43655, 5.46737, 5.49766, 5.52746, 5.55677, 5.58561, 5.61399, 5.64194, 5.66946, 5.69657, 5.72328,
    5.7496, 5.77554, 5.80111, 5.82633, 5.8512, 5.87573, 5.89994, 5.92382, 5.9474, 5.97067, 5.99364, 6.01633, 6.03874,
    6.06087, 6.08274, 6.10434, 6.12569, 6.1468, 6.16766, 6.18828, 6.20867, 6.22883, 6.24878, 6.2685, 6.28802, 6.30732,
    6.32643, 6.34533, 6.36404, 6.38256, 6.40089, 6.41904, 6.43701, 6.45481, 6.47243,
]))
#: The authors' training code (training/training.py): M_DICT "initialization suggested in the paper" (c = 1/M_K),
#: S_DICT "reciprocal of the lower bound" (1/E[smallest of K χ²₁]), L_DICT "reciprocal of the upper bound"
#: (1/E[largest of K χ²₁]); and the max-pooling initialization's 0.26573 for K = 5 before a 2x2 max-pool.
AUTHORS_C = {2: 1.0, 3: 0.78391, 4: 0.64461, 5: 0.55555}
AUTHORS_LOWER = {2: 2.7519, 3: 5.18678, 4: 8.28487, 5: 12.03698}
AUTHORS_UPPER = {2: 0.61102, 3: 0.47559, 4: 0.40482, 5: 0.36052}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(k: int = 5, depth: int = 3, width: int = 16, residual: bool = False, bias: bool = True) -> MLP:
    config = SimpleNamespace(depth=depth, width=width, activation="maxout", maxout_pieces=k, norm="none",
                             residual=residual, dropout=0.0, bias=bias)
    return MLP(64, 10, config)


# --- the constant --------------------------------------------------------------------------------------------


def test_closed_forms():
    """M_1 = M_2 = 1, M_3 = 1 + √3/(2π); E[max of two χ²₁] = 1 + 2/π, E[min] = 1 − 2/π; E[max of 2 normals] = 1/√π."""
    assert F.largest_gaussian_moment(1) == pytest.approx(1.0, abs=1e-13)
    assert F.largest_gaussian_moment(2) == pytest.approx(1.0, abs=1e-13)
    assert F.largest_gaussian_moment(3) == pytest.approx(1 + math.sqrt(3) / (2 * math.pi), abs=1e-13)
    assert F.gaussian_order_statistic_moment(2, 2, 1) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-13)
    assert F.chi2_order_statistic_mean(2, "largest") == pytest.approx(1 + 2 / math.pi, abs=1e-13)
    assert F.chi2_order_statistic_mean(2, "smallest") == pytest.approx(1 - 2 / math.pi, abs=1e-13)
    assert F.chi2_order_statistic_mean(1) == pytest.approx(1.0, abs=1e-13)


@pytest.mark.parametrize("k", [2, 3, 5, 8, 30])
def test_order_statistics_sum_rules_and_symmetry(k):
    """Σ_j E[Z_(j)^p] = K E[Z^p] (the order statistics are a permutation of the sample); E[Z_(j)] = −E[Z_(K+1−j)]."""
    for p, moment in ((0, 1.0), (1, 0.0), (2, 1.0), (4, 3.0)):
        total = sum(F.gaussian_order_statistic_moment(k, j, p) for j in range(1, k + 1))
        assert total == pytest.approx(k * moment, abs=1e-11 * k)
    for j in range(1, k + 1):
        assert F.gaussian_order_statistic_moment(k, j, 1) == pytest.approx(
            -F.gaussian_order_statistic_moment(k, k + 1 - j, 1), abs=1e-12
        )
        assert F.gaussian_order_statistic_moment(k, j, 2) == pytest.approx(
            F.gaussian_order_statistic_moment(k, k + 1 - j, 2), abs=1e-12
        )


def test_moments_equal_the_authors_mathematica_values():
    ours = {k: F.largest_gaussian_moment(k) for k in AUTHORS_MOMENTS}
    for k, value in AUTHORS_MOMENTS.items():
        assert ours[k] == pytest.approx(value, abs=6e-6), k  # all 99 within 5.1e-6: the authors' rounding
    assert list(ours.values()) == sorted(ours.values())  # M_K increases with K


def test_constants_equal_the_ones_the_authors_code_ships():
    for k in AUTHORS_C:
        assert F.maxout_c(k) == pytest.approx(AUTHORS_C[k], abs=6e-6), k
        assert 1 / F.chi2_order_statistic_mean(k, "smallest") == pytest.approx(AUTHORS_LOWER[k], abs=5e-5), k  # 2.7519: 5 digits
        assert 1 / F.chi2_order_statistic_mean(k, "largest") == pytest.approx(AUTHORS_UPPER[k], abs=6e-6), k
    assert F.maxout_c(5, pool=4) == pytest.approx(0.26573, abs=6e-6)  # max-pooling init, K = 5, 2x2 windows
    # the paper's bounds bracket the factor it recommends: E[smallest χ²] <= 1 <= M_K <= E[largest χ²]
    for k in range(2, 12):
        assert F.chi2_order_statistic_mean(k, "smallest") < 1 < F.largest_gaussian_moment(k) + 1e-12
        assert F.largest_gaussian_moment(k) < F.chi2_order_statistic_mean(k, "largest")


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_moments_match_monte_carlo(k):
    z = torch.randn(400_000, k, generator=gen(k), dtype=torch.float64)
    top, square = z.amax(1) ** 2, z**2
    for sample, ours in (
        (top, F.largest_gaussian_moment(k)),
        (square.amax(1), F.chi2_order_statistic_mean(k, "largest")),
        (square.amin(1), F.chi2_order_statistic_mean(k, "smallest")),
    ):
        se = float(sample.std()) / math.sqrt(sample.numel())
        assert abs(float(sample.mean()) - ours) < 4 * se


def test_constant_arguments_are_checked():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="must be an integer"):
            F.largest_gaussian_moment(bad)
    with pytest.raises(ValueError, match="j must be"):
        F.gaussian_order_statistic_moment(3, 4)
    with pytest.raises(ValueError, match="which must be"):
        F.chi2_order_statistic_mean(3, "median")
    with pytest.raises(ValueError, match="pool must be"):
        F.maxout_c(5, pool=0)
    with pytest.raises(ValueError, match="cos2"):
        F.jacobian_factor(1.0, 3, 1.5)


# --- one maxout layer ----------------------------------------------------------------------------------------


def within(sample: torch.Tensor, expected: float, sigmas: float = 4.0) -> bool:
    """The sample mean is within ``sigmas`` standard errors of ``expected`` (and the error is under 5 %)."""
    se = float(sample.std()) / math.sqrt(sample.numel())
    return abs(float(sample.mean()) - expected) < sigmas * se and se < 0.05 * abs(expected)


@pytest.mark.parametrize("k", [2, 5])
def test_one_layer_forward_factor_and_input_dependent_jacobian(k):
    """Zero biases, input x fixed, W ~ N(0, c/n): E[||x'||²]/n' = c M_K ||x||²/n; for a direction u at angle θ to x,
    E[||J u||²]/n' = c (M_K cos²θ + sin²θ) ||u||²/n (the selected piece correlates with x only)."""
    n_in, units, c = 64, 8192, 0.7
    w = torch.empty(units * k, n_in, dtype=torch.float64)
    F.normal_fan_in_(w, c, gen(1))
    x = torch.randn(n_in, generator=gen(2), dtype=torch.float64)
    v = torch.randn(n_in, generator=gen(3), dtype=torch.float64)
    v = v - v.dot(x) / x.dot(x) * x  # orthogonal to x
    z = (w @ x).view(units, k)
    selected = z.argmax(1) + k * torch.arange(units)
    out = z.amax(1)
    assert within(out.pow(2), F.forward_factor(c, k) * float(x.dot(x)) / n_in)
    for cos2 in (1.0, 0.0, 0.3):
        u = math.sqrt(cos2) * x / x.norm() + math.sqrt(1 - cos2) * v / v.norm()
        ju = w[selected] @ u  # the Jacobian-vector product of the layer: the selected rows of W
        assert torch.allclose(ju, torch.func.jvp(lambda t: (w @ t).view(units, k).amax(1), (x,), (u,))[1])
        assert within(ju.pow(2), F.jacobian_factor(c, k, cos2) / n_in)
    # the input dependence the paper points out: the same u gives M_K times more along x than across it (K > 2)
    assert F.jacobian_factor(c, 5, 1.0) / F.jacobian_factor(c, 5, 0.0) == pytest.approx(1.80002, abs=1e-5)


# --- the draw and the layers it touches -------------------------------------------------------------------------


def test_plan_layers_marks_the_layers_feeding_a_maxout():
    plans = F.plan_layers(mlp(k=4, depth=2))
    assert [(p.name, p.rank) for p in plans] == [
        ("stem.0", 4), ("blocks.0.linear1", 4), ("blocks.1.linear1", 4), ("head", None)
    ]
    residual = F.plan_layers(mlp(k=3, depth=2, residual=True))
    assert [(p.name, p.rank) for p in residual] == [
        ("stem.0", 3), ("blocks.0.linear1", 3), ("blocks.0.linear2", None), ("blocks.1.linear1", 3),
        ("blocks.1.linear2", None), ("head", None),
    ]
    # norms between the linear layer and the maxout are skipped
    batch = MLP(64, 10, SimpleNamespace(depth=1, width=8, activation="maxout", maxout_pieces=2, norm="batch",
                                        residual=False, dropout=0.1, bias=True))
    assert [p.rank for p in F.plan_layers(batch)] == [2, 2, None]
    assert F.plan_layers(mlp(), ["conv"]) == []
    with pytest.raises(ValueError, match="unknown layer kind"):
        F.plan_layers(mlp(), ["attention"])


def test_draw_equals_torch_normal_and_he_is_kaiming_normal_bit_for_bit():
    k = 3
    ours, ref = mlp(k=k, depth=2), mlp(k=k, depth=2)
    records = F.maxout_init_(ours, generator=gen(9))
    g = gen(9)
    for p in F.plan_layers(ref):
        m, c = p.module, 1.0 if p.module is ref.head else F.maxout_c(k)
        torch.nn.init.normal_(m.weight, 0.0, math.sqrt(c / m.weight.shape[1]), generator=g)
        torch.nn.init.zeros_(m.bias)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r.c for r in records] == [F.maxout_c(k)] * 3 + [1.0]
    he, ref = mlp(k=k, depth=2), mlp(k=k, depth=2)
    F.maxout_init_(he, c=2.0, generator=gen(4))
    g = gen(4)
    for p in F.plan_layers(ref):
        if p.rank is None:
            torch.nn.init.normal_(p.module.weight, 0.0, math.sqrt(1.0 / p.module.weight.shape[1]), generator=g)
        else:
            torch.nn.init.kaiming_normal_(p.module.weight, mode="fan_in", nonlinearity="relu", generator=g)
    assert all(torch.equal(a, b) for a, b in zip(he.parameters(), ref.parameters()) if a.ndim == 2)


def test_draw_statistics_zero_bias_and_options():
    model = mlp(k=5, depth=1, width=256)
    F.maxout_init_(model, generator=gen(0))
    for p in F.plan_layers(model):
        c = 1.0 if p.rank is None else 0.5555492
        assert p.module.weight.std().item() == pytest.approx(math.sqrt(c / p.module.weight.shape[1]), rel=0.02)
        assert torch.count_nonzero(p.module.bias) == 0
    kept = mlp(k=2, depth=1)
    before = kept.head.bias.clone()
    records = F.maxout_init_(kept, c=lambda k: 10.0 * k, output_c=0.5, zero_bias=False, generator=gen(0))
    assert torch.equal(kept.head.bias, before)
    assert [r.c for r in records] == [20.0, 20.0, 0.5] and not records[0].zero_bias
    F.maxout_init_(mlp(bias=False), generator=gen(0))  # no biases: nothing to zero
    with pytest.raises(ValueError, match="found no maxout unit"):
        F.maxout_init_(CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none")), generator=gen(0))
    with pytest.raises(ValueError, match="found no maxout unit"):
        F.maxout_init_(mlp(), layers=["conv"], generator=gen(0))
    with pytest.raises(ValueError, match="c must be finite"):
        F.normal_fan_in_(torch.empty(3, 3), -1.0)


def test_a_users_own_maxout_class_and_conv_layers_are_recognized():
    class Maxout(nn.Module):  # channel-wise maxout after a convolution
        def __init__(self, pieces: int) -> None:
            super().__init__()
            self.pieces = pieces

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(1, (-1, self.pieces)).amax(2)

    net = nn.Sequential(nn.Conv2d(1, 8 * 4, 3), Maxout(4), nn.Flatten(), nn.Linear(8 * 36, 10))
    records = F.maxout_init_(net, generator=gen(0))
    assert [(r.name, r.shape, r.rank) for r in records] == [("0", (32, 9), 4), ("3", (10, 288), None)]
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(F.maxout_c(4) / 9), rel=0.1)


# --- the paper's point: second moments across depth --------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
def test_second_moments_across_depth_maxout_init_against_he(k):
    """Deep maxout MLPs (25 maxout layers, width 64, zero biases, float64, 8 nets x 64 Gaussian inputs): with c = 1/M_K
    the mean squared activation keeps its size layer after layer, and so does the back-propagated gradient far from
    the output (where it has turned towards the activations); with He's c = 2 both grow by 2 M_K per layer (2 for
    K = 2, 3.6 for K = 5). Near the output the gradient first shrinks, at a rate between c and c M_K per layer (its
    component across the activations scales by c): the input dependence of the Jacobian."""
    depth, nets, g = 24, 8, gen(k)
    results = {}
    for c in (None, 2.0):
        fw = torch.zeros(depth + 1, dtype=torch.float64)
        bw = torch.zeros(depth + 1, dtype=torch.float64)
        for _ in range(nets):
            model = mlp(k=k, depth=depth, width=64)
            F.maxout_init_(model, c=c, generator=g)
            x = torch.randn(64, 64, generator=g, dtype=torch.float64)
            f, b = F.layer_second_moments(model.double(), x, generator=g)
            fw, bw = fw + torch.tensor(f), bw + torch.tensor(b)
        results[c] = (torch.log(fw / nets), torch.log(bw / nets))
    half = depth // 2
    for c, rate in ((None, 0.0), (2.0, math.log(F.forward_factor(2.0, k)))):
        log_fw, log_bw = results[c]
        assert float(log_fw[-1] - log_fw[0]) / depth == pytest.approx(rate, abs=0.03)  # forward, per layer
        assert float(log_bw[0] - log_bw[half]) / half == pytest.approx(rate, abs=0.06)  # backward, far from the output
    near = float(results[None][1][half] - results[None][1][-1]) / half  # backward, the half next to the output
    if k == 2:
        assert near == pytest.approx(0.0, abs=0.03)  # c = c M_2 = 1: nothing to turn
    else:
        assert math.log(F.maxout_c(k)) - 0.05 < near < -0.1
    spread = {c: float((log_bw.max() - log_bw.min()).exp()) for c, (_f, log_bw) in results.items()}
    assert spread[None] < 150 and spread[2.0] > 1e6  # how much the gradient's size varies over the layers


# --- the hook ------------------------------------------------------------------------------------------------


def ctx(tmp_path: Path, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(generator=lambda name: gen(seed), is_main_process=True, run_dir=tmp_path)


def test_hook_draws_reports_and_refuses_models_without_maxout(tmp_path):
    model = mlp(k=5, depth=2)
    impl = MaxoutInit(MaxoutInitConfig())
    impl.init(model=model, ctx=ctx(tmp_path))
    report = json.loads((tmp_path / "maxout-init.json").read_text())
    assert report["c"] == "1/M_K" and report["ranks"]["5"]["c"] == pytest.approx(0.55555, abs=1e-5)
    assert report["ranks"]["5"]["forward_factor"] == pytest.approx(1.0, abs=1e-12)
    assert [layer["rank"] for layer in report["layers"]] == [5, 5, 5, None]
    he = MaxoutInit(MaxoutInitConfig(c=2.0))
    he.init(model=mlp(k=5), ctx=ctx(tmp_path))
    assert he.report["ranks"]["5"]["forward_factor"] == pytest.approx(3.60004, abs=1e-4)
    plain = MLP(64, 10, SimpleNamespace(depth=1, width=8, activation="relu", norm="none", residual=False, dropout=0.0,
                                        bias=True))
    with pytest.raises(PluginError, match="maxout-init: found no maxout unit"):
        MaxoutInit(MaxoutInitConfig()).init(model=plain, ctx=ctx(tmp_path))


def test_config_validators():
    for bad in (dict(c=0.0), dict(c=-1.0), dict(c=float("inf")), dict(output_c=0.0), dict(layers=[]),
                dict(layers=["linear", "rnn"])):
        with pytest.raises((ValueError, TypeError)):
            MaxoutInitConfig(**bad)
    assert MaxoutInitConfig(c=1.0).c == 1.0 and MaxoutInitConfig().c is None


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "maxout-init" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0
