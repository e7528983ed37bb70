"""The Shampoo family against its references and hand cases: pytorch-optimizer's Shampoo (bit for bit), a hand
transcription of NeMo Emerging-Optimizers' KL factor update, the 4-bit quantizer and Björck rectification, the
Kronecker diagnostic on exact cases, state round trips, config ranges, and a run of example.toml."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from paperkit_shampoo import ShampooConfig
from paperkit_shampoo.functional import (
    Shampoo,
    bjorck,
    default_exponent,
    dequantize,
    kl_factor_update,
    kronecker_errors,
    linear_square_levels,
    quantize,
    rearrange,
    state_bytes,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
SHAPES = [(12, 7), (5,), (3, 4, 6), (9, 9)]  # tall matrix, vector, order-3 tensor, square


def _params(seed: int = 0, shapes=SHAPES) -> tuple[list[nn.Parameter], torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes], g


def _trajectory(make, steps: int = 6, shapes=SHAPES) -> list[torch.Tensor]:
    params, g = _params(0, shapes)
    optimizer = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
    return [p.detach().clone() for p in params]


# -- parity: pytorch-optimizer Shampoo ----------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {}, {"weight_decay": 0.1}, {"momentum": 0.9, "weight_decay": 0.05},
    {"weight_decay": 0.1, "weight_decouple": True}, {"weight_decay": 0.1, "weight_decouple": True, "fixed_decay": True},
])
def test_matches_pytorch_optimizer_shampoo(kw: dict) -> None:
    """Default options = pytorch-optimizer's Shampoo (preconditioning_compute_steps=1, matrix_eps=1e-6): identical
    parameters after 6 steps on a matrix, a vector, an order-3 tensor and a square matrix."""
    import pytorch_optimizer as po

    ours = _trajectory(lambda ps: Shampoo(ps, lr=0.1, **kw))
    ref = _trajectory(lambda ps: po.Shampoo(ps, lr=0.1, **kw))
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


# -- KL-Shampoo: NeMo Emerging-Optimizers' update, transcribed by hand ------------------------------
def _nemo_kl_update(factors, grad, beta, eigvecs, eigvals, eps):
    """update_kronecker_factors_kl_shampoo (legacy_soap/soap.py, eigval_exp = -1), transcribed: the scale of side
    idx is λ_idx clamped at eps, inverted, over grad.shape[idx]; conjugate(c, p) = pᵀ c p; the update computed
    from side 0 feeds R, the one from side 1 feeds L; both factors lerp towards their update by 1 - beta."""
    updates = []
    for idx, (q, lam) in enumerate(zip(eigvecs, eigvals)):
        scale = 1 / grad.shape[idx] * lam.clamp_min(eps) ** -1.0
        correction = (q * scale[None, :]) @ q.T
        p = grad.T if idx == 1 else grad
        updates.append(p.mT @ correction @ p)
    return [f.clone().lerp_(u, 1 - beta) for f, u in zip(factors, updates[::-1])]


@pytest.mark.parametrize("m, n", [(7, 5), (4, 9)])
def test_kl_update_matches_nemo(m: int, n: int) -> None:
    """Bit for bit: the same float32 operations in the same order (the scale 1/d · λ⁻¹ included), with a clamped
    eigenvalue, whose λ⁻¹ = 1/ε carries any one-ulp difference of the scale into the factors (4e-6 here)."""
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(m, n, generator=g)
    factors = [(lambda a: a @ a.T)(torch.randn(d, d, generator=g)) for d in (m, n)]
    eig = [torch.linalg.eigh(f) for f in factors]
    vecs, vals = [e.eigenvectors for e in eig], [e.eigenvalues for e in eig]
    vals[0][0] = 0.0  # exercises the clamp
    ours = kl_factor_update(factors, grad, 0.9, vecs, vals, 1e-3)
    ref = _nemo_kl_update(factors, grad, 0.9, vecs, vals, 1e-3)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b), (a - b).abs().max().item()


def test_kl_update_is_the_formula() -> None:
    """With exact eigenpairs, L ← βL + (1−β)/n G R⁻¹ Gᵀ and R ← βR + (1−β)/m Gᵀ L⁻¹ G (NeMo's test reference)."""
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(6, 4, generator=g, dtype=torch.float64)
    left, right = [(lambda a: a @ a.T + torch.eye(d, dtype=torch.float64))(torch.randn(d, d, generator=g,
                                                                                      dtype=torch.float64))
                   for d in (6, 4)]
    eig = [torch.linalg.eigh(f) for f in (left, right)]
    new = kl_factor_update([left, right], grad, 0.8, [e.eigenvectors for e in eig], [e.eigenvalues for e in eig], 0.0)
    torch.testing.assert_close(new[0], 0.8 * left + 0.2 / 4 * grad @ torch.linalg.inv(right) @ grad.T)
    torch.testing.assert_close(new[1], 0.8 * right + 0.2 / 6 * grad.T @ torch.linalg.inv(left) @ grad)


def test_kl_optimizer_steps_by_hand() -> None:
    """Two KL steps on one matrix, recomputed from the formulas: step 1 whitens with rms(G1)·I (the identity
    start), roots (L)^(-1/2), (R)^(-1/2) by SVD; step 2 whitens with the eigenpairs stored at step 1."""
    p = nn.Parameter(torch.zeros(5, 3))
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, 3, generator=g) for _ in range(2)]
    opt = Shampoo([p], lr=0.1, preconditioner="kl", beta2=0.9)
    left, right, theta = 1e-6 * torch.eye(5), 1e-6 * torch.eye(3), torch.zeros(5, 3)
    vecs = [torch.eye(5), torch.eye(3)]
    s0 = float(grads[0].square().mean().sqrt())
    vals = [torch.full((5,), s0), torch.full((3,), s0)]
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        left, right = kl_factor_update([left, right], grad, 0.9, vecs, vals, 1e-6)
        roots, vecs, vals = [], [], []
        for f in (left, right):
            u, s, vh = torch.linalg.svd(f)
            vecs.append(u)
            vals.append(s)
            roots.append((u * s.pow(-0.5)) @ vh)
        theta = theta - 0.1 * (roots[0] @ grad @ roots[1])
    torch.testing.assert_close(p.detach(), theta, rtol=1e-5, atol=1e-6)


# -- 4-bit: quantizer, Björck, state -------------------------------------------------------------------
def test_linear_square_levels_are_the_papers() -> None:
    """App. C: the 4-bit Linear-2 map."""
    expected = [-1.0, -0.7511, -0.5378, -0.3600, -0.2178, -0.1111, -0.0400, 0.0, 0.0044, 0.0400, 0.1111, 0.2178,
                0.3600, 0.5378, 0.7511, 1.0]
    torch.testing.assert_close(linear_square_levels(4), torch.tensor(expected), atol=5e-5, rtol=0)


def test_quantize_hand_case() -> None:
    """One column of 4 entries: the scale is max|x| = 2; x/2 = (1, −0.5, 0.05, 0) round to levels 1, −0.5378,
    0.04, 0 (codes 15, 2, 9, 7), packed low nibble first."""
    x = torch.tensor([[2.0], [-1.0], [0.1], [0.0]])
    packed, scales = quantize(x, 4, block_size=4)
    assert scales.tolist() == [[2.0]]
    assert packed.tolist() == [15 | (2 << 4), 9 | (7 << 4)]
    torch.testing.assert_close(dequantize(packed, scales, (4, 1), 4, 4),
                               2 * torch.tensor([[1.0], [-0.537778], [0.04], [0.0]]), atol=1e-6, rtol=0)


def test_quantize_is_nearest_level_and_bounded() -> None:
    """Every entry goes to its nearest level (brute force), blocks are per column, and |D(Q(x)) − x| ≤ half the
    widest gap of the map (0.2489/2) times the block's scale; representable matrices round-trip exactly."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(150, 7, generator=g)
    packed, scales = quantize(x, 4, 64)
    assert scales.shape == (7, 3)
    y = dequantize(packed, scales, x.shape, 4, 64)
    levels = linear_square_levels(4)
    col_scales = scales.repeat_interleave(64, dim=1)[:, :150].t()
    nearest = levels[(x / col_scales).unsqueeze(-1).sub(levels).abs().argmin(-1)] * col_scales
    torch.testing.assert_close(y, nearest, rtol=0, atol=0)
    assert ((y - x).abs() <= 0.5 * 0.24889 * col_scales + 1e-6).all()
    exact = levels[torch.randint(0, 16, (64, 5), generator=g)]
    exact[0] = 1.0
    assert torch.equal(dequantize(*quantize(exact, 4, 64), exact.shape, 4, 64), exact)


def test_bjorck_rectifies_quantized_eigenvectors() -> None:
    """D(Q(U)) of an orthogonal U is not orthogonal; each Björck step shrinks ‖VᵀV − I‖ and four reach 1e-5."""
    g = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(96, 96, generator=g))
    v = dequantize(*quantize(u, 4, 64), u.shape, 4, 64)
    errors = [(bjorck(v, t).T @ bjorck(v, t) - torch.eye(96)).norm().item() for t in range(5)]
    assert errors[0] > 0.1 and all(b < a for a, b in zip(errors, errors[1:])) and errors[4] < 1e-4
    torch.testing.assert_close(bjorck(u, 3), u, atol=1e-5, rtol=0)  # orthogonal matrices are fixed points


def test_four_bit_tracks_32_bit() -> None:
    """On the same gradients (EMA 0.95), the 4-bit optimizer's factor and root stay within the paper's error range
    of the 32-bit ones (NRE < 0.2, Lemma 1), and its state is under 30% of the 32-bit state."""
    shapes = [(80, 70)]
    kw = dict(lr=1e-3, beta2=0.95, damping=1e-4)

    def run(bits: int) -> Shampoo:
        params, g = _params(6, shapes)
        opt = Shampoo(params, state_bits=bits, **kw)
        base = torch.randn(80, 6, generator=g)
        for _ in range(5):
            params[0].grad = base @ torch.randn(6, 70, generator=g) + 0.1 * torch.randn(80, 70, generator=g)
            opt.step()
        return opt

    o32, o4 = run(32), run(4)
    p32, p4 = next(iter(o32.state)), next(iter(o4.state))
    f32, f4 = o32.factor(p32, 0), o4.factor(p4, 0)
    assert ((f4 - f32).norm() / f32.norm()).item() < 0.2
    r32, r4 = o32._root(o32.state[p32], 0, 80, o32.param_groups[0]), o4._root(o4.state[p4], 0, 80, o4.param_groups[0])
    assert ((r4 - r32).norm() / r32.norm()).item() < 0.2
    assert state_bytes(o4) < 0.3 * state_bytes(o32)  # 0.25 here: 80 and 70 rows leave part-filled blocks


# -- exponent -------------------------------------------------------------------------------------------
def test_exponents() -> None:
    """Default −1/4 per factor for matrices and −1/2 for vectors (Shampoo), −1/2 with KL; exponent −1/2 on
    request; for a rank-one gradient G = a bᵀ the −1/4 step is the sign-like G/(|a||b|) (ε aside)."""
    a, b = torch.tensor([3.0, -4.0]), torch.tensor([1.0, 2.0, 2.0])
    p = nn.Parameter(torch.zeros(2, 3))
    p.grad = torch.outer(a, b) / 10  # small, so that ε = 1e-6 survives float32 rounding in L = a aᵀ/100 + εI
    Shampoo([p], lr=1.0).step()  # a, b are eigenvectors of L = a aᵀ/100 + εI, R = b bᵀ/100 + εI
    expected = -torch.outer(a, b) / 10 * (2.25 + 1e-6) ** -0.5  # G Gᵀ = a aᵀ |b|²/100: eigenvalue |a|²|b|²/100
    torch.testing.assert_close(p.detach(), expected, atol=1e-5, rtol=0)
    vec = nn.Parameter(torch.zeros(3))
    vec.grad = torch.tensor([2.0, 0.0, 0.0])
    Shampoo([vec], lr=1.0).step()  # (g gᵀ + εI)^(-1/2) g = g/sqrt(|g|² + ε)
    torch.testing.assert_close(vec.detach(), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-5, rtol=0)
    p2 = nn.Parameter(torch.zeros(2, 3))
    p2.grad = torch.outer(a, b)
    Shampoo([p2], lr=1.0, epsilon=1e-3, exponent=-0.5).step()
    expected = -torch.outer(a, b) / (225 + 1e-3)  # both factors' eigenvalue |a|²|b|² = 225, to the −1/2 each
    torch.testing.assert_close(p2.detach(), expected, rtol=1e-4, atol=1e-5)
    kl = Shampoo([nn.Parameter(torch.zeros(2, 3))], preconditioner="kl")
    assert kl.param_groups[0]["exponent"] is None  # resolved per tensor by default_exponent: -1/2 with kl
    assert (default_exponent(2, "shampoo"), default_exponent(1, "shampoo"), default_exponent(3, "shampoo"),
            default_exponent(2, "kl")) == (-0.25, -0.5, -1 / 6, -0.5)


# -- the Kronecker diagnostic (Morwani et al. 2024) ----------------------------------------------------
def test_rearrangement_and_kronecker_errors() -> None:
    """‖H − A⊗B‖ = ‖𝓡(H) − vec A vec Bᵀ‖; for H = A⊗B exactly, L⊗R (L = 𝓡(H)vec I = A tr B) and the optimal
    product have error 0, L^(1/2)⊗R^(1/2) does not."""
    g = torch.Generator().manual_seed(7)
    a0, b0 = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    a, b = a0 @ a0.T + 0.1 * torch.eye(3, dtype=torch.float64), b0 @ b0.T + 0.1 * torch.eye(4, dtype=torch.float64)
    h = torch.kron(a, b)
    other = torch.randn(12, 12, generator=g, dtype=torch.float64)
    assert math.isclose((other - h).norm().item(),
                        (rearrange(other, 3, 4) - torch.outer(a.flatten(), b.flatten())).norm().item(), rel_tol=1e-12)
    left = rearrange(h, 3, 4) @ torch.eye(4, dtype=torch.float64).flatten()
    torch.testing.assert_close(left.view(3, 3), a * b.trace())
    errors = kronecker_errors(h, a * b.trace(), b * a.trace())
    assert errors["square"] < 1e-6 and errors["optimal"] < 1e-6 and errors["sqrt"] > 0.05


def test_tracked_covariance_and_factors() -> None:
    """The tracked H is Σ vec(G)vec(G)ᵀ and Shampoo's factors are its power-iteration step from I (plus εI)."""
    p = nn.Parameter(torch.zeros(4, 3))
    opt = Shampoo([p], lr=1e-3, track_covariance=100)
    g = torch.Generator().manual_seed(8)
    grads = [torch.randn(4, 3, generator=g) for _ in range(5)]
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
    h = sum(torch.outer(x.flatten(), x.flatten()) for x in grads)
    torch.testing.assert_close(opt.state[p]["covariance"], h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(opt.factor(p, 0), (rearrange(h, 4, 3) @ torch.eye(3).flatten()).view(4, 4)
                               + 1e-6 * torch.eye(4), rtol=1e-5, atol=1e-5)
    errors = opt.kronecker_errors()
    assert errors["optimal"] <= errors["square"] + 1e-9 and errors["optimal"] <= errors["sqrt"] + 1e-9


# -- round trip and config -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"momentum": 0.9}, {"preconditioner": "kl", "beta2": 0.9, "bias_correction": True},
    {"state_bits": 4, "preconditioner": "kl", "beta2": 0.9, "update_interval": 2, "grafting": "sgd"},
])
def test_state_dict_round_trip(kw: dict) -> None:
    """Three steps, save, load into a fresh optimizer, three more: identical to six uninterrupted steps."""
    def run(split: bool) -> torch.Tensor:
        params, g = _params(9)
        grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(6)]
        opt = Shampoo(params, lr=0.01, **kw)
        for i, step_grads in enumerate(grads):
            if split and i == 3:
                buffer = io.BytesIO()
                torch.save(opt.state_dict(), buffer)
                buffer.seek(0)
                opt = Shampoo(params, lr=0.01, **kw)
                opt.load_state_dict(torch.load(buffer, weights_only=True))
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        return torch.cat([p.detach().flatten() for p in params])

    first = run(False)
    assert torch.isfinite(first).all() and torch.equal(first, run(True))


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("momentum", 1.0), ("beta2", 0.0), ("beta2", 1.5),
                                          ("update_interval", 0), ("epsilon", -1.0), ("damping", -1.0),
                                          ("preconditioner", "adam"), ("state_bits", 8), ("exponent", "third"),
                                          ("grafting", "adam"), ("block_size", 0), ("diagnostic", "on")])
def test_config_rejects_out_of_range(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        ShampooConfig(**{field: value})


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "shampoo" in manifest["methods"]
    assert results["final"]["classification/accuracy"] > 0.5
    summary = results["summary"]["shampoo"]
    assert summary["state_bytes"] > 0 and 0 <= summary["kron_error_square"] <= summary["kron_error_sqrt"] + 0.1
