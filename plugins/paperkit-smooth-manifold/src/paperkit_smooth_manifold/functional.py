"""The math of smooth-manifold (Cervino et al., ICML 2023) as plain functions.

The paper learns a function whose manifold gradient is bounded everywhere:
``min_{f, rho} rho  s.t.  loss(f) <= eps,  ||grad_M f(x)||^2 <= rho  for all x``.
Its Lagrangian, with a dual ``lambda(x) >= 0`` for every point of the manifold,
is minimized over ``rho`` only when ``int lambda = 1``; for fixed duals the primal
problem is a *dynamically weighted manifold regularization*,
``loss(f) + int lambda(x) ||grad_M f(x)||^2``, whose integral is estimated on a
graph built from the training inputs (a weighted graph Laplacian). The duals and
``rho`` are updated by projected (sub)gradient steps; ``rho`` converges to the
smallest squared Lipschitz constant the solution reaches (the paper's
estimate of the Lipschitz constant).

Here the graph is a k-nearest-neighbour graph over the inputs (Euclidean
distance on the flattened inputs, heat-kernel weights ``exp(-d^2 / 4t)``, the
authors' ``smooth/laplacian.py``), ``lambda_i`` is kept per training sample, and
``||grad_M f(x_i)||^2`` is estimated by the largest squared difference quotient
``max_j ||f(x_i) - f(x_j)||^2 / d_ij^2`` over the neighbours (the authors'
``MANIFOLD_GRADIENT`` update in ``smooth/scripts/toy_example_manifold.py``).
``f`` is the softmax of the logits, as in the authors' code.
"""

from __future__ import annotations

import torch


def knn_graph(x: torch.Tensor, k: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest neighbours of every row of ``x`` (itself excluded), Euclidean on the flattened rows.

    Returns ``(neighbours, distances)``, both ``(N, k)``, each row sorted by
    increasing distance (ties by lower index). Matches scikit-learn's
    ``NearestNeighbors(n_neighbors=k).kneighbors()`` (query points excluded).
    """
    flat = x.reshape(len(x), -1).double()
    if not 1 <= k < len(flat):
        raise ValueError(f"k must be in [1, {len(flat) - 1}], got {k}")
    squared = flat.pow(2).sum(1)
    neighbours, distances = [], []
    for start in range(0, len(flat), chunk):
        rows = flat[start : start + chunk]
        d2 = (squared[start : start + chunk, None] - 2 * rows @ flat.T + squared[None, :]).clamp_min(0.0)
        d2[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = float("inf")
        # A stable sort keeps lower indices first among equal distances.
        order = torch.sort(d2, dim=1, stable=True).indices[:, :k]
        neighbours.append(order)
        distances.append(d2.gather(1, order).sqrt())
    return torch.cat(neighbours), torch.cat(distances).float()


def heat_kernel(distances: torch.Tensor, t: float) -> torch.Tensor:
    """Edge weights ``w_ij = exp(-d_ij^2 / (4 t))`` (the authors' ``get_pairwise_distance_matrix``)."""
    return torch.exp(-distances.pow(2) / (4.0 * t))


def weighted_laplacian_penalty(
    f: torch.Tensor, f_neighbours: torch.Tensor, weights: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """``sum_i lambda_i sum_j w_ij ||f_i - f_j||^2``: the dual-weighted manifold regularizer.

    ``f``: ``(B, C)`` outputs at the samples; ``f_neighbours``: ``(B, k, C)``
    outputs at their neighbours; ``weights``: ``(B, k)``; ``lam``: ``(B,)``.
    This is the local (kNN) graph estimate of ``int lambda(x) ||grad_M f(x)||^2``
    (the paper's weighted Laplacian penalty, Sec. 3).
    """
    local = (weights * (f[:, None, :] - f_neighbours).pow(2).sum(-1)).sum(1)
    return (lam * local).sum()


def gradient_norm_estimate(f: torch.Tensor, f_neighbours: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """``max_j ||f_i - f_j||^2 / d_ij^2``: the estimate of ``||grad_M f(x_i)||^2`` the dual step uses.

    Distances of zero (duplicate inputs) are skipped: they say nothing about the slope.
    """
    ratio = (f[:, None, :] - f_neighbours).norm(dim=-1) / distances.clamp_min(1e-12)
    ratio = torch.where(distances > 0, ratio, torch.zeros_like(ratio))
    return ratio.max(dim=1).values.pow(2)


def dual_step(lam: torch.Tensor, violation: torch.Tensor, rho: float, step: float) -> torch.Tensor:
    """``[lambda_i + eta_lambda (||grad f(x_i)||^2 - rho)]_+``: projected dual ascent on the smoothness constraints."""
    return torch.relu(lam + step * (violation - rho))


def rho_step(rho: float, lam_sum: float, step: float, rho_max: float) -> float:
    """``clip(rho - eta_rho (1 - sum_i lambda_i), 0, rho_max)``: gradient descent on the Lagrangian in ``rho``.

    The Lagrangian is ``rho (1 - sum_i lambda_i) + ...``; the authors clip ``rho`` to ``[0, 5]``.
    """
    return float(min(max(rho - step * (1.0 - lam_sum), 0.0), rho_max))
