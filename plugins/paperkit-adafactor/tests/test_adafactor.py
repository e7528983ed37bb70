"""Adafactor's math against its references (torch.optim.Adafactor, pytorch-optimizer's AdaFactor,
transformers' Adafactor — the fairseq port of the paper's algorithm), hand-computed cases and invariants,
the optimizer's memory, and a run of example.toml through the engine."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from paperkit_adafactor import AdafactorConfig
from paperkit_adafactor.functional import (
    Adafactor,
    clip_denominator,
    decay_rate,
    factored_rsqrt,
    relative_step_size,
    state_bytes,
    step_size,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
SHAPES = [(32, 48), (64, 16), (20,), (3, 8, 12)]  # wide, tall, vector, a batch of matrices
TORCH_EPS1 = torch.finfo(torch.float32).eps  # torch.optim.Adafactor's eps1 (None -> dtype eps)


def _trajectory(make_optimizer, shapes=SHAPES, steps: int = 8, seed: int = 0, zero_row: bool = True) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence (one matrix row of gradient is zero)."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    optimizer = make_optimizer(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
            if zero_row and p.dim() >= 2:
                p.grad[..., 0, :] = 0.0  # a zero row: exercises eps1
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with references ------------------------------------------------------------
@pytest.mark.parametrize("lr", [1e-2, 0.3])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_torch_variant_matches_torch_adafactor(lr: float, weight_decay: float) -> None:
    """eps1_placement='denominator' + weight_decay_scale='lr' is torch.optim.Adafactor (bit for bit, measured)."""
    ours = _trajectory(lambda ps: Adafactor(ps, lr=lr, eps1=TORCH_EPS1, eps1_placement="denominator",
                                            weight_decay=weight_decay, weight_decay_scale="lr"))
    ref = _trajectory(lambda ps: torch.optim.Adafactor(ps, lr=lr, weight_decay=weight_decay, foreach=False))
    assert _max_diff(ours, ref) == 0.0


@pytest.mark.parametrize("beta1", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("relative_step, scale_parameter", [(True, True), (False, False), (False, True)])
def test_paper_form_matches_pytorch_optimizer(beta1: float, weight_decay: float, relative_step: bool,
                                              scale_parameter: bool) -> None:
    """The paper's form equals pytorch-optimizer's AdaFactor (per-parameter path, float32 momentum).

    Its beta2 cap of 0.999 only binds after t > 0.001^(-1/0.8) ≈ 5600 steps. Tolerance 1e-6 (≈ 4 ulp of
    these O(1) weights; the measured difference is at most 1 ulp, from lerp weights computed as 1 − β̂2t).
    """
    import pytorch_optimizer as po

    lr = 1e-2 if relative_step else 3e-2
    ours = _trajectory(lambda ps: Adafactor(ps, lr=lr, beta1=beta1, weight_decay=weight_decay,
                                            relative_step=relative_step, scale_parameter=scale_parameter))
    ref = _trajectory(lambda ps: po.AdaFactor(ps, lr=lr, betas=(beta1 or None, 0.999), weight_decay=weight_decay,
                                              relative_step=relative_step, scale_parameter=scale_parameter,
                                              momentum_dtype=torch.float32, foreach=False))
    assert _max_diff(ours, ref) <= 1e-6


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_paper_form_matches_transformers(beta1: float) -> None:
    """The paper's defaults equal transformers' Adafactor (the fairseq port), with momentum and weight decay."""
    from transformers.optimization import Adafactor as Reference

    ours = _trajectory(lambda ps: Adafactor(ps, beta1=beta1, weight_decay=0.1))
    ref = _trajectory(lambda ps: Reference(ps, lr=None, beta1=beta1 or None, weight_decay=0.1))
    assert _max_diff(ours, ref) <= 1e-6


# -- hand-computed cases ---------------------------------------------------------------
def test_schedules() -> None:
    assert decay_rate(1, 0.8) == 0.0  # beta2_1 = 0: no bias correction needed (Sec. 7)
    assert decay_rate(32, 0.8) == pytest.approx(1 - 32 ** -0.8)
    assert relative_step_size(1, 1e-2, True) == 1e-2 and relative_step_size(40_000, 1e-2, True) == pytest.approx(0.005)
    assert relative_step_size(40_000, 0.3, False) == 0.3
    assert step_size(torch.zeros(4, 4), 1e-2, 1e-3, True) == pytest.approx(1e-5)  # eps2 floor lets zeros escape
    assert step_size(torch.full((4, 4), 0.5), 1e-2, 1e-3, True) == pytest.approx(5e-3)
    assert step_size(torch.full((4, 4), 0.5), 1e-2, 1e-3, False) == 1e-2


def test_first_step_on_rank_one_gradient_is_sign_step() -> None:
    """At t = 1, β̂2 = 0, so V̂ = R C / mean(R); for G = a bᵀ that is G² exactly, U = sign(G), RMS(U) = 1 (no clip).

    The step is −α sign(G) with α = max(ε2, RMS(X0)) · 1e-2 (Alg. 4 lines 4-10)."""
    a, b = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.25, -1.0, 2.0])
    x0 = torch.full((3, 4), 0.2)
    p = nn.Parameter(x0.clone())
    p.grad = torch.outer(a, b)
    Adafactor([p]).step()
    expected = x0 - 0.2 * 1e-2 * torch.outer(a, b).sign()
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


def test_reconstruction_is_rank_one_and_preserves_sums() -> None:
    """V̂ = R Cᵀ / mean(R) has the row means R and the column means C of the statistics it came from (Sec. 3)."""
    g = torch.Generator().manual_seed(3)
    v = torch.rand(5, 7, generator=g) + 0.1
    row, col = v.mean(dim=-1), v.mean(dim=-2)
    estimate = factored_rsqrt(row, col, 1e-30, "gradient").pow(-2)
    torch.testing.assert_close(estimate.mean(dim=-1), row)
    torch.testing.assert_close(estimate.mean(dim=-2), col)
    assert torch.linalg.matrix_rank(estimate).item() == 1


def test_factored_equals_full_on_rank_one_second_moments() -> None:
    """When every G_t is a multiple of one a bᵀ, the EMA of G² is rank 1 and the factored estimate is exact."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, generator=g), torch.randn(9, generator=g)
    scales = torch.randn(7, generator=g)

    def run(factored: bool) -> torch.Tensor:
        p = nn.Parameter(torch.randn(6, 9, generator=torch.Generator().manual_seed(5)))
        opt = Adafactor([p], factored=factored)
        for s in scales:
            p.grad = s * torch.outer(a, b)
            opt.step()
        return p.detach()

    torch.testing.assert_close(run(True), run(False), rtol=0, atol=1e-6)


def test_update_clipping_bounds_the_step() -> None:
    """After a run of small gradients a large one gives RMS(U) > d; the applied step is then exactly α·d in RMS."""
    p = nn.Parameter(torch.full((8, 8), 0.5))
    opt = Adafactor([p], clip_threshold=1.0)
    g = torch.Generator().manual_seed(6)
    for _ in range(20):
        p.grad = 1e-3 * torch.randn(8, 8, generator=g)
        opt.step()
    before = p.detach().clone()
    alpha = max(1e-3, before.square().mean().sqrt().item()) * 1e-2
    p.grad = torch.randn(8, 8, generator=g)
    opt.step()
    moved = (p.detach() - before).square().mean().sqrt().item()
    assert moved == pytest.approx(alpha * 1.0, rel=1e-5)
    assert clip_denominator(torch.full((4,), 3.0), 1.0) == pytest.approx(3.0)
    assert clip_denominator(torch.full((4,), 0.5), 1.0) == 1.0
    assert clip_denominator(torch.full((4,), 3.0), math.inf) == 1.0


# -- memory -------------------------------------------------------------------------
def test_state_is_sublinear() -> None:
    """A (n, m) matrix keeps n + m numbers (factored) or n·m (full); vectors keep a full V̂; β1 > 0 adds n·m."""
    w, v3, bias = nn.Parameter(torch.randn(30, 40)), nn.Parameter(torch.randn(2, 5, 6)), nn.Parameter(torch.randn(40))
    for p in (w, v3, bias):
        p.grad = torch.randn_like(p)

    def numbers(**kw: object) -> int:
        opt = Adafactor([w, v3, bias], **kw)
        opt.step()
        return state_bytes(opt) // 4

    assert numbers() == (30 + 40) + 2 * (5 + 6) + 40
    assert numbers(factored=False) == 30 * 40 + 2 * 5 * 6 + 40
    assert numbers(beta1=0.9) == (30 + 40) + 2 * (5 + 6) + 40 + 30 * 40 + 2 * 5 * 6 + 40


def test_state_on_a_transformer_against_adam() -> None:
    """On the claim's encoder (2 pre-norm layers, d_model 64, ff 256) the factored state is under 5% of the
    weights and under 3% of Adam's."""
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 256, 0.0, batch_first=True, norm_first=True), 2,
                                  enable_nested_tensor=False)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    ours, adam = Adafactor(params), torch.optim.Adam(params, lr=1e-3)
    ours.step()
    adam.step()
    weights = sum(p.numel() for p in params) * 4
    assert state_bytes(ours) < 0.05 * weights
    assert state_bytes(ours) < 0.03 * state_bytes(adam)


# -- round trip and config ------------------------------------------------------------
def test_state_dict_round_trip() -> None:
    """Three steps, save, load into a fresh optimizer, three more: identical to six uninterrupted steps."""
    def run(split: bool) -> torch.Tensor:
        g = torch.Generator().manual_seed(7)
        params = [nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
        grads = [[torch.randn(*s, generator=g) for s in SHAPES] for _ in range(6)]
        opt = Adafactor(params, beta1=0.9)
        for i, step_grads in enumerate(grads):
            if split and i == 3:
                buffer = io.BytesIO()
                torch.save(opt.state_dict(), buffer)
                buffer.seek(0)
                opt = Adafactor(params, beta1=0.9)
                opt.load_state_dict(torch.load(buffer, weights_only=True))
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        return torch.cat([p.detach().flatten() for p in params])

    assert torch.equal(run(False), run(True))


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("beta1", 1.0), ("clip_threshold", 0.0), ("decay_c", -0.1),
                                          ("eps1", -1.0), ("eps2", -1.0), ("weight_decay", -0.1),
                                          ("eps1_placement", "both"), ("weight_decay_scale", "none")])
def test_config_rejects_out_of_range(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        AdafactorConfig(**{field: value})


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "adafactor" in manifest["methods"]
    assert results["final"]["classification/loss"] < math.log(10)  # learned something in 20 steps
    summary = results["summary"]["adafactor"]
    assert 0 < summary["state_per_parameter"] < 0.2 and summary["state_bytes"] > 0
