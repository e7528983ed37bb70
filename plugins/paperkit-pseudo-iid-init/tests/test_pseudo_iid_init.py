"""pseudo-iid-init: per-entry moments of each PSEUDO-IID family, ranks, densities, the mean-field variance map of a
wide deep tanh net (the same for every structure: the paper's same-GP result), the hook, example.toml.

The paper is a proof and ships no runnable reference; every number is pinned to an independent computation:
closed-form moments, torch.linalg ranks and orthogonality, and eoc-init's mean-field variance map.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paperkit_eoc_init import functional as eoc
from paperkit_pseudo_iid_init import PseudoIidInitConfig
from paperkit_pseudo_iid_init import functional as F
from paperkit_pseudo_iid_init.hooks import PseudoIidInit
from torch import nn

from paperkit import CNN, MLP, PluginError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(depth: int = 3, width: int = 16, activation: str = "tanh", bias: bool = True, d_in: int = 64) -> MLP:
    config = SimpleNamespace(
        depth=depth, width=width, activation=activation, norm="none", residual=False, dropout=0.0, bias=bias
    )
    return MLP(d_in, 10, config)


@pytest.mark.parametrize("structure", F.STRUCTURES)
@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (128, 128)])
def test_per_entry_variance_is_sigma_w2_over_fan_in(structure: str, shape: tuple[int, int]) -> None:
    m, n = shape
    sigma_w = 1.3
    draws = torch.stack([F.pseudo_iid_matrix(m, n, sigma_w, structure, generator=gen(s)) for s in range(20)])
    target = sigma_w**2 / n
    assert abs(float(draws.mean())) < 0.02 * math.sqrt(target)
    assert float(draws.pow(2).mean()) == pytest.approx(target, rel=0.03)
    # the variance is the same at every position (no row or column gets more than its share)
    assert float(draws.pow(2).mean(dim=(0, 2)).max()) < 1.6 * target
    assert float(draws.pow(2).mean(dim=(0, 1)).max()) < 1.6 * target


def test_orthogonal_is_scaled_semi_orthogonal() -> None:
    w = F.pseudo_iid_matrix(32, 96, 1.0, "orthogonal", generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64))  # rows orthonormal, s = σ_w
    w = F.pseudo_iid_matrix(96, 32, 2.0, "orthogonal", generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(w.T @ w, 4.0 * 3.0 * torch.eye(32, dtype=torch.float64))  # s² = σ_w² · 96/32


@pytest.mark.parametrize("shape, fraction, rank", [((64, 64), 0.25, 16), ((64, 10), 0.25, 2), ((100, 40), 0.5, 20)])
def test_low_rank_draws_have_the_asked_rank(shape: tuple[int, int], fraction: float, rank: int) -> None:
    assert F.low_rank_rank(*shape, fraction) == rank
    w = F.pseudo_iid_matrix(*shape, 1.0, "low-rank", rank_fraction=fraction, generator=gen(), dtype=torch.float64)
    assert int(torch.linalg.matrix_rank(w)) == rank
    assert F.low_rank_rank(5, 5, 0.01) == 1


@pytest.mark.parametrize("n, density, k", [(64, 0.25, 16), (100, 0.1, 10), (7, 0.01, 1)])
def test_sparse_rows_keep_exactly_the_density(n: int, density: float, k: int) -> None:
    w = F.pseudo_iid_matrix(50, n, 1.0, "sparse", density=density, generator=gen())
    assert ((w != 0).sum(dim=1) == k).all()
    cols = (w != 0).float().mean(dim=0)  # positions are random: every column is used
    assert float(cols.mean()) == pytest.approx(k / n)
    # the kept entries carry variance σ_w²/k, i.e. the IID variance rescaled by 1/(k/n)
    w = torch.stack([F.pseudo_iid_matrix(400, n, 1.0, "sparse", density=density, generator=gen(s)) for s in range(40)])
    assert float(w[w != 0].pow(2).mean()) == pytest.approx(1.0 / k, rel=0.05)


def test_iid_draw_equals_torch_normal_bit_for_bit() -> None:
    w = torch.empty(8, 5)
    b = torch.empty(8)
    F.pseudo_iid_(w, b, 1.5, 0.3, "iid", generator=gen(3))
    g = gen(3)
    ref_w = torch.nn.init.normal_(torch.empty(8, 5), 0.0, 1.5 / math.sqrt(5), generator=g)
    ref_b = torch.nn.init.normal_(torch.empty(8), 0.0, 0.3, generator=g)
    assert torch.equal(w, ref_w) and torch.equal(b, ref_b)


@torch.no_grad()
def test_preactivation_variance_map_is_the_same_for_every_structure() -> None:
    """The paper's point: every PSEUDO-IID family gives the IID GP, whose variance follows q^l = σ_b² + σ_w² E[φ²]."""
    sigma_b = 0.2
    point = eoc.eoc_point("tanh", sigma_b)
    width, depth, draws = 384, 8, 3
    x = torch.randn(64, 64, generator=gen(7))
    q = float(x.pow(2).mean()) * point.sigma_w**2 + sigma_b**2  # first layer: linear in the input
    predicted = [q]
    for _ in range(depth):
        q = eoc.variance_map(q, point.sigma_w, sigma_b, "tanh")
        predicted.append(q)
    measured = {}
    for structure in F.STRUCTURES:
        runs = []
        for seed in range(draws):  # a mean over a few nets: the low-rank net's q fluctuates like 1/√r per layer
            net = mlp(depth, width)
            F.init_model_(net, point.sigma_w, sigma_b, structure, generator=gen(seed))
            runs.append(F.preactivation_variances(net, x)[: depth + 1])
        measured[structure] = torch.tensor(runs).mean(dim=0).tolist()
        # low-rank: the units of a layer share r latent Gaussians, so E[φ²] sees the fluctuation of |V h|²/r
        # (relative std √(2/r)) and, φ² being concave for tanh, lies O(1/r) below the limit (~7% at r = 96)
        tol = 0.1 if structure == "low-rank" else 0.05
        assert measured[structure] == pytest.approx(predicted, rel=tol), structure
    # …and a wrong σ_w gives a visibly different map, so the tolerance above is meaningful
    net = mlp(depth, width)
    F.init_model_(net, 1.6, sigma_b, "low-rank", generator=gen(1))
    assert F.preactivation_variances(net, x)[depth] > 1.3 * predicted[depth]


def test_conv_weights_and_records() -> None:
    net = CNN((1, 8, 8), 10, SimpleNamespace(channels=4, width=16, norm="none"))
    records = F.init_model_(net, math.sqrt(2.0), 0.0, "sparse", density=0.5, generator=gen())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(records) > len(convs) >= 1
    for conv in convs:
        flat = conv.weight.reshape(conv.weight.shape[0], -1)
        assert ((flat != 0).sum(dim=1) == F.sparse_row_count(flat.shape[1], 0.5)).all()


def _ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(generator=lambda name: gen(0), is_main_process=True, run_dir=tmp_path, seed=0)


def test_hook_defaults_to_the_eoc_and_records(tmp_path: Path) -> None:
    hook = PseudoIidInit(PseudoIidInitConfig())
    net = mlp(4, 64)
    hook.init(net, _ctx(tmp_path))
    report = json.loads((tmp_path / "pseudo-iid-init.json").read_text())
    assert report["structure"] == "low-rank" and report["sigma_b"] == 0.2
    assert report["sigma_w"] == pytest.approx(1.3041, abs=1e-3)
    hidden = [m.weight for m in net.modules() if isinstance(m, nn.Linear) and m.weight.shape == (64, 64)]
    assert hidden and all(int(torch.linalg.matrix_rank(w)) == 16 for w in hidden)
    assert [r["rank"] for r in report["layers"]][1] == 16
    assert PseudoIidInit(PseudoIidInitConfig(activation="relu")).resolve(net)[1:] == pytest.approx((math.sqrt(2), 0.0))
    with pytest.raises(PluginError, match="pseudo-iid-init: layer"):
        PseudoIidInit(PseudoIidInitConfig()).init(mlp(bias=False), _ctx(tmp_path))
    for bad in ({"structure": "banded"}, {"density": 0.0}, {"rank_fraction": 1.5}, {"sigma_w": -1.0}, {"layers": []}):
        with pytest.raises((ValueError, TypeError)):
            PseudoIidInitConfig(**bad)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), overrides=("run.epochs=1",))
    assert results["status"] == "completed"
    assert "pseudo-iid-init" in manifest["methods"]
    assert 0.0 <= results["final"]["classification/accuracy"] <= 1.0
