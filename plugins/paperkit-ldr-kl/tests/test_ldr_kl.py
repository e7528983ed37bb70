"""LDR-KL / ALDR-KL against a transcription of the reference code, hand-computed cases and limits, the hook's
state and weights, and end-to-end runs.

The reference (github.com/Optimization-AI/ICML2023_LDR, ``loss.py``: ``LDRLoss_V1``, ``ALDRLoss_V1``) is not on
PyPI (LibAUC, the authors' library, has no LDR loss in any released version), and ``ALDRLoss_V1`` hard-codes
``.cuda()``. The oracles below redo its operations step by step in its order (normalization, one-hot differences,
max-shifted log-mean-exp, the ALDR λ update on a per-sample table), on the CPU, from reading the code.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from paperkit_ldr_kl import LdrKlConfig, method
from paperkit_ldr_kl.functional import (
    aldr_kl_loss,
    aldr_lambda,
    kl_to_uniform,
    lambda_bounds,
    ldr_kl,
    ldr_kl_loss,
    normalize_scores,
)
from paperkit_ldr_kl.hooks import LdrKl, class_mask

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


# -- the reference, transcribed ------------------------------------------------------------------------------------
def reference_ldr(y_pred: torch.Tensor, y_true: torch.Tensor, threshold: float, lam: float) -> torch.Tensor:
    """``LDRLoss_V1.forward`` (one-hot ``y_true``): batch mean of λ (log mean exp(δ/λ − max) + max)."""
    y_pred = F.softplus(y_pred)
    y_pred = y_pred / y_pred.mean(dim=1, keepdim=True)
    diff = threshold * (1 - y_true) + (y_pred - (y_pred * y_true).sum(dim=1, keepdim=True))
    diff = diff / lam
    top = diff.max(dim=1, keepdim=True).values.detach()
    return (lam * (torch.log(torch.exp(diff - top).mean(dim=1, keepdim=True)) + top)).mean()


class ReferenceALDR:
    """``ALDRLoss_V1`` (``softplus=False``) on the CPU: a λ table of N entries updated at every forward.

    The reference keeps its table and λ_0 in float32; this oracle keeps them in the logits' dtype so that a
    float64 comparison can be tight (the operations and their order are the reference's).
    """

    def __init__(self, n: int, threshold: float, lam: float, alpha: float) -> None:
        self.threshold, self.lam_ref, self.alpha = threshold, lam, alpha
        self.table = torch.full((n, 1), lam, dtype=torch.float64)

    def __call__(self, y_pred: torch.Tensor, y_true: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        k = y_pred.shape[1]
        y_pred = y_pred / (torch.norm(y_pred, dim=1, p=1.0, keepdim=True) / k)
        table = self.table.to(y_pred.dtype)
        prob = torch.softmax(y_pred / table[ids], dim=1) + 1e-5
        prob = F.normalize(prob, p=1.0)
        kl = (prob * torch.log(k * prob)).sum(dim=1, keepdim=True)
        log_k = math.log(k)  # the reference takes log of an integer tensor, i.e. in float32; here in full precision
        lambdas = self.lam_ref - self.lam_ref * kl / (self.alpha * log_k)
        self.table[ids] = lambdas.detach().to(self.table.dtype)
        lam_i = self.table[ids].to(y_pred.dtype)
        extra = -0.5 * self.alpha * log_k / self.lam_ref * (lam_i - self.lam_ref) ** 2
        diff = self.threshold * (1 - y_true) + (y_pred - (y_pred * y_true).sum(dim=1, keepdim=True))
        diff = diff / lam_i
        top = diff.max(dim=1, keepdim=True).values.detach()
        loss = lam_i * (torch.log(torch.exp(diff - top).mean(dim=1, keepdim=True)) + top) + extra
        return loss.mean()


def _logits(b: int, k: int, seed: int, dtype=torch.float64, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, generator=g, dtype=dtype) * scale).requires_grad_(True)


@pytest.mark.parametrize(("b", "k", "lam", "c"), [(8, 10, 10.0, 0.1), (5, 3, 0.1, 2.0), (16, 26, 1.0, 0.0), (1, 2, 3.0, 0.5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ldr_kl_matches_the_reference_value_and_gradient(b, k, lam, c, dtype):
    logits = _logits(b, k, seed=b * k, dtype=dtype)
    labels = torch.randint(0, k, (b,), generator=torch.Generator().manual_seed(k))
    ours = ldr_kl_loss(logits, labels, lam, c).mean()
    (g_ours,) = torch.autograd.grad(ours, logits)
    theirs = reference_ldr(logits, F.one_hot(labels, k).to(dtype), c, lam)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-6, "atol": 2e-6}
    torch.testing.assert_close(ours, theirs, **tol)
    torch.testing.assert_close(g_ours, g_theirs, **tol)


@pytest.mark.parametrize(("k", "lam0", "alpha", "c"), [(10, 10.0, 2.0, 0.1), (4, 1.0, 3.0, 0.5), (26, 0.5, 1.5, 0.0)])
def test_aldr_kl_matches_the_reference_over_several_steps(k, lam0, alpha, c):
    """Six steps over a 12-sample set with repeated samples: loss, gradient and the λ table all agree."""
    n, b = 12, 6
    reference = ReferenceALDR(n, c, lam0, alpha)
    table = torch.full((n,), lam0, dtype=torch.float64)
    g = torch.Generator().manual_seed(k)
    labels_of = torch.randint(0, k, (n,), generator=g)
    for step in range(6):
        ids = torch.randperm(n, generator=g)[:b]
        logits = _logits(b, k, seed=100 + step)
        labels = labels_of[ids]
        losses, lam = aldr_kl_loss(logits, labels, table[ids], lam0, alpha, c)
        table[ids] = lam
        (g_ours,) = torch.autograd.grad(losses.mean(), logits)
        theirs = reference(logits, F.one_hot(labels, k).double(), ids)
        (g_theirs,) = torch.autograd.grad(theirs, logits)
        torch.testing.assert_close(losses.mean(), theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(table, reference.table.squeeze(1), rtol=1e-12, atol=1e-12)
    assert not torch.all(table == lam0)


# -- hand-computed cases and limits --------------------------------------------------------------------------------
def test_a_hand_computed_case():
    """f = (0, 1), y = 0, c = 0.5, λ = 1: δ = (0, 1.5), loss = log((1 + e^1.5) / 2)."""
    f, y = torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    assert ldr_kl(f, y, 1.0, 0.5).item() == pytest.approx(math.log((1 + math.exp(1.5)) / 2), rel=1e-6)
    # λ = 2: 2 log((1 + e^0.75) / 2)
    assert ldr_kl(f, y, 2.0, 0.5).item() == pytest.approx(2 * math.log((1 + math.exp(0.75)) / 2), rel=1e-6)


def test_lambda_one_without_margin_is_cross_entropy_minus_log_k():
    z = _logits(7, 5, seed=1)
    y = torch.arange(7) % 5
    torch.testing.assert_close(ldr_kl(z, y, 1.0, 0.0), F.cross_entropy(z, y, reduction="none") - math.log(5))


def test_small_lambda_is_the_svm_max_and_large_lambda_the_average():
    z = _logits(6, 4, seed=2).detach()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    c = 0.3
    delta = z - z.gather(1, y.view(-1, 1)) + c * (1 - F.one_hot(y, 4).double())
    torch.testing.assert_close(ldr_kl(z, y, 1e-4, c), delta.max(1).values, rtol=0, atol=1e-3)
    torch.testing.assert_close(ldr_kl(z, y, 1e5, c), delta.mean(1), rtol=0, atol=1e-3)
    # in between it is monotone in λ: the max over p minus λ·KL falls as λ grows
    values = torch.stack([ldr_kl(z, y, lam, c) for lam in (0.1, 1.0, 10.0, 100.0)])
    assert torch.all(values[:-1] >= values[1:])


def test_loss_is_the_worst_case_over_label_weights():
    """λ log mean exp(δ/λ) = max_p <p, δ> − λ KL(p || 1/K), attained at p = softmax(δ/λ); any other p is below."""
    z = _logits(5, 6, seed=3).detach()
    y = torch.tensor([0, 5, 2, 2, 1])
    lam, c = 0.7, 0.2
    delta = z - z.gather(1, y.view(-1, 1)) + c * (1 - F.one_hot(y, 6).double())

    def objective(p):
        return (p * delta).sum(1) - lam * kl_to_uniform(p)

    best = torch.softmax(delta / lam, 1)
    torch.testing.assert_close(ldr_kl(z, y, lam, c), objective(best))
    other = torch.softmax(torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    assert torch.all(objective(other) < ldr_kl(z, y, lam, c))


def test_softplus_normalization_gives_positive_scores_averaging_one_and_l1_unit_mean_magnitude():
    z = _logits(4, 7, seed=4).detach()
    f = normalize_scores(z, "softplus")
    assert torch.all(f > 0)
    torch.testing.assert_close(f.mean(1), torch.ones(4, dtype=f.dtype))
    torch.testing.assert_close(normalize_scores(z, "l1").abs().mean(1), torch.ones(4, dtype=f.dtype))
    assert torch.equal(normalize_scores(z, "none"), z)
    assert torch.isfinite(normalize_scores(torch.zeros(2, 3), "l1")).all()  # guarded where the reference is not


def test_loss_is_invariant_to_logit_scale_under_l1_normalization():
    z, y = _logits(5, 4, seed=5).detach(), torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(ldr_kl_loss(z, y, normalize="l1"), ldr_kl_loss(7.5 * z, y, normalize="l1"))


def test_aldr_lambda_is_lambda0_for_uniform_scores_and_shrinks_for_peaked_ones():
    lam0, alpha = 10.0, 2.0
    low, high = lambda_bounds(lam0, alpha)
    flat = aldr_lambda(torch.zeros(1, 10), torch.tensor([lam0]), lam0, alpha)
    assert flat.item() == pytest.approx(lam0)
    peaked = torch.zeros(1, 10)
    peaked[0, 3] = 1e4
    lam = aldr_lambda(peaked, torch.tensor([lam0]), lam0, alpha)
    assert low <= lam.item() < high and lam.item() == pytest.approx(low, rel=1e-3)
    many = aldr_lambda(torch.randn(50, 10) * 20, torch.full((50,), lam0), lam0, alpha)
    assert torch.all((many >= low - 1e-6) & (many <= high + 1e-6))


def test_aldr_penalty_changes_the_value_not_the_gradient():
    z, y = _logits(6, 5, seed=6), torch.tensor([0, 1, 2, 3, 4, 0])
    losses, lam = aldr_kl_loss(z, y, torch.full((6,), 10.0, dtype=torch.float64))
    (g_aldr,) = torch.autograd.grad(losses.sum(), z)
    plain = ldr_kl(normalize_scores(z, "l1"), y, lam, 0.1)
    (g_plain,) = torch.autograd.grad(plain.sum(), z)
    torch.testing.assert_close(g_aldr, g_plain)
    assert torch.all(losses.detach() <= plain.detach())


def test_mask_equals_the_loss_over_the_kept_classes():
    z, y = _logits(4, 6, seed=7).detach(), torch.tensor([1, 4, 1, 4])
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, [1, 4, 5]] = True
    masked = z.masked_fill(~mask, -1e9)
    sub, sub_y = z[:, [1, 4, 5]], torch.tensor([0, 1, 0, 1])
    for how in ("softplus", "l1"):
        torch.testing.assert_close(ldr_kl_loss(masked, y, 2.0, 0.1, how, mask), ldr_kl_loss(sub, sub_y, 2.0, 0.1, how))
    got, _ = aldr_kl_loss(masked, y, torch.full((4,), 5.0, dtype=torch.float64), 5.0, mask=mask)
    want, _ = aldr_kl_loss(sub, sub_y, torch.full((4,), 5.0, dtype=torch.float64), 5.0)
    torch.testing.assert_close(got, want)


def test_half_precision_logits_are_computed_in_float32():
    z, y = _logits(3, 4, seed=8, dtype=torch.float32).detach(), torch.tensor([0, 1, 2])
    out = ldr_kl_loss(z.to(torch.bfloat16), y)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- the hook ------------------------------------------------------------------------------------------------------
def _ctx(processes=1, accelerator=None, scenario="class", classes=None):
    experience = SimpleNamespace(classes=classes) if classes is not None else None
    return SimpleNamespace(
        accelerator=accelerator or SimpleNamespace(num_processes=processes),
        task=SimpleNamespace(scenario=scenario),
        experience=experience,
    )


def _batch(b=6, k=5, seed=0, index=None):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.zeros(b, 1),
        "y": torch.randint(0, k, (b,), generator=g),
        "index": torch.arange(b) if index is None else index,
    }, SimpleNamespace(logits=torch.randn(b, k, generator=g) * 2)


def test_hook_defaults_are_the_reference_and_it_averages_with_sample_weights():
    assert method.honours == ("weight",)
    impl = LdrKl(LdrKlConfig())
    batch, outputs = _batch()
    plain = impl.loss(batch=batch, outputs=outputs, ctx=_ctx())
    torch.testing.assert_close(plain, ldr_kl_loss(outputs.logits, batch["y"], 10.0, 0.1, "softplus").mean())
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 3.0])
    weighted = impl.loss(batch={**batch, "weight": weight}, outputs=outputs, ctx=_ctx())
    per = ldr_kl_loss(outputs.logits, batch["y"], 10.0, 0.1, "softplus")
    torch.testing.assert_close(weighted, (weight * per).mean())
    assert impl.after_step(ctx=_ctx()) is None and impl.state_dict() == {"lambdas": None}


def test_adaptive_hook_commits_lambdas_after_the_step_and_round_trips():
    impl = LdrKl(LdrKlConfig(adaptive=True))
    assert impl.normalize == "l1"
    batch, outputs = _batch(index=torch.tensor([3, 7, 1, 0, 9, 4]))
    first = impl.loss(batch=batch, outputs=outputs, ctx=_ctx())
    again = impl.loss(batch=batch, outputs=outputs, ctx=_ctx())  # nothing is written before the step
    assert torch.equal(first, again) and torch.all(impl.lambdas == 10.0) and len(impl.lambdas) == 10
    logged = impl.after_step(ctx=_ctx())
    _, expected = aldr_kl_loss(outputs.logits, batch["y"], torch.full((6,), 10.0))
    torch.testing.assert_close(impl.lambdas[batch["index"]], expected)
    assert torch.all(impl.lambdas[[2, 5, 6, 8]] == 10.0)  # unvisited samples keep λ_0
    assert logged["lambda_mean"] == pytest.approx(float(expected.mean()))
    state = impl.state_dict()
    other = LdrKl(LdrKlConfig(adaptive=True))
    other.load_state_dict(state)
    assert torch.equal(other.lambdas, impl.lambdas)
    # the next visit starts from the stored λ_i, so the loss differs from a fresh start
    again = other.loss(batch=batch, outputs=outputs, ctx=_ctx())
    fresh = LdrKl(LdrKlConfig(adaptive=True)).loss(batch=batch, outputs=outputs, ctx=_ctx())
    assert not torch.equal(again, fresh)


def test_the_table_grows_to_indices_it_has_not_seen():
    impl = LdrKl(LdrKlConfig(adaptive=True, lam=2.0))
    batch, outputs = _batch(index=torch.arange(6))
    impl.loss(batch=batch, outputs=outputs, ctx=_ctx())
    impl.after_step(ctx=_ctx())
    batch, outputs = _batch(seed=1, index=torch.arange(20, 26))
    impl.loss(batch=batch, outputs=outputs, ctx=_ctx())
    impl.after_step(ctx=_ctx())
    assert len(impl.lambdas) == 26 and torch.all(impl.lambdas[6:20] == 2.0)


class _OneOfTwoProcesses:
    """Accelerate's pad_across_processes and gather as rank 0 of two sees them (rank 1 sends ``other``)."""

    num_processes = 2

    def __init__(self, other):
        self.other = other  # rank 1's (index, λ)

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        longest = max(len(tensor), len(self.other[0]))
        return torch.cat([tensor, tensor.new_full((longest - len(tensor), *tensor.shape[1:]), pad_index)])

    def gather(self, pair):
        index, lam = pair
        other_index = self.pad_across_processes(self.other[0], pad_index=-1)
        other_lam = self.pad_across_processes(self.other[1])
        return torch.cat([index, other_index]), torch.cat([lam, other_lam])


def test_adaptive_hook_writes_every_processs_samples():
    impl = LdrKl(LdrKlConfig(adaptive=True))
    batch, outputs = _batch(b=4, index=torch.tensor([0, 1, 2, 3]))
    other = (torch.tensor([8, 9]), torch.tensor([6.0, 7.0]))
    impl.loss(batch=batch, outputs=outputs, ctx=_ctx())
    mine = impl.pending[1].clone()
    impl.after_step(ctx=_ctx(accelerator=_OneOfTwoProcesses(other)))
    torch.testing.assert_close(impl.lambdas[:4], mine)
    torch.testing.assert_close(impl.lambdas[8:], other[1])
    assert torch.all(impl.lambdas[4:8] == 10.0)


def test_task_incremental_mask_keeps_the_experiences_classes_and_each_label():
    labels = torch.tensor([2, 3, 0])
    assert class_mask(_ctx(), labels, 6) is None
    mask = class_mask(_ctx(scenario="task", classes=(2, 3)), labels, 6)
    assert mask.tolist() == [
        [False, False, True, True, False, False],
        [False, False, True, True, False, False],
        [True, False, True, True, False, False],  # a replayed sample of class 0
    ]


def test_config_validators_refuse_out_of_range_values():
    for bad in ({"lam": 0.0}, {"margin": -0.1}, {"alpha": 1.0}, {"normalize": "softmax"}):
        with pytest.raises((ValueError, TypeError)):
            LdrKlConfig(**bad)


# -- end to end ----------------------------------------------------------------------------------------------------
def test_example_plan_runs(run_plan):
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "ldr-kl" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0


def test_adaptive_plan_runs(run_plan):
    text = EXAMPLE.read_text(encoding="utf-8").replace("epochs = 5", "epochs = 1")
    text += "adaptive = true\n"
    results, _ = run_plan(text)
    assert results["status"] == "completed" and results["final"]["classification/accuracy"] > 0.1
