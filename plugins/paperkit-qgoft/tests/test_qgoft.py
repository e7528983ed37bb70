"""qGOFT: the Givens layouts by hand, a pure Givens R against the product of explicit Givens matrices (orthogonal,
det 1), the paper's reduction (the d − 1 rotations of the tree turn any vector into a multiple of e_0), the layer
against an explicit R W0 on both sides, the soft orthogonality term and its hook, the config's checks, and an
end-to-end run of example.toml.

No reference implementation of qGOFT exists to run (no official code; PEFT has OFT and BOFT, not Givens
rotations), so every test pins the math to explicit matrices built here by hand.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from paperkit_qgoft import QGOFTConfig
from paperkit_qgoft.functional import (
    GivensLinear,
    apply_givens,
    butterfly_pairs,
    givens_blocks,
    givens_linear,
    givens_matrix,
    identity_blocks,
    model_penalty,
    orthogonality_penalty,
    rotation_count,
    tree_pairs,
)
from paperkit_qgoft.hooks import QGOFT
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _explicit(d: int, layout_pairs: list, blocks: torch.Tensor) -> torch.Tensor:
    """R = G_1 G_2 ⋯ G_P: the product of the explicit d × d matrices, one rotation at a time, in layer order."""
    r = torch.eye(d, dtype=blocks.dtype)
    k = 0
    for i, j in layout_pairs:
        for a, b in zip(i, j):
            r = r @ givens_matrix(d, a, b, blocks[k])
            k += 1
    return r


def _index(pairs: list) -> list:
    return [(torch.tensor(i), torch.tensor(j)) for i, j in pairs]


# -- the layouts ------------------------------------------------------------------------------------
def test_tree_layout_by_hand_and_its_counts() -> None:
    assert tree_pairs(8) == [([0, 2, 4, 6], [1, 3, 5, 7]), ([0, 4], [2, 6]), ([0], [4])]
    assert tree_pairs(6) == [([0, 2, 4], [1, 3, 5]), ([0], [2]), ([0], [4])]
    assert butterfly_pairs(4) == [([0, 2], [1, 3]), ([0, 1], [2, 3])]
    for d in (2, 3, 7, 16, 384):
        layers = tree_pairs(d)
        assert rotation_count(d) == d - 1 and len(layers) == math.ceil(math.log2(d))  # O(d) in ⌈log₂ d⌉ layers
        for i, j in layers + butterfly_pairs(d):  # the planes of one parallel layer are disjoint
            assert len(set(i) | set(j)) == 2 * len(i) and max(j) < d
    assert rotation_count(16, "butterfly") == 8 * 4
    with pytest.raises(ValueError, match="at least 2"):
        tree_pairs(1)


# -- pure Givens: an exact rotation ---------------------------------------------------------------------
@pytest.mark.parametrize("d,layout", [(8, "tree"), (13, "tree"), (16, "butterfly"), (10, "butterfly")])
def test_pure_givens_is_the_product_of_givens_matrices_and_orthogonal(d: int, layout: str) -> None:
    linear = nn.Linear(d, 5)
    layer = givens_linear(linear, quasi=False, layout=layout)
    with torch.no_grad():
        layer.qgoft_theta.uniform_(-math.pi, math.pi, generator=_g(d))
    r = layer.rotation()
    assert r.shape == (d, d)
    torch.testing.assert_close(r.T @ r, torch.eye(d), rtol=0, atol=1e-6)  # orthogonal to 1e-6 in float32
    assert abs(torch.linalg.det(r.double()).item() - 1.0) < 1e-5  # in SO(d)
    pairs = tree_pairs(d) if layout == "tree" else butterfly_pairs(d)
    torch.testing.assert_close(r, _explicit(d, pairs, givens_blocks(layer.qgoft_theta.detach())), rtol=0, atol=1e-6)
    # the exact-Givens layer is the explicit R W0 layer: y = x R W0ᵀ + b
    x = torch.randn(4, 3, d, generator=_g(1))
    torch.testing.assert_close(layer(x), x @ r @ linear.weight.T + linear.bias, rtol=1e-5, atol=1e-5)
    assert orthogonality_penalty([givens_blocks(layer.qgoft_theta)]) < 1e-10


def test_givens_block_by_hand() -> None:
    b = givens_blocks(torch.tensor([math.pi / 2, 0.0]))
    torch.testing.assert_close(b[0], torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-7, rtol=0)
    assert torch.equal(b[1], torch.eye(2))
    g = givens_matrix(4, 1, 3, b[0])
    torch.testing.assert_close(torch.tensor([1.0, 2.0, 3.0, 4.0]) @ g, torch.tensor([1.0, 4.0, 3.0, -2.0]), atol=1e-6, rtol=0)


def test_the_tree_turns_any_vector_into_a_multiple_of_e0() -> None:
    """The paper's reduction (Sec. 3.2): d − 1 Givens rotations in ⌈log₂ d⌉ parallel layers rotate any u to ‖u‖ e_0,
    hence (composing one reduction with the inverse of another) any direction into any other."""
    d = 12
    u = torch.randn(d, generator=_g(5), dtype=torch.float64)
    pairs = tree_pairs(d)
    x, angles = u.clone(), []
    for i, j in pairs:  # θ = atan2(x_j, x_i) zeroes x_j: (x G)_i = cos θ x_i + sin θ x_j = r, (x G)_j = 0
        for a, b in zip(i, j):
            angles.append(math.atan2(x[b].item(), x[a].item()))
        x = apply_givens(x, givens_blocks(torch.tensor(angles[-len(i):], dtype=torch.float64)), _index([(i, j)]))
    out = apply_givens(u, givens_blocks(torch.tensor(angles, dtype=torch.float64)), _index(pairs))
    expected = torch.zeros(d, dtype=torch.float64)
    expected[0] = u.norm()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# -- quasi-Givens: free blocks ------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["input", "output"])
def test_quasi_layer_equals_the_explicit_weight_and_merges(side: str) -> None:
    linear = nn.Linear(9, 6).double()
    layer = givens_linear(copy.deepcopy(linear), quasi=True, side=side)
    d = 9 if side == "input" else 6
    x = torch.randn(5, 9, generator=_g(2), dtype=torch.float64)
    torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=1e-12)  # identity blocks: R = I
    with torch.no_grad():
        layer.qgoft_blocks.add_(0.3 * torch.randn(layer.qgoft_blocks.shape, generator=_g(3), dtype=torch.float64))
    r = _explicit(d, tree_pairs(d), layer.qgoft_blocks.detach())
    torch.testing.assert_close(layer.rotation(), r, rtol=1e-12, atol=1e-12)
    expected = x @ r @ linear.weight.T + linear.bias if side == "input" else x @ linear.weight.T @ r + linear.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)
    before = layer.base.weight.clone()
    layer.merge()
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)


def test_gradients_of_the_layered_product_are_exact() -> None:
    blocks = (identity_blocks(7, torch.float64) + 0.2 * torch.randn(7, 2, 2, generator=_g(4), dtype=torch.float64))
    blocks.requires_grad_(True)
    x = torch.randn(3, 8, generator=_g(6), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: apply_givens(x, b, _index(tree_pairs(8))), (x, blocks))


def test_orthogonality_penalty_by_hand() -> None:
    b = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]]], requires_grad=True)
    # BᵀB − I: diag(3, 0) → 9; [[0, 1], [1, 1]] → 3
    value = orthogonality_penalty([b])
    assert value.item() == 12.0
    value.backward()  # ∇ ‖BᵀB − I‖² = 4 B (BᵀB − I)
    eye = torch.eye(2)
    expected = 4 * b.detach() @ (b.detach().transpose(-2, -1) @ b.detach() - eye)
    torch.testing.assert_close(b.grad, expected)
    assert orthogonality_penalty([identity_blocks(5)]).item() == 0.0 and orthogonality_penalty([]) is None


def test_regularize_hook_adds_lambda_times_the_penalty() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    model[0] = givens_linear(model[0])
    model[2] = givens_linear(model[2], side="output")
    with torch.no_grad():
        model[0].qgoft_blocks.mul_(1.1)
    hooks = QGOFT(QGOFTConfig(orth_weight=0.5))
    term = hooks.regularize(model)["orthogonality"]
    expected = 0.5 * 7 * 2 * (1.21 - 1.0) ** 2  # 7 blocks, BᵀB − I = 0.21 I, model[2] still the identity
    assert abs(term.item() - expected) < 1e-6 and abs(model_penalty(model).item() - expected / 0.5) < 1e-6
    assert QGOFT(QGOFTConfig(orth_weight=0.0)).regularize(model) is None
    plain = nn.Sequential(givens_linear(nn.Linear(8, 4), quasi=False))
    assert QGOFT(QGOFTConfig(quasi=False)).regularize(plain) is None


def test_half_precision_layer_keeps_float32_parameters() -> None:
    layer = givens_linear(nn.Linear(8, 4).to(torch.bfloat16))
    assert layer.qgoft_blocks.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    assert layer(torch.randn(3, 8).to(torch.bfloat16)).dtype == torch.bfloat16


def test_config_checks_and_counts() -> None:
    QGOFTConfig(quasi=False, layout="butterfly", side="output", orth_weight=0.0)
    for bad in ({"orth_weight": -1.0}, {"layout": "ring"}, {"side": "both"}, {"target": []}):
        with pytest.raises(ValueError):
            QGOFTConfig(**bad)
    layer = givens_linear(nn.Linear(384, 384))
    assert isinstance(layer, GivensLinear) and layer.qgoft_blocks.numel() == 4 * 383 == 1532  # the claim's count
    assert givens_linear(nn.Linear(384, 384), quasi=False).qgoft_theta.numel() == 383


# -- plans ------------------------------------------------------------------------------------------
def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - paperkit fixture
    results, manifest = run_plan(EXAMPLE.read_text(), variant="qgoft")
    assert results["status"] == "completed" and results["steps"] == 30 and "qgoft" in manifest["methods"]
    # stem.0 (in 64) and blocks.0.linear1 (in 32): (63 + 31) quasi-Givens blocks of 4 values
    assert results["summary"]["qgoft"] == {"trainable_parameters": 376.0, "adapted_layers": 2.0}
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
