"""AuON's math against hand-computed steps, its invariants, and a run of example.toml through the engine.

The authors' package (ryyzn9/AuON) is not installable from a registry, so nothing here imports it and nothing
re-implements its optimizer: the expected values are written out from the formulas of ``auon/optimizer.py``
(commit bba2e82; the paper's Sec. 3.1 and ``Auon_Adam_train.py`` at c87b862 for ``normalize=True``), scalar by
scalar, or derived from closed forms (singular values for Newton–Schulz, convexity bounds for the cosh RMS).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from paperkit_auon.functional import (
    NS_COEFFICIENTS,
    AuON,
    auon_for,
    auon_update,
    cosh_rms,
    cosh_rms_bounds,
    newton_schulz,
    shape_factor,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- hand-computed steps ------------------------------------------------------------------
def test_one_step_by_hand() -> None:
    """g = (3, 4), beta 0.95, gamma 1.5, lr 0.24, from a zero momentum.

    m = 0.05 g; G = g + 0.95 (m - g) = 0.0975 g = (0.2925, 0.39); ||G|| = 0.4875;
    gamma G/||G|| = (0.9, 1.2); r = sqrt((cosh(0.9)^2 + cosh(1.2)^2) / 2) = 1.63282...;
    U = G / r; W <- W - 0.24 U.
    """
    r = math.sqrt((math.cosh(0.9) ** 2 + math.cosh(1.2) ** 2) / 2)
    assert r == pytest.approx(1.6328212, abs=1e-7)
    p = nn.Parameter(_f64(1.0, -2.0))
    opt = AuON([p])
    p.grad = _f64(3.0, 4.0)
    opt.step()
    expected = _f64(1.0 - 0.24 * 0.2925 / r, -2.0 - 0.24 * 0.39 / r)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)  # the 1e-7 and 1e-8 guards only
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], _f64(0.15, 0.2), rtol=0, atol=1e-15)


def _by_hand(p0: list[float], grads: list[list[float]], *, lr: float, beta: float, wd: float, gamma: float,
             nesterov: bool = True, normalize: bool = False, scale: float = 1.0) -> list[float]:
    """The reference's step, entry by entry in Python floats (flattened tensors)."""
    p, m = list(p0), [0.0] * len(p0)
    for g in grads:
        p = [x * (1 - lr * wd) for x in p] if wd else p
        m = [mi + (1 - beta) * (gi - mi) for mi, gi in zip(m, g)]
        G = [gi + beta * (mi - gi) for mi, gi in zip(m, g)] if nesterov else list(m)
        norm = math.sqrt(sum(x * x for x in G))
        if normalize:
            G = [x / (norm + 1e-7) for x in G]
            x = [gamma * v for v in G]
        else:
            x = [gamma * (v / (norm + 1e-7)) for v in G]
        r = math.sqrt(sum(math.cosh(v) ** 2 for v in x) / len(x))
        p = [pi - lr * scale * (Gi / (r + 1e-8)) for pi, Gi in zip(p, G)]
    return p


@pytest.mark.parametrize("shape", [(5,), (2, 3), (4, 2), (2, 1, 2, 2)])
@pytest.mark.parametrize("form", ["package", "paper"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_several_steps_match_the_formulas(shape: tuple[int, ...], form: str, nesterov: bool) -> None:
    """Six steps, weight decay on, vectors, wide and tall matrices and a conv filter, both forms: 1e-12 in float64."""
    g = torch.Generator().manual_seed(sum(shape))
    p0 = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** (k % 3 - 1) for k in range(6)]
    paper = form == "paper"
    options = dict(lr=0.3, momentum=0.9, weight_decay=0.05, gamma=1.0 if paper else 1.5, nesterov=nesterov)
    p = nn.Parameter(p0.clone())
    opt = AuON([p], normalize=paper, shape_scale=paper, **options)
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        assert torch.equal(p.grad, grad)  # the gradient is not overwritten (the reference writes G into it)
    expected = _by_hand(p0.flatten().tolist(), [x.flatten().tolist() for x in grads], lr=0.3, beta=0.9, wd=0.05,
                        gamma=options["gamma"], nesterov=nesterov, normalize=paper,
                        scale=shape_factor(shape) if paper else 1.0)
    torch.testing.assert_close(p.detach().flatten(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def _rotation(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _quintic(s: torch.Tensor, steps: int) -> torch.Tensor:
    a, b, c = NS_COEFFICIENTS
    s = s / (s.square().sum().sqrt() + 1e-7)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
@pytest.mark.parametrize("steps", [1, 5])
def test_newton_schulz_acts_on_singular_values(shape: tuple[int, int], steps: int) -> None:
    """NS(U S Vᵀ) = U p(S/||S||) Vᵀ with the quintic p(s) = a s + b s³ + c s⁵ applied ``steps`` times."""
    m, n = shape
    k = min(m, n)
    u, v = _rotation(m, 1)[:, :k], _rotation(n, 2)[:, :k]
    s = _f64(*[3.0, 1.0, 0.5, 0.1][:k])
    matrix = u @ torch.diag(s) @ v.T
    expected = u @ torch.diag(_quintic(s, steps)) @ v.T
    torch.testing.assert_close(newton_schulz(matrix, steps), expected, rtol=0, atol=1e-12)


def test_newton_schulz_batches_leading_dimensions() -> None:
    """A 4-D tensor is a batch of its trailing matrices (HybridAuON's conv behaviour)."""
    x = torch.randn(2, 3, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = newton_schulz(x, 2)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], newton_schulz(x[i, j], 2), rtol=0, atol=1e-14)


@pytest.mark.parametrize("normalize", [False, True])
def test_hybrid_step_by_singular_values(normalize: bool) -> None:
    """Hybrid-AuON, one NS iteration, one step: U = X / r, X = U_G p(S/||S||) V_Gᵀ, r from cosh as in each form."""
    u, v = _rotation(4, 3)[:, :2], _rotation(2, 4)
    s = _f64(2.0, 0.2)
    grad = u @ torch.diag(s) @ v.T
    update = auon_update(grad, {}, momentum=0.0, gamma=1.5, ns_steps=1, normalize=normalize)  # beta 0: G = g
    s0 = s / (s.square().sum().sqrt() + 1e-7) if normalize else s  # the paper form normalizes before NS too
    x = u @ torch.diag(_quintic(s0, 1)) @ v.T
    scaled = x * 1.5 if normalize else x / (x.norm() + 1e-7) * 1.5
    r = torch.cosh(scaled).square().mean().sqrt()
    torch.testing.assert_close(update, x / (r + 1e-8), rtol=0, atol=1e-12)


# -- invariants -------------------------------------------------------------------------
@pytest.mark.parametrize("numel", [2, 7, 64, 4096])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5, 3.0])
def test_cosh_rms_lies_between_its_bounds(numel: int, gamma: float) -> None:
    """cosh(γ/√N) <= r <= sqrt(1 + sinh²γ/N), reached at equal magnitudes and at a one-hot tensor.

    Up to the 1e-7 added to the norm (the scaled tensor's norm is ||x||/(||x|| + 1e-7), a hair below 1).
    """
    low, high = cosh_rms_bounds(numel, gamma)
    g = torch.Generator().manual_seed(numel)
    for heavy in (0.0, 1.0, 4.0):  # from Gaussian to very spiky
        x = torch.randn(numel, generator=g, dtype=torch.float64) * torch.exp(heavy * torch.randn(numel, generator=g))
        r = cosh_rms(x, gamma, normalized=False).item()
        assert low * (1 - 1e-6) <= r <= high
    signs = torch.where(torch.rand(numel, generator=g) < 0.5, -1.0, 1.0).double()
    assert cosh_rms(signs, gamma, normalized=False).item() == pytest.approx(low, rel=1e-6)
    one_hot = torch.zeros(numel, dtype=torch.float64)
    one_hot[numel // 2] = -5.0
    assert cosh_rms(one_hot, gamma, normalized=False).item() == pytest.approx(high, rel=1e-6)


def test_cosh_rms_is_nearly_one_on_real_matrices() -> None:
    """On a 256×256 matrix r - 1 <= sinh²(γ)/(2N) ~ 3e-5: the brake barely moves the step."""
    x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    r = cosh_rms(x, 1.5, normalized=False).item()
    assert 0.0 < r - 1.0 <= math.sinh(1.5) ** 2 / (2 * x.numel()) * 1.01


def test_paper_form_is_scale_invariant_inside_the_unit_ball() -> None:
    """normalize=True: U(cG) = U(G), ||U||_F = 1/r <= 1, hence spectral norm <= 1 (paper Sec. 3.1)."""
    grad = torch.randn(16, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = auon_update(grad, {}, normalize=True, gamma=1.0)
    b = auon_update(1e3 * grad, {}, normalize=True, gamma=1.0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)  # "unchanged up to eps-terms" (Sec. 3.1)
    r = cosh_rms(grad / grad.norm(), 1.0, normalized=True)
    assert a.norm().item() == pytest.approx(1 / (r.item() + 1e-8), rel=1e-6)
    assert torch.linalg.matrix_norm(a, ord=2).item() <= 1.0


def test_package_form_keeps_the_momentum_magnitude() -> None:
    """normalize=False (the released package): U = G / r, so scaling the gradient scales the update."""
    grad = torch.randn(16, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = auon_update(grad, {}, momentum=0.0)
    b = auon_update(1e3 * grad, {}, momentum=0.0)
    torch.testing.assert_close(b, 1e3 * a, rtol=1e-9, atol=0)
    torch.testing.assert_close(a * (cosh_rms(grad, 1.5, normalized=False) + 1e-8), grad, rtol=1e-12, atol=0)


def test_shape_factor() -> None:
    assert shape_factor((8, 2)) == 2.0 and shape_factor((2, 8)) == 1.0 and shape_factor((5,)) == 1.0


@pytest.mark.parametrize("options", [{}, {"normalize": True}, {"ns_steps": 1}, {"ns_steps": 1, "normalize": True}])
def test_zero_gradient_only_decays(options: dict) -> None:
    """A zero momentum gives a zero update (no NaN); decoupled weight decay still applies, as in the reference."""
    p = nn.Parameter(torch.ones(3, 2))
    opt = AuON([p], lr=0.1, weight_decay=0.5, **options)
    p.grad = torch.zeros(3, 2)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3, 2), 1 - 0.1 * 0.5))


def test_adamw_groups_match_torch_adamw() -> None:
    """Groups with use_auon=False are AdamW (paperkit-normuon's step), over several steps."""
    g = torch.Generator().manual_seed(0)
    shapes = [(10,), (5, 3)]
    ours = [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    a = AuON([{"params": ours, "use_auon": False}], adamw_lr=1e-2, adamw_betas=(0.9, 0.999), adamw_eps=1e-8,
             adamw_weight_decay=0.1)
    b = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, foreach=False)
    for _ in range(5):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for params, opt in ((ours, a), (ref, b)):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt.step()
    assert max((x - y).abs().max().item() for x, y in zip(ours, ref)) <= 1e-6


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 16)
        self.hidden = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.relu(self.hidden(torch.relu(self.stem(x))))))


def test_auon_for_puts_only_hidden_matrices_on_auon() -> None:
    net = _Net()
    opt = auon_for(net)
    auon, adamw = opt.param_groups
    assert auon["use_auon"] and not adamw["use_auon"]
    assert [p is net.hidden.weight for p in auon["params"]] == [True]
    assert auon["lr"] == 0.24 and adamw["lr"] == 0.008 and adamw["betas"] == (0.8, 0.95)
    assert len(auon_for(net, input_layer="muon").param_groups[0]["params"]) == 2  # the stem joins


def test_lambda_schedule_drives_both_parts() -> None:
    net = _Net()
    opt = auon_for(net, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0)
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(4, 6)).square().mean().backward()
    opt.step()
    scheduler.step()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    net, twin = _Net(), _Net()
    twin.load_state_dict(net.state_dict())
    a, b = auon_for(net, ns_steps=1), auon_for(twin, ns_steps=1)

    def step(model: _Net, optimizer: AuON, seed: int) -> None:
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

    for seed in range(3):
        step(net, a, seed)
        step(twin, b, seed + 100)
    twin.load_state_dict(net.state_dict())
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    step(net, a, 9)
    step(twin, b, 9)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))


def test_bad_hyperparameters_are_refused() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    for bad in ({"lr": -1.0}, {"momentum": 1.5}, {"weight_decay": -0.1}, {"ns_steps": -1}):
        with pytest.raises(ValueError):
            AuON(p, **bad)


# -- end to end ------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1\nmax_steps = 8")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 8
    assert manifest["methods"][0] == "auon"
    assert results["final"]["classification/accuracy"] > 0.3  # chance is 0.1
