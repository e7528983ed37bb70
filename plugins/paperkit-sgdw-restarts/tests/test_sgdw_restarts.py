"""SGDW and warm restarts against their references (pytorch-optimizer ``SGDW``, ``torch.optim.SGD``, torch's
``CosineAnnealingWarmRestarts``), the paper's decoupling as invariants, the hooks' per-cycle decay and anytime
scores, and runs of example.toml through the engine."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_optimizer as po
import torch
from paperkit_sgdw_restarts import SGDWRestartsConfig
from paperkit_sgdw_restarts.functional import (
    SGDW,
    cycle_ends,
    cycle_position,
    first_cycle_length,
    normalized_weight_decay,
    warm_restarts_factor,
)
from paperkit_sgdw_restarts.hooks import SGDWRestarts
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
SHAPES = [(16, 8), (8, 3, 3, 3), (12,), (5, 7)]
MOMENTA = [  # (momentum, dampening, nesterov)
    (0.9, 0.0, False),
    (0.9, 0.0, True),
    (0.8, 0.3, False),
    (0.0, 0.0, False),
]


def _trajectory(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer], steps: int = 7, seed: int = 0,
                factor: Callable[[int], float] | None = None, zero_grad: bool = False) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence (optionally under a LambdaLR)."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    optimizer = make(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor) if factor is not None else None
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p) if zero_grad else torch.randn(p.shape, generator=g)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in params]


def _cosine(step: int) -> float:
    return warm_restarts_factor(step, t_0=3, t_mult=2, min_ratio=0.05)


# -- SGDW against pytorch-optimizer and torch ---------------------------------------------
@pytest.mark.parametrize("momentum,dampening,nesterov", MOMENTA)
@pytest.mark.parametrize("factor", [None, _cosine], ids=["constant", "restarts"])
def test_lr_scaling_matches_pytorch_optimizer_sgdw_bit_for_bit(momentum: float, dampening: float, nesterov: bool,
                                                               factor: Callable[[int], float] | None) -> None:
    hp = dict(lr=0.07, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=0.3)
    ours = _trajectory(lambda p: SGDW(p, decay_scaling="lr", **hp), factor=factor)
    ref = _trajectory(lambda p: po.SGDW(p, foreach=False, weight_decouple=True, **hp), factor=factor)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("momentum,dampening,nesterov", MOMENTA)
def test_schedule_scaling_is_pytorch_optimizer_with_lambda_over_alpha(momentum: float, dampening: float,
                                                                     nesterov: bool) -> None:
    """At a constant rate the paper's decay eta*lambda (eta = 1) is pytorch-optimizer's lr*lambda' with lambda' = lambda/lr."""
    hp = dict(lr=0.07, momentum=momentum, dampening=dampening, nesterov=nesterov)
    ours = _trajectory(lambda p: SGDW(p, weight_decay=0.02, **hp))
    ref = _trajectory(lambda p: po.SGDW(p, foreach=False, weight_decay=0.02 / 0.07, **hp))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum,dampening,nesterov", MOMENTA)
def test_without_weight_decay_it_is_torch_sgd_bit_for_bit(momentum: float, dampening: float, nesterov: bool) -> None:
    hp = dict(lr=0.07, momentum=momentum, dampening=dampening, nesterov=nesterov)
    ours = _trajectory(lambda p: SGDW(p, weight_decay=0.0, **hp), factor=_cosine)
    ref = _trajectory(lambda p: torch.optim.SGD(p, weight_decay=0.0, foreach=False, **hp), factor=_cosine)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_plain_sgd_l2_equals_decoupled_decay_rescaled_by_the_learning_rate() -> None:
    """Prop. 1: without momentum, SGD with L2 factor lambda' = lambda/alpha is SGDW with lambda."""
    lr, lam = 0.05, 0.01
    ours = _trajectory(lambda p: SGDW(p, lr=lr, momentum=0.0, weight_decay=lam))
    ref = _trajectory(lambda p: torch.optim.SGD(p, lr=lr, momentum=0.0, weight_decay=lam / lr))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_with_momentum_l2_is_not_decoupled_decay() -> None:
    """With momentum, L2's decay goes through the buffer (and is amplified by it): the trajectories differ."""
    lr, lam = 0.05, 0.01
    ours = _trajectory(lambda p: SGDW(p, lr=lr, momentum=0.9, weight_decay=lam), steps=20)
    ref = _trajectory(lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=lam / lr), steps=20)
    gap = max((a - b).abs().max().item() for a, b in zip(ours, ref))
    assert gap > 1e-2


# -- the decoupling, as invariants ------------------------------------------------------------
def test_decay_depends_on_the_schedule_multiplier_not_on_alpha() -> None:
    """Zero gradients: SGDW shrinks theta by prod(1 - eta_t lambda) whatever alpha is; SGD+L2 by alpha as well."""
    lam, steps = 0.1, 6
    start = _trajectory(lambda p: SGDW(p, lr=1.0), steps=0)
    shrink = math.prod(1.0 - lam * _cosine(t) for t in range(steps))
    ends = [_trajectory(lambda p, a=a: SGDW(p, lr=a, weight_decay=lam), steps=steps, factor=_cosine, zero_grad=True)
            for a in (0.01, 0.3)]
    for a, b, p0 in zip(*ends, start):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, p0 * shrink, rtol=1e-6, atol=1e-7)
    l2 = [_trajectory(lambda p, a=a: torch.optim.SGD(p, lr=a, weight_decay=lam), steps=steps, factor=_cosine,
                      zero_grad=True) for a in (0.01, 0.3)]
    assert not torch.allclose(l2[0][0], l2[1][0])


def test_lr_scaling_decay_depends_on_alpha() -> None:
    lam = 0.1
    ends = [_trajectory(lambda p, a=a: SGDW(p, lr=a, weight_decay=lam, decay_scaling="lr"), steps=4, zero_grad=True)
            for a in (0.5, 1.0)]
    start = _trajectory(lambda p: SGDW(p, lr=1.0), steps=0)
    torch.testing.assert_close(ends[0][0], start[0] * (1 - 0.5 * lam) ** 4)
    torch.testing.assert_close(ends[1][0], start[0] * (1 - lam) ** 4)


def test_alpha_is_each_groups_own_rate() -> None:
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = SGDW([{"params": [a], "lr": 0.1}, {"params": [b]}], lr=0.5, momentum=0.0, weight_decay=0.2)
    assert [g["alpha"] for g in opt.param_groups] == [0.1, 0.5]
    for g in opt.param_groups:
        g["lr"] *= 0.5  # eta_t = 0.5 for both
    a.grad, b.grad = torch.zeros(3), torch.zeros(3)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((3,), 1 - 0.5 * 0.2))
    torch.testing.assert_close(b.detach(), torch.full((3,), 1 - 0.5 * 0.2))


def test_state_dict_round_trip_continues_exactly() -> None:
    def make(p: list[nn.Parameter]) -> SGDW:
        return SGDW(p, lr=0.07, momentum=0.9, nesterov=True, weight_decay=0.3)

    g = torch.Generator().manual_seed(3)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(6)]
    opt = make(params)
    for step in grads[:3]:
        for p, gr in zip(params, step):
            p.grad = gr.clone()
        opt.step()
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    for step in grads[3:]:
        for p, gr in zip(params, step):
            p.grad = gr.clone()
        opt.step()
    buf.seek(0)
    saved = torch.load(buf)
    params2 = [nn.Parameter(t) for t in saved["params"]]
    opt2 = make(params2)
    opt2.load_state_dict(saved["opt"])
    for step in grads[3:]:
        for p, gr in zip(params2, step):
            p.grad = gr.clone()
        opt2.step()
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    for kwargs in ({"lr": 0.0}, {"momentum": 1.0}, {"weight_decay": -1.0}, {"decay_scaling": "alpha"},
                   {"nesterov": True, "momentum": 0.0}):
        with pytest.raises(ValueError):
            SGDW(p, **kwargs)


# -- warm restarts against torch ----------------------------------------------------------------
@pytest.mark.parametrize("t_0,t_mult,eta_min", [(5, 1, 0.0), (5, 2, 0.0), (3, 3, 0.1), (7, 2, 0.05)])
def test_factor_matches_torch_cosine_annealing_warm_restarts(t_0: int, t_mult: int, eta_min: float) -> None:
    p = nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    ours_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    ours = torch.optim.lr_scheduler.LambdaLR(
        ours_opt, lambda s: warm_restarts_factor(s, t_0=t_0, t_mult=t_mult, min_ratio=eta_min))
    for step in range(120):
        assert warm_restarts_factor(step, t_0, t_mult, eta_min) == ref_opt.param_groups[0]["lr"], step  # base lr 1: exact
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(0.3 * ref_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        ref_opt.step()
        ref.step()
        ours_opt.step()
        ours.step()


def test_cycles_fill_the_run() -> None:
    t_0 = first_cycle_length(150, cycles=4, t_mult=2)
    assert t_0 == 10
    assert cycle_ends(150, t_0, 2) == [10, 30, 70, 150]
    assert [cycle_position(s, t_0, 2)[1:] for s in (0, 9, 10, 29, 30, 149)] == [
        (10, 0), (10, 0), (20, 1), (20, 1), (40, 2), (80, 3)]
    assert warm_restarts_factor(10, t_0, 2) == 1.0 and warm_restarts_factor(70, t_0, 2) == 1.0
    assert cycle_ends(6, 0.4, 2) == [1, 3, 6]  # cycles shorter than a step merge, never end at step 0
    assert cycle_ends(10, 3, 1) == [3, 6, 9]


def test_normalized_weight_decay_is_the_papers_formula() -> None:
    lam_norm, b, big_b, epochs = 0.025, 128, 50_000, 100
    steps = big_b / b * epochs
    assert normalized_weight_decay(lam_norm, steps) == pytest.approx(lam_norm * math.sqrt(b / (big_b * epochs)))
    with pytest.raises(ValueError):
        normalized_weight_decay(lam_norm, 0)


# -- the hooks --------------------------------------------------------------------------------
def _ctx(total: int, per_epoch: int = 10) -> Any:
    return SimpleNamespace(total_steps=total, steps_per_epoch=per_epoch, step=0, experience_step=0)


def test_hook_sets_each_cycles_normalized_decay() -> None:
    impl = SGDWRestarts(SGDWRestartsConfig(weight_decay=0.4, cycles=4, t_mult=2))
    model = nn.Linear(3, 2)
    out = impl.optimize(model=model, ctx=_ctx(150))
    assert out.optimizer is impl.optimizer and out.lr_factor is not None
    assert out.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.4 / math.sqrt(10))
    for done, length in ((9, 10), (10, 20), (30, 40), (149, 80)):
        ctx = _ctx(150)
        ctx.experience_step = done
        impl.after_step(model=model, ctx=ctx)
        assert out.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.4 / math.sqrt(length))
    cosine = SGDWRestarts(SGDWRestartsConfig(weight_decay=0.4, schedule="cosine"))
    opt = cosine.optimize(model=model, ctx=_ctx(150)).optimizer
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.4 / math.sqrt(150))
    raw = SGDWRestarts(SGDWRestartsConfig(weight_decay=0.4, normalize_weight_decay=False, schedule="constant"))
    out = raw.optimize(model=model, ctx=_ctx(150))
    assert out.optimizer.param_groups[0]["weight_decay"] == 0.4 and out.lr_factor is None


def test_t_0_in_epochs() -> None:
    impl = SGDWRestarts(SGDWRestartsConfig(t_0=2.0, t_mult=1, anytime_eval=True))
    factor = impl.optimize(model=nn.Linear(3, 2), ctx=_ctx(100, per_epoch=10)).lr_factor
    assert impl.ends == [20, 40, 60, 80, 100]
    assert factor(20) == 1.0 and factor(19) == pytest.approx(warm_restarts_factor(19, 20, 1))


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "sgdw-restarts" in manifest["methods"]
    summary = results["summary"]["sgdw-restarts"]
    assert summary["cycle_ends"] == 4
    assert summary["e0-cycle-3/test_accuracy"] == pytest.approx(results["final"]["classification/accuracy"])
    assert 0.0 <= summary["anytime_accuracy"] <= 1.0


def test_warm_restarts_composes_with_adamw(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    plan = EXAMPLE.read_text(encoding="utf-8").replace(
        '[optimize]\nuse = "sgdw-restarts"\nanytime_eval = true',
        '[[optimize]]\nuse = "adamw"\n\n[[optimize]]\nuse = "warm-restarts"\ncycles = 2\nanytime_eval = true')
    results, manifest = run_plan(plan)
    assert results["status"] == "completed" and {"adamw", "warm-restarts"} <= set(manifest["methods"])
    assert results["summary"]["warm-restarts"]["cycle_ends"] == 2
