"""low-rank-init: the initialization against the authors' construction, hand-computed measures, the hooks, example.toml.

There is no runnable reference package: the authors' code (Helena-Yuhan-Liu/BioRNN_RichLazy, main.py) is a script
around neurogym. Its initialization is three NumPy lines (SVD of the Gaussian draw, keep r triplets, rescale to the
draw's norm) and its measures are closed forms; the tests restate those in NumPy and compare, and pin the rest
with hand-computed cases and invariants.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from paperkit_low_rank_init import LowRankInitConfig, functional, method
from torch import nn

from paperkit import PlanError
from paperkit.testing import MethodHarness, smoke_plan

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
SHAPES = [(16, 16), (12, 20), (20, 12), (128, 128)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_low_rank(w: np.ndarray, r: int) -> np.ndarray:
    """main.py's construction, restated: U[:, :r] diag(S[:r]) VT[:r], rescaled to the draw's Frobenius norm."""
    u, s, vt = np.linalg.svd(w)
    low = u[:, :r] @ np.diag(s[:r]) @ vt[:r, :]
    return low / np.linalg.norm(low) * np.linalg.norm(w)


# --- the initialization ---------------------------------------------------------------------------


def test_gaussian_draw_is_sigma_over_sqrt_fan_in_times_a_standard_normal():
    w = functional.gaussian_weight((300, 300), 1.25, gen(0))
    g = torch.randn(300, 300, generator=gen(0), dtype=torch.float64)
    assert torch.equal(w, 1.25 * g / math.sqrt(300))
    big = functional.gaussian_weight((400, 250), 2.0, gen(1))
    assert big.std().item() == pytest.approx(2.0 / math.sqrt(250), rel=0.01)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [1, 3, 7])
def test_low_rank_equals_the_authors_construction(shape, rank):
    w = functional.gaussian_weight(shape, 1.25, gen(3))
    ours = functional.low_rank_like(w, rank)
    ref = reference_low_rank(w.numpy(), rank)
    # singular vectors are unique up to sign; the product is not: compare the matrices
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [1, 2, 5])
def test_low_rank_has_exactly_the_rank_and_the_full_rank_norm(shape, rank):
    w = functional.gaussian_weight(shape, 1.25, gen(4))
    low = functional.low_rank_like(w, rank)
    s = torch.linalg.svdvals(low)
    assert int((s > 1e-10 * s[0]).sum()) == rank
    assert torch.linalg.matrix_norm(low).item() == pytest.approx(torch.linalg.matrix_norm(w).item(), rel=1e-13)
    # its top singular directions are the draw's: the spectrum is the draw's top r, scaled up
    top = torch.linalg.svdvals(w)[:rank]
    assert torch.allclose(s[:rank] / s[:rank].sum(), top / top.sum(), atol=1e-12)


def test_full_rank_is_the_gaussian_itself():
    w = functional.gaussian_weight((10, 10), 1.25, gen(5))
    assert torch.equal(functional.low_rank_like(w, None), w)
    assert torch.equal(functional.low_rank_like(w, 10), w)
    assert torch.equal(functional.low_rank_like(w, 99), w)
    with pytest.raises(ValueError):
        functional.low_rank_like(w, 0)


def test_aligned_low_rank_has_the_task_row_space_rank_and_norm():
    w = functional.gaussian_weight((16, 12), 1.25, gen(6))
    d = torch.linalg.qr(torch.randn(12, 3, generator=gen(7), dtype=torch.float64)).Q.T  # 3 orthonormal rows
    a = functional.aligned_low_rank(w, 3, d)
    assert torch.linalg.matrix_rank(a).item() == 3
    assert torch.linalg.matrix_norm(a).item() == pytest.approx(torch.linalg.matrix_norm(w).item(), rel=1e-13)
    outside = torch.eye(12, dtype=torch.float64) - d.T @ d
    assert torch.allclose(a @ outside, torch.zeros(16, 12, dtype=torch.float64), atol=1e-12)  # rows in span(d)
    # same left singular vectors and singular value ratios as the unaligned rank-3 init
    u_a, s_a, _ = torch.linalg.svd(a)
    u_l, s_l, _ = torch.linalg.svd(functional.low_rank_like(w, 3))
    assert torch.allclose((u_a[:, :3].T @ u_l[:, :3]).abs(), torch.eye(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(s_a[:3], s_l[:3], atol=1e-12)


def test_task_directions_find_the_label_direction_first():
    g = gen(8)
    x = torch.randn(2000, 6, generator=g, dtype=torch.float64)
    beta = torch.tensor([0.0, 0.6, 0.0, 0.8, 0.0, 0.0], dtype=torch.float64)
    y = (x @ beta > 0).long()  # the label depends on x only along beta (Prop. 1's teacher direction)
    d = functional.task_directions(x, y, 2, 3)
    assert torch.allclose(d @ d.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert abs(float(d[0] @ beta)) == pytest.approx(1.0, abs=0.01)
    # by hand: with two classes the centered cross-covariance has one direction, E[(1[y=1] − p)(x − x̄)]
    by_hand = ((y.double() - y.double().mean())[:, None] * (x - x.mean(0))).mean(0)
    assert abs(float(d[0] @ by_hand / by_hand.norm())) == pytest.approx(1.0, abs=1e-12)
    # the rest are the top principal directions of the inputs in the complement of that direction
    p = torch.eye(6, dtype=torch.float64) - d[:1].T @ d[:1]
    xc = x - x.mean(0)
    vals, _ = torch.linalg.eigh(p @ (xc.T @ xc / len(x)) @ p)
    explained = [float(v @ (xc.T @ xc / len(x)) @ v) for v in d[1:]]
    assert explained == pytest.approx(vals.flip(0)[:2].tolist(), rel=1e-10)


# --- the measures ---------------------------------------------------------------------------------


def test_alignment_hand_cases():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert functional.alignment(a, 3 * a) == pytest.approx(1.0)
    assert functional.alignment(a, torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)
    assert functional.alignment(a, b) == pytest.approx(2.0 / (math.sqrt(2) * 2))  # <I, 11ᵀ> = 2


def test_weight_change_hand_case():
    w0 = {"a": torch.tensor([[3.0, 0.0]]), "b": torch.tensor([[0.0, 4.0]])}  # ‖W_0‖ = 5
    wt = {"a": torch.tensor([[3.0, 1.0]]), "b": torch.tensor([[0.0, 4.0]])}  # ‖ΔW‖ = 1
    assert functional.weight_change(wt, w0) == pytest.approx((1.0, 0.2))


def test_tangent_kernel_of_a_linear_map_is_the_input_gram_times_identity():
    """f(x) = W x: ∂f_k(x_b)/∂W = e_k x_bᵀ, so K[(b,k),(a,l)] = δ_kl x_b·x_a."""
    from paperkit import parameter_jacobian

    layer = nn.Linear(5, 3, bias=False)
    x = torch.randn(4, 5, generator=gen(9))
    k = functional.tangent_kernel(parameter_jacobian(layer, x), ["weight"])
    expected = torch.kron((x @ x.T).double(), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(k, expected, atol=1e-5)


def test_gram_sign_similarity_and_effective_rank():
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert torch.allclose(functional.gram(h), torch.tensor([[5.0, 0.5], [0.5, 0.25]], dtype=torch.float64))
    assert functional.sign_similarity(h, torch.tensor([[2.0, -1.0], [-1.0, 0.0]])) == pytest.approx(0.75)
    assert functional.effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert functional.effective_rank(torch.outer(torch.arange(1.0, 5.0), torch.ones(3))) == pytest.approx(1.0)
    assert functional.effective_rank(torch.zeros(3, 3)) == 0.0


def test_regime_measures_at_the_start_are_zero_change():
    w = {"w": torch.randn(4, 4, generator=gen(10))}
    k = torch.randn(6, 6, generator=gen(11))
    h = torch.randn(5, 3, generator=gen(12))
    m = functional.regime_measures(w, w, k @ k.T, k @ k.T, h, h)
    assert m["weight_change"] == 0.0 and m["relative_weight_change"] == 0.0
    assert m["kernel_change"] == pytest.approx(0.0, abs=1e-12) and m["representation_change"] == pytest.approx(0.0, abs=1e-12)
    assert m["sign_similarity"] == 1.0


# --- the hooks ------------------------------------------------------------------------------------


def harness(tmp_path: Path, **options) -> MethodHarness:
    raw = smoke_plan("low-rank-init", method, options, model_options={"depth": 2, "width": 24})
    return MethodHarness(raw, "low-rank-init", tmp_path)


def test_init_redraws_only_the_hidden_layers_as_the_truncated_gaussian(tmp_path):
    h = harness(tmp_path, rank=2)
    before = h.model(0).state_dict()
    ctx = h.context(0)
    model = h.prepare(h.methods(), ctx, 0)
    after = model.state_dict()
    fresh = h.context(0)
    fresh.method = "low-rank-init"  # what the engine sets while it calls the method's hooks
    g = fresh.generator("weights")  # a fresh context's generator: what the hook drew from
    for name in ("blocks.0.linear1.weight", "blocks.1.linear1.weight"):
        draw = functional.gaussian_weight((24, 24), 1.25, g)
        expected = torch.from_numpy(reference_low_rank(draw.numpy(), 2)).float()
        assert torch.allclose(after[name], expected, atol=1e-6), name
        assert torch.linalg.matrix_rank(after[name].double(), rtol=1e-5).item() == 2
    for name in ("stem.0.weight", "head.weight", "blocks.0.linear1.bias"):
        assert torch.equal(after[name], before[name]), name


def test_full_rank_arm_is_the_gaussian_the_low_rank_arm_truncates(tmp_path):
    full = harness(tmp_path / "full", rank=None)
    low = harness(tmp_path / "low", rank=1)
    wf = full.prepare(full.methods(), full.context(0), 0).state_dict()["blocks.0.linear1.weight"]
    wl = low.prepare(low.methods(), low.context(0), 0).state_dict()["blocks.0.linear1.weight"]
    expected = torch.from_numpy(reference_low_rank(wf.double().numpy(), 1))
    assert torch.allclose(wl.double(), expected, atol=1e-6)
    assert torch.linalg.matrix_norm(wl).item() == pytest.approx(torch.linalg.matrix_norm(wf).item(), rel=1e-5)


def test_redraw_false_keeps_the_model_and_aligned_needs_rank(tmp_path):
    h = harness(tmp_path, redraw=False)
    before = h.model(0).state_dict()
    after = h.prepare(h.methods(), h.context(0), 0).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="aligned"):
        LowRankInitConfig(aligned=True, rank=None)


def test_aligned_init_puts_the_first_hidden_weight_in_its_inputs_task_directions(tmp_path):
    from paperkit import capture

    h = harness(tmp_path / "a", rank=3, aligned=True, align_batches=4)
    ctx = h.context(0)
    model = h.prepare(h.methods(), ctx, 0)
    batches = ctx.sample_batches(4)
    x, y = torch.cat([b["x"] for b in batches]), torch.cat([b["y"] for b in batches])
    with torch.no_grad(), capture(model, names=["blocks.0.linear1"], detach=True) as seen:
        model.eval()(x)
    d = functional.task_directions(seen.inputs["blocks.0.linear1"], y, 10, 3)
    w = model.state_dict()["blocks.0.linear1.weight"].double()
    outside = torch.eye(24, dtype=torch.float64) - d.T @ d
    assert float((w @ outside).norm() / w.norm()) < 1e-5


@pytest.mark.parametrize("options", [{"rank": 0}, {"layers": []}, {"sigma": -1.0}, {"samples": 1},
                                     {"kernel_params": "head"}])
def test_config_rejects_out_of_range_values(tmp_path, options):
    raw = smoke_plan("low-rank-init", method, options)
    with pytest.raises(PlanError):
        MethodHarness(raw, "low-rank-init", tmp_path)


def test_example_plan_runs_and_reports_the_regime(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "low-rank-init" in manifest["methods"]
    start, end = results["initial"], results["final"]
    assert start["low-rank-init/weight_change"] == 0.0
    assert start["low-rank-init/kernel_alignment"] == pytest.approx(1.0)
    assert start["low-rank-init/initial_effective_rank"] == pytest.approx(2.0, abs=0.05)  # rank 2 in the example
    assert end["low-rank-init/relative_weight_change"] > 0.0
    assert end["low-rank-init/kernel_change"] == pytest.approx(1.0 - end["low-rank-init/kernel_alignment"])
    assert 0.0 < end["low-rank-init/kernel_change"] < 1.0
    assert 0.0 < end["low-rank-init/sign_similarity"] < 1.0
