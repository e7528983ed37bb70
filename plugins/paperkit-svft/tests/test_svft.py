"""SVFT: parity with a transcription of the reference layer (tests/conftest.py) on several shapes and every
pattern (construction, outputs, gradients, AdamW steps with weight decay in lockstep, the merged weight),
hand-computed cases and invariants, the config's checks, and an end-to-end run of example.toml."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from paperkit_svft import SvftConfig
from paperkit_svft.functional import (
    SvftLinear,
    alignment_scores,
    banded_indices,
    coefficient_count,
    coefficient_matrix,
    kaiming_std,
    pattern_indices,
    random_indices,
    singular_vectors,
    svft_delta,
    svft_linear,
    svft_update,
    trainable_values,
)
from torch import nn

from paperkit import PlanError, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
REF_PATTERN = {"plain": "banded", "banded": "banded", "random": "random", "top-k": "top_k"}


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear(out: int, inp: int, seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(inp, out, bias=bias).double()


# -- parity with the reference layer ---------------------------------------------------------------
CASES = [
    ("plain", 0, 6, 6, None),
    ("banded", 2, 6, 6, None),
    ("banded", 1, 5, 9, None),  # wide: n = out
    ("banded", 3, 10, 7, None),  # tall: n = in
    ("random", 2, 8, 8, None),
    ("random", 1, 7, 12, None),
    ("top-k", 2, 6, 6, None),  # square: score U (Vᵀ)ᵀ
    ("top-k", 1, 5, 9, None),  # wide: score U
    ("top-k", 1, 9, 5, None),  # tall: score Vᵀ
]


@pytest.mark.parametrize(("pattern", "d", "out", "inp", "rank"), CASES)
def test_matches_the_reference_layer(reference_svft, pattern: str, d: int, out: int, inp: int, rank) -> None:  # noqa: ANN001
    """Same Ω in the same order, same outputs and gradients (S and the gate), then 5 AdamW steps (weight
    decay 0.1) in lockstep and the same merged weight; float64, so that W + U M Vᵀ (ours) and U (Σ + M) Vᵀ
    (the reference) agree to 1e-10."""
    base = _linear(out, inp)
    torch.manual_seed(1)
    theirs = reference_svft(copy.deepcopy(base), d, REF_PATTERN[pattern], rank)
    torch.manual_seed(1)  # the random pattern draws rows, columns, then S from the global generator, as the reference
    ours = svft_linear(copy.deepcopy(base), pattern, d, rank)
    ref = theirs.svft_layer
    assert torch.equal(torch.stack([ours.svft_rows, ours.svft_cols]), ref.s_edge_index)
    if pattern in ("random",):
        assert torch.equal(ours.svft_s, ref.s)  # the same draws in the same order
    with torch.no_grad():
        ours.svft_s.copy_(ref.s)
    x = torch.randn(4, 3, inp, generator=_g(2), dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    opt_ours = torch.optim.AdamW(list(ours.adapter_parameters().values()), lr=0.05, weight_decay=0.1)
    opt_theirs = torch.optim.AdamW([ref.s, ref.gate], lr=0.05, weight_decay=0.1)
    for step in range(5):
        xb = torch.randn(6, inp, generator=_g(10 + step), dtype=torch.float64)
        target = torch.randn(6, out, generator=_g(20 + step), dtype=torch.float64)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            ((model(xb) - target) ** 2).mean().backward()
        torch.testing.assert_close(ours.svft_s.grad, ref.s.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ours.svft_gate.grad, ref.gate.grad, rtol=1e-9, atol=1e-12)
        opt_ours.step()
        opt_theirs.step()
    torch.testing.assert_close(ours.svft_s, ref.s, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.svft_gate, ref.gate, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.adapted_weight(), theirs.merge_and_unload(), rtol=1e-10, atol=1e-10)


def test_truncated_rank_keeps_the_residual_the_reference_drops(reference_svft) -> None:  # noqa: ANN001
    """With rank r < n the reference forms U_r (Σ_r + M) V_rᵀ; ours W + U_r M V_rᵀ: they differ by exactly the
    discarded tail x (W − U_r Σ_r V_rᵀ)ᵀ."""
    base = _linear(8, 6)
    torch.manual_seed(3)
    theirs = reference_svft(copy.deepcopy(base), 1, "banded", 4)
    ours = svft_linear(copy.deepcopy(base), "banded", 1, rank=4)
    with torch.no_grad():
        ours.svft_s.copy_(theirs.svft_layer.s)
    U, S, Vh = singular_vectors(base.weight, 4)
    tail = base.weight - U @ torch.diag(S) @ Vh
    x = torch.randn(5, 6, generator=_g(4), dtype=torch.float64)
    torch.testing.assert_close(ours(x) - theirs(x), x @ tail.detach().T, rtol=1e-10, atol=1e-10)
    assert ours.n == 4 and ours.svft_s.shape == (coefficient_count(4, 1),)


# -- the math, by hand ------------------------------------------------------------------------------
def test_plain_update_scales_the_singular_triplets() -> None:
    """Plain SVFT: ΔW = U diag(m) Vᵀ, i.e. σ_i → σ_i + m_i with U, V unchanged (Sec. 3)."""
    W = torch.randn(5, 7, generator=_g(5), dtype=torch.float64)
    U, S, Vh = singular_vectors(W)
    rows, cols = banded_indices(5, 0)
    m = torch.randn(5, generator=_g(6), dtype=torch.float64)
    torch.testing.assert_close(W + svft_delta(U, Vh, rows, cols, m), U @ torch.diag(S + m) @ Vh)
    torch.testing.assert_close(torch.linalg.svdvals(W + svft_delta(U, Vh, rows, cols, m.abs())), (S + m.abs()).sort(descending=True).values)


def test_band_sum_of_outer_products_by_hand_and_both_paths() -> None:
    """ΔW = Σ_(i,j)∈Ω m_ij u_i v_jᵀ looped by hand; the gathered and the dense paths and the factorized forward
    agree; repeated positions (random pattern) add up."""
    W = torch.randn(6, 6, generator=_g(7), dtype=torch.float64)
    U, _S, Vh = singular_vectors(W)
    for d in (0, 1, 2, 5):
        rows, cols = banded_indices(6, d)
        assert rows.numel() == coefficient_count(6, d) == sum(1 for i in range(6) for j in range(6) if abs(i - j) <= d)
        m = torch.randn(rows.numel(), generator=_g(8 + d), dtype=torch.float64)
        by_hand = sum(m[k] * torch.outer(U[:, rows[k]], Vh[cols[k]]) for k in range(rows.numel()))
        delta = svft_delta(U, Vh, rows, cols, m)
        torch.testing.assert_close(delta, by_hand)
        torch.testing.assert_close(U @ coefficient_matrix(rows, cols, m, 6) @ Vh, by_hand)  # the dense path
        torch.testing.assert_close((U[:, rows] * m) @ Vh[cols], by_hand)  # the gathered path
        x = torch.randn(2, 3, 6, generator=_g(9), dtype=torch.float64)
        torch.testing.assert_close(svft_update(x, U, Vh, rows, cols, m), x @ delta.T)
    assert coefficient_count(6, 5) == 36  # d = n − 1: the whole matrix
    rows, cols = torch.tensor([1, 1, 0]), torch.tensor([2, 2, 0])
    M = coefficient_matrix(rows, cols, torch.tensor([1.0, 2.0, 4.0]), 3)
    assert M[1, 2] == 3.0 and M[0, 0] == 4.0 and M.count_nonzero() == 2


def test_patterns_and_counts() -> None:
    assert coefficient_count(384, 0) == 384 and coefficient_count(384, 2) == 384 * 5 - 6
    assert trainable_values(384, 0) == 385 and trainable_values(384, 0, gate=False) == 384
    r1, c1 = random_indices(10, 2, _g(0))
    r2, c2 = random_indices(10, 2, _g(0))
    assert torch.equal(r1, r2) and torch.equal(c1, c2) and r1.numel() == coefficient_count(10, 2)
    W = torch.randn(6, 6, generator=_g(1))
    U, _S, Vh = singular_vectors(W)
    rows, cols = pattern_indices("top-k", U, Vh, 1)
    scores = alignment_scores(U, Vh)
    assert torch.equal(scores, U @ Vh.T)
    picked = scores[rows, cols]
    assert picked.min() >= scores.flatten().sort(descending=True).values[rows.numel() - 1]
    with pytest.raises(ValueError, match=r"off_diag = 6 must be in \[0, n − 1\]"):
        coefficient_count(6, 6)
    with pytest.raises(ValueError, match="plain pattern is the diagonal"):
        pattern_indices("plain", U, Vh, 1)
    with pytest.raises(ValueError, match="unknown pattern"):
        pattern_indices("dense", U, Vh, 1)
    with pytest.raises(ValueError, match="square score"):
        alignment_scores(torch.zeros(8, 3), torch.zeros(3, 5))


# -- the layer ----------------------------------------------------------------------------------------
def test_zero_init_starts_at_the_base_model_and_kaiming_follows_the_reference() -> None:
    base = nn.Linear(40, 30)
    x = torch.randn(4, 40, generator=_g(11))
    zero = svft_linear(copy.deepcopy(base), "banded", 1, init="zeros")
    assert torch.equal(zero(x), base(x)) and torch.equal(zero.delta_weight(), torch.zeros_like(base.weight))
    drawn = svft_linear(copy.deepcopy(base), "banded", 1, generator=_g(12))
    again = svft_linear(copy.deepcopy(base), "banded", 1, generator=_g(12))
    k = coefficient_count(30, 1)
    assert torch.equal(drawn.svft_s, again.svft_s) and drawn.svft_s.shape == (k,)
    assert abs(drawn.svft_s.std().item() / kaiming_std(k) - 1) < 0.1
    assert not torch.allclose(drawn(x), base(x))  # the reference's start is not the base model
    torch.testing.assert_close(drawn.coefficients(), 0.5 * drawn.svft_s)  # sigmoid(0) = 1/2
    ungated = svft_linear(copy.deepcopy(base), gate=False)
    assert set(ungated.adapter_parameters()) == {"svft_s"}
    assert set(drawn.adapter_parameters()) == {"svft_s", "svft_gate"}


def test_merge_is_exact_and_state_dicts_are_unmerged() -> None:
    layer = svft_linear(nn.Linear(12, 9), "random", 2, generator=_g(13))
    x = torch.randn(3, 12, generator=_g(14))
    with torch.no_grad():
        layer.svft_gate.fill_(0.7)
    before, expected = layer.base.weight.clone(), layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    state = layer.state_dict()
    assert torch.equal(state["base.weight"], before)
    assert {"svft_u", "svft_v", "svft_rows", "svft_cols", "svft_s", "svft_gate"} <= set(state)
    layer.unmerge()
    assert torch.equal(layer.base.weight, before) and torch.equal(layer(x), expected)


def test_half_precision_layer_keeps_float32_coefficients_and_unmerges_exactly() -> None:
    layer = svft_linear(nn.Linear(16, 8).to(torch.bfloat16), "banded", 1)
    assert layer.svft_s.dtype == layer.svft_u.dtype == torch.float32 and layer.base.weight.dtype == torch.bfloat16
    before = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, before)
    assert layer(torch.randn(2, 16).to(torch.bfloat16)).dtype == torch.bfloat16


def test_wrapping_a_model_trains_only_the_coefficients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    wrap_low_rank(model, ["0"], lambda name, linear: svft_linear(linear, "banded", 2))
    assert isinstance(model[0], SvftLinear)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["0.svft_s", "0.svft_gate", "2.weight", "2.bias"]  # wrap freezes only the wrapped base


# -- config and plan ----------------------------------------------------------------------------------
def test_config_checks() -> None:
    assert SvftConfig().pattern == "banded" and SvftConfig().off_diag == 0 and SvftConfig().init == "kaiming"
    with pytest.raises(ValueError, match="plain"):
        SvftConfig(pattern="plain", off_diag=1)
    with pytest.raises(ValueError):
        SvftConfig(pattern="dense")
    with pytest.raises(ValueError, match="off_diag"):
        SvftConfig(off_diag=-1)
    with pytest.raises(ValueError, match="rank"):
        SvftConfig(rank=0)
    with pytest.raises(ValueError, match="target"):
        SvftConfig(target=[])


def test_off_diagonals_beyond_a_layer_are_a_plan_error(run_plan) -> None:  # noqa: ANN001
    text = EXAMPLE.read_text().replace('off_diag = 2, target = ["stem.0", "blocks.*.linear1"] }\n\n[variants.random]',
                                       'off_diag = 40, target = ["stem.0", "blocks.*.linear1"] }\n\n[variants.random]')
    with pytest.raises(PlanError, match=r"layer 'stem.0' \(32×64, n = 32\).*off_diag = 40 must be in"):
        run_plan(text, variant="banded")


def test_example_runs_from_the_pretrained_base(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, _manifest = run_plan(EXAMPLE.read_text(), variant="banded")
    assert results["status"] == "completed" and results["steps"] == 30
    # stem.0 (32×64) and blocks.0.linear1 (32×32): n = 32, d = 2: k = 32·5 − 6 = 154 coefficients + 1 gate each
    assert results["summary"]["svft"] == {"trainable_parameters": 310.0, "adapted_layers": 2.0}
    assert results["references"][0]["reference"] == "variant:pretrain"
    assert results["final"]["classification/loss"] < results["initial"]["classification/loss"]
