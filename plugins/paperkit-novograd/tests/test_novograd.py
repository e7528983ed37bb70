"""NovoGrad's math against pytorch-optimizer's ``NovoGrad`` (and timm's ``NvNovoGrad`` when timm is present),
hand-computed steps and invariants, and a run of example.toml through the engine."""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_optimizer as po
import torch
from paperkit_novograd.functional import NovoGrad, denominator, normalized_gradient, state_numel, update_second_moment
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
#: A matrix, a bias, a conv filter and a small odd matrix: every tensor is one "layer".
SHAPES = [(32, 48), (64,), (8, 3, 3, 3), (5, 7)]


def _trajectory(make: Callable[[list[nn.Parameter]], Any], steps: int = 6, seed: int = 0,
                zero_first: bool = False, scale: float = 1.0) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence (optionally all-zero at step 1)."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    optimizer = make(params)
    grads = [[scale * torch.randn(*s, generator=g) for s in SHAPES] for _ in range(steps)]
    for t, step_grads in enumerate(grads):
        for p, grad in zip(params, step_grads):
            p.grad = torch.zeros_like(grad) if (zero_first and t == 0) else grad.clone()
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with pytorch-optimizer (bit for bit) ------------------------------------------
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("grad_averaging", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_pytorch_optimizer(foreach: bool, grad_averaging: bool, weight_decay: float) -> None:
    """With eps outside the square root (its form), ours is pytorch-optimizer's NovoGrad exactly, both of its paths."""
    options = dict(lr=0.01, betas=(0.95, 0.98), eps=1e-8, weight_decay=weight_decay, grad_averaging=grad_averaging)
    ours = _trajectory(lambda ps: NovoGrad(ps, eps_inside_sqrt=False, **options))
    ref = _trajectory(lambda ps: po.NovoGrad(ps, foreach=foreach, **options))
    assert _max_diff(ours, ref) == 0.0


def test_pytorch_optimizer_differs_only_where_we_say() -> None:
    """Two documented differences: a zero first gradient (we re-initialize v) and eps inside the square root."""
    ref = _trajectory(lambda ps: po.NovoGrad(ps, lr=0.01, foreach=False), zero_first=True)
    ours = _trajectory(lambda ps: NovoGrad(ps, lr=0.01, eps_inside_sqrt=False), zero_first=True)
    assert _max_diff(ours, ref) > 1e-2
    tiny = dict(scale=1e-6)  # gradient norms ~1e-5: sqrt(v + 1e-8) ~ 1e-4 differs from sqrt(v) + 1e-8
    inside = _trajectory(lambda ps: NovoGrad(ps, lr=0.01), **tiny)
    outside = _trajectory(lambda ps: po.NovoGrad(ps, lr=0.01, foreach=False), **tiny)
    assert _max_diff(inside, outside) > 1e-3


def _timm_nvnovograd() -> type:
    """timm's ``NvNovoGrad`` class, loaded from its file: ``import timm`` needs torchvision, the optimizer does not."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("timm is not installed (optional: `pip install --no-deps timm`; `pip install timm` pulls "
                    "torchvision and another torch)")
    optim_dir = Path(next(iter(spec.submodule_search_locations))) / "optim"
    if not (optim_dir / "nvnovograd.py").exists():
        pytest.skip("this timm has no optim/nvnovograd.py")
    if "_paperkit_timm_optim" not in sys.modules:
        package = types.ModuleType("_paperkit_timm_optim")
        package.__path__ = [str(optim_dir)]
        sys.modules["_paperkit_timm_optim"] = package
    return importlib.import_module("_paperkit_timm_optim.nvnovograd").NvNovoGrad


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_timm_nvnovograd(amsgrad: bool, weight_decay: float) -> None:
    """timm's NvNovoGrad (NVIDIA's Jasper code) computes the EMA as mul+add, we as lerp: equal to float rounding.

    Includes a zero first gradient: timm, like us, re-initializes v while it is 0.
    """
    nv = _timm_nvnovograd()
    options = dict(lr=0.01, betas=(0.95, 0.98), eps=1e-8, weight_decay=weight_decay, amsgrad=amsgrad)
    for zero_first in (False, True):
        ours = _trajectory(lambda ps: NovoGrad(ps, eps_inside_sqrt=False, **options), zero_first=zero_first)
        ref = _trajectory(lambda ps: nv(ps, **options), zero_first=zero_first)
        assert _max_diff(ours, ref) <= 1e-6


# -- hand-computed steps (Algorithm 1) -----------------------------------------------------
def test_first_two_steps_by_hand() -> None:
    """v_1 = |g_1|^2, m_1 = g_1/sqrt(v_1 + eps) + d w_0; v_2 = b2 v_1 + (1-b2)|g_2|^2, m_2 = b1 m_1 + (...)."""
    lr, b1, b2, eps, d = 0.1, 0.9, 0.5, 1e-8, 0.01
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    optimizer = NovoGrad([w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=d)
    g1, g2 = [3.0, 4.0], [0.0, 1.0]
    w0 = [1.0, 2.0]
    w.grad = torch.tensor(g1, dtype=torch.float64)
    optimizer.step()
    v1 = 25.0
    m1 = [g / math.sqrt(v1 + eps) + d * x for g, x in zip(g1, w0)]
    w1 = [x - lr * m for x, m in zip(w0, m1)]
    assert torch.allclose(w.detach(), torch.tensor(w1, dtype=torch.float64), rtol=0, atol=1e-15)
    w.grad = torch.tensor(g2, dtype=torch.float64)
    optimizer.step()
    v2 = b2 * v1 + (1 - b2) * 1.0
    m2 = [b1 * m + (g / math.sqrt(v2 + eps) + d * x) for m, g, x in zip(m1, g2, w1)]
    w2 = [x - lr * m for x, m in zip(w1, m2)]
    assert torch.allclose(w.detach(), torch.tensor(w2, dtype=torch.float64), rtol=0, atol=1e-15)
    state = optimizer.state[w]
    assert state["second_moment"].item() == pytest.approx(v2, rel=1e-15)


def test_grad_averaging_scales_later_steps_only() -> None:
    """m_1 is the normalized gradient either way (moment initialization); m_2 = b1 m_1 + (1 - b1) u_2."""
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = NovoGrad([w], lr=1.0, betas=(0.9, 0.0), eps=0.0, grad_averaging=True)
    w.grad = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    optimizer.step()  # u_1 = (1, 0, 0)
    assert torch.equal(w.detach(), torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64))
    w.grad = torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64)
    optimizer.step()  # beta2 = 0: v_2 = 25, u_2 = (0, 1, 0); m_2 = (0.9, 0.1, 0)
    assert torch.allclose(w.detach(), torch.tensor([-1.9, -0.1, 0.0], dtype=torch.float64), atol=1e-15)


def test_zero_first_gradient_waits_for_a_real_one() -> None:
    """A layer whose first gradient is zero gets v = |g|^2 from its first non-zero gradient, not (1-b2)|g|^2."""
    state: dict[str, Any] = {}
    update_second_moment(state, torch.zeros(4), beta2=0.98)
    assert state["second_moment"].item() == 0.0 and state["initialized"] is False
    update_second_moment(state, torch.full((4,), 2.0), beta2=0.98)
    assert state["second_moment"].item() == 16.0 and state["initialized"] is True
    update_second_moment(state, torch.zeros(4), beta2=0.98)
    assert state["second_moment"].item() == pytest.approx(0.98 * 16.0)


# -- invariants ----------------------------------------------------------------------------
def test_update_is_invariant_to_each_layers_gradient_scale() -> None:
    """Layer-wise normalization: scaling one layer's gradients by any c > 0 leaves every step the same."""
    a = _trajectory(lambda ps: NovoGrad(ps, lr=0.01, weight_decay=0.01))
    b = _trajectory(lambda ps: NovoGrad(ps, lr=0.01, weight_decay=0.01), scale=1e3)
    assert _max_diff(a, b) < 1e-6


def test_normalized_gradient_has_unit_norm_at_the_first_step() -> None:
    grad = torch.randn(10, 10, generator=torch.Generator().manual_seed(1))
    state: dict[str, Any] = {}
    v = update_second_moment(state, grad, beta2=0.98)
    u = normalized_gradient(grad, torch.zeros_like(grad), denominator(v, 0.0, True), weight_decay=0.0)
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6)


def test_denominator_forms() -> None:
    v = torch.tensor(4.0)
    assert denominator(v, 5.0, eps_inside_sqrt=True).item() == 3.0
    assert denominator(v, 5.0, eps_inside_sqrt=False).item() == 7.0


def test_amsgrad_normalizes_by_the_running_maximum() -> None:
    """After a large then a small gradient, AMSGrad divides by the larger v (smaller step)."""
    def second_step(amsgrad: bool) -> float:
        w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        optimizer = NovoGrad([w], lr=1.0, betas=(0.0, 0.5), eps=0.0, amsgrad=amsgrad)
        for g in (10.0, 1.0):
            before = w.detach().clone()
            w.grad = torch.tensor([g], dtype=torch.float64)
            optimizer.step()
        return (before - w.detach()).item()
    assert second_step(False) == pytest.approx(1.0 / math.sqrt(50.5))
    assert second_step(True) == pytest.approx(1.0 / 10.0)


def test_state_is_half_of_adams() -> None:
    """One full-size moment and one scalar per tensor; Adam keeps two full-size moments."""
    params = [nn.Parameter(torch.randn(*s)) for s in SHAPES]
    ours, adam = NovoGrad(params), torch.optim.Adam(params)
    for p in params:
        p.grad = torch.randn_like(p)
    ours.step()
    adam.step()
    numel = sum(p.numel() for p in params)
    assert state_numel(ours) == numel + len(params)
    assert state_numel(adam) == 2 * numel + len(params)  # exp_avg, exp_avg_sq and a 0-d step each


def test_grad_is_left_untouched() -> None:
    w = nn.Parameter(torch.randn(4, 4))
    w.grad = torch.randn(4, 4)
    grad = w.grad.clone()
    NovoGrad([w], weight_decay=0.1).step()
    assert torch.equal(w.grad, grad)


def test_invalid_options_are_refused() -> None:
    w = [nn.Parameter(torch.zeros(2))]
    for bad in (dict(lr=-1.0), dict(eps=-1.0), dict(weight_decay=-0.1), dict(betas=(1.0, 0.9)), dict(betas=(0.9,))):
        with pytest.raises(ValueError):
            NovoGrad(w, **bad)


def test_lr_follows_a_lambda_schedule() -> None:
    """LambdaLR drives group["lr"]: a zero factor freezes the parameters (also against weight decay)."""
    w = nn.Parameter(torch.randn(3, 3))
    optimizer = NovoGrad([w], lr=0.1, weight_decay=0.1)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    before = w.detach().clone()
    w.grad = torch.randn(3, 3)
    optimizer.step()
    assert torch.equal(w.detach(), before)


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    net, twin = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    twin.load_state_dict(net.state_dict())
    a = NovoGrad(net.parameters(), lr=0.05, weight_decay=0.01, grad_averaging=True, amsgrad=True)
    b = NovoGrad(twin.parameters(), lr=0.05, weight_decay=0.01, grad_averaging=True, amsgrad=True)

    def step(model: nn.Module, optimizer: NovoGrad, seed: int) -> None:
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

    for seed in range(3):
        step(net, a, seed)
        step(twin, b, seed + 100)  # the twin diverges; loading must repair it
    twin.load_state_dict(net.state_dict())
    buffer = io.BytesIO()  # as a checkpoint stores it
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    step(net, a, 9)
    step(twin, b, 9)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), twin.parameters()))


# -- end to end ------------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1\nmax_steps = 15")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 15
    assert manifest["methods"][0] == "novograd"
    assert results["final"]["classification/accuracy"] > 0.3  # chance is 0.1
    summary = results["summary"]["novograd"]
    assert summary["state_elements"] == summary["parameter_elements"] + 8  # 4 linear layers: weight + bias each
    assert summary["state_per_parameter"] < 1.001
