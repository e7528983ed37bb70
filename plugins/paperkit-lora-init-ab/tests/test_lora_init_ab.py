"""Init[A] and Init[B]: the draws against PEFT's code path, training parity with PEFT's LoRA layers, the PEFT
export, the first-step gradient asymmetry, and end-to-end runs of example.toml."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import peft
import pytest
import torch
from paperkit_lora_init_ab.functional import draw_, init_a_, init_b_, init_lora_ab_, lora_ab_linear, random_factor
from torch import nn

from paperkit import LowRankLinear, export_peft, init_lora_, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
TARGETS = ["0", "2"]


def _base(inp: int = 10, hidden: int = 12, out: int = 6) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inp, hidden), nn.Tanh(), nn.Linear(hidden, out))


def _peft(base: nn.Module, rank: int, alpha: float) -> nn.Module:
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS)
    return peft.get_peft_model(copy.deepcopy(base), config).base_model.model


def _swap_to_init_b_by_hand(layer: nn.Module) -> None:
    """The reference Init[B] on one PEFT layer: PEFT's own Kaiming-uniform draw (a = √5) moved from A to B."""
    with torch.no_grad():
        nn.init.zeros_(layer.lora_A["default"].weight)
        nn.init.kaiming_uniform_(layer.lora_B["default"].weight, a=math.sqrt(5))


@pytest.mark.parametrize("rank,alpha", [(4, 8.0), (3, 3.0)])
def test_init_a_is_peft_default_draw_for_draw(rank: int, alpha: float) -> None:
    """Init[A] reproduces PEFT's ``reset_lora_parameters(init_lora_weights=True)`` bit for bit from the same seed."""
    base = _base()
    theirs = _peft(base, rank, alpha)
    ours = copy.deepcopy(base)
    torch.manual_seed(11)
    wrap_low_rank(ours, TARGETS, lambda name, linear: lora_ab_linear(linear, rank, alpha, "A"))
    torch.manual_seed(11)
    for name in TARGETS:
        theirs.get_submodule(name).reset_lora_parameters("default", True)
    for name in TARGETS:
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        assert torch.equal(a.lora_A, b.lora_A["default"].weight) and torch.equal(a.lora_B, b.lora_B["default"].weight)
        assert a.scaling == b.scaling["default"] and not a.lora_B.any()


def test_init_b_is_the_swapped_peft_draw() -> None:
    """Init[B] is PEFT's layer with the factors' roles swapped by hand: A = 0, B drawn like PEFT draws A."""
    base = _base()
    theirs = _peft(base, 4, 8.0)
    ours = copy.deepcopy(base)
    torch.manual_seed(5)
    wrap_low_rank(ours, TARGETS, lambda name, linear: lora_ab_linear(linear, 4, 8.0, "B"))
    torch.manual_seed(5)
    for name in TARGETS:
        _swap_to_init_b_by_hand(theirs.get_submodule(name))
    for name in TARGETS:
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        assert torch.equal(a.lora_A, b.lora_A["default"].weight) and torch.equal(a.lora_B, b.lora_B["default"].weight)
        assert random_factor(a) == "lora_B" and a.lora_B.abs().max() <= 1 / math.sqrt(4)


@pytest.mark.parametrize("init", ["A", "B"])
@pytest.mark.parametrize("shape,rank,alpha", [((10, 12, 6), 4, 8.0), ((7, 20, 3), 2, 2.0)])
def test_training_matches_peft(init: str, shape: tuple[int, int, int], rank: int, alpha: float) -> None:
    """Six AdamW steps (weight decay on) from either init: the same outputs, gradients and factors as PEFT's layers."""
    base = _base(*shape)
    theirs = _peft(base, rank, alpha)
    ours = copy.deepcopy(base)
    torch.manual_seed(3)
    wrap_low_rank(ours, TARGETS, lambda name, linear: lora_ab_linear(linear, rank, alpha, init))
    for name in TARGETS:  # start PEFT's layers from our draw
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        with torch.no_grad():
            b.lora_A["default"].weight.copy_(a.lora_A)
            b.lora_B["default"].weight.copy_(a.lora_B)
    mine = [p for p in ours.parameters() if p.requires_grad]
    peers = [p for p in theirs.parameters() if p.requires_grad]
    assert len(mine) == len(peers) == 4
    opt_a = torch.optim.AdamW(mine, lr=0.01, weight_decay=0.1)
    opt_b = torch.optim.AdamW(peers, lr=0.01, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        x, y = torch.randn(9, shape[0], generator=g), torch.randn(9, shape[2], generator=g)
        out_a, out_b = ours(x), theirs(x)
        torch.testing.assert_close(out_a, out_b, rtol=1e-6, atol=1e-6)
        for opt, out in ((opt_a, out_a), (opt_b, out_b)):
            opt.zero_grad()
            ((out - y) ** 2).mean().backward()
            opt.step()
    for name in TARGETS:
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        torch.testing.assert_close(a.lora_A, b.lora_A["default"].weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a.lora_B, b.lora_B["default"].weight, rtol=1e-6, atol=1e-6)
        assert a.lora_A.abs().sum() > 0 and a.lora_B.abs().sum() > 0  # both factors moved off their start


def test_init_b_export_loads_in_peft(tmp_path: Path) -> None:
    """An Init[B] adapter written in PEFT's format is loaded by ``PeftModel.from_pretrained`` with the same outputs."""
    base = _base()
    ours = copy.deepcopy(base)
    torch.manual_seed(1)
    wrap_low_rank(ours, TARGETS, lambda name, linear: lora_ab_linear(linear, 4, 8.0, "B"))
    with torch.no_grad():  # a trained A (nonzero), so the export carries both factors
        for name in TARGETS:
            ours.get_submodule(name).lora_A.normal_(0, 0.1)
    x = torch.randn(5, 10)
    export_peft(ours, tmp_path)
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ours(x), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(base(x), ours(x))


def test_first_gradient_reaches_only_the_zero_factor() -> None:
    """With B A = 0 the first gradient flows only into the zero factor: Init[A] trains B first, Init[B] trains A first
    (dL/dA = s·Bᵀ G xᵀ and dL/dB = s·G (A x)ᵀ; the paper's Sec. 3 dynamics)."""
    x, target = torch.randn(16, 10), torch.randn(16, 12)
    grads = {}
    for init in ("A", "B"):
        torch.manual_seed(0)
        layer = init_lora_ab_(LowRankLinear(nn.Linear(10, 12), 4, 2.0), init)
        ((layer(x) - target) ** 2).mean().backward()
        grads[init] = (layer.lora_A.grad.abs().sum().item(), layer.lora_B.grad.abs().sum().item())
    assert grads["A"][0] == 0.0 and grads["A"][1] > 0
    assert grads["B"][0] > 0 and grads["B"][1] == 0.0


def test_both_inits_start_at_the_base_and_their_scales_follow_the_fan_in() -> None:
    """B A = 0 for both; the random factor's variance is 1/(3 fan_in) (Kaiming-uniform) or 1/fan_in (Gaussian),
    so Init[B]'s entries (fan-in r) are √(in/r) times Init[A]'s (fan-in in)."""
    linear = nn.Linear(2048, 1024)
    x = torch.randn(3, 2048)
    stds = {}
    for distribution, variance in (("kaiming-uniform", 1 / 3), ("gaussian", 1.0)):
        for init in ("A", "B"):
            torch.manual_seed(0)
            layer = lora_ab_linear(copy.deepcopy(linear), 8, 16.0, init, distribution)
            torch.testing.assert_close(layer(x), linear(x))
            factor = getattr(layer, random_factor(layer))
            fan_in = factor.shape[1]
            assert factor.var().item() == pytest.approx(variance / fan_in, rel=0.05)
            stds[distribution, init] = factor.std().item()
        assert stds[distribution, "B"] / stds[distribution, "A"] == pytest.approx(math.sqrt(2048 / 8), rel=0.05)
    bound = 1 / math.sqrt(8)
    torch.manual_seed(0)
    assert init_b_(LowRankLinear(nn.Linear(64, 32), 8, 1.0)).lora_B.abs().max() <= bound


def test_generator_and_bad_inputs() -> None:
    a1, a2 = torch.empty(4, 6), torch.empty(4, 6)
    draw_(a1, "gaussian", torch.Generator().manual_seed(2))
    draw_(a2, "gaussian", torch.Generator().manual_seed(2))
    assert torch.equal(a1, a2)
    layer = LowRankLinear(nn.Linear(6, 5), 2, 1.0)
    with pytest.raises(ValueError, match="init must be"):
        init_lora_ab_(layer, "C")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distribution must be"):
        draw_(torch.empty(2, 2), "orthogonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        random_factor(layer)  # both zero
    init_a_(layer)
    assert random_factor(layer) == "lora_A"


def test_config_validates() -> None:
    from paperkit_lora_init_ab import LoraInitABConfig

    assert LoraInitABConfig().init == "A" and LoraInitABConfig().distribution == "kaiming-uniform"
    for bad in ({"init": "C"}, {"distribution": "normal"}, {"rank": 0}, {"alpha": 0.0}, {"dropout": 1.0}, {"target": []}):
        with pytest.raises((ValueError, TypeError)):
            LoraInitABConfig(**bad)


def test_example_init_a_is_the_builtin_lora_and_init_b_differs(run_plan) -> None:  # noqa: ANN001 - fixture
    """End to end: the init-a arm runs exactly as the built-in ``lora`` (same draws, same results); init-b trains too."""
    text = EXAMPLE.read_text(encoding="utf-8")
    ours, manifest = run_plan(text, variant="init-a")
    assert ours["status"] == "completed" and ours["steps"] == 30 and "lora-init-ab" in manifest["methods"]
    assert ours["summary"]["lora-init-ab"]["adapted_layers"] == 2.0
    builtin, _ = run_plan(text.replace('use = "lora-init-ab", init = "A",', 'use = "lora",'), variant="init-a")
    assert ours["final"] == builtin["final"]
    other, _ = run_plan(text, variant="init-b")
    assert other["status"] == "completed" and other["final"] != ours["final"]


def test_builtin_init_lora_is_init_a() -> None:
    torch.manual_seed(4)
    mine = init_a_(LowRankLinear(nn.Linear(9, 7), 3, 1.0))
    torch.manual_seed(4)
    core = init_lora_(LowRankLinear(nn.Linear(9, 7), 3, 1.0))
    assert torch.equal(mine.lora_A, core.lora_A) and torch.equal(mine.lora_B, core.lora_B)
