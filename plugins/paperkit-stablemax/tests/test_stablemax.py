"""StableMax and ⊥Grad: parity with pytorch-optimizer's OrthoGrad, the paper's formulas, Softmax Collapse, an end-to-end run."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from paperkit_stablemax import OrthoGradConfig, StableMaxConfig, orthograd_method, stablemax_method
from paperkit_stablemax.functional import (
    ORTHOGRAD_EPS,
    log_stablemax,
    orthogonalize_,
    orthogonalize_gradients_,
    softmax_cross_entropy,
    stablemax,
    stablemax_cross_entropy,
    stablemax_s,
)
from paperkit_stablemax.hooks import OrthoGrad, StableMax

from paperkit import Optimization

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


# -- StableMax ------------------------------------------------------------------------
def test_s_is_the_papers_piecewise_function():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 4.0], dtype=torch.float64)
    expected = torch.tensor([1 / 4, 1 / 2, 1 / 1.5, 1.0, 1.5, 2.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(stablemax_s(x), expected)


def test_s_is_positive_increasing_and_continuous_with_its_slope_at_zero():
    x = torch.linspace(-50, 50, 10001, dtype=torch.float64, requires_grad=True)
    s = stablemax_s(x)
    assert (s > 0).all() and (s[1:] > s[:-1]).all()
    (grad,) = torch.autograd.grad(s.sum(), x)
    # derivative 1/(1-x)^2 left of zero and 1 right of it: both 1 at zero
    left, right = grad[x.detach() < 0][-1], grad[x.detach() >= 0][0]
    assert left.item() == pytest.approx(1.0, abs=0.02) and right.item() == 1.0


def _reference_s(x):
    """The reference ``s`` (``utils.py``), written out: torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)."""
    return torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)


def _reference_loss(logits, labels):
    """The reference ``stablemax_cross_entropy``: float64 logits, log(s / sum s), minus the mean over the batch."""
    s = _reference_s(logits.to(torch.float64))
    logprobs = torch.log(s / torch.sum(s, dim=-1, keepdim=True))
    return -torch.mean(torch.gather(logprobs, index=labels.to(torch.int64)[:, None], dim=-1))


def test_reference_parity_bit_for_bit_in_values_and_gradients():
    """Probabilities, log-probabilities, the float64 loss and its gradient equal the reference's exactly."""
    g = torch.Generator().manual_seed(0)
    for scale in (0.5, 5.0, 200.0):
        raw = torch.randn(32, 11, generator=g) * scale
        labels = torch.randint(0, 11, (32,), generator=g)
        x = raw.double()
        s_ref = _reference_s(x)
        p_ref = s_ref / s_ref.sum(-1, keepdim=True)
        assert torch.equal(stablemax_s(x), s_ref)
        assert torch.equal(stablemax(x), p_ref)
        assert torch.equal(log_stablemax(x), torch.log(p_ref))
        ours_in, ref_in = raw.clone().requires_grad_(True), raw.clone().requires_grad_(True)
        ours, ref = stablemax_cross_entropy(ours_in, labels), _reference_loss(ref_in, labels)
        assert ours.dtype == ref.dtype == torch.float64 and torch.equal(ours, ref)
        ours.backward()
        ref.backward()
        assert torch.equal(ours_in.grad, ref_in.grad)
    torch.testing.assert_close(stablemax_cross_entropy(x, labels, reduction="sum"), _reference_loss(x, labels) * 32)


def test_probabilities_sum_to_one_and_keep_the_softmax_ranking():
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(1)) * 10
    p = stablemax(logits.double())
    torch.testing.assert_close(p.sum(-1), torch.ones(64, dtype=torch.float64))
    assert torch.equal(p.argmax(-1), logits.softmax(-1).argmax(-1))


def test_loss_is_computed_in_the_requested_dtype_and_gradients_reach_float32_logits():
    logits = torch.randn(4, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    loss = stablemax_cross_entropy(logits, labels, dtype=torch.float64)
    assert loss.dtype == torch.float64
    loss.backward()
    assert logits.grad.dtype == torch.float32 and torch.isfinite(logits.grad).all()


def test_no_nan_gradient_where_the_unused_branch_would_blow_up():
    """At x = 1 the unused 1/(1-x) branch is infinite; torch.where would give 0 * inf = NaN in the backward pass."""
    x = torch.tensor([[1.0, 0.0, -2.0]], requires_grad=True)
    stablemax_cross_entropy(x, torch.tensor([2]), dtype=torch.float32).backward()
    assert torch.isfinite(x.grad).all()
    naive = torch.tensor([[1.0, 0.0, -2.0]], requires_grad=True)
    s = torch.where(naive < 0, 1 / (1 - naive + 1e-30), naive + 1)
    (-torch.log(s[0, 2] / s.sum())).backward()
    assert torch.isnan(naive.grad).any()  # the failure the clamp in stablemax_s avoids


def test_softmax_collapses_where_stablemax_keeps_a_gradient():
    """Softmax Collapse: scaled-up correct logits make float32 softmax CE exactly zero, with zero gradient."""
    logits = torch.tensor([[120.0, 0.0, -5.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0])
    ce = F.cross_entropy(logits, labels)
    (g_ce,) = torch.autograd.grad(ce, logits)
    assert ce.item() == 0.0 and torch.count_nonzero(g_ce) == 0
    sm = stablemax_cross_entropy(logits, labels, dtype=torch.float32)
    (g_sm,) = torch.autograd.grad(sm, logits)
    assert sm.item() > 0 and torch.count_nonzero(g_sm) > 0


def _reference_softmax_loss(logits, labels, dtype):
    """The reference ``softmax_cross_entropy`` (``utils.py``): log_softmax in ``dtype``, the true class, minus the mean."""
    logprobs = F.log_softmax(logits, dim=-1, dtype=dtype)
    return -torch.mean(torch.gather(logprobs, dim=-1, index=labels.view(-1, 1)).squeeze(-1))


def test_softmax_baseline_is_the_reference_softmax_cross_entropy_in_its_dtype():
    """The baseline loss equals the reference's bit for bit (values and gradients) in float32 and float64;
    in float32 it is torch's cross_entropy."""
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        for scale in (0.5, 5.0, 50.0):
            raw = torch.randn(32, 11, generator=g) * scale
            labels = torch.randint(0, 11, (32,), generator=g)
            ours_in, ref_in = raw.clone().requires_grad_(True), raw.clone().requires_grad_(True)
            ours, ref = softmax_cross_entropy(ours_in, labels, dtype=dtype), _reference_softmax_loss(ref_in, labels, dtype)
            assert ours.dtype == ref.dtype == dtype and torch.equal(ours, ref)
            ours.backward()
            ref.backward()
            assert ours_in.grad.dtype == torch.float32 and torch.equal(ours_in.grad, ref_in.grad)
    torch.testing.assert_close(softmax_cross_entropy(raw, labels, dtype=torch.float32), F.cross_entropy(raw, labels))


def test_float64_softmax_delays_the_collapse_that_float32_softmax_shows():
    """The paper's precision point, on float32 logits as in training: at a margin of 30 the float32 softmax CE is
    exactly 0 and the true class's gradient too, while float64 keeps both nonzero; at 120 both precisions collapse
    (every gradient entry underflows in the float32 logits); StableMax keeps a loss and a gradient at both."""
    labels = torch.tensor([0])
    for margin, collapses32, collapses64 in ((30.0, True, False), (120.0, True, True)):
        logits = torch.tensor([[margin, 0.0, -5.0, 3.0]], requires_grad=True)
        for dtype, collapses in ((torch.float32, collapses32), (torch.float64, collapses64)):
            loss = softmax_cross_entropy(logits, labels, dtype=dtype)
            (grad,) = torch.autograd.grad(loss, logits)
            assert (loss.item() == 0.0 and grad[0, 0].item() == 0.0) == collapses, (margin, dtype)
            if margin == 120.0:
                assert torch.count_nonzero(grad) == 0
        sm = stablemax_cross_entropy(logits, labels, dtype=torch.float64)
        assert sm.item() > 0 and torch.autograd.grad(sm, logits)[0][0, 0].item() != 0.0


def test_invalid_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction"):
        stablemax_cross_entropy(torch.zeros(1, 2), torch.tensor([0]), reduction="max")


def test_stablemax_hook_is_the_functional_loss():
    impl = StableMax(StableMaxConfig(dtype="float64"))
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    out = impl.loss(batch={"y": labels}, outputs=SimpleNamespace(logits=logits))
    torch.testing.assert_close(out, stablemax_cross_entropy(logits, labels, dtype=torch.float64))
    for dtype in ("float32", "float64"):
        baseline = StableMax(StableMaxConfig(dtype=dtype, activation="softmax"))
        out = baseline.loss(batch={"y": labels}, outputs=SimpleNamespace(logits=logits))
        assert torch.equal(out, softmax_cross_entropy(logits, labels, dtype=getattr(torch, dtype)))


# -- ⊥Grad ----------------------------------------------------------------------------
def test_projection_is_orthogonal_to_the_weights_and_keeps_the_gradient_norm():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, 10, dtype=torch.float64, generator=g)
    grad = torch.randn(20, 10, dtype=torch.float64, generator=g) + 0.5 * w
    before = grad.clone()
    orthogonalize_(w, grad)
    assert torch.dot(grad.flatten(), w.flatten()).abs().item() < 1e-10
    assert grad.norm().item() == pytest.approx(before.norm().item(), rel=1e-12)


def test_without_rescale_it_is_the_papers_projection():
    """g_perp = g - (w·g / w·w) w exactly (the paper's equation, no rescaling)."""
    w = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    grad = torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64)
    expected = grad - (torch.dot(w, grad) / torch.dot(w, w)) * w
    orthogonalize_(w, grad, rescale=False)
    torch.testing.assert_close(grad, expected)


def test_parallel_gradient_becomes_zero_and_zero_weights_leave_the_gradient_alone():
    w = torch.tensor([1.0, -2.0, 0.5])
    grad = 3.0 * w.clone()
    orthogonalize_(w, grad)
    assert torch.count_nonzero(grad) == 0  # nothing but the scaling direction: no update (pytorch-optimizer does the same)
    zero = torch.zeros(3)
    grad = torch.tensor([0.3, 0.1, -0.2])
    orthogonalize_(zero, grad)
    torch.testing.assert_close(grad, torch.tensor([0.3, 0.1, -0.2]))


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_projection_is_bit_exact_with_pytorch_optimizer():
    """One projection, per tensor, equals pytorch-optimizer's (the per-tensor path OrthoGrad takes on the CPU) bit for bit."""
    pytorch_optimizer = importlib.import_module("pytorch_optimizer")
    from pytorch_optimizer.base.optimizer import BaseOptimizer

    eps = pytorch_optimizer.OrthoGrad(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)).eps
    assert eps == ORTHOGRAD_EPS
    g = torch.Generator().manual_seed(7)
    for shape, dtype in (((16, 6), torch.float32), ((4,), torch.float32), ((3, 5), torch.float64), ((8, 8), torch.bfloat16)):
        w = torch.randn(shape, generator=g).to(dtype)
        grad = (torch.randn(shape, generator=g) + 0.3 * w.float()).to(dtype)
        theirs = w.clone().requires_grad_(True)
        theirs.grad = grad.clone()
        BaseOptimizer.apply_orthogonal_gradients([theirs], eps=eps)
        ours = orthogonalize_(w, grad.clone())
        assert torch.equal(ours, theirs.grad), f"{shape} {dtype}"


@pytest.mark.parametrize("base", ["sgd", "adamw"])
def test_parity_with_pytorch_optimizer_orthograd(base):
    """Our transform + the base optimizer == pytorch_optimizer.OrthoGrad(base optimizer), bit for bit, step for step."""
    pytorch_optimizer = importlib.import_module("pytorch_optimizer")
    ours, theirs = _model(0), _model(0)
    make = {
        "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.0),
    }[base]
    opt_ours = make(ours.parameters())
    opt_theirs = pytorch_optimizer.OrthoGrad(make(theirs.parameters()))
    transform = OrthoGrad(OrthoGradConfig()).optimize().grad_transform
    g = torch.Generator().manual_seed(5)
    for _ in range(8):
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
        for model, opt, is_ours in ((ours, opt_ours, True), (theirs, opt_theirs, False)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if is_ours:
                transform(model)
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_orthograd_changes_training_compared_to_the_plain_optimizer():
    """A parity test must be able to fail: without the transform the trajectories differ."""
    plain, ortho = _model(0), _model(0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (plain, ortho)]
    x, y = torch.randn(32, 6, generator=torch.Generator().manual_seed(6)), torch.arange(32) % 4
    for model, opt, project in ((plain, opts[0], False), (ortho, opts[1], True)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if project:
            orthogonalize_gradients_(model.parameters())
        opt.step()
    assert any(not torch.allclose(a, b) for a, b in zip(plain.parameters(), ortho.parameters()))


def test_orthograd_hook_provides_only_a_gradient_transform_over_trainable_parameters():
    impl = OrthoGrad(OrthoGradConfig())
    out = impl.optimize()
    assert isinstance(out, Optimization) and out.optimizer is None and out.lr_factor is None
    model = _model(1)
    model[0].weight.requires_grad_(False)
    F.cross_entropy(model(torch.randn(8, 6)), torch.arange(8) % 4).backward()
    head = model[2].weight.grad.clone()
    out.grad_transform(model)
    assert model[0].weight.grad is None  # frozen: untouched
    assert torch.dot(model[2].weight.grad.flatten(), model[2].weight.detach().flatten()).abs() < 1e-5
    assert not torch.allclose(head, model[2].weight.grad)


def test_records():
    assert stablemax_method.hooks == ("loss",) and "loss" in stablemax_method.touches
    assert orthograd_method.hooks == ("optimize",) and orthograd_method.touches == ("gradients",)
    assert orthograd_method.exclusive == ()  # composes with any optimizer method
    assert StableMaxConfig().dtype == "float64" and StableMaxConfig().activation == "stablemax"
    assert OrthoGradConfig().rescale is True


def test_example_runs_with_both_methods(run_plan):
    results, manifest = run_plan(EXAMPLE.read_text())
    assert results["status"] == "completed"
    assert {"stablemax", "orthograd", "adamw"} <= set(manifest["methods"])
    assert "cross-entropy" not in manifest["methods"]  # StableMax replaced the default loss
    assert results["final"]["classification/accuracy"] > 0.3  # 31 classes: chance is 0.03; ~0.78 at seed 0
