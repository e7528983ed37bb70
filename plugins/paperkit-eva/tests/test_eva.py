"""EVA: the incremental SVD, the rank redistribution and A against PEFT's EVA, invariants, the PEFT export, and
an end-to-end run of example.toml."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft
import pytest
import torch
from paperkit_eva.functional import IncrementalSVD, eva_alpha, eva_components, rank_distribution
from paperkit_eva.hooks import peft_eva_export
from peft.tuners.lora.eva import get_eva_state_dict
from torch import nn

from paperkit import LowRankLinear

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
TARGETS = ["inp", "q", "v", "out"]


class Net(nn.Module):
    """Four linear layers, two of them ('q', 'v') reading the same input, as a transformer's projections do."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.q, self.v, self.out = nn.Linear(12, 32), nn.Linear(32, 16), nn.Linear(32, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(torch.relu(self.q(h)) * self.v(h))


def _data(seed: int, decay: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list((torch.randn(30 * 24, 12, generator=g) * torch.logspace(0, -decay, 12)).split(24))


def _peft(model: nn.Module, batches: list, rank: int, rho: float, tau: float, whiten: bool = False) -> dict:
    config = peft.LoraConfig(
        r=rank, target_modules=TARGETS, init_lora_weights="eva", eva_config=peft.EvaConfig(rho=rho, tau=tau, whiten=whiten)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_eva_state_dict(
            copy.deepcopy(model), batches, config, forward_fn=lambda m, b: m(b), prepare_model_inputs_fn=None,
            prepare_layer_inputs_fn=None, show_progress_bar=False,
        )


@pytest.mark.parametrize(
    "seed,rank,rho,tau,whiten", [(0, 2, 2.0, 0.99, False), (1, 4, 3.0, 0.99, False), (2, 3, 1.0, 0.95, True)]
)
def test_components_and_ranks_equal_peft(seed: int, rank: int, rho: float, tau: float, whiten: bool) -> None:
    torch.manual_seed(seed)
    model, batches = Net(), _data(seed, seed + 2)
    theirs = _peft(model, batches, rank, rho, tau, whiten)
    ours = eva_components(model, batches, TARGETS, rank, rho, tau, whiten)
    assert ours.converged and ours.shared == {"v": "q"}
    assert ours.ranks == {name: theirs[name].shape[0] for name in TARGETS}
    assert sum(ours.ranks.values()) == rank * len(TARGETS)  # the budget is kept
    for name in TARGETS:
        expected = theirs[name]
        if whiten and name in ("q", "v"):
            # PEFT whitens the shared SVD's components in place (`u /= ...` on a view of components_), once per
            # layer that reads it: 'q' and 'v' (both views) end up divided twice; ours whitens each layer once
            expected = expected * ours.svd_singular_values(name)[: expected.shape[0]].sqrt().reshape(-1, 1)
        torch.testing.assert_close(ours.components[name], expected, rtol=0, atol=1e-12)
    if seed == 1:
        assert ours.ranks == {"inp": 4, "q": 4, "v": 3, "out": 5}  # redistributed; the SVD's owner keeps the larger


def test_incremental_svd_equals_the_pca_of_all_data() -> None:
    """After several minibatches, the components and explained variance ratios are those of one centred SVD."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 10, generator=g, dtype=torch.float64) @ torch.randn(10, 10, generator=g, dtype=torch.float64)
    X = X + 3.0
    svd = IncrementalSVD(10)
    for part in X.split(40):
        svd.partial_fit(part)
    centred = X - X.mean(0)
    _u, s, vt = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close(svd.singular_values, s, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(svd.explained_variance_ratio, s**2 / (s**2).sum(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close((svd.components @ vt.T).abs().diagonal()[:6], torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(svd.mean, X.mean(0))
    torch.testing.assert_close(svd.var, X.var(0, unbiased=False))
    assert bool((svd.components[torch.arange(10), svd.components.abs().argmax(1)] > 0).all())  # sign convention


def test_rank_distribution_by_hand() -> None:
    ratios = {"a": torch.tensor([0.5, 0.3, 0.1, 0.05]), "b": torch.tensor([0.4, 0.2, 0.15, 0.1])}
    counts = rank_distribution(ratios, {"a": "a", "b": "b"}, 4, {"a": 4, "b": 4})
    assert counts == {"a": 2, "b": 2}  # 0.5, 0.4, 0.3, 0.2
    counts = rank_distribution(ratios, {"a": "a", "b": "b"}, 5, {"a": 4, "b": 4})
    assert counts == {"a": 2, "b": 3}  # then 0.15
    counts = rank_distribution(ratios, {"a": "a", "b": "b"}, 4, {"a": 1, "b": 4})
    assert counts == {"a": 1, "b": 3}  # a offers one component only
    assert eva_alpha(16.0, 8, 4) == 8.0 and eva_alpha(16.0, 8, 4, adjust_scaling=False) == 16.0


def test_a_spans_the_dominant_input_directions_and_starts_at_the_base() -> None:
    """On inputs living in a 2-D subspace, A's rows span it; B = 0, so the adapted layer computes the base layer."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(12, 2, generator=g)).Q
    batches = list((torch.randn(400, 2, generator=g) * torch.tensor([3.0, 1.0]) @ basis.T).split(40))
    model = nn.Sequential(nn.Linear(12, 6))
    result = eva_components(model, batches, ["0"], 2, rho=1.0)
    A = result.components["0"].float()
    torch.testing.assert_close(A @ basis @ basis.T, A, atol=1e-5, rtol=1e-5)  # rows inside the subspace
    layer = LowRankLinear(copy.deepcopy(model[0]), 2, 1.0)
    from paperkit_eva.functional import eva_init_

    eva_init_(layer, result.components["0"])
    torch.testing.assert_close(layer(batches[0]), model[0](batches[0]))


def test_export_loads_in_peft_with_rank_pattern(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model, batches = Net(), _data(1, 3)
    result = eva_components(model, batches, TARGETS, 4, 3.0)
    ours = copy.deepcopy(model)
    for name in TARGETS:
        r = result.ranks[name]
        layer = LowRankLinear(getattr(ours, name), r, eva_alpha(8.0, 4, r) / r)
        with torch.no_grad():
            layer.lora_A.copy_(result.components[name])
            layer.lora_B.normal_()  # as after training: B ≠ 0, so the export's B matters
        setattr(ours, name, layer)
    peft_eva_export(ours, tmp_path / "peft", 4, 8.0, 0.0, [])
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "peft")
    x = torch.randn(5, 12)
    torch.testing.assert_close(loaded(x), ours(x), rtol=1e-5, atol=1e-6)
    assert loaded.peft_config["default"].rank_pattern == {"v": 3, "out": 5}
    for name in TARGETS:
        assert loaded.base_model.model.get_submodule(name).scaling["default"] == pytest.approx(2.0)


def test_example_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, _ = run_plan(EXAMPLE.read_text(encoding="utf-8"), variant="eva")
    assert results["status"] == "completed" and results["steps"] == 30
    summary = results["summary"]["eva"]
    assert summary["adapted_layers"] == 2.0 and summary["eva_total_rank"] == 8.0
    assert results["final"]["classification/accuracy"] > results["initial"]["classification/accuracy"]
