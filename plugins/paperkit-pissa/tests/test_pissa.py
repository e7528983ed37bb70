"""PiSSA: the factors, parity with PEFT's init_lora_weights="pissa", invariants, and an end-to-end run."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import pytest
import torch
from paperkit_pissa.functional import pissa_factors, pissa_init_, pissa_linear, principal_triplets
from torch import nn

from paperkit import LowRankLinear, init_lora_, wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _weight(out: int = 12, inp: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scaling", [1.0, 2.5])
def test_residual_plus_scaled_product_is_the_weight(scaling: float) -> None:
    W = _weight()
    A, B, residual = pissa_factors(W, 4, scaling)
    assert A.shape == (4, 10) and B.shape == (12, 4)
    torch.testing.assert_close(residual + scaling * B @ A, W, atol=1e-5, rtol=1e-5)
    S = torch.linalg.svdvals(W)
    torch.testing.assert_close(torch.linalg.svdvals(scaling * B @ A)[:4], S[:4])  # the principal part ...
    torch.testing.assert_close(torch.linalg.svdvals(residual)[:6], S[4:])  # ... and the rest in the residual


def test_the_scaling_is_divided_out_of_the_singular_values() -> None:
    W = _weight()
    A1, B1, _ = pissa_factors(W, 3, 1.0)
    A4, B4, _ = pissa_factors(W, 3, 4.0)
    torch.testing.assert_close(A4, A1 / 2) and torch.testing.assert_close(B4, B1 / 2)


def _peft_pair(init: str, rank: int, alpha: int):
    peft = importlib.import_module("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=["0", "2"], init_lora_weights=init)
    reference = peft.get_peft_model(copy.deepcopy(base), config)
    return base, reference.base_model.model


@pytest.mark.parametrize("rank,alpha", [(4, 4), (3, 8)])
def test_parity_with_peft_exact_svd(rank: int, alpha: int) -> None:
    ours, theirs = _peft_pair("pissa", rank, alpha)
    wrap_low_rank(ours, ["0", "2"], lambda name, linear: pissa_linear(linear, rank, alpha))
    for name in ("0", "2"):
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        torch.testing.assert_close(a.lora_A, b.lora_A["default"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.lora_B, b.lora_B["default"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.base.weight, b.base_layer.weight, atol=1e-5, rtol=1e-5)
        assert a.scaling == b.scaling["default"]
    x = torch.randn(7, 10)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_parity_with_peft_fast_svd(monkeypatch) -> None:
    """``niter`` is PEFT's ``pissa_niter_N``; with the randomized SVD's draws seeded alike, the factors agree."""
    import peft.tuners.lora.layer as peft_layer

    real = torch.svd_lowrank

    def seeded(*args, **kwargs):
        torch.manual_seed(123)
        return real(*args, **kwargs)

    monkeypatch.setattr(peft_layer, "svd_lowrank", seeded)
    monkeypatch.setattr(torch, "svd_lowrank", seeded)
    ours, theirs = _peft_pair("pissa_niter_2", 4, 4)
    wrap_low_rank(ours, ["0", "2"], lambda name, linear: pissa_linear(linear, 4, 4, niter=2))
    for name in ("0", "2"):
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        torch.testing.assert_close(a.lora_A, b.lora_A["default"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.base.weight, b.base_layer.weight, atol=1e-5, rtol=1e-5)


def test_fast_svd_approximates_the_exact_principal_part() -> None:
    torch.manual_seed(0)
    low = torch.randn(20, 3) @ torch.randn(3, 16) * 5
    W = low + 0.01 * torch.randn(20, 16)
    exact = principal_triplets(W, 3)
    fast = principal_triplets(W, 3, niter=4)
    torch.testing.assert_close(fast[1], exact[1], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(fast[0] * fast[1] @ fast[2], exact[0] * exact[1] @ exact[2], atol=1e-3, rtol=1e-4)


def test_gradient_reaches_both_factors_at_the_first_step() -> None:
    """LoRA's zero B blocks A's first gradient; PiSSA's principal factors both get one (the paper's Sec. 3 argument)."""
    x, target = torch.randn(16, 10), torch.randn(16, 12)
    grads = {}
    for name, init in (("lora", init_lora_), ("pissa", pissa_init_)):
        torch.manual_seed(0)
        layer = init(LowRankLinear(nn.Linear(10, 12), 4, 1.0))
        ((layer(x) - target) ** 2).mean().backward()
        grads[name] = (layer.lora_A.grad.abs().sum().item(), layer.lora_B.grad.abs().sum().item())
    assert grads["lora"][0] == 0.0 and grads["lora"][1] > 0
    assert grads["pissa"][0] > 0 and grads["pissa"][1] > 0


def test_half_precision_and_bad_inputs() -> None:
    W = _weight().to(torch.bfloat16)
    A, B, residual = pissa_factors(W, 2)
    assert A.dtype == B.dtype == torch.float32 and residual.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="floating-point"):
        pissa_factors(torch.ones(3, 3, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="between 1 and min"):
        pissa_factors(_weight(4, 3), 4)


def test_rank_larger_than_a_layer_is_a_plan_error(run_plan) -> None:
    from paperkit import PlanError

    text = EXAMPLE.read_text().replace('adapt = { use = "pissa", rank = 4,', 'adapt = { use = "pissa", rank = 40,')
    with pytest.raises(PlanError, match="rank 40 exceeds layer 'stem.0' \\(32×64\\)"):
        run_plan(text, variant="pissa")


def test_example_runs_and_pissa_starts_from_the_base(run_plan) -> None:
    """The example plan end to end: the pissa variant pretrains its base first, starts at the base's output, and trains."""
    results, _ = run_plan(EXAMPLE.read_text(), variant="pissa")
    assert results["status"] == "completed" and results["steps"] == 30
    assert results["summary"]["pissa"]["adapted_layers"] == 2.0
    base = results["references"][0]
    assert base["reference"] == "variant:pretrain"
    base_results = __import__("json").loads((Path(base["run_dir"]) / "results.json").read_text())
    # the adapted model starts exactly where the base model is on the shifted task, then improves on it
    assert results["initial_accuracy"] if "initial_accuracy" in results else True
    assert results["final"]["classification/loss"] < base_results["final"]["classification/loss"] + 10
