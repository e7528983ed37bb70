"""OFTv2: hand-computed rotations, parity with PEFT's OFT layer (use_cayley_neumann=True, and the exact Cayley)
on a small module (outputs, gradients, several AdamW steps with weight decay, merging, the PEFT export), the
config's checks, and an end-to-end run of example.toml."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from paperkit_oftv2 import OFTv2Config
from paperkit_oftv2.functional import (
    OFTLinear,
    block_diagonal,
    cayley,
    cayley_neumann,
    check_block_size,
    oft_linear,
    orthogonality_error,
    rotate_input,
    rotation_blocks,
    skew_symmetric,
    trainable_values,
)
from paperkit_oftv2.hooks import export_oft
from torch import nn

from paperkit import PlanError, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the math, by hand ---------------------------------------------------------------------------
def test_skew_symmetric_layout() -> None:
    """θ fills the strict upper triangle row by row; Q = U − Uᵀ."""
    q = skew_symmetric(torch.tensor([[1.0, 2.0, 3.0]]), 3)
    expected = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 3.0], [-2.0, -3.0, 0.0]])
    assert torch.equal(q[0], expected)
    with pytest.raises(ValueError, match="entries per block"):
        skew_symmetric(torch.zeros(1, 4), 3)


def test_neumann_series_by_hand_and_its_limit() -> None:
    """R = (I + Q) Σ_{k<m} Qᵏ term by term (m = 4 for 5 terms; PEFT keeps Q³ for 3 and 4 terms), which tends to
    (I + Q)(I − Q)⁻¹ = cayley(−Q); its departure from orthogonality is exactly RᵀR = (I − Qᵐ)(I − (−Q)ᵐ)."""
    theta = 0.05 * torch.randn(3, 6, generator=_g(0), dtype=torch.float64)
    q = skew_symmetric(theta, 4)
    eye = torch.eye(4, dtype=torch.float64)
    p = torch.linalg.matrix_power
    torch.testing.assert_close(cayley_neumann(q, 5), eye + 2 * q + 2 * p(q, 2) + 2 * p(q, 3) + p(q, 4))
    torch.testing.assert_close(cayley_neumann(q, 5), (eye + q) @ (eye + q + p(q, 2) + p(q, 3)))
    torch.testing.assert_close(cayley_neumann(q, 3), eye + 2 * q + 2 * p(q, 2) + p(q, 3))
    assert torch.equal(cayley_neumann(q, 3), cayley_neumann(q, 4))
    torch.testing.assert_close(cayley_neumann(q, 2), eye + 2 * q)
    torch.testing.assert_close(cayley_neumann(q, 1), eye.expand(3, 4, 4))
    torch.testing.assert_close(cayley_neumann(q, 30), cayley(-q), rtol=1e-12, atol=1e-12)
    r2 = cayley_neumann(q, 2)
    torch.testing.assert_close(r2.transpose(-2, -1) @ r2, eye - 4 * p(q, 2))  # 2 terms: I + 2Q, off by 4Q²
    for terms, m in ((3, 3), (5, 4), (6, 5), (8, 7)):  # RᵀR = (I − Qᵐ)(I − (−Q)ᵐ): odd m errs by Q²ᵐ only
        r = cayley_neumann(q, terms)
        torch.testing.assert_close(r.transpose(-2, -1) @ r, (eye - p(q, m)) @ (eye - p(-q, m)), rtol=1e-12, atol=1e-14)
    assert orthogonality_error(cayley_neumann(q, 8)) < 1e-10 < orthogonality_error(cayley_neumann(q, 5))
    assert orthogonality_error(cayley(q)) < 1e-12
    torch.testing.assert_close(cayley(q), (eye - q) @ torch.linalg.inv(eye + q))
    assert torch.equal(rotation_blocks(torch.zeros(2, 6), 4), torch.eye(4).expand(2, 4, 4))


@pytest.mark.parametrize("share", [False, True])
def test_input_centric_equals_weight_centric(share: bool) -> None:
    """OFTv2's x R block by block equals x times the full block-diagonal R; both forms give the same layer."""
    blocks = rotation_blocks(0.3 * torch.randn(1 if share else 3, 10, generator=_g(1), dtype=torch.float64), 5)
    x = torch.randn(2, 4, 15, generator=_g(2), dtype=torch.float64)
    torch.testing.assert_close(rotate_input(x, blocks), x @ block_diagonal(blocks, 3))
    linear = nn.Linear(15, 6).double()
    a, b = oft_linear(copy.deepcopy(linear), 5, block_share=share), oft_linear(copy.deepcopy(linear), 5, block_share=share, form="weight")
    with torch.no_grad():
        a.oft_R.normal_(generator=_g(3))
        b.oft_R.copy_(a.oft_R)
    torch.testing.assert_close(a(x), b(x))
    torch.testing.assert_close(a(x), x @ (linear.weight @ a.rotation().T).T + linear.bias)


def test_shapes_counts_and_checks() -> None:
    assert trainable_values(32, 384) == 12 * 32 * 31 // 2 == 5952
    assert trainable_values(32, 384, block_share=True) == 496
    assert check_block_size(8, 64) == 8
    with pytest.raises(ValueError, match="must divide"):
        check_block_size(5, 64)
    with pytest.raises(ValueError, match=">= 2"):
        check_block_size(1, 64)
    OFTv2Config(block_size=16, neumann=False, form="weight")
    for bad in ({"block_size": 1}, {"terms": 0}, {"form": "matrix"}, {"target": []}):
        with pytest.raises(ValueError):
            OFTv2Config(**bad)


def test_half_precision_layer_keeps_float32_parameters_and_merges_exactly() -> None:
    layer = oft_linear(nn.Linear(8, 4).to(torch.bfloat16), 4)
    assert layer.oft_R.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    with torch.no_grad():
        layer.oft_R.normal_(generator=_g(4))
    x = torch.randn(3, 8, generator=_g(5)).to(torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16
    before = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)


# -- parity with PEFT's OFT -----------------------------------------------------------------------
def _small(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))


def _pair(block: int, targets: list[str], neumann: bool = True, terms: int = 5, share: bool = False, form: str = "input"):
    base = _small()
    config = peft.OFTConfig(
        r=0, oft_block_size=block, target_modules=targets, use_cayley_neumann=neumann,
        num_cayley_neumann_terms=terms, block_share=share,
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), config)
    ours = copy.deepcopy(base)
    wrap_low_rank(ours, targets, lambda name, linear: oft_linear(linear, block, neumann, terms, share, form))
    pairs = []
    for name in targets:
        mine, peer = ours.get_submodule(name), theirs.base_model.model.get_submodule(name).oft_R["default"]
        assert mine.oft_R.shape == peer.weight.shape
        with torch.no_grad():  # a trained-looking θ, the same on both sides
            mine.oft_R.copy_(0.1 * torch.randn(mine.oft_R.shape, generator=_g(len(pairs) + 10)))
            peer.weight.copy_(mine.oft_R)
        pairs.append((mine, peer))
    return base, ours, theirs, pairs


CASES = [  # (block size, targets, neumann, terms, block_share, form)
    (4, ["0", "2", "4"], True, 5, False, "input"),
    (8, ["0", "2"], True, 3, False, "input"),
    (2, ["0", "4"], True, 7, False, "weight"),
    (4, ["0", "2", "4"], False, 5, False, "input"),
    (4, ["0", "4"], True, 5, True, "input"),
]


@pytest.mark.parametrize("block,targets,neumann,terms,share,form", CASES)
def test_outputs_gradients_and_adamw_steps_equal_peft(block, targets, neumann, terms, share, form) -> None:  # noqa: ANN001
    """Same outputs and gradients as PEFT's OFT layer, then five AdamW steps (weight decay on) in lockstep."""
    _base, ours, theirs, pairs = _pair(block, targets, neumann, terms, share, form)
    opt_a = torch.optim.AdamW([m.oft_R for m, _ in pairs], lr=1e-2, weight_decay=0.1)
    opt_b = torch.optim.AdamW([p.weight for _, p in pairs], lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(7, 3, 16, generator=_g(100 + step))
        mine, peer_out = ours(x), theirs(x)
        torch.testing.assert_close(mine, peer_out, rtol=1e-6, atol=1e-6)
        mine.square().mean().backward()
        peer_out.square().mean().backward()
        for m, p in pairs:
            torch.testing.assert_close(m.oft_R.grad, p.weight.grad, rtol=1e-5, atol=1e-7)
        opt_a.step(), opt_b.step(), opt_a.zero_grad(), opt_b.zero_grad()
    for m, p in pairs:
        torch.testing.assert_close(m.oft_R, p.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neumann", [True, False])
def test_merged_weights_equal_peft_merge(neumann: bool) -> None:
    _base, ours, theirs, pairs = _pair(4, ["0", "2", "4"], neumann)
    x = torch.randn(5, 16, generator=_g(7))
    expected = ours(x)
    for m, _p in pairs:
        m.merge()
    merged = theirs.merge_and_unload()
    for m, name in zip([m for m, _ in pairs], ["0", "2", "4"]):
        torch.testing.assert_close(m.base.weight, merged.get_submodule(name).weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("neumann,share", [(True, False), (False, True)])
def test_export_loads_in_peft_with_identical_outputs(neumann: bool, share: bool, tmp_path: Path) -> None:
    base, ours, _theirs, _pairs = _pair(4, ["0", "4"], neumann, 6, share)
    with torch.no_grad():
        ours[2].weight.add_(0.5)  # a trained layer saved whole (modules_to_save)
    export_oft(ours, tmp_path, ["2"])
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "OFT" and config["oft_block_size"] == 4 and config["use_cayley_neumann"] == neumann
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    x = torch.randn(5, 16, generator=_g(9))
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)


def test_export_refuses_what_peft_cannot_say(tmp_path: Path) -> None:
    model = _small()
    model[0] = oft_linear(model[0], 4)
    model[2] = oft_linear(model[2], 2)  # two block sizes: one OFTConfig cannot hold them
    assert export_oft(model, tmp_path / "mixed") is None and not (tmp_path / "mixed").exists()
    assert isinstance(model[0], OFTLinear)


# -- plans ------------------------------------------------------------------------------------------
def test_block_size_that_does_not_cut_a_layer_is_a_plan_error(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    text = EXAMPLE.read_text().replace('use = "oftv2", block_size = 8,', 'use = "oftv2", block_size = 5,')
    with pytest.raises(PlanError, match="layer 'stem.0' \\(32×64\\).*must divide"):
        run_plan(text, variant="oftv2")


def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, manifest = run_plan(EXAMPLE.read_text(), variant="oftv2")
    assert results["status"] == "completed" and results["steps"] == 30 and "oftv2" in manifest["methods"]
    # stem.0 (in 64) and blocks.0.linear1 (in 32), blocks of 8: (8 + 4) blocks × 8·7/2 values
    assert results["summary"]["oftv2"] == {"trainable_parameters": 336.0, "adapted_layers": 2.0}
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
