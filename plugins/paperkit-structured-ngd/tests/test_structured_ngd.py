"""Structured NGD against a hand transcription of the authors' LocalOptimizer (reference_local_cov.py), closed forms
and invariants of the factor update, the layer statistics, the hooks' behaviour, and a run of example.toml."""

from __future__ import annotations

import copy
import importlib.util
import pickle
from pathlib import Path

import pytest
import torch
from paperkit_structured_ngd.functional import (
    StructuredNGD,
    factor_lr,
    factor_natural_gradients,
    kronecker_factors,
    precondition,
    update_factor_,
)
from torch import nn

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "example.toml"
_spec = importlib.util.spec_from_file_location("reference_local_cov", HERE / "reference_local_cov.py")
assert _spec is not None and _spec.loader is not None
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, bias=False), nn.ReLU(), nn.Flatten(),
        nn.Linear(36, 7), nn.Tanh(), nn.Linear(7, 5, bias=False),
    )


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 3))


MODELS = {"cnn": (_cnn, (2, 8, 8), 5), "mlp": (_mlp, (6,), 3)}
SETTINGS = dict(lr=0.05, momentum=0.9, damping=1e-2, beta2=0.5, weight_decay=1e-2, lr_cov=1e-2)


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    if isinstance(optimizer, ref.LocalOptimizer):  # main.py sets acc_stats on the statistics steps
        optimizer.acc_stats = optimizer.steps % optimizer.TCov == 0
    loss.backward()
    optimizer.step()


# -- parity with the authors' update -----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the transcription's hook on the first layer
@pytest.mark.parametrize("faster", [True, False])
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_matches_reference_local_optimizer(name: str, faster: bool) -> None:
    """Parameters, factors, factor momenta and momentum buffers equal the reference's through every phase of its
    hard-coded schedules: factor steps 2e-4 (steps <= 100), 2e-3 (< 500), lr_cov, and weight decay from 20 T on.
    The step counters jump (both sides alike) to cross those boundaries in few steps. Tolerance 1e-6 (measured:
    0 with ``faster``; the standard branch forms n_K in another order, ~1e-7)."""
    make, shape, classes = MODELS[name]
    torch.manual_seed(0)
    theirs = make()
    ours = copy.deepcopy(theirs)
    T = 2
    reference = ref.LocalOptimizer(theirs, TCov=T, TInv=T, faster=faster, **SETTINGS)
    optimizer = StructuredNGD(ours, update_freq=T, faster=faster, **SETTINGS)
    g = torch.Generator().manual_seed(1)
    for start in (0, 98, 497):  # step 0 initializes the reference's buffers; then around 100 and 500
        reference.steps = optimizer.steps = max(start, reference.steps)
        for _ in range(7):
            x, y = torch.randn(8, *shape, generator=g), torch.randint(0, classes, (8,), generator=g)
            _train_step(theirs, reference, x, y)
            _train_step(ours, optimizer, x, y)
    assert optimizer.steps == 504
    for a, b in zip(theirs.parameters(), ours.parameters()):
        assert (a - b).abs().max().item() <= 1e-6
        buf_a, buf_b = reference.state[a]["momentum_buffer"], optimizer.state[b]["momentum_buffer"]
        assert (buf_a - buf_b).abs().max().item() <= 1e-6
    for m_ref, m_ours in zip(reference.modules_, _layers(ours)):
        state = optimizer.state[m_ours.weight]
        for theirs_t, key in ((reference.A, "K"), (reference.B, "C"), (reference.m_A, "m_K"), (reference.m_B, "m_C")):
            assert (theirs_t[m_ref] - state[key]).abs().max().item() <= 1e-6, key
        assert (reference.A[m_ref] - torch.eye(reference.A[m_ref].shape[0])).abs().max() > 1e-3  # the factors moved


def test_conv_statistics_match_reference_with_groups_and_bias() -> None:
    """H_K, H_C of a grouped, strided, padded convolution (F.unfold) equal the reference's (Tensor.unfold patches
    averaged over groups, kfac_utils.ComputeCovA / ComputeCovG)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), groups=2)
    x = torch.randn(5, 4, 7, 6)
    out = conv(x)
    grad = torch.randn_like(out) / 5
    H_K, H_C = kronecker_factors(conv, x, grad, bias=True)
    torch.testing.assert_close(H_K, ref.cov_a(x, conv), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(H_C, ref.cov_g(grad, conv, True), rtol=1e-6, atol=1e-7)


def test_linear_statistics_are_the_kfac_factors() -> None:
    """Linear: H_K = mean over the batch of [x; 1][x; 1]^T; H_C = mean of the per-sample output-gradient outer
    product (the loss is a batch mean, so the per-sample gradient is B times the batch gradient)."""
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    x = torch.randn(7, 5)
    y = torch.randint(0, 3, (7,))
    out = layer(x)
    per_sample = [torch.autograd.grad(nn.functional.cross_entropy(out[i:i + 1], y[i:i + 1]), out, retain_graph=True)[0][i]
                  for i in range(7)]
    grad = torch.autograd.grad(nn.functional.cross_entropy(out, y), out)[0]
    H_K, H_C = kronecker_factors(layer, x, grad, bias=True)
    xa = torch.cat([x, torch.ones(7, 1)], 1)
    torch.testing.assert_close(H_K, xa.t() @ xa / 7)
    torch.testing.assert_close(H_C, sum(torch.outer(g, g) for g in per_sample) / 7)


# -- closed forms and invariants ---------------------------------------------------------------------------------
def test_first_factor_update_from_identity_in_closed_form() -> None:
    """From K = I, C = I, m = 0: n_K = ((lambda - 1) I + tr(H_C)/d H_K) / 2, m_K = n_K, K = I - beta_1 n_K."""
    torch.manual_seed(0)
    p, d, lam, beta_1 = 4, 3, 0.1, 0.05
    a, b = torch.randn(10, p), torch.randn(10, d)
    H_K, H_C = a.t() @ a / 10, b.t() @ b / 10
    K, C = torch.eye(p), torch.eye(d)
    m_K, m_C = torch.zeros(p, p), torch.zeros(d, d)
    n_K, n_C = factor_natural_gradients(K, C, H_K, H_C, lam)
    torch.testing.assert_close(n_K, ((lam - 1) * torch.eye(p) + H_C.trace() / d * H_K) / 2)
    torch.testing.assert_close(n_C, ((lam - 1) * torch.eye(d) + H_K.trace() / p * H_C) / 2)
    update_factor_(K, m_K, n_K, beta_1, 0.5)
    update_factor_(C, m_C, n_C, beta_1, 0.5)
    torch.testing.assert_close(K, torch.eye(p) - beta_1 * n_K)
    torch.testing.assert_close(C, torch.eye(d) - beta_1 * n_C)


def _iterate_to_fixed_point(H_K: torch.Tensor, H_C: torch.Tensor, lam: float, steps: int = 300) -> tuple:
    p, d = H_K.shape[0], H_C.shape[0]
    K, C = torch.eye(p, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    m_K, m_C = torch.zeros_like(K), torch.zeros_like(C)
    for _ in range(steps):
        n_K, n_C = factor_natural_gradients(K, C, H_K, H_C, lam)
        update_factor_(K, m_K, n_K, 0.3, 0.5)
        update_factor_(C, m_C, n_C, 0.3, 0.5)
    return K, C


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3 * n, n, generator=g, dtype=torch.float64)
    return a.t() @ a / (3 * n)


def test_fixed_point_is_the_inverse_damped_kronecker_factor() -> None:
    """At the factors' fixed point K K^T = (tr(C^T H_C C)/d H_K + lambda tr(C^T C)/d I)^-1 and likewise C C^T: the
    natural gradient of Sec. 4 vanishes where the preconditioner is the inverse of the damped curvature."""
    p, d, lam = 4, 3, 0.05
    H_K, H_C = _spd(p, 0), _spd(d, 1)
    K, C = _iterate_to_fixed_point(H_K, H_C, lam)
    KKt, CCt = K @ K.t(), C @ C.t()
    want_K = torch.linalg.inv(torch.trace(H_C @ CCt) / d * H_K + lam * torch.trace(CCt) / d * torch.eye(p, dtype=K.dtype))
    want_C = torch.linalg.inv(torch.trace(H_K @ KKt) / p * H_C + lam * torch.trace(KKt) / p * torch.eye(d, dtype=K.dtype))
    torch.testing.assert_close(KKt, want_K, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(CCt, want_C, rtol=1e-8, atol=1e-10)


def test_undamped_fixed_point_is_the_kfac_inverse() -> None:
    """With lambda = 0 the preconditioned gradient converges to KFAC's H_C^-1 G H_K^-1, without any inverse."""
    p, d = 4, 3
    H_K, H_C = _spd(p, 2), _spd(d, 3)
    K, C = _iterate_to_fixed_point(H_K, H_C, 0.0)
    G = torch.randn(d, p, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    want = torch.linalg.solve(H_C, G) @ torch.linalg.inv(H_K)
    torch.testing.assert_close(precondition(G, K, C), want, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(precondition(G, K, C, K @ K.t(), C @ C.t()), want, rtol=1e-8, atol=1e-10)


def test_factors_stay_positive_definite_and_momenta_symmetric() -> None:
    """During training K K^T and C C^T stay symmetric positive definite (K stays invertible) and the factor momenta
    stay symmetric: the update never leaves the manifold, with no projection or decomposition."""
    torch.manual_seed(0)
    model = _cnn()
    optimizer = StructuredNGD(model, update_freq=1, lr_cov_warmup=False, lr_cov=0.05, **{
        k: v for k, v in SETTINGS.items() if k != "lr_cov"})
    g = torch.Generator().manual_seed(1)
    for _ in range(25):
        _train_step(model, optimizer, torch.randn(8, 2, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g))
    for layer in _layers(model):
        state = optimizer.state[layer.weight]
        for f, m in (("K", "m_K"), ("C", "m_C")):
            F = state[f].double()
            assert torch.linalg.eigvalsh(F @ F.t()).min() > 0
            torch.testing.assert_close(state[m], state[m].t())
            assert (state[f] - torch.eye(F.shape[0])).abs().max() > 1e-2


def test_frozen_metric_is_sgd_with_momentum() -> None:
    """With the factor step at 0 (and decay from the start) K = C = I forever: the update is torch's SGD with
    momentum and weight decay, bit for bit, including the fallback of non-layer parameters (a LayerNorm)."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
    theirs = copy.deepcopy(ours)
    optimizer = StructuredNGD(ours, lr=0.1, momentum=0.9, weight_decay=0.01, update_freq=1, lr_cov=0.0,
                              lr_cov_warmup=False, weight_decay_delay=0)
    sgd = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        x, y = torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)
        _train_step(ours, optimizer, x, y)
        _train_step(theirs, sgd, x, y)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_factor_lr_schedule() -> None:
    assert [factor_lr(s, 0.01) for s in (0, 100, 101, 499, 500)] == [2e-4, 2e-4, 2e-3, 2e-3, 0.01]
    assert factor_lr(0, 0.01, warmup=False) == 0.01


# -- the optimizer's plumbing --------------------------------------------------------------------------------------
def test_statistics_only_on_update_steps_and_with_gradients() -> None:
    """Statistics are recorded on factor-update steps, from forwards that get a backward; evaluation under no_grad,
    a deep copy of the model and a pickled model do not feed the optimizer."""
    torch.manual_seed(0)
    model = _mlp()
    optimizer = StructuredNGD(model, update_freq=3)
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    with torch.no_grad():
        model(x)
    copy.deepcopy(model)(x).sum().backward()
    pickle.loads(pickle.dumps(model))(x).sum().backward()
    assert not optimizer._fresh
    nn.functional.cross_entropy(model(x), y).backward()
    assert set(optimizer._fresh) == set(_layers(model))
    optimizer.step()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()  # step 1: not an update step
    assert not optimizer._fresh
    optimizer.remove_hooks()
    optimizer.steps = 3
    nn.functional.cross_entropy(model(x), y).backward()
    assert not optimizer._fresh


def test_state_dict_round_trip_continues_exactly() -> None:
    torch.manual_seed(0)
    model = _mlp()
    optimizer = StructuredNGD(model, update_freq=2, lr_cov_warmup=False)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(6)]
    for x, y in batches[:3]:
        _train_step(model, optimizer, x, y)
    clone = copy.deepcopy(model)
    restored = StructuredNGD(clone, update_freq=2, lr_cov_warmup=False)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert restored.steps == 3
    for x, y in batches[3:]:
        _train_step(model, optimizer, x, y)
        _train_step(clone, restored, x, y)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "structured-ngd" in manifest["methods"]
    assert results["steps"] > 0 and results["final"]["classification/accuracy"] > 0.5
