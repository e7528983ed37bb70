"""Loss-based reweighting: parity with the reference trainer's steps, hand-computed weights, invariants, the hook
(warm-up, the batch contract, two processes), and end-to-end runs on a class, a next-token and a regression task."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from paperkit_loss_reweighting import STRATEGY_NAMES, LossReweightingConfig, method
from paperkit_loss_reweighting.functional import (
    STRATEGIES,
    apply_strategy,
    normalize_losses,
    per_sample_loss,
    reweighted_loss,
    sample_weights,
)
from paperkit_loss_reweighting.hooks import LossReweighting, global_weights

from paperkit import PlanError

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
PAPER_STRATEGIES = ("linupper", "quadratic", "extremes", "upper")


# -- the reference, written out ---------------------------------------------------------------
def _reference_weights(losses: np.ndarray, strategy: str, delta: float, r: float) -> np.ndarray:
    """The reference trainer's weights (sowmaster/Sample-Level-Loss-Reweighting-ICLR-2025, src/trainer.py,
    ``training_step``), step by step in float64 NumPy: ``h_func`` with the batch's min and max, the strategy of
    ``F_FUNC_DIC`` (``mid`` is our ``quadratic``), ``g_func(f - f.max(), kl_reg)``, then division by the sum."""
    lo, hi = losses.min(), losses.max()
    d = max(hi - lo, 1e-6)
    h = 2.0 * delta * losses / d - delta * (hi + lo) / d
    f = {
        "quadratic": lambda x: 1 - x**2 / delta**2,
        "upper": lambda x: 0.5 * x + 0.5 * delta,
        "linupper": lambda x: np.minimum(x + delta, delta * np.ones_like(x)),
        "extremes": np.abs,
    }[strategy](h)
    g = np.exp((f - f.max()) / r)
    return g / g.sum()


def _reference_loss(losses: torch.Tensor, strategy: str, delta: float, r: float) -> torch.Tensor:
    """The reference's reweighted loss with one GPU and sequences without padding: ``len_norms = 1/B``, so
    ``sum(w * len_norms * losses) * world_size * B = Σ w ℓ`` with ``w`` computed without gradient."""
    w = torch.from_numpy(_reference_weights(losses.detach().double().numpy(), strategy, delta, r)).to(losses.dtype)
    b = len(losses)
    return torch.sum(w * torch.full_like(losses, 1.0 / b) * losses) * 1 * b


@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_weights_match_the_reference_trainer(strategy):
    g = torch.Generator().manual_seed(0)
    for n, delta, r, scale in [(2, 1.0, 1.0, 1.0), (7, 1.0, 0.4, 3.0), (32, 0.5, 1.0, 0.1), (48, 2.0, 0.25, 10.0)]:
        losses = torch.rand(n, generator=g, dtype=torch.float64) * scale + 1.5
        ref = torch.from_numpy(_reference_weights(losses.numpy(), strategy, delta, r))
        torch.testing.assert_close(sample_weights(losses, strategy, delta, r), ref, rtol=1e-12, atol=1e-15)
        ours32 = sample_weights(losses.float(), strategy, delta, r)
        assert ours32.dtype == torch.float32
        torch.testing.assert_close(ours32.double(), ref, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", PAPER_STRATEGIES)
def test_training_matches_the_reference_loss_for_several_adamw_steps(strategy):
    """The hook's loss and the reference's, each driving its own copy of a model through AdamW with weight decay
    on the same batches: parameters agree after every step (class task, batches of 16, 5 and 2 samples)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    ours_model, ref_model = model, copy.deepcopy(model)
    ours_opt = torch.optim.AdamW(ours_model.parameters(), lr=0.05, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=0.05, weight_decay=0.1)
    hook = LossReweighting(LossReweightingConfig(strategy=strategy, r=0.4, warmup=0.0))
    ctx = _ctx("class")
    g = torch.Generator().manual_seed(1)
    for size in (16, 5, 2, 16, 16):
        x, y = torch.randn(size, 6, generator=g), torch.randint(0, 5, (size,), generator=g)
        ours = hook.loss(batch={"x": x, "y": y}, outputs=SimpleNamespace(logits=ours_model(x)), ctx=ctx)
        ref = _reference_loss(F.cross_entropy(ref_model(x), y, reduction="none"), strategy, 1.0, 0.4)
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
        for opt, loss in ((ours_opt, ours), (ref_opt, ref)):
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p, q in zip(ours_model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# -- hand-computed values -----------------------------------------------------------------------
def test_hand_computed_weights_for_losses_one_two_three():
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert normalize_losses(losses).tolist() == [-1.0, 0.0, 1.0]
    e = math.e
    expected = {
        "linupper": [1 / (1 + 2 * e), e / (1 + 2 * e), e / (1 + 2 * e)],  # g = [0, 1, 1]
        "quadratic": [1 / (2 + e), e / (2 + e), 1 / (2 + e)],  # g = [0, 1, 0]
        "extremes": [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)],  # g = [1, 0, 1]
        "upper": [1 / (1 + e**0.5 + e), e**0.5 / (1 + e**0.5 + e), e / (1 + e**0.5 + e)],  # g = [0, 1/2, 1]
        "uniform": [1 / 3, 1 / 3, 1 / 3],
    }
    for strategy, w in expected.items():
        torch.testing.assert_close(sample_weights(losses, strategy), torch.tensor(w, dtype=torch.float64))
    # r = 1/2 doubles the exponent: linupper's two upper samples weigh e^2 times the lowest
    w = sample_weights(losses, "linupper", r=0.5)
    torch.testing.assert_close(w[1] / w[0], torch.tensor(e**2, dtype=torch.float64))
    # reweighted loss = Σ w ℓ
    torch.testing.assert_close(reweighted_loss(losses), torch.tensor((1 + 5 * e) / (1 + 2 * e), dtype=torch.float64))


def test_strategy_shapes_on_the_normalized_range():
    h = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    delta = 2.0
    assert apply_strategy(h, "linupper", delta).tolist() == [0.0, 1.0, 2.0, 2.0, 2.0]
    assert apply_strategy(h, "quadratic", delta).tolist() == [0.0, 0.75, 1.0, 0.75, 0.0]
    assert apply_strategy(h, "extremes", delta).tolist() == [2.0, 1.0, 0.0, 1.0, 2.0]
    assert apply_strategy(h, "upper", delta).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert apply_strategy(h, "uniform", delta).tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="unknown strategy"):
        apply_strategy(h, "mid")


# -- invariants ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_weights_are_a_distribution_invariant_to_affine_changes_of_the_losses(strategy):
    losses = torch.rand(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    w = sample_weights(losses, strategy)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(sample_weights(3.0 * losses + 7.0, strategy), w)
    assert sample_weights(losses, strategy, r=1e9).sub(1 / 40).abs().max() < 1e-8  # r → ∞: uniform


def test_equal_losses_give_exactly_uniform_weights():
    for strategy in STRATEGIES:
        for delta in (1.0, 0.3, 7.0):
            w = sample_weights(torch.full((5,), 2.3), strategy, delta)
            assert torch.equal(w, torch.full((5,), 0.2)), (strategy, delta)


def test_linupper_down_weights_the_lowest_losses_and_caps_the_rest():
    losses = torch.rand(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = sample_weights(losses, "linupper", r=0.5)
    order = losses.argsort()
    assert (w[order].diff() >= -1e-15).all()  # non-decreasing in the loss
    upper = losses >= (losses.max() + losses.min()) / 2
    assert torch.allclose(w[upper], w[upper].max())  # every loss above the midpoint shares the top weight
    torch.testing.assert_close(w.max() / w.min(), torch.tensor(math.exp(1.0 / 0.5), dtype=torch.float64))


def test_weights_carry_no_gradient_and_the_loss_gradient_is_w_times_the_sample_gradients():
    losses = (torch.rand(9, generator=torch.Generator().manual_seed(4)) + 1).requires_grad_(True)
    w = sample_weights(losses, "linupper")
    assert not w.requires_grad
    reweighted_loss(losses).backward()
    torch.testing.assert_close(losses.grad, w)


# -- per-sample losses --------------------------------------------------------------------------
def test_per_sample_losses_of_each_kind():
    g = torch.Generator().manual_seed(5)
    logits, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    assert torch.equal(per_sample_loss(logits, {"y": y}, "class"), F.cross_entropy(logits, y, reduction="none"))
    soft = torch.softmax(torch.randn(6, 4, generator=g), -1)
    torch.testing.assert_close(
        per_sample_loss(logits, {"y": y, "target": soft}, "class"), -(soft * logits.log_softmax(-1)).sum(-1)
    )
    seq, tokens = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    expected = torch.stack([F.cross_entropy(seq[i], tokens[i]) for i in range(3)])  # mean over each sequence
    torch.testing.assert_close(per_sample_loss(seq, {"y": tokens}, "next-token"), expected)
    one_hot = F.one_hot(tokens, 7).float()
    torch.testing.assert_close(per_sample_loss(seq, {"y": tokens, "target": one_hot}, "next-token"), expected)
    pred, target = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    torch.testing.assert_close(per_sample_loss(pred, {"y": target}, "regression"), ((pred - target) ** 2).mean(-1))
    with pytest.raises(ValueError, match="multi-label"):
        per_sample_loss(pred, {"y": target}, "multi-label")


# -- the hook -----------------------------------------------------------------------------------
def _ctx(kind, step=0, total=100, accelerator=None):
    return SimpleNamespace(
        plan=SimpleNamespace(task=SimpleNamespace(kind=kind)),
        accelerator=accelerator or SimpleNamespace(num_processes=1),
        experience_step=step,
        total_steps=total,
    )


def _class_batch(n=12, seed=6):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.zeros(n, 1), "y": torch.randint(0, 5, (n,), generator=g)}, torch.randn(n, 5, generator=g)


def test_uniform_and_the_warm_up_train_on_the_plain_mean():
    batch, logits = _class_batch()
    plain = F.cross_entropy(logits, batch["y"])
    out = SimpleNamespace(logits=logits)
    hook = LossReweighting(LossReweightingConfig(warmup=0.05))
    for step in (0, 4):  # 4 < 0.05 * 100: still warming up
        torch.testing.assert_close(hook.loss(batch=batch, outputs=out, ctx=_ctx("class", step)), plain)
    reweighted = hook.loss(batch=batch, outputs=out, ctx=_ctx("class", 5))
    losses = F.cross_entropy(logits, batch["y"], reduction="none")
    torch.testing.assert_close(reweighted, (sample_weights(losses) * losses).sum())
    assert not torch.allclose(reweighted, plain)
    uniform = LossReweighting(LossReweightingConfig(strategy="uniform"))
    torch.testing.assert_close(uniform.loss(batch=batch, outputs=out, ctx=_ctx("class", 50)), plain)


def test_incoming_sample_weights_multiply_the_reweighting():
    batch, logits = _class_batch()
    out, ctx = SimpleNamespace(logits=logits), _ctx("class", 50)
    hook = LossReweighting(LossReweightingConfig(warmup=0.0))
    v = torch.rand(12, generator=torch.Generator().manual_seed(7))
    losses = F.cross_entropy(logits, batch["y"], reduction="none")
    expected = (12 * sample_weights(losses) * v * losses).mean()
    torch.testing.assert_close(hook.loss(batch={**batch, "weight": v}, outputs=out, ctx=ctx), expected)


def test_next_token_hook_weighs_whole_sequences():
    g = torch.Generator().manual_seed(8)
    logits, tokens = torch.randn(4, 6, 9, generator=g), torch.randint(0, 9, (4, 6), generator=g)
    hook = LossReweighting(LossReweightingConfig(warmup=0.0, strategy="quadratic", r=0.4))
    per_sequence = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").mean(-1)
    torch.testing.assert_close(
        hook.loss(batch={"y": tokens}, outputs=SimpleNamespace(logits=logits), ctx=_ctx("next-token", 10)),
        _reference_loss(per_sequence, "quadratic", 1.0, 0.4),
    )


class _OneOfProcesses:
    """Accelerate's ``pad_across_processes`` and ``gather`` as process ``rank`` sees them, given every process's
    losses in rank order (padding to the longest slice, as Accelerate does)."""

    def __init__(self, slices, rank):
        self.slices, self.process_index, self.num_processes = slices, rank, len(slices)

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        longest = max(len(s) for s in self.slices)
        return torch.cat([tensor, tensor.new_full((longest - len(tensor),), pad_index)])

    def gather(self, tensor):
        pad = float("-inf")  # every process pads with the same value
        parts = [tensor if k == self.process_index else self.pad_across_processes(s, pad_index=pad) for k, s in enumerate(self.slices)]
        return torch.cat(parts)


@pytest.mark.parametrize("sizes", [(6, 6), (5, 4), (3, 3, 2)])
def test_processes_share_one_softmax_and_their_losses_sum_to_the_global_one(sizes):
    """Each process keeps its slice of ``n w`` (w over the global batch); with the engine's share ``n_p P / b`` and
    DDP's average over ``P`` processes, the losses add up to the single-process loss ``Σ w ℓ``."""
    losses = torch.rand(sum(sizes), generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 1
    slices = list(torch.split(losses, list(sizes)))
    single = global_weights(losses, SimpleNamespace(num_processes=1), "linupper", 1.0, 1.0)
    parts = [global_weights(s, _OneOfProcesses(slices, k), "linupper", 1.0, 1.0) for k, s in enumerate(slices)]
    torch.testing.assert_close(torch.cat(parts), single)
    b, p = len(losses), len(sizes)
    total = sum((part * s).mean() * (len(s) * p / b) for part, s in zip(parts, slices)) / p
    torch.testing.assert_close(total, reweighted_loss(losses))


def test_record_declares_the_loss_contract():
    assert method.hooks == ("loss",)
    assert set(method.honours) == {"target", "weight"}
    assert method.supports("next-token") and method.supports("regression") and not method.supports("multi-label")
    assert set(STRATEGY_NAMES) == set(STRATEGIES)
    with pytest.raises(ValueError):
        LossReweightingConfig(strategy="mid")
    for bad in ({"r": 0.0}, {"delta": -1.0}, {"warmup": 1.5}):
        with pytest.raises(ValueError):
            LossReweightingConfig(**bad)


# -- end to end ---------------------------------------------------------------------------------
def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "loss-reweighting" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0


NEXT_TOKEN = """
[run]
name = "lr-next-token"
epochs = 1
max_steps = 4
batch_size = 8
[task]
name = "next-token"
tokens = 2000
seq_len = 16
[model]
name = "causal-transformer"
d_model = 16
heads = 2
layers = 1
[optimize]
use = "adamw"
[regularize]
use = "loss-reweighting"
warmup = 0.0
"""


def test_next_token_and_regression_plans_run(run_plan) -> None:  # noqa: ANN001
    results, _ = run_plan(NEXT_TOKEN)
    assert results["status"] == "completed" and math.isfinite(results["final"]["language-model/loss"])
    regression = NEXT_TOKEN.replace('name = "next-token"\ntokens = 2000\nseq_len = 16', 'name = "regression"')
    regression = regression.replace('name = "causal-transformer"\nd_model = 16\nheads = 2\nlayers = 1', 'name = "mlp"')
    results, _ = run_plan(regression)
    assert results["status"] == "completed" and math.isfinite(results["final"]["regression/mse"])


def test_plan_check_refuses_a_multi_label_task(run_plan) -> None:  # noqa: ANN001
    plan = NEXT_TOKEN.replace('name = "next-token"\ntokens = 2000\nseq_len = 16', 'name = "multi-label"')
    plan = plan.replace('name = "causal-transformer"\nd_model = 16\nheads = 2\nlayers = 1', 'name = "mlp"')
    with pytest.raises(PlanError, match="loss-reweighting"):
        run_plan(plan)
