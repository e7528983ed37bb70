"""Nearest-neighbour-ratio (NNR) divergence estimators (Noshad, Moon, Yasaei Sekeh & Hero, ISIT 2017).

Notation of the paper (abstract and Sec. II): ``X = {X_1..X_N}`` drawn from ``f_1``, ``Y = {Y_1..Y_M}`` drawn
from ``f_2``, ``η = M/N``, ``Z = X ∪ Y`` the joint sample. For every ``Y_i`` take its ``k`` nearest neighbours in
``Z`` (``Y_i`` itself left out); ``N_i`` of them are X points and ``M_i`` are Y points (``N_i + M_i = k``). The
local density ratio at ``Y_i`` is estimated by ``η N_i / (M_i + 1)`` ≈ ``f_1(Y_i)/f_2(Y_i)`` (the ball holds
``N_i`` of the ``N`` X points and ``M_i + 1`` of the ``M`` Y points, ``Y_i`` counted), and

* Rényi divergence ``D_α(f_1‖f_2) = 1/(α−1) log ∫ (f_1/f_2)^α f_2``:
  ``D̂_α = 1/(α−1) log[ η^α/M Σ_i (N_i/(M_i+1))^α ]`` (the paper's Rényi estimator);
* f-divergence ``D_g(f_1‖f_2) = ∫ g(f_1/f_2) f_2``: ``D̂_g = 1/M Σ_i g̃(η N_i/(M_i+1))`` with
  ``g̃(t) = max(g(t), g(C_L/C_U))`` (the paper's f-divergence estimator; ``lower`` below is ``C_L/C_U``, the
  ratio of the densities' lower and upper bounds, and ``None`` leaves ``g`` untruncated). KL divergence is
  ``g(t) = t log t`` (``0 log 0 = 0``).

No volume, no dimension constant and no density estimate enters: only neighbour counts (the paper's point about
computational tractability). The paper's weighted ensemble is not implemented: its exact bias basis and
parameter set could not be checked against the paper's text (see the card).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Tensor = torch.Tensor


def neighbour_counts(x: Tensor, y: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """``(N_i, M_i)`` for every ``Y_i``: among its ``k`` nearest neighbours in ``Z = X ∪ Y`` (Euclidean distance,
    ``Y_i`` itself excluded), how many are X points and how many are Y points.

    Distances are exact (float64); which of several equidistant points is taken is torch.topk's choice, which
    matters only for data with ties (duplicates). ``x`` is
    ``N × d``, ``y`` is ``M × d``; returns two ``long`` tensors of length ``M``.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be N x d and M x d with the same d, got {tuple(x.shape)}, {tuple(y.shape)}")
    n, m = len(x), len(y)
    if not 1 <= k <= n + m - 1:
        raise ValueError(f"k must be between 1 and N + M - 1 = {n + m - 1}, got {k}")
    z = torch.cat([x, y]).double()
    yd = y.double()
    is_x = torch.arange(n + m) < n
    counts = []
    for start in range(0, m, chunk):
        block = yd[start : start + chunk]
        dist = torch.cdist(block, z)
        rows = torch.arange(len(block))
        dist[rows, n + start + rows] = math.inf  # Y_i is not its own neighbour
        idx = torch.topk(dist, k, dim=1, largest=False, sorted=False).indices
        counts.append(is_x[idx].sum(dim=1))
    n_i = torch.cat(counts).long()
    return n_i, k - n_i


def density_ratios(x: Tensor, y: Tensor, k: int) -> Tensor:
    """``η N_i / (M_i + 1)`` with ``η = M/N``: the NNR estimate of ``f_1(Y_i)/f_2(Y_i)`` at every ``Y_i``."""
    n_i, m_i = neighbour_counts(x, y, k)
    eta = len(y) / len(x)
    return eta * n_i.double() / (m_i.double() + 1.0)


def kl_generator(t: Tensor) -> Tensor:
    """``g(t) = t log t`` with ``0 log 0 = 0``: ``D_g(f_1‖f_2) = ∫ g(f_1/f_2) f_2`` is ``KL(f_1‖f_2)``."""
    return torch.where(t > 0, t * torch.log(t.clamp_min(1e-300)), torch.zeros_like(t))


def f_divergence(
    x: Tensor, y: Tensor, k: int, g: Callable[[Tensor], Tensor] = kl_generator, lower: float | None = None
) -> float:
    """The paper's f-divergence estimator ``1/M Σ_i g̃(η N_i/(M_i+1))``, ``g̃(t) = max(g(t), g(lower))``
    (``lower = C_L/C_U``; ``None``: no truncation). With the default ``g`` it estimates ``KL(f_1‖f_2)``."""
    values = g(density_ratios(x, y, k))
    if lower is not None:
        values = values.clamp_min(float(g(torch.tensor(float(lower), dtype=torch.float64))))
    return float(values.mean())


def kl_divergence(x: Tensor, y: Tensor, k: int) -> float:
    """``KL(f_1‖f_2)`` (nats) by the f-divergence estimator with ``g(t) = t log t``."""
    return f_divergence(x, y, k, kl_generator)


def renyi_divergence(x: Tensor, y: Tensor, k: int, alpha: float) -> float:
    """The paper's Rényi estimator ``1/(α−1) log[η^α/M Σ_i (N_i/(M_i+1))^α]`` of ``D_α(f_1‖f_2)`` (nats)."""
    if alpha <= 0 or alpha == 1:
        raise ValueError(f"alpha must be positive and not 1, got {alpha}")
    ratios = density_ratios(x, y, k)
    mean = float(ratios.pow(alpha).mean())
    if mean <= 0:  # no X point near any Y point: the divergence is beyond what the sample resolves
        return math.inf
    return math.log(mean) / (alpha - 1)


def default_k(m: int) -> int:
    """``k = round(√M)``, at least 1: the growth ``k = O(√M)`` of the base estimators ``k(l) = l √M``."""
    return max(1, round(math.sqrt(m)))


def gaussian_kl(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Closed-form ``KL(N(μ1, Σ1) ‖ N(μ2, Σ2))`` (nats), for tests and sanity checks."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    d = len(mu1)
    inv2 = torch.linalg.inv(cov2)
    diff = mu2 - mu1
    return 0.5 * float(
        torch.trace(inv2 @ cov1) + diff @ inv2 @ diff - d + torch.logdet(cov2) - torch.logdet(cov1)
    )


def gaussian_renyi(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor, alpha: float) -> float:
    """Closed-form ``D_α(N(μ1, Σ1) ‖ N(μ2, Σ2))`` (nats), valid when ``Σ_α = αΣ2 + (1−α)Σ1`` is positive definite."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    cov_a = alpha * cov2 + (1 - alpha) * cov1
    diff = mu1 - mu2
    quad = 0.5 * alpha * float(diff @ torch.linalg.solve(cov_a, diff))
    logs = float(torch.logdet(cov_a) - (1 - alpha) * torch.logdet(cov1) - alpha * torch.logdet(cov2))
    return quad - logs / (2 * (alpha - 1))
