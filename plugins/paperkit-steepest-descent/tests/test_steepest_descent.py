"""Steepest descent under each norm against its reference, hand-computed steps, invariants, and example.toml.

References: ``torch.optim.Muon``, pytorch-optimizer's ``Muon`` and the NorMuon
plugin's Muon (``normalize=False``) for the spectral norm; pytorch-optimizer's
``SCION`` (Pethick et al., 2025: the same momentum-then-oracle step, one oracle
per parameter group) for modula's scalings, the sign oracle, the bias, conv and
embedding oracles; normalized SGD and signSGD with momentum written out by hand.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_optimizer as po
import torch
from paperkit_normuon.functional import NorMuon
from paperkit_normuon.functional import newton_schulz as normuon_newton_schulz
from paperkit_steepest_descent import functional as F
from paperkit_steepest_descent.functional import SteepestDescent, parameter_roles, steepest_descent_for
from pytorch_optimizer.optimizer.scion import LMONorm
from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"
#: wide, tall and square matrices (Newton–Schulz runs on the wide orientation)
MATRICES = [(32, 48), (48, 32), (16, 16)]


def _trajectory(make: Callable[[list[nn.Parameter]], Any], shapes: list[tuple[int, ...]], steps: int = 5,
                seed: int = 0, scale: float = 1.0, zero_rows: bool = False) -> list[torch.Tensor]:
    """Parameters after ``steps`` steps on a fixed random gradient sequence."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    optimizer = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = scale * torch.randn(p.shape, generator=g)
            if zero_rows:
                p.grad[::3] = 0.0  # tokens absent from the batch
        optimizer.step()
    return [p.detach().clone() for p in params]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _scion(params: list[nn.Parameter], norm_type: int, momentum: float, weight_decay: float, **kwargs: Any) -> Any:
    """pytorch-optimizer's SCION; its ``momentum`` is Kovalev's alpha, the weight of the new gradient."""
    return po.SCION(params, lr=0.02, momentum=1 - momentum, norm_type=norm_type, weight_decay=weight_decay,
                    foreach=False, **kwargs)


# -- spectral: Muon, bit for bit -------------------------------------------------------------
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_spectral_is_muon_bit_for_bit(nesterov: bool, weight_decay: float) -> None:
    """norm='spectral' with Muon's scale is torch.optim.Muon, pytorch-optimizer's Muon and the NorMuon plugin's Muon."""
    options = dict(lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=weight_decay)
    ours = _trajectory(lambda ps: SteepestDescent(ps, norm="spectral", spectral_scale="muon", **options), MATRICES)
    torch_muon = _trajectory(lambda ps: torch.optim.Muon(ps, adjust_lr_fn="original", **options), MATRICES)
    normuon = _trajectory(lambda ps: NorMuon([{"params": ps, "use_muon": True}], normalize=False, **options), MATRICES)
    po_muon = _trajectory(lambda ps: po.Muon([{"params": ps, "use_muon": True}], foreach=False, **options), MATRICES)
    assert _max_diff(ours, torch_muon) == 0.0
    assert _max_diff(ours, normuon) == 0.0
    assert _max_diff(ours, po_muon) == 0.0


def test_batched_newton_schulz_is_bit_identical() -> None:
    """The optimizer batches equal shapes: a transformer's blocks step exactly as torch.optim.Muon steps them one by one."""
    batch = torch.randn(4, 24, 40, generator=torch.Generator().manual_seed(4))
    batched = F.newton_schulz(batch)
    assert all(torch.equal(batched[i], F.newton_schulz(batch[i])) for i in range(4))
    shapes = [(128, 128)] * 4 + [(512, 128), (128, 512), (512, 128)]
    options = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.01)
    ours = _trajectory(lambda ps: SteepestDescent(ps, norm="spectral", **options), shapes, steps=3)
    assert _max_diff(ours, _trajectory(lambda ps: torch.optim.Muon(ps, **options), shapes, steps=3)) == 0.0


@pytest.mark.parametrize("norm", ["spectral", "l2", "linf", "per-role"])
@pytest.mark.parametrize("order", ["momentum-first", "lmo-first"])
def test_optimizer_is_steepest_direction_per_tensor(norm: str, order: str) -> None:
    """The optimizer's (batched) step is the plain per-tensor function ``steepest_direction`` (l2 per tensor)."""
    shapes, roles = [(24, 8), (24, 8), (64,), (6, 2, 3, 3), (30, 8)], ["qkv", "linear", "vector", "conv", "embedding"]
    options = dict(momentum=0.9, nesterov=True, order=order)

    class PerTensor:
        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params, self.states = params, [{} for _ in params]

        def step(self) -> None:
            with torch.no_grad():
                for p, state, role in zip(self.params, self.states, roles):
                    d, factor = F.steepest_direction(p.grad, state, norm, role=role if norm == "per-role" else None,
                                                     **options)
                    p.mul_(1 - 0.02 * 0.1).add_(d, alpha=-(0.02 * factor))

    ours = _trajectory(lambda ps: SteepestDescent([{"params": [p], "role": r} for p, r in zip(ps, roles)], lr=0.02,
                                                  norm=norm, l2_scope="tensor", weight_decay=0.1, **options), shapes)
    assert _max_diff(ours, _trajectory(PerTensor, shapes)) == 0.0


@pytest.mark.parametrize("shape", MATRICES + [(10, 128)])
def test_newton_schulz_is_the_shipped_one(shape: tuple[int, int]) -> None:
    """The same iteration, coefficients and dtype as the NorMuon plugin's and pytorch-optimizer's (bit for bit)."""
    m = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    ours = F.newton_schulz(m)
    assert torch.equal(ours, normuon_newton_schulz(m))
    assert torch.equal(ours, zero_power_via_newton_schulz_5(m, 5).float())


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_modula_scale_matches_scion_spectral(weight_decay: float) -> None:
    """spectral_scale='modula' (sqrt(fan_out/fan_in)·UVᵀ) is SCION's Spectral oracle; SCION rounds the
    factor's product in bfloat16, so square matrices agree exactly and the others to bfloat16 rounding."""
    ours = lambda shapes: _trajectory(  # noqa: E731
        lambda ps: SteepestDescent(ps, lr=0.02, norm="spectral", spectral_scale="modula", momentum=0.9,
                                   weight_decay=weight_decay), shapes)
    ref = lambda shapes: _trajectory(lambda ps: _scion(ps, LMONorm.SPECTRAL, 0.9, weight_decay), shapes)  # noqa: E731
    assert _max_diff(ours([(16, 16), (24, 24)]), ref([(16, 16), (24, 24)])) == 0.0
    assert _max_diff(ours(MATRICES), ref(MATRICES)) < 2e-4


# -- linf: signSGD with momentum ---------------------------------------------------------------
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_linf_matches_scion_sign_and_signsgd_by_hand(weight_decay: float) -> None:
    matrices = [*MATRICES, (8, 3, 3, 3)]  # SCION's Sign oracle reads size(1): no vectors there
    ours = lambda shapes: _trajectory(  # noqa: E731
        lambda ps: SteepestDescent(ps, lr=0.02, norm="linf", momentum=0.9, weight_decay=weight_decay), shapes)
    scion = _trajectory(lambda ps: _scion(ps, LMONorm.SIGN, 0.9, weight_decay, norm_kwargs={"normalize": False}),
                        matrices)
    assert _max_diff(ours(matrices), scion) == 0.0
    shapes = [*matrices, (64,)]

    class Signum:  # m <- (1 - a) m + a g; x <- (1 - lr wd) x - lr sign(m)
        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params, self.m = params, [torch.zeros_like(p) for p in params]

        def step(self) -> None:
            with torch.no_grad():
                for p, m in zip(self.params, self.m):
                    m.mul_(0.9).add_(0.1 * p.grad)
                    p.mul_(1 - 0.02 * weight_decay).sub_(0.02 * torch.sign(m))

    assert _max_diff(ours(shapes), _trajectory(Signum, shapes)) < 1e-6


# -- l2: normalized SGD with momentum -----------------------------------------------------------
def _normalized_sgd(scope: str, nesterov: bool = False, lmo_first: bool = False) -> type:
    class NormalizedSGD:
        """Cutkosky & Mehta's normalized SGD with momentum, written out (global or per-tensor norm)."""

        def __init__(self, params: list[nn.Parameter]) -> None:
            self.params, self.m = params, [torch.zeros_like(p) for p in params]

        def step(self) -> None:
            with torch.no_grad():
                grads = [p.grad.double() for p in self.params]
                if lmo_first:
                    total = math.sqrt(sum(g.square().sum().item() for g in grads))
                    grads = [g / (total if scope == "global" else g.norm().item()) for g in grads]
                for m, g in zip(self.m, grads):
                    m.copy_(0.9 * m.double() + 0.1 * g)
                looks = [0.1 * g + 0.9 * m.double() if nesterov else m.double() for m, g in zip(self.m, grads)]
                total = math.sqrt(sum(x.square().sum().item() for x in looks))
                for p, look in zip(self.params, looks):
                    d = look if lmo_first else look / (total if scope == "global" else look.norm().item())
                    p.mul_(1 - 0.03 * 0.1).sub_((0.03 * d).float())

    return NormalizedSGD


@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_l2_is_normalized_sgd(scope: str, nesterov: bool) -> None:
    shapes = [(32, 48), (64,), (8, 3, 3, 3)]
    ours = _trajectory(lambda ps: SteepestDescent(ps, lr=0.03, norm="l2", l2_scope=scope, momentum=0.9,
                                                  nesterov=nesterov, weight_decay=0.1), shapes)
    assert _max_diff(ours, _trajectory(_normalized_sgd(scope, nesterov), shapes)) < 1e-5


def test_global_l2_spans_parameter_groups() -> None:
    """One Euclidean ball over every l2/global tensor of the optimizer, whatever group it sits in."""
    shapes = [(32, 48), (64,), (8, 3, 3, 3)]
    grouped = _trajectory(lambda ps: SteepestDescent([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.03, norm="l2",
                                                     momentum=0.9, weight_decay=0.1), shapes)
    assert _max_diff(grouped, _trajectory(_normalized_sgd("global"), shapes)) < 1e-5


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_lmo_first_averages_the_oracles(scope: str) -> None:
    """order='lmo-first' (Orthogonal-SGDM's order): the momentum of normalized gradients, not the reverse."""
    shapes = [(32, 48), (64,)]
    ours = _trajectory(lambda ps: SteepestDescent(ps, lr=0.03, norm="l2", l2_scope=scope, order="lmo-first",
                                                  momentum=0.9, weight_decay=0.1), shapes)
    assert _max_diff(ours, _trajectory(_normalized_sgd(scope, lmo_first=True), shapes)) < 1e-5
    first = _trajectory(lambda ps: SteepestDescent(ps, lr=0.03, norm="l2", l2_scope=scope, momentum=0.9), shapes)
    assert _max_diff(ours, first) > 1e-3


def test_orthogonal_sgdm_is_the_momentum_of_orthogonalized_gradients() -> None:
    """Spectral lmo-first: d_t = beta d_{t-1} + (1 - beta) NS(g_t), step lr·sqrt(max(1, m/n))·d_t."""
    g = torch.Generator().manual_seed(5)
    w = nn.Parameter(torch.randn(48, 32, generator=g))
    grads = [torch.randn(48, 32, generator=g) for _ in range(3)]
    optimizer = SteepestDescent([w], lr=0.02, norm="spectral", order="lmo-first", momentum=0.9)
    expected, d = w.detach().clone(), torch.zeros(48, 32)
    for grad in grads:
        w.grad = grad.clone()
        optimizer.step()
        d = 0.9 * d + 0.1 * F.newton_schulz(grad)
        expected -= 0.02 * math.sqrt(48 / 32) * d
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-6)


# -- per-role: modula's norms (against SCION's oracles) ---------------------------------------------
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_per_role_vectors_and_filters_match_scion(weight_decay: float) -> None:
    """Biases: RMS oracle (SCION BiasRMS); conv filters: sqrt(out/in)/k·UVᵀ (SCION SpectralConv)."""
    def ours(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return _trajectory(lambda ps: SteepestDescent(ps, lr=0.02, norm="per-role", momentum=0.9,
                                                      weight_decay=weight_decay), shapes)

    vectors, filters = [(64,), (10,)], [(8, 3, 3, 3), (16, 8, 3, 3)]
    assert _max_diff(ours(vectors), _trajectory(lambda ps: _scion(ps, LMONorm.BIAS, 0.9, weight_decay), vectors)) < 1e-6
    scion_conv = _trajectory(lambda ps: _scion(ps, LMONorm.SPECTRALCONV, 0.9, weight_decay), filters)
    assert _max_diff(ours(filters), scion_conv) < 1e-4  # SCION applies the factor in bfloat16


def test_per_role_embedding_matches_scion_rows() -> None:
    """Embedding tables: every row to RMS 1 (modula Embed.dualize) = SCION's Row oracle at scale sqrt(d)."""
    shapes = [(50, 16)]
    ours = _trajectory(lambda ps: SteepestDescent([{"params": ps, "role": "embedding"}], lr=0.02, norm="per-role",
                                                  momentum=0.9, weight_decay=0.1), shapes, zero_rows=True)
    scion = _trajectory(lambda ps: _scion(ps, LMONorm.ROW, 0.9, 0.1, norm_kwargs={"normalized": False}, scale=4.0),
                        shapes, zero_rows=True)
    assert _max_diff(ours, scion) < 1e-6


def test_embedding_oracle_by_hand() -> None:
    m = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    d = F.lmo(m, "per-role", role="embedding")
    expected = torch.tensor([[1.2, 1.6, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # rows of RMS 1
    torch.testing.assert_close(d, expected)


def test_linear_roles_by_hand() -> None:
    """linear: sqrt(out/in)·NS(m); linear-transposed (a table read as a map from one-hot tokens): sqrt(in/out)·NS(m);
    qkv: three d×d blocks orthogonalized apart."""
    g = torch.Generator().manual_seed(2)
    m = torch.randn(12, 4, generator=g)
    torch.testing.assert_close(F.lmo(m, "per-role", role="linear"), F.newton_schulz(m) * math.sqrt(12 / 4))
    torch.testing.assert_close(F.lmo(m, "per-role", role="linear-transposed"), F.newton_schulz(m) * math.sqrt(4 / 12))
    qkv = torch.randn(12, 4, generator=g)
    blocks = torch.cat([F.newton_schulz(b) * math.sqrt(4 / 4) for b in qkv.chunk(3)])
    torch.testing.assert_close(F.lmo(qkv, "per-role", role="qkv"), blocks)


def test_parameter_roles_of_the_embedded_models() -> None:
    mha = nn.MultiheadAttention(8, 2)
    model = nn.ModuleDict({"embed": nn.Embedding(20, 8), "attn": mha, "conv": nn.Conv2d(3, 4, 3),
                           "norm": nn.LayerNorm(8), "head": nn.Linear(8, 5)})
    model.register_parameter("position", nn.Parameter(torch.zeros(1, 6, 8)))
    roles = {name: role for name, _p, role in parameter_roles(model)}
    assert roles == {
        "position": "embedding", "embed.weight": "embedding", "attn.in_proj_weight": "qkv",
        "attn.in_proj_bias": "vector", "attn.out_proj.weight": "linear", "attn.out_proj.bias": "vector",
        "conv.weight": "conv", "conv.bias": "vector", "norm.weight": "vector", "norm.bias": "vector",
        "head.weight": "linear", "head.bias": "vector",
    }
    assert {n: r for n, _p, r in parameter_roles(model, "linear")}["embed.weight"] == "linear-transposed"
    optimizer = steepest_descent_for(model, norm="per-role")
    assert sorted(g["role"] for g in optimizer.param_groups) == ["conv", "embedding", "linear", "qkv", "vector"]


# -- invariants ------------------------------------------------------------------------------------
def test_each_oracle_attains_the_dual_norm() -> None:
    """⟨m, d⟩ is the dual norm at a d on the unit sphere: ‖m‖₂ (l2), ‖m‖₁ (linf), ≈ the nuclear norm (spectral)."""
    m = torch.randn(24, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d2, dinf = F.lmo(m, "l2"), F.lmo(m, "linf")
    assert d2.norm().item() == pytest.approx(1.0) and (d2 * m).sum().item() == pytest.approx(m.norm().item())
    assert dinf.abs().max().item() == 1.0 and (dinf * m).sum().item() == pytest.approx(m.abs().sum().item())
    ds = F.lmo(m.float(), "spectral", spectral="none").double()
    singular = torch.linalg.svdvals(ds)
    assert 0.5 < singular.min().item() and singular.max().item() < 1.5  # Muon's Newton–Schulz band
    nuclear = torch.linalg.svdvals(m).sum().item()
    assert 0.7 * nuclear < (ds * m).sum().item() < 1.1 * nuclear


def test_spectral_vectors_are_exact() -> None:
    """A bias as an n×1 matrix: its polar factor is m/‖m‖, Muon's factor sqrt(n) makes it the RMS oracle."""
    m = torch.tensor([3.0, 0.0, 4.0, 0.0])
    torch.testing.assert_close(F.lmo(m, "spectral", spectral="none"), m / 5.0)
    torch.testing.assert_close(F.lmo(m, "spectral"), F.lmo(m, "per-role"))


@pytest.mark.parametrize("norm", ["spectral", "l2", "linf", "per-role"])
def test_steps_ignore_the_gradient_scale(norm: str) -> None:
    """A trust-region step has length lr whatever the gradient's size: scaling every gradient (by 2**10, exactly in floating point) changes nothing, bit for bit."""
    shapes = [(32, 48), (64,)]
    make = lambda ps: SteepestDescent(ps, lr=0.02, norm=norm, momentum=0.9, weight_decay=0.1)  # noqa: E731
    assert _max_diff(_trajectory(make, shapes), _trajectory(make, shapes, scale=2.0**10)) == 0.0


def test_lr_follows_a_lambda_schedule_and_decay_is_decoupled() -> None:
    w = nn.Parameter(torch.randn(6, 4))
    optimizer = SteepestDescent([w], lr=0.1, weight_decay=0.5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.0)
    before = w.detach().clone()
    w.grad = torch.randn(6, 4)
    optimizer.step()
    assert torch.equal(w.detach(), before)  # a zero factor freezes the parameters, decay included
    del schedule


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 6), nn.Flatten(), nn.Linear(12, 3))
    twin = nn.Sequential(nn.Embedding(10, 6), nn.Flatten(), nn.Linear(12, 3))
    twin.load_state_dict(net.state_dict())
    a = steepest_descent_for(net, norm="per-role", nesterov=True, weight_decay=0.01)
    b = steepest_descent_for(twin, norm="per-role", nesterov=True, weight_decay=0.01)

    def step(model: nn.Module, optimizer: SteepestDescent, seed: int) -> None:
        x = torch.randint(0, 10, (5, 2), generator=torch.Generator().manual_seed(seed))
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


def test_invalid_options_are_refused() -> None:
    w = [nn.Parameter(torch.zeros(2, 2))]
    for bad in (dict(lr=0.0), dict(momentum=1.0), dict(weight_decay=-1.0), dict(norm="l1"), dict(order="x"),
                dict(spectral_scale="x"), dict(l2_scope="x"), dict(ns_steps=0)):
        with pytest.raises(ValueError):
            SteepestDescent(w, **bad)
    with pytest.raises(ValueError, match="role"):
        SteepestDescent([{"params": w, "role": "bias"}])


# -- end to end ----------------------------------------------------------------------------------
def test_example_plan_trains(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 3", "epochs = 1\nmax_steps = 20")
    results, manifest = run_plan(text)
    assert results["status"] == "completed" and results["steps"] == 20
    assert manifest["methods"][0] == "steepest-descent"
    assert results["final"]["classification/accuracy"] > 0.5  # chance is 0.1
