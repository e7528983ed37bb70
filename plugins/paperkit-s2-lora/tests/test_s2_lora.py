"""S2-LoRA: the shared factors (one tensor per shape group, gradients from every layer), the zero-product start,
exact merging, the L1 term, the rank report; parity with PEFT's VeRA (λ_b = 1, λ_d = c_i, A and B frozen and
shared) on a small module (outputs, gradients, AdamW steps), the PEFT LoRA export; an end-to-end run of example.toml."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from paperkit_s2_lora import S2LoraConfig
from paperkit_s2_lora.functional import (
    S2LoRALinear,
    SharedFactors,
    init_factors_,
    l1_penalty,
    rank_allocation,
    s2_delta,
    s2_layers,
    s2_update,
    trainable_values,
)
from paperkit_s2_lora.hooks import S2LoRA, export_lora
from torch import nn

from paperkit import shared_module
from paperkit.testing import run_plan_file

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 4))


def _adapt(model: nn.Module, targets: list[str], **options: object) -> S2LoRA:
    """Wrap ``targets`` through the method's own adapt (shared modules and all), as the engine does."""
    method = S2LoRA(S2LoraConfig(target=targets, **options))
    method.adapt(model, None)
    return method


def _randomize(model: nn.Module, seed: int = 1) -> None:
    """A trained-looking adapter: non-zero coefficients and factors."""
    g = _g(seed)
    with torch.no_grad():
        for _name, layer in s2_layers(model):
            layer.s2_coefficients.copy_(torch.randn(layer.rank, generator=g))
            if layer.owns_factors:
                layer.shared.lora_A.copy_(0.3 * torch.randn(layer.shared.lora_A.shape, generator=g))
                layer.shared.lora_B.copy_(0.3 * torch.randn(layer.shared.lora_B.shape, generator=g))


# -- the math, by hand ---------------------------------------------------------------------------
def test_delta_is_b_diag_c_a_and_the_factorized_forward_agrees() -> None:
    A = torch.randn(3, 5, generator=_g(0), dtype=torch.float64)
    B = torch.randn(4, 3, generator=_g(1), dtype=torch.float64)
    c = torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)
    expected = 0.7 * sum(c[k] * torch.outer(B[:, k], A[k]) for k in range(3))  # Σ_k c_k b_k a_kᵀ
    torch.testing.assert_close(s2_delta(A, B, c, 0.7), expected)
    torch.testing.assert_close(s2_delta(A, B, c, 0.7), 0.7 * B @ torch.diag(c) @ A)
    x = torch.randn(2, 6, 5, generator=_g(2), dtype=torch.float64)
    torch.testing.assert_close(s2_update(x, A, B, c, 0.7), x @ expected.T)


def test_l1_term_is_exact() -> None:
    cs = [torch.tensor([1.0, -2.0, 0.0]), torch.tensor([-0.5, 0.25, 3.0])]
    assert l1_penalty(cs, 0.1).item() == pytest.approx(0.1 * (3.0 + 3.75), abs=1e-7)
    model = _small()
    method = _adapt(model, ["0", "2"], l1=0.01)
    _randomize(model)
    term = method.regularize(model)["l1"]
    expected = 0.01 * sum(layer.s2_coefficients.abs().sum() for _n, layer in s2_layers(model))
    torch.testing.assert_close(term, expected)
    term.backward()  # d/dc λ|c| = λ·sign(c)
    for _n, layer in s2_layers(model):
        torch.testing.assert_close(layer.s2_coefficients.grad, 0.01 * layer.s2_coefficients.detach().sign())


@pytest.mark.parametrize("init", ["adalora", "lora"])
def test_output_preserved_at_start(init: str) -> None:
    model = _small()
    reference = copy.deepcopy(model)
    _adapt(model, ["0", "2", "4"], init=init)
    layers = dict(s2_layers(model))
    factors = layers["0"].shared
    if init == "adalora":  # c = 0, A and B random (AdaLoRA's Λ = 0, P, Q ~ N(0, 0.02²))
        assert all(torch.equal(layer.s2_coefficients, torch.zeros(8)) for layer in layers.values())
        assert factors.lora_A.abs().sum() > 0 and factors.lora_B.abs().sum() > 0
        assert 0.01 < float(factors.lora_A.detach().std()) < 0.03
    else:  # LoRA's: B = 0, c = 1
        assert torch.equal(factors.lora_B, torch.zeros_like(factors.lora_B))
        assert all(torch.equal(layer.s2_coefficients, torch.ones(8)) for layer in layers.values())
    x = torch.randn(5, 16, generator=_g(3))
    assert torch.equal(model(x), reference(x))


def test_shared_tensors_appear_once_and_get_gradients_from_every_layer() -> None:
    model = _small()
    method = _adapt(model, ["0", "2", "4"])
    _randomize(model)
    layers = dict(s2_layers(model))
    # layers 0 and 2 (16×16) share one pair, owned by "0"; layer 4 (12×16) has its own
    assert layers["0"].shared is layers["2"].shared is not layers["4"].shared
    assert layers["0"].owns_factors and not layers["2"].owns_factors and layers["4"].owns_factors
    names = [n for n, _p in model.named_parameters() if "lora_" in n]
    assert names == ["0.shared.lora_A", "0.shared.lora_B", "4.shared.lora_A", "4.shared.lora_B"]
    trains = sorted([*names, "0.s2_coefficients", "2.s2_coefficients", "4.s2_coefficients"])
    assert sorted(method.adapter_parameters(model)) == trains
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == trains
    # (8·16 + 16·8) for the 16×16 pair, (8·16 + 12·8) for the 12×16 one, 8 coefficients per matrix
    assert method.trainable == trainable_values(model) == 256 + 224 + 3 * 8
    assert sum(1 for k in model.state_dict() if k.endswith("lora_A")) == 2

    # the shared A, B gradient is the sum of each layer's: compare with a dense model holding per-layer copies
    x = torch.randn(7, 16, generator=_g(4))
    model(x).square().mean().backward()
    shared = layers["0"].shared
    copies = {n: (shared.lora_A.detach().clone().requires_grad_(), shared.lora_B.detach().clone().requires_grad_()) for n in ("0", "2")}

    def dense(h: torch.Tensor) -> torch.Tensor:
        for i, module in enumerate(model):
            name = str(i)
            if name in copies:
                A, B = copies[name]
                layer = layers[name]
                h = h @ (layer.base.weight + s2_delta(A, B, layer.s2_coefficients.detach())).T + layer.base.bias
            else:
                h = module(h)
        return h

    dense(x).square().mean().backward()
    for which in (0, 1):
        per_layer = [copies[n][which].grad for n in ("0", "2")]
        assert all(g.abs().sum() > 0 for g in per_layer)
        torch.testing.assert_close((shared.lora_A, shared.lora_B)[which].grad, per_layer[0] + per_layer[1])


def test_merge_is_exact_and_unmerge_restores_bit_for_bit() -> None:
    model = _small()
    _adapt(model, ["0", "2", "4"])
    _randomize(model)
    x = torch.randn(5, 16, generator=_g(5))
    expected = model(x)
    before = {n: layer.base.weight.clone() for n, layer in s2_layers(model)}
    for _n, layer in s2_layers(model):
        layer.merge()
        torch.testing.assert_close(layer.base.weight, before[_n] + s2_delta(layer.shared.lora_A, layer.shared.lora_B, layer.s2_coefficients))
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)
    for n, layer in s2_layers(model):
        layer.unmerge()
        assert torch.equal(layer.base.weight, before[n])
    assert torch.equal(model(x), expected)


def test_half_precision_layer_keeps_float32_adapters() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).to(torch.bfloat16)
    _adapt(model, ["0", "1"])
    assert model[0].s2_coefficients.dtype == torch.float32 and model[0].shared.lora_A.dtype == torch.float32
    assert model(torch.randn(2, 8).to(torch.bfloat16)).dtype == torch.bfloat16


def test_rank_allocation_counts_the_coefficients_above_the_relative_threshold() -> None:
    model = _small()
    _adapt(model, ["0", "2"], rank=4)
    with torch.no_grad():
        model[0].s2_coefficients.copy_(torch.tensor([2.0, -0.5, 0.1, 0.0]))
        model[2].s2_coefficients.copy_(torch.tensor([0.0, 0.0, -0.3, 0.19]))
    assert rank_allocation(model, 0.1) == {"0": 2, "2": 1}  # cut at 0.2 (largest |c| = 2)
    assert rank_allocation(model, 0.0) == {"0": 4, "2": 4}
    with torch.no_grad():
        for _n, layer in s2_layers(model):
            layer.s2_coefficients.zero_()
    assert rank_allocation(model) == {"0": 0, "2": 0}


def test_factors_must_fit_the_layer() -> None:
    layer = S2LoRALinear(nn.Linear(6, 4), 3)
    with pytest.raises(ValueError, match="do not fit"):
        layer.attach(SharedFactors(3, 4, 6))
    with pytest.raises(ValueError, match="unknown init"):
        init_factors_(SharedFactors(2, 3, 3), "pissa")
    model = nn.Linear(2, 2)
    assert shared_module(model, "k", nn.Identity) is shared_module(model, "k", nn.Linear)


def test_config_checks() -> None:
    for bad in ({"rank": 0}, {"l1": -1.0}, {"init": "vera"}, {"threshold": 1.5}, {"dropout": 1.0}, {"target": []}):
        with pytest.raises(ValueError):
            S2LoraConfig(**bad)


# -- parity with PEFT's VeRA (S2-LoRA's structure with λ_b = 1, λ_d = c_i, A and B frozen) ----------------
def _vera_pair(dropout: float = 0.0):
    base = _small()
    targets = ["0", "2"]
    ours = copy.deepcopy(base)
    _adapt(ours, targets, dropout=dropout)
    _randomize(ours)
    config = peft.VeraConfig(r=8, target_modules=targets, vera_dropout=dropout, save_projection=True)
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    shared = ours[0].shared
    with torch.no_grad():
        vera = theirs.base_model
        vera.vera_A["default"].copy_(shared.lora_A)
        vera.vera_B["default"].copy_(shared.lora_B)
        for name in targets:
            peer = theirs.base_model.model.get_submodule(name)
            peer.vera_lambda_b["default"].fill_(1.0)
            peer.vera_lambda_d["default"].copy_(ours.get_submodule(name).s2_coefficients)
    shared.lora_A.requires_grad_(False)  # VeRA's factors are frozen buffers
    shared.lora_B.requires_grad_(False)
    pairs = [(ours.get_submodule(n), theirs.base_model.model.get_submodule(n)) for n in targets]
    return ours, theirs, pairs


def test_forward_gradients_and_adamw_steps_equal_vera_with_unit_b_vector() -> None:
    ours, theirs, pairs = _vera_pair()
    assert pairs[0][1].vera_A["default"].data_ptr() == pairs[1][1].vera_A["default"].data_ptr()  # VeRA shares too
    opt_a = torch.optim.AdamW([m.s2_coefficients for m, _ in pairs], lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW([p.vera_lambda_d["default"] for _, p in pairs], lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(7, 3, 16, generator=_g(100 + step))
        mine, peer_out = ours(x), theirs(x)
        assert torch.equal(mine, peer_out)  # bit for bit: same operations in the same order
        mine.square().mean().backward()
        peer_out.square().mean().backward()
        for m, p in pairs:
            torch.testing.assert_close(m.s2_coefficients.grad, p.vera_lambda_d["default"].grad, rtol=1e-6, atol=1e-8)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    for m, p in pairs:
        torch.testing.assert_close(m.s2_coefficients, p.vera_lambda_d["default"], rtol=1e-6, atol=1e-7)


def test_merge_equals_vera_merge() -> None:
    ours, theirs, pairs = _vera_pair()
    for m, _p in pairs:
        m.merge()
    merged = theirs.merge_and_unload()
    for m, name in zip((m for m, _ in pairs), ("0", "2")):
        torch.testing.assert_close(m.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-7)


def test_dropout_draws_veras_mask() -> None:
    ours, theirs, _pairs = _vera_pair(dropout=0.25)
    ours.train(), theirs.train()
    x = torch.randn(6, 16, generator=_g(8))
    torch.manual_seed(3)
    mine = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(mine, theirs(x), rtol=1e-6, atol=1e-6)


def test_export_loads_in_peft_lora_with_identical_outputs(tmp_path: Path) -> None:
    base = _small()
    ours = copy.deepcopy(base)
    _adapt(ours, ["0", "2", "4"], alpha=4.0)  # two shape groups, scaling 0.5
    _randomize(ours)
    with torch.no_grad():
        ours[6].weight.add_(0.5)  # a trained head, saved whole (modules_to_save)
    export_lora(ours, tmp_path, ["6"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 4.0
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(5, 16, generator=_g(9))
    torch.testing.assert_close(loaded(x), ours(x), rtol=1e-6, atol=1e-6)


def test_export_refuses_what_peft_cannot_say(tmp_path: Path) -> None:
    model = _small()
    _adapt(model, ["0"], rank=4)
    model[2] = S2LoRALinear(model[2], 2).attach(init_factors_(SharedFactors(2, 16, 16)))  # two ranks
    assert export_lora(model, tmp_path / "mixed") is None and not (tmp_path / "mixed").exists()


# -- the plan --------------------------------------------------------------------------------------
def test_example_runs_and_reports_the_rank_allocation(tmp_path: Path) -> None:
    result = run_plan_file(EXAMPLE, tmp_path, variant="s2-lora")
    results = result.results
    assert results["status"] == "completed" and results["steps"] == 30
    summary = results["summary"]["s2-lora"]
    # blocks.0.linear1 and blocks.1.linear1 (32×32) share one A, B pair: 2·8·32 + 2·8 values
    assert summary["trainable_parameters"] == 528.0 and summary["shared_groups"] == 1.0
    assert summary["adapted_layers"] == 2.0 and 1 <= summary["active_ranks"] <= 16
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
    report = json.loads((Path(result.run_dir) / "rank_allocation.json").read_text())
    assert set(report["ranks"]) == {"blocks.0.linear1", "blocks.1.linear1"}
    assert sum(report["ranks"].values()) == summary["active_ranks"]
    assert all(len(c) == 8 for c in report["coefficients"].values())
