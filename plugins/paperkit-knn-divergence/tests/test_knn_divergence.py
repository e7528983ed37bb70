"""The NNR estimators against closed-form Gaussian divergences, hand-counted neighbour graphs, and one end-to-end
run of example.toml."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from paperkit_knn_divergence import functional as F

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"


def _gaussians(n: int, d: int, seed: int, shift: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d, dtype=torch.float64)
    mu[0] = shift
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + mu
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, y


def test_counts_by_hand() -> None:
    # X = {0, 10}, Y = {1, 2, 11}: 2-NN of Y=1 in Z\{1} are 0 (X) and 2 (Y); of Y=2: 1 (Y), 0 (X);
    # of Y=11: 10 (X), then 2 (Y, at 9) before 0 (at 11).
    x = torch.tensor([[0.0], [10.0]])
    y = torch.tensor([[1.0], [2.0], [11.0]])
    n_i, m_i = F.neighbour_counts(x, y, 2)
    assert n_i.tolist() == [1, 1, 1] and m_i.tolist() == [1, 1, 1]
    n_i, m_i = F.neighbour_counts(x, y, 1)  # Y=1 -> 0 (X, tie at 1 with 2 broken... 0 is at 1, 2 is at 1)
    assert n_i[2] == 1 and m_i[1] == 1  # Y=11's nearest is 10 (X); Y=2's nearest is 1 (Y)
    # ratio eta N_i/(M_i+1) with eta = M/N = 3/2
    ratios = F.density_ratios(x, y, 2)
    assert torch.allclose(ratios, torch.full((3,), 1.5 * 1 / 2, dtype=torch.float64))
    # KL = mean t log t, Rényi = log(mean t^α)/(α-1)
    t = 0.75
    assert F.kl_divergence(x, y, 2) == pytest.approx(t * math.log(t))
    assert F.renyi_divergence(x, y, 2, 2.0) == pytest.approx(math.log(t**2))


def test_closed_forms() -> None:
    d = 3
    mu, i = torch.tensor([1.0, 0.0, 0.0]), torch.eye(d)
    assert F.gaussian_kl(mu, i, torch.zeros(d), i) == pytest.approx(0.5)
    assert F.gaussian_renyi(mu, i, torch.zeros(d), i, 0.5) == pytest.approx(0.25)
    cov = torch.diag(torch.tensor([2.0, 1.0, 0.5]))  # Rényi → KL as α → 1
    assert F.gaussian_renyi(mu, cov, torch.zeros(d), i, 1 - 1e-6) == pytest.approx(
        F.gaussian_kl(mu, cov, torch.zeros(d), i), rel=1e-4
    )


@pytest.mark.parametrize("d", [1, 2])
def test_kl_converges(d: int) -> None:
    truth = 0.5  # KL(N(e_1, I) ‖ N(0, I)) = |μ|²/2
    errors = {}
    for n in (200, 2000):
        estimates = [F.kl_divergence(*_gaussians(n, d, s), F.default_k(n)) for s in range(3)]
        errors[n] = sum(abs(e - truth) for e in estimates) / 3
    assert errors[2000] < errors[200]
    assert errors[2000] < 0.12  # ~25% of the truth at N = 2000 (the k-NN bias is O((k/N)^(1/d)))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_renyi_converges(d: int) -> None:
    truth = 0.25  # D_0.5(N(e_1, I) ‖ N(0, I)) = α|μ|²/2
    errors = {}
    for n in (200, 2000):
        estimates = [F.renyi_divergence(*_gaussians(n, d, s), F.default_k(n), 0.5) for s in range(3)]
        errors[n] = sum(abs(e - truth) for e in estimates) / 3
    assert errors[2000] < errors[200]
    assert errors[2000] < 0.06


@pytest.mark.parametrize("d", [1, 2, 5])
def test_identical_distributions_near_zero(d: int) -> None:
    x, y = _gaussians(2000, d, 7, shift=0.0)
    k = F.default_k(2000)
    assert abs(F.kl_divergence(x, y, k)) < 0.06
    assert abs(F.renyi_divergence(x, y, k, 0.5)) < 0.05  # the ratio's Jensen bias, O(1/k)


def test_larger_shift_larger_divergence_and_deterministic() -> None:
    small, large = _gaussians(1000, 2, 3, shift=0.5), _gaussians(1000, 2, 3, shift=2.0)
    k = F.default_k(1000)
    assert F.kl_divergence(*large, k) > F.kl_divergence(*small, k) > 0
    assert F.kl_divergence(*_gaussians(500, 2, 4), 9) == F.kl_divergence(*_gaussians(500, 2, 4), 9)


def test_rejects_bad_arguments() -> None:
    x, y = _gaussians(10, 2, 0)
    with pytest.raises(ValueError):
        F.neighbour_counts(x, y, 20)
    with pytest.raises(ValueError):
        F.renyi_divergence(x, y, 3, 1.0)


def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert "knn-divergence" in manifest["methods"]
    final = results["final"]
    for name in ("knn-divergence/kl", "knn-divergence/renyi", "ood:noise/knn-divergence/kl"):
        assert math.isfinite(final[name]), name
