"""FAdam's math against pytorch-optimizer's FAdam (bit for bit) and torch's Adam (a limit case), its invariants,
the ablation switches, and a run of example.toml through the engine."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import pytorch_optimizer as po
import torch
from paperkit_fadam.functional import (
    FAdam,
    adaptive_stabilizer,
    debiased_beta2,
    fadam_step_,
    fisher_denominator,
    rms,
    rms_clip_,
    update_fisher_,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
SHAPES = [(32, 48), (64, 16), (20,), (4, 3, 3, 3)]  # wide, tall, a bias, a conv filter


def _trajectory(make_optimizer, shapes=SHAPES, steps: int = 6, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence (gradients times ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    optimizer = make_optimizer(params)
    grads = [[torch.randn(*s, generator=g) * scale for s in shapes] for _ in range(steps)]
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with pytorch-optimizer -----------------------------------------------------
@pytest.mark.parametrize("options", [
    {},  # Algorithm 1's defaults: lambda 0.1, c 1, p 0.5, eps 1e-8, eps2 0.01
    {"lr": 0.05, "betas": (0.8, 0.99), "weight_decay": 0.3},
    {"clip": 0.5, "p": 1.0},
    {"eps": 1e-3, "eps2": 0.1, "weight_decay": 0.0},
    {"maximize": True},
])
@pytest.mark.parametrize("scale", [1.0, 1e-9])  # 1e-9: eps2*RMS(g) < eps, the adaptive epsilon is active
@pytest.mark.parametrize("foreach", [False, None])  # pytorch-optimizer's per-tensor and (default) foreach paths
def test_matches_pytorch_optimizer_bit_for_bit(options: dict, scale: float, foreach: bool | None) -> None:
    reference = {("eps_2" if k == "eps2" else k): value for k, value in options.items()}  # its spelling; **kwargs hides typos
    ours = _trajectory(lambda ps: FAdam(ps, **options), scale=scale)
    ref = _trajectory(lambda ps: po.FAdam(ps, foreach=foreach, **reference), scale=scale)
    assert _max_diff(ours, ref) == 0.0


def test_limit_case_is_torch_adam_without_momentum() -> None:
    """beta1 = 0, no decay, no clip, constant eps: g/(sqrt(f_t) + eps) with the debiased EMA is Adam's g/(sqrt(v_hat) + eps)."""
    ours = _trajectory(lambda ps: FAdam(ps, lr=1e-2, betas=(0.0, 0.999), weight_decay=0.0, clip=math.inf, adaptive_eps=False))
    ref = _trajectory(lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.0, 0.999), eps=1e-8, foreach=False))
    assert _max_diff(ours, ref) < 1e-6


# -- the pieces, by hand ---------------------------------------------------------------
def test_debiased_beta2_makes_the_fisher_an_unbiased_average() -> None:
    """f_t = sum_i (1-b2) b2^(t-i) g_i^2 / (1 - b2^t): Adam's bias-corrected v_hat, with no division afterwards."""
    assert debiased_beta2(0.999, 1) == 0.0  # f_1 = g_1^2
    beta2 = 0.9
    grads = [torch.randn(5, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(6)]
    fisher = torch.zeros(5, dtype=torch.float64)
    for t, grad in enumerate(grads, start=1):
        update_fisher_(fisher, grad, debiased_beta2(beta2, t))
        weights = [(1 - beta2) * beta2 ** (t - i) for i in range(1, t + 1)]
        expected = sum(w * g.square() for w, g in zip(weights, grads)) / (1 - beta2**t)
        torch.testing.assert_close(fisher, expected, rtol=1e-12, atol=0.0)
    constant = torch.full((3,), 2.0, dtype=torch.float64)
    fisher = torch.zeros(3, dtype=torch.float64)
    for t in range(1, 5):
        update_fisher_(fisher, constant, debiased_beta2(0.999, t))
    torch.testing.assert_close(fisher, constant.square())  # a constant gradient gives f = g^2 at every step


def test_adaptive_epsilon_is_min_of_eps_and_scaled_gradient_rms() -> None:
    big, tiny, zero = torch.full((4,), 3.0), torch.full((4,), 3e-9), torch.zeros(4)
    assert adaptive_stabilizer(big, 1e-8, 0.01, 0.5).item() == pytest.approx(1e-8)  # 0.03 > eps: eps
    assert adaptive_stabilizer(tiny, 1e-8, 0.01, 0.5).item() == pytest.approx(3e-11)  # 0.01 * RMS = 3e-11
    assert adaptive_stabilizer(zero, 1e-8, 0.01, 0.5).item() == pytest.approx(1e-8)  # RMS 0 falls back to eps
    assert adaptive_stabilizer(tiny, 1e-8, 0.01, 1.0).item() == pytest.approx(9e-22, rel=1e-4)  # eps'^(2p)
    assert adaptive_stabilizer(tiny, 1e-8, 0.01, 0.5, adaptive=False) == pytest.approx(1e-8)
    torch.testing.assert_close(fisher_denominator(torch.tensor([4.0, 9.0]), 0.5, 0.5), torch.tensor([2.5, 3.5]))


def test_rms_clip_caps_the_rms_and_leaves_small_tensors_alone() -> None:
    x = torch.randn(100, generator=torch.Generator().manual_seed(0)) * 7
    assert rms(rms_clip_(x.clone(), 1.0)).item() == pytest.approx(1.0, rel=1e-6)
    assert rms(rms_clip_(x.clone(), 2.0)).item() == pytest.approx(2.0, rel=1e-6)
    small = x / 100
    assert torch.equal(rms_clip_(small.clone(), 1.0), small)
    assert torch.equal(rms_clip_(x.clone(), math.inf), x)


def test_first_step_by_hand() -> None:
    """t = 1: f = g^2, so with p = 1/2 the natural gradient is g/(|g| + eps') ~ sign(g) (RMS < 1: no clip);
    m = (1 - b1) g_nat; the decay direction theta/(|g| + eps') is clipped to RMS 1."""
    g = torch.tensor([0.5, -2.0, 1e-3, 4.0], dtype=torch.float64)
    theta = torch.tensor([1.0, 2.0, -3.0, 0.5], dtype=torch.float64)
    param, momentum, fisher = theta.clone(), torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    fadam_step_(param, g, momentum, fisher, 1, lr=0.1, betas=(0.9, 0.999), weight_decay=0.1)
    eps = 1e-8  # 0.01 * RMS(g) > 1e-8
    natural = g / (g.abs() + eps)
    decay = theta / (g.abs() + eps)
    decay = decay / max(1.0, decay.square().mean().sqrt().item())
    torch.testing.assert_close(fisher, g.square())
    torch.testing.assert_close(momentum, 0.1 * natural)
    torch.testing.assert_close(param, theta - 0.1 * (0.1 * natural + 0.1 * decay))


def test_update_is_invariant_to_the_gradient_scale() -> None:
    """Once eps2*RMS(g) < eps the epsilon scales with the gradient, so FAdam is scale-free however small the
    gradients (1e-12 vs 1e-15); with a constant eps = 1e-8 such gradients barely move the weights (SGD-like)."""
    kw = {"lr": 1e-2, "weight_decay": 0.0}
    start = _trajectory(lambda ps: FAdam(ps, **kw), steps=0)
    small = _trajectory(lambda ps: FAdam(ps, **kw), scale=1e-12)
    assert _max_diff(small, _trajectory(lambda ps: FAdam(ps, **kw), scale=1e-15)) < 1e-6
    moved = _max_diff(small, start)
    assert moved > 1e-2  # about lr per step
    constant = _trajectory(lambda ps: FAdam(ps, adaptive_eps=False, **kw), scale=1e-12)
    assert _max_diff(constant, start) < 1e-3 * moved


# -- the ablation switches -------------------------------------------------------------
def _two_steps(**options) -> tuple[torch.Tensor, torch.Tensor]:
    """Two steps whose second gradient is 100x the first: then f_2 ~ g^2/2 and the natural gradient has RMS ~ sqrt(2)."""
    g = torch.Generator().manual_seed(5)
    theta, grad = torch.randn(64, generator=g), torch.randn(64, generator=g)
    param, momentum, fisher = theta.clone(), torch.zeros(64), torch.zeros(64)
    fadam_step_(param, grad * 0.01, momentum, fisher, 1, lr=1.0, weight_decay=0.0, **options)
    first = momentum.clone()
    fadam_step_(param, grad, momentum, fisher, 2, lr=1.0, weight_decay=0.0, **options)
    return first, momentum


def test_clip_gradient_switch() -> None:
    """Clipped, the second natural gradient (m_2 - b1 m_1)/(1 - b1) has RMS exactly c = 1; unclipped about sqrt(2)."""
    first, second = _two_steps()
    assert rms((second - 0.9 * first) / 0.1).item() == pytest.approx(1.0, rel=1e-4)
    first, second = _two_steps(clip_gradient=False)
    assert rms((second - 0.9 * first) / 0.1).item() == pytest.approx(math.sqrt(2.0), rel=2e-3)


def test_decoupled_weight_decay_switch_is_adamw_style() -> None:
    g = torch.Generator().manual_seed(1)
    p0, grad = torch.randn(10, generator=g), torch.randn(10, generator=g)
    a, m_a, f_a = p0.clone(), torch.zeros(10), torch.zeros(10)
    fadam_step_(a, grad, m_a, f_a, 1, lr=0.1, weight_decay=0.5, fisher_weight_decay=False)
    b, m_b, f_b = p0.clone(), torch.zeros(10), torch.zeros(10)
    fadam_step_(b, grad, m_b, f_b, 1, lr=0.1, weight_decay=0.0)
    torch.testing.assert_close(a, b - 0.1 * 0.5 * p0)  # theta <- theta - lr (m + lambda theta)


def test_infinite_clip_switches_both_clips_off() -> None:
    g = torch.Generator().manual_seed(2)
    p0, grad = torch.randn(10, generator=g), torch.randn(10, generator=g) * 1e-3
    a, m, f = p0.clone(), torch.zeros(10), torch.zeros(10)
    fadam_step_(a, grad, m, f, 1, lr=0.1, clip=math.inf)
    natural = grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(a, p0 - 0.1 * (0.1 * natural + 0.1 * p0 / (grad.abs() + 1e-8)))  # huge, unclipped decay


# -- optimizer behaviour ---------------------------------------------------------------
def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    net, twin = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    twin.load_state_dict(net.state_dict())
    a, b = FAdam(net.parameters(), lr=1e-2), FAdam(twin.parameters(), lr=1e-2)

    def step(model: nn.Module, optimizer: FAdam, seed: int) -> None:
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
    for seed in (7, 8):
        step(net, a, seed)
        step(twin, b, seed)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))
    assert a.state[next(net.parameters())]["step"] == 5


def test_lambda_schedule_and_grad_left_untouched() -> None:
    param = nn.Parameter(torch.randn(4, 4))
    optimizer = FAdam([param], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    before = param.detach().clone()
    param.grad = torch.randn(4, 4)
    grad = param.grad.clone()
    optimizer.step()
    scheduler.step()
    assert torch.equal(param, before)  # lr 0: nothing moves, not even through the weight decay
    assert torch.equal(param.grad, grad)
    FAdam([param], maximize=True).step()
    assert torch.equal(param.grad, grad)  # maximize negates a copy, never .grad


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"betas": (1.0, 0.9)}, {"clip": 0.0}, {"p": 0.0}, {"eps": -1.0},
                                 {"weight_decay": -0.1}])
def test_invalid_hyperparameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        FAdam([nn.Parameter(torch.zeros(2))], **bad)


# -- end to end ------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1\nmax_steps = 10")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 10
    assert manifest["methods"][0] == "fadam"
    assert results["final"]["classification/accuracy"] > 0.3  # well above the 0.1 of chance after 10 steps
