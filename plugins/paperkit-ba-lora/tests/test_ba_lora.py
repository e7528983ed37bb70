"""BA-LoRA's three regularizers against hand computation, their gradients, the hooks in a run, and example.toml.

The reference code (cyp-jlu-ai/BA-LoRA train.py) does not run as published for classification logits: its SVD
term indexes the singular values of a (B, C) matrix as ``s[:, :k]`` and ``s.size(1)``, which fails on the 1-D
tensor ``torch.linalg.svd`` returns. So the terms are pinned here to values computed by hand (and by plain loops),
not to the reference's function.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from paperkit_ba_lora import functional
from paperkit_ba_lora.functional import ba_lora_terms, consistency_loss, diversity_loss, svd_loss
from torch import nn

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def test_consistency_by_hand() -> None:
    fine = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # rows normalize to (0.6, 0.8) and (1, 0)
    pre = torch.tensor([[2.0, 0.0], [0.0, 0.5]])  # rows normalize to (1, 0) and (0, 1)
    # squared differences 0.16, 0.64, 1, 1, mean over the four entries
    assert consistency_loss(fine, pre).item() == pytest.approx(2.8 / 4, abs=1e-7)
    # invariant to a positive scale of each row, zero against itself
    assert consistency_loss(fine * torch.tensor([[5.0], [0.1]]), pre).item() == pytest.approx(0.7, abs=1e-6)
    assert consistency_loss(fine, fine).item() == 0.0


def test_diversity_by_loops() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b, c = logits.shape
    mean = [sum(logits[n, i].item() for n in range(b)) / b for i in range(c)]
    total = 0.0
    for i in range(c):
        for j in range(c):
            if i != j:
                cov = sum((logits[n, i].item() - mean[i]) * (logits[n, j].item() - mean[j]) for n in range(b)) / (b - 1)
                total += cov**2
    assert diversity_loss(logits).item() == pytest.approx(total / c, rel=1e-12)
    # decorrelated (orthogonal centred columns) outputs cost nothing; one sample has no covariance
    assert diversity_loss(torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])).item() == 0.0
    assert diversity_loss(logits[:1]).item() == 0.0


def test_svd_by_hand() -> None:
    logits = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5]))[:, [2, 0, 3, 1]]  # singular values 3, 2, 1, 0.5
    assert svd_loss(logits, k=3).item() == pytest.approx(-6.0 / 6.5, abs=1e-6)
    assert svd_loss(logits, k=1).item() == pytest.approx(-3.0 / 6.5, abs=1e-6)
    assert svd_loss(logits, k=10).item() == pytest.approx(-1.0, abs=1e-6)  # k capped at min(B, C)
    # rank one: every bit of energy in the top singular value
    assert svd_loss(torch.outer(torch.arange(1.0, 5.0), torch.tensor([1.0, -2.0, 0.5])), k=1).item() == pytest.approx(
        -1.0, abs=1e-6
    )
    # more samples than outputs and sequence logits (flattened per sample, as the reference does)
    wide = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(wide.reshape(5, 6).double())
    assert svd_loss(wide, k=2).item() == pytest.approx(-(s[:2].sum() / s.sum()).item(), abs=1e-6)


def test_svd_gradient_matches_finite_differences_and_can_be_off() -> None:
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: svd_loss(x, k=2), (logits,))
    off = svd_loss(logits, k=2, gradient=False)
    assert not off.requires_grad and off.item() == pytest.approx(svd_loss(logits, k=2).item(), abs=1e-12)


def test_consistency_and_diversity_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    fine = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pre = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: consistency_loss(x, pre), (fine,))
    assert torch.autograd.gradcheck(diversity_loss, (fine,))
    consistency_loss(fine, pre).backward()
    assert pre.grad is None  # the pretrained logits are a fixed target


def test_terms_are_weighted_and_optional() -> None:
    g = torch.Generator().manual_seed(4)
    fine, pre = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    terms = ba_lora_terms(fine, pre, k=3, lambda1=2.0, lambda2=3.0, lambda3=5.0)
    assert terms["consistency"].item() == pytest.approx(2.0 * consistency_loss(fine, pre).item())
    assert terms["diversity"].item() == pytest.approx(3.0 * diversity_loss(fine).item())
    assert terms["svd"].item() == pytest.approx(5.0 * svd_loss(fine, 3).item())
    assert set(ba_lora_terms(fine, None, lambda2=0.0)) == {"svd"}
    defaults = ba_lora_terms(fine, pre)  # the reference code's weights 1e-4, 3e-4, 1e-4
    assert defaults["diversity"].item() == pytest.approx(3e-4 * diversity_loss(fine).item())
    assert math.isfinite(sum(t.item() for t in defaults.values()))


def test_hooks_keep_the_model_before_the_adapter() -> None:
    """The frozen copy is taken at init (before LoRA wraps layers): plain layers, frozen, same outputs at start."""
    from paperkit_ba_lora import BaLoraConfig
    from paperkit_ba_lora.hooks import BaLora

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    hooks = BaLora(BaLoraConfig())
    hooks.init(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training moves the model; the copy stays
    assert all(not p.requires_grad for p in hooks.reference.parameters())
    assert not torch.equal(hooks.reference[0].weight, model[0].weight)
    without = BaLora(BaLoraConfig(lambda1=0.0))
    without.init(model)
    assert without.reference is None  # no consistency term, no copy


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "ba-lora" in manifest["methods"] and "lora" in manifest["methods"]
    assert results["steps"] > 0 and 0.0 <= results["final"]["classification/accuracy"] <= 1.0


def test_module_exports() -> None:
    assert functional.SVD_EPS == 1e-10  # the reference code's epsilon in the SVD ratio
