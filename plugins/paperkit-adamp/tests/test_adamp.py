"""AdamP and SGDP against their references (pytorch-optimizer, the authors' package, torch), the projection's
invariants, scale-invariance detection on paperkit's models, and a run of example.toml through the engine."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_optimizer as po
import torch
from paperkit_adamp.functional import (
    SGDP,
    AdamP,
    channel_view,
    layer_view,
    project_radial_,
    projection,
    scale_invariant_view,
    scale_invariant_weights,
)
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
#: Gradients of every kind: channel-invariant (0, 1: linear, conv), a vector (2), layer-invariant (3), rows at a cosine
#: of half the channel bar delta/sqrt(7) but above the layer bar delta/sqrt(35) (4), and correlated with the weight (5).
SHAPES = [(16, 8), (8, 3, 3, 3), (12,), (6, 10), (5, 7), (9, 4)]


def _tangent(grad: torch.Tensor, weight: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``grad`` with its component along each row of ``weight`` removed: the gradient of a scale-invariant weight."""
    g, w = view(grad), view(weight)
    return (g - (g * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w).reshape(grad.shape)


def _at_cosine(grad: torch.Tensor, weight: torch.Tensor, cosine: float) -> torch.Tensor:
    """Rows with ``|cos(row, weight row)| = cosine`` exactly, keeping the norm of each row of ``grad``."""
    w = channel_view(weight)
    t = channel_view(_tangent(grad, weight, channel_view))
    rows = cosine * w / w.norm(dim=1, keepdim=True) + math.sqrt(1 - cosine**2) * t / t.norm(dim=1, keepdim=True)
    return (rows * channel_view(grad).norm(dim=1, keepdim=True)).reshape(grad.shape)


def _trajectory(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer], steps: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed gradient sequence that exercises every branch of the projection."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    optimizer = make(params)
    for _ in range(steps):
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g)
            if i in (0, 1):
                grad = _tangent(grad, p.detach(), channel_view)
            elif i == 3:
                grad = _tangent(grad, p.detach(), layer_view)
            elif i == 4:
                grad = _at_cosine(grad, p.detach(), 0.5 * 0.1 / math.sqrt(7))
            elif i == 5:
                grad = grad + p.detach()  # |cos| ~ 0.7: never projected
            p.grad = grad
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- parity with the references ---------------------------------------------------------
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamp_matches_pytorch_optimizer_bit_for_bit(nesterov: bool, weight_decay: float) -> None:
    kw: dict[str, Any] = dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=weight_decay, nesterov=nesterov)
    ours = _trajectory(lambda ps: AdamP(ps, **kw))
    ref = _trajectory(lambda ps: po.AdamP(ps, foreach=False, **kw))
    assert _max_diff(ours, ref) == 0.0


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgdp_matches_pytorch_optimizer_bit_for_bit(nesterov: bool, weight_decay: float) -> None:
    kw: dict[str, Any] = dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=weight_decay, nesterov=nesterov)
    ours = _trajectory(lambda ps: SGDP(ps, **kw))
    ref = _trajectory(lambda ps: po.SGDP(ps, foreach=False, **kw))
    assert _max_diff(ours, ref) == 0.0


@pytest.mark.parametrize("nesterov", [False, True])
def test_authors_numerics_match_the_authors_package(nesterov: bool) -> None:
    """numerics='authors' is clovaai/AdamP 0.3.0 (pip `adamp`) bit for bit, for both optimizers."""
    import adamp as authors  # the plugin's test extra; scripts/install-dev.sh installs it, so this never skips
    a = _trajectory(lambda ps: AdamP(ps, lr=1e-2, weight_decay=0.1, nesterov=nesterov, numerics="authors"))
    b = _trajectory(lambda ps: authors.AdamP(ps, lr=1e-2, weight_decay=0.1, nesterov=nesterov))
    assert _max_diff(a, b) == 0.0
    a = _trajectory(lambda ps: SGDP(ps, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=nesterov, numerics="authors"))
    b = _trajectory(lambda ps: authors.SGDP(ps, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=nesterov))
    assert _max_diff(a, b) == 0.0


@pytest.mark.parametrize("numerics", ["pytorch-optimizer", "authors"])
def test_without_projection_adamp_is_adamw_and_sgdp_is_sgd(numerics: str) -> None:
    """delta = 0 never projects: AdamP is AdamW, SGDP is SGD (up to rounding; the authors' Adam arithmetic is torch's)."""
    tol = 5e-7 if numerics == "authors" else 5e-6  # pytorch-optimizer's epsilon sits before the bias correction
    ours = _trajectory(lambda ps: AdamP(ps, lr=1e-2, weight_decay=0.1, wd_ratio=0.5, delta=0.0, numerics=numerics))
    ref = _trajectory(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False))
    assert _max_diff(ours, ref) <= tol
    ours = _trajectory(lambda ps: SGDP(ps, lr=0.1, momentum=0.9, nesterov=True, delta=0.0, numerics=numerics))
    ref = _trajectory(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, foreach=False))
    assert _max_diff(ours, ref) <= 1e-6


def test_the_two_numerics_differ_where_documented() -> None:
    """SGDP without Nesterov: the authors' in-place projection also projects the stored momentum; AdamP: epsilon."""
    a = _trajectory(lambda ps: SGDP(ps, nesterov=False))
    b = _trajectory(lambda ps: SGDP(ps, nesterov=False, numerics="authors"))
    assert _max_diff(a, b) > 1e-2
    a = _trajectory(lambda ps: AdamP(ps, eps=1e-2))
    b = _trajectory(lambda ps: AdamP(ps, eps=1e-2, numerics="authors"))
    assert _max_diff(a, b) > 1e-4


# -- the projection ---------------------------------------------------------------------
def test_projection_removes_exactly_the_radial_part_row_by_row() -> None:
    g = torch.Generator().manual_seed(1)
    w, u = torch.randn(8, 3, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)
    projected = project_radial_(u.clone(), w, channel_view, eps=0.0)
    rows_w, rows_u, rows_p = channel_view(w), channel_view(u), channel_view(projected)
    assert (rows_p * rows_w).sum(1).abs().max() < 1e-5  # tangent to every row of w
    unit = rows_w / rows_w.norm(dim=1, keepdim=True)
    expected = rows_u - (rows_u * unit).sum(1, keepdim=True) * unit  # Π_w(p) = p − (ŵ·p) ŵ
    torch.testing.assert_close(rows_p, expected)
    again = project_radial_(projected.clone(), w, channel_view, eps=0.0)
    torch.testing.assert_close(again, projected)  # a projection: idempotent


def test_detection_follows_the_cosine_threshold() -> None:
    """Channel first, then layer; delta/sqrt(dim) is the bar; vectors and delta = 0 are never projected."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 32, generator=g)
    grad = torch.randn(16, 32, generator=g)
    assert scale_invariant_view(grad, w, 0.1, 1e-8) is None  # a random gradient: |cos| ~ 1/sqrt(32) > 0.1/sqrt(32)
    assert scale_invariant_view(_tangent(grad, w, channel_view), w, 0.1, 1e-8)[0] == "channel"
    assert scale_invariant_view(_tangent(grad, w, layer_view), w, 0.1, 1e-8)[0] == "layer"
    tangent = _tangent(grad, w, channel_view)
    assert scale_invariant_view(tangent, w, 0.0, 1e-8) is None
    # At the bar: rows at cosine c project iff c < delta/sqrt(row length) (channel), not delta/sqrt(numel).
    bar = 0.1 / math.sqrt(32)
    for c, expect in ((0.9 * bar, "channel"), (1.1 * bar, None)):
        found = scale_invariant_view(_at_cosine(grad, w, c), w, 0.1, 1e-8)
        assert (found[0] if found else None) == expect
    v = torch.randn(5)
    update, ratio = projection(v, v * 0, v.clone(), 0.1, 0.1, 1e-8)
    assert ratio == 1.0 and torch.equal(update, v)


def test_projected_weights_get_reduced_weight_decay() -> None:
    """A projected weight is decayed by lr*wd*wd_ratio, an unprojected one by lr*wd (zero update: decay alone)."""
    w = nn.Parameter(torch.randn(4, 6))
    plain = nn.Parameter(torch.randn(4, 6))
    before, before_plain = w.detach().clone(), plain.detach().clone()
    opt = SGDP([w, plain], lr=0.1, momentum=0.5, weight_decay=0.2, wd_ratio=0.1, nesterov=False)
    w.grad = torch.zeros_like(w)  # cos = 0 < bar: projected
    plain.grad = plain.detach().clone()  # cos = 1: not projected, and its own gradient moves it
    opt.step()
    torch.testing.assert_close(w.detach(), before * (1 - 0.1 * 0.2 * 0.1 / 0.5))
    torch.testing.assert_close(plain.detach(), before_plain * (1 - 0.1 * 0.2 / 0.5) - 0.1 * before_plain)


def test_adamp_keeps_the_norm_of_a_scale_invariant_weight_from_growing() -> None:
    """The mechanism (paper Sec. 2-3): with momentum, Adam inflates ‖w‖ of a scale-invariant weight; AdamP does not."""
    torch.manual_seed(0)
    layers = {}
    for name, make in (("adamw", lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.0)),
                       ("adamp", lambda ps: AdamP(ps, lr=0.05))):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
        start = model[0].weight.norm().item()
        opt = make(list(model.parameters()))
        x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        layers[name] = model[0].weight.norm().item() / start
    assert layers["adamw"] > 1.5 * layers["adamp"], layers


def test_detection_on_paperkit_models() -> None:
    """With BatchNorm the weights before each norm are found channel-wise invariant, with LayerNorm (no bias) layer-wise;
    the head (and every layer of an un-normalized MLP) is not."""
    from types import SimpleNamespace

    from paperkit import MLP

    def found(norm: str, bias: bool) -> dict[str, str]:
        torch.manual_seed(0)
        config = SimpleNamespace(width=32, depth=2, norm=norm, activation="relu", residual=False, dropout=0.0, bias=bias)
        model = MLP(20, 5, config)
        nn.functional.cross_entropy(model(torch.randn(40, 20)), torch.randint(0, 5, (40,))).backward()
        return scale_invariant_weights(model.named_parameters())

    hidden = ["stem.0.weight", "blocks.0.linear1.weight", "blocks.1.linear1.weight"]
    assert found("batch", True) == {name: "channel" for name in hidden}
    assert found("layer", False) == {name: "layer" for name in hidden}
    assert found("none", True) == {}


# -- optimizer plumbing -----------------------------------------------------------------
@pytest.mark.parametrize("cls", [AdamP, SGDP])
def test_state_dict_round_trip_continues_identically(cls: type[torch.optim.Optimizer]) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    twin = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    a, b = cls(net.parameters(), weight_decay=0.01), cls(twin.parameters(), weight_decay=0.01)

    def step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        opt.zero_grad()
        model(torch.randn(10, 6, generator=gen)).square().mean().backward()
        opt.step()

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


def test_invalid_hyperparameters_are_refused() -> None:
    p = [nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="numerics"):
        AdamP(p, numerics="timm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wd_ratio"):
        SGDP(p, wd_ratio=2.0)
    with pytest.raises(ValueError, match="momentum"):
        SGDP(p, momentum=1.0)


# -- end to end -------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1\nmax_steps = 8")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 8
    assert manifest["methods"][0] == "adamp"
    assert results["final"]["classification/accuracy"] > 0.3  # well above the 0.1 of chance after 8 steps
