"""Bone: hand-computed blocks, parity with PEFT's MiSS ("bat" = the paper's Bone, True = the unguided
structure) on a small module (outputs, gradients, several AdamW steps, merging, the PEFT export), the
config's checks, and an end-to-end run of example.toml."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from paperkit_bone import BoneConfig
from paperkit_bone.functional import (
    BoneLinear,
    affine_delta,
    block_shape,
    bone_linear,
    shared_delta,
    shared_update,
    trainable_values,
)
from paperkit_bone.hooks import export_miss
from torch import nn

from paperkit import PlanError, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
PEFT_INIT = {"affine": "bat", "shared": True}


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the math, by hand ---------------------------------------------------------------------------
def test_affine_blocks_by_hand() -> None:
    """ΔW_ij = W_ij B_i + B_i for every r×r block (i: block row, j: block column), looped by hand."""
    r, out, inp = 2, 6, 4
    W = torch.randn(out, inp, generator=_g(0), dtype=torch.float64)
    B = torch.randn(out // r, r, r, generator=_g(1), dtype=torch.float64)
    delta = affine_delta(W, B)
    for i in range(out // r):
        for j in range(inp // r):
            block = W[i * r : (i + 1) * r, j * r : (j + 1) * r]
            torch.testing.assert_close(delta[i * r : (i + 1) * r, j * r : (j + 1) * r], block @ B[i] + B[i])
    assert torch.equal(affine_delta(W, torch.zeros_like(B)), torch.zeros_like(W))  # B = 0: the base model


@pytest.mark.parametrize("inp", [6, 7])
def test_shared_blocks_by_hand_and_factorized_forward(inp: int) -> None:
    """ΔW[:, j·r:(j+1)·r] = Bᵀ for every column block (a partial last block gets Bᵀ's first columns), and
    the factorized forward (Σ_j x_j) B equals x ΔWᵀ, padding included."""
    r, out = 3, 5
    B = torch.randn(r, out, generator=_g(2), dtype=torch.float64)
    delta = shared_delta(B, inp)
    assert delta.shape == (out, inp)
    for col in range(inp):
        torch.testing.assert_close(delta[:, col], B[col % r])
    x = torch.randn(4, 2, inp, generator=_g(3), dtype=torch.float64)
    torch.testing.assert_close(shared_update(x, B), x @ delta.T)


def test_first_gradient_is_the_weight_guided_sum() -> None:
    """At B = 0 the affine update's gradient is Σ_j (W_ij + I)ᵀ G_ij with G = ∂L/∂W' (the Weight Guide):
    the frozen weights steer B from the first step; the unguided structure's is Σ_j G_jᵀ-blocks only."""
    r = 2
    layer = bone_linear(nn.Linear(4, 6, bias=False).double(), r)
    x, target = torch.randn(5, 4, generator=_g(4), dtype=torch.float64), torch.randn(5, 6, generator=_g(5), dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    W = layer.base.weight.detach()
    G = (2 * (x @ W.T - target)).T @ x  # ∂L/∂W' at W' = W
    eye = torch.eye(r, dtype=torch.float64)
    for i in range(3):
        expected = sum(
            (W[i * r : (i + 1) * r, j * r : (j + 1) * r] + eye).T @ G[i * r : (i + 1) * r, j * r : (j + 1) * r]
            for j in range(2)
        )
        torch.testing.assert_close(layer.bone_block.grad[i], expected)


def test_shapes_and_counts() -> None:
    assert block_shape("affine", 16, 384, 384) == (24, 16, 16)
    assert block_shape("shared", 16, 384, 384) == (16, 384)
    # at r = 2·(LoRA rank) on a square layer, Bone trains exactly LoRA's count: out·r = rank·(in + out)
    assert trainable_values("affine", 16, 384, 384) == 8 * (384 + 384) == 6144
    with pytest.raises(ValueError, match="must divide"):
        block_shape("affine", 5, 10, 12)
    with pytest.raises(ValueError, match="<= in_features"):
        block_shape("shared", 8, 4, 12)
    with pytest.raises(ValueError, match="unknown structure"):
        block_shape("diagonal", 2, 4, 4)


def test_half_precision_layer_keeps_a_float32_block_and_merges_exactly() -> None:
    layer = bone_linear(nn.Linear(8, 4).to(torch.bfloat16), 4)
    assert layer.bone_block.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    with torch.no_grad():
        layer.bone_block.normal_(generator=_g(6))
    before = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)


# -- parity with PEFT's MiSS ----------------------------------------------------------------------
def _small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))


def _pair(structure: str, rank: int, targets: list[str], dropout: float = 0.0):
    base = _small()
    config = peft.MissConfig(r=rank, target_modules=targets, init_weights=PEFT_INIT[structure], miss_dropout=dropout)
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    ours = copy.deepcopy(base)
    wrap_low_rank(ours, targets, lambda name, linear: bone_linear(linear, rank, structure, dropout))
    pairs = []
    for name in targets:
        mine, peer = ours.get_submodule(name), theirs.base_model.model.get_submodule(name)
        assert mine.bone_block.shape == peer.miss_block["default"].shape
        with torch.no_grad():  # a trained-looking B, the same on both sides
            mine.bone_block.copy_(0.3 * torch.randn(mine.bone_block.shape, generator=_g(len(pairs) + 10)))
            peer.miss_block["default"].copy_(mine.bone_block)
        pairs.append((mine, peer))
    return base, ours, theirs, pairs


CASES = [  # (structure, rank, targets): square and rectangular blocks; the shared one also with in % r != 0
    ("affine", 4, ["0", "2", "4"]),
    ("affine", 2, ["0", "2"]),
    ("shared", 4, ["0", "2", "4"]),
    ("shared", 3, ["0", "2"]),
]


@pytest.mark.parametrize("structure,rank,targets", CASES)
def test_outputs_gradients_and_adamw_steps_equal_peft(structure: str, rank: int, targets: list[str]) -> None:
    """Same outputs and gradients as PEFT's MiSS layer, then five AdamW steps (weight decay on) in lockstep."""
    _base, ours, theirs, pairs = _pair(structure, rank, targets)
    opt_a = torch.optim.AdamW([m.bone_block for m, _ in pairs], lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW([p.miss_block["default"] for _, p in pairs], lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(7, 3, 16, generator=_g(100 + step))
        mine, peer_out = ours(x), theirs(x)
        torch.testing.assert_close(mine, peer_out, rtol=1e-6, atol=1e-6)
        mine.square().mean().backward()
        peer_out.square().mean().backward()
        for m, p in pairs:
            torch.testing.assert_close(m.bone_block.grad, p.miss_block["default"].grad, rtol=1e-5, atol=1e-7)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    for m, p in pairs:
        torch.testing.assert_close(m.bone_block, p.miss_block["default"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure,rank,targets", CASES[::2])
def test_merged_weights_equal_peft_merge(structure: str, rank: int, targets: list[str]) -> None:
    _base, ours, theirs, pairs = _pair(structure, rank, targets)
    x = torch.randn(5, 16, generator=_g(7))
    expected = ours(x)
    for m, _p in pairs:
        m.merge()
    merged = theirs.merge_and_unload()
    for (m, _p), name in zip(pairs, targets):
        torch.testing.assert_close(m.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)


def test_dropout_draws_peft_mask() -> None:
    """The shared structure's dropout acts where PEFT's does (after padding), so seeded masks agree."""
    _base, ours, theirs, _pairs = _pair("shared", 3, ["0", "2"], dropout=0.25)
    ours.train(), theirs.train()
    x = torch.randn(6, 16, generator=_g(8))
    torch.manual_seed(3)
    mine = ours(x)
    torch.manual_seed(3)
    torch.testing.assert_close(mine, theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("structure", ["affine", "shared"])
def test_export_loads_in_peft_with_identical_outputs(structure: str, tmp_path: Path) -> None:
    base, ours, _theirs, _pairs = _pair(structure, 4, ["0", "2"])
    with torch.no_grad():
        ours[4].weight.add_(0.5)  # a trained head, saved whole (modules_to_save)
    export_miss(ours, tmp_path, ["4"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "MISS" and config["init_weights"] == PEFT_INIT[structure] and config["r"] == 4
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(5, 16, generator=_g(9))
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)


def test_export_refuses_what_peft_cannot_say(tmp_path: Path) -> None:
    model = _small()
    model[0] = bone_linear(model[0], 4, "affine")
    model[2] = bone_linear(model[2], 2, "affine")  # two block sizes: one MissConfig cannot hold them
    assert export_miss(model, tmp_path / "mixed") is None and not (tmp_path / "mixed").exists()


# -- config and plans ------------------------------------------------------------------------------
def test_config_checks() -> None:
    BoneConfig(structure="shared", dropout=0.1)
    with pytest.raises(ValueError, match="structure = 'shared' only"):
        BoneConfig(dropout=0.1)
    with pytest.raises(ValueError):
        BoneConfig(structure="bat")
    with pytest.raises(ValueError):
        BoneConfig(rank=0)
    with pytest.raises(ValueError, match="shared structure's input only"):
        BoneLinear(nn.Linear(4, 4), 2, "affine", 0.1)


def test_rank_that_does_not_cut_a_layer_is_a_plan_error(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    text = EXAMPLE.read_text().replace('adapt = { use = "bone", rank = 8,', 'adapt = { use = "bone", rank = 5,')
    with pytest.raises(PlanError, match="layer 'stem.0' \\(32×64\\).*must divide"):
        run_plan(text, variant="bone")


def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, _manifest = run_plan(EXAMPLE.read_text(), variant="bone")
    assert results["status"] == "completed" and results["steps"] == 30
    # stem.0 (32×64) and blocks.0.linear1 (32×32), one 8×8 matrix per block row: 2 × 32·8 values
    assert results["summary"]["bone"] == {"trainable_parameters": 512.0, "adapted_layers": 2.0}
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
