"""CorDA: the decomposition, parity with PEFT's preprocess_corda + init_lora_weights="corda", invariants, and an
end-to-end run of example.toml."""

from __future__ import annotations

import copy
from pathlib import Path

import peft
import pytest
import torch
from paperkit_corda.functional import (
    context_covariances,
    context_decomposition,
    corda_factors,
    corda_linear,
    damped_inverse,
    normalized_gram,
    sample_rows,
)
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import preprocess_corda
from torch import nn

from paperkit import wrap_low_rank

EXAMPLE = Path(__file__).resolve().parents[1] / "example.toml"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _covariance(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(3 * n, n, generator=_gen(seed)) * torch.linspace(0.2, 3.0, n)
    return x.T @ x / (3 * n)


@pytest.mark.parametrize("shape", [(12, 10), (6, 9)])
def test_the_decomposition_reconstructs_the_weight(shape: tuple[int, int]) -> None:
    W = torch.randn(*shape, generator=_gen(1))
    C = _covariance(shape[1])
    U, S, V = context_decomposition(W, C)
    k = min(shape)
    assert U.shape == (shape[0], k) and S.shape == (k,) and V.shape == (shape[1], k)
    torch.testing.assert_close(U @ torch.diag(S) @ V.T, W, atol=1e-4, rtol=1e-4)  # W = U Σ (Vᵀ C⁻¹)
    fixed, _inv = damped_inverse(C)
    torch.testing.assert_close(torch.linalg.svdvals(W @ fixed), S, atol=1e-4, rtol=1e-4)  # Σ are W·C's
    assert (S[:-1] >= S[1:]).all()


@pytest.mark.parametrize("mode", ["ipa", "kpa"])
@pytest.mark.parametrize("scaling", [1.0, 2.5])
def test_ipa_trains_the_largest_and_kpa_the_smallest_components(mode: str, scaling: float) -> None:
    W, C = torch.randn(12, 10, generator=_gen(2)), _covariance(10, 3)
    A, B, residual = corda_factors(W, C, 3, mode, scaling)
    assert A.shape == (3, 10) and B.shape == (12, 3)
    torch.testing.assert_close(residual + scaling * B @ A, W, atol=1e-5, rtol=1e-5)
    fixed, _inv = damped_inverse(C)
    S = torch.linalg.svdvals(W @ fixed)
    picked = torch.linalg.svdvals(scaling * B @ A @ fixed)[:3]
    torch.testing.assert_close(picked, S[:3] if mode == "ipa" else S[-3:], atol=1e-4, rtol=1e-4)
    rest = torch.linalg.svdvals(residual @ fixed)[:7]
    torch.testing.assert_close(rest, S[3:] if mode == "ipa" else S[:7], atol=1e-4, rtol=1e-4)


def test_an_isotropic_context_is_the_plain_svd() -> None:
    """C ∝ I: W·C is a multiple of W, so CorDA-IPA's factors are PiSSA's (hand-computed case)."""
    W = torch.randn(8, 6, generator=_gen(4))
    A, B, _res = corda_factors(W, 2.0 * torch.eye(6), 2, "ipa")
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close(B @ A, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2], atol=1e-5, rtol=1e-5)


def test_the_gram_of_a_sample_is_scaled_by_its_largest_entry() -> None:
    x = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    torch.testing.assert_close(normalized_gram(x), (x / 2.0).T @ (x / 2.0))  # max entry 2, not max |x| = 4
    rows = sample_rows(0)(torch.arange(12.0).reshape(2, 3, 2), torch.tensor([[5, 6, 0], [7, 0, 0]]))
    assert [r.shape[0] for r in rows] == [2, 1]  # padding tokens are left out, one sample per sequence


def test_a_singular_covariance_is_damped_until_it_inverts() -> None:
    C = torch.zeros(4, 4)
    C[0, 0] = 1.0  # rank 1
    fixed, inverse = damped_inverse(C)
    assert torch.dist(fixed @ inverse, torch.eye(4)) < 0.05
    torch.testing.assert_close(fixed - C, torch.eye(4) * 0.25 * 0.01)


def _peft_reference(base: nn.Module, samples: torch.Tensor, rank: int, alpha: int, mode: str) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(base)
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=["0", "2"], init_lora_weights="corda",
        corda_config=CordaConfig(corda_method={"ipa": "ipm", "kpa": "kpm"}[mode], prune_temporary_fields=False),
    )
    preprocess_corda(model, config, run_model=lambda: [model(samples[i : i + 1]) for i in range(len(samples))])
    covariances = {n: model.get_submodule(n).covariance_matrix.clone() for n in ("0", "2")}
    return peft.get_peft_model(model, config).base_model.model, covariances


@pytest.mark.parametrize("rank,alpha,mode", [(4, 4, "ipa"), (3, 8, "kpa"), (2, 2, "kpa")])
def test_parity_with_peft_preprocess_corda(rank: int, alpha: int, mode: str) -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 5))
    samples = torch.randn(6, 7, 6, generator=_gen(5)) + 0.3  # 6 sequences of 7 tokens
    theirs, their_cov = _peft_reference(base, samples, rank, alpha, mode)
    ours = copy.deepcopy(base)
    cov = context_covariances(ours, [samples[:4], samples[4:]], ["0", "2"])
    for name in ("0", "2"):
        torch.testing.assert_close(cov[name], their_cov[name], atol=1e-6, rtol=1e-5)
    wrap_low_rank(ours, ["0", "2"], lambda name, linear: corda_linear(linear, cov[name], rank, mode, alpha))
    for name in ("0", "2"):
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        torch.testing.assert_close(a.lora_A, b.lora_A["default"].weight, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.lora_B, b.lora_B["default"].weight, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.base.weight, b.base_layer.weight, atol=2e-5, rtol=1e-4)
        assert a.scaling == b.scaling["default"]
    x = torch.randn(3, 7, 6, generator=_gen(6))
    torch.testing.assert_close(ours(x), base(x), atol=1e-5, rtol=1e-5)  # starts at the base model
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    for name in ("0", "2"):
        a, b = ours.get_submodule(name), theirs.get_submodule(name)
        torch.testing.assert_close(a.lora_A.grad, b.lora_A["default"].weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.lora_B.grad, b.lora_B["default"].weight.grad, atol=1e-4, rtol=1e-4)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"), variant="corda")
    assert results["status"] == "completed"
    assert "corda" in manifest["methods"]
    assert results["steps"] == 30 and results["summary"]["corda"]["adapted_layers"] == 2.0
    assert results["final"]["classification/accuracy"] > results["initial"]["classification/accuracy"] + 0.1
