"""smooth-manifold as a paperkit method: thin shells over :mod:`paperkit_smooth_manifold.functional`.

``before_experience`` builds the kNN graph over the experience's training inputs
(once per experience; rebuilt lazily after a resume, it depends on the data only)
and starts the duals at ``lambda_i = 1 / N`` (the authors' initialization).
``regularize`` runs the model on the batch samples' neighbours and adds the
dual-weighted Laplacian penalty; ``after_step`` evaluates the model again at the
new parameters on the batch and its neighbours (as the authors' loop does) and
takes the projected dual step on ``lambda_i`` and the descent step on ``rho``.

Samples of the batch that are not in the current experience's training set
(replayed samples) take no part in the penalty or the dual step. Under several
processes each process updates the duals of its own slice of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import forward, hookimpl
from paperkit_smooth_manifold import functional


class SmoothManifold:
    """Per-sample duals ``lambda_i`` over a kNN graph and the Lipschitz estimate ``rho``."""

    def __init__(self, config: Any) -> None:
        from paperkit_smooth_manifold import SmoothManifoldConfig

        self.config = config if config is not None else SmoothManifoldConfig()
        self.graph_experience: int | None = None
        self.x: torch.Tensor | None = None  # (N, ...) training inputs of the experience
        self.row_of: torch.Tensor | None = None  # global index -> row in x, -1 elsewhere
        self.neighbours: torch.Tensor | None = None  # (N, k) rows
        self.distances: torch.Tensor | None = None  # (N, k)
        self.weights: torch.Tensor | None = None  # (N, k) heat-kernel weights
        self.lam_experience: int | None = None
        self.lam: torch.Tensor | None = None  # (N,) duals lambda_i
        self.rho = float(self.config.rho_init)

    # -- graph and duals ---------------------------------------------------------------------------------------
    def _prepare(self, experience: Any) -> None:
        if experience is None:
            raise RuntimeError("smooth-manifold needs the current experience (ctx.experience) to build its graph")
        if self.graph_experience != experience.index:
            train = experience.train
            x = train.x.float()
            neighbours, distances = functional.knn_graph(x, self.config.k)
            t = self.config.heat_kernel_t
            if t is None:  # ours: the mean squared neighbour distance over 4, so the mean exponent is -1
                t = float(distances.pow(2).mean()) / 4.0 or 1.0
            row_of = torch.full((int(train.index.max()) + 1,), -1, dtype=torch.long)
            row_of[train.index] = torch.arange(len(train))
            self.x, self.row_of, self.neighbours, self.distances = x, row_of, neighbours, distances
            self.weights = functional.heat_kernel(distances, t)
            self.graph_experience = experience.index
        if self.lam_experience != experience.index or self.lam is None:
            n = len(experience.train)
            self.lam = torch.full((n,), 1.0 / n)
            self.rho = float(self.config.rho_init)
            self.lam_experience = experience.index

    def _rows(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions in the batch, rows in the graph) of the batch samples that belong to the graph."""
        index = batch["index"].detach().cpu().long()
        rows = torch.full_like(index, -1)
        inside = index < len(self.row_of)
        rows[inside] = self.row_of[index[inside]]
        keep = torch.nonzero(rows >= 0).flatten()
        return keep, rows[keep]

    def _neighbour_outputs(self, model: nn.Module, rows: torch.Tensor, ctx: Any, device: torch.device) -> torch.Tensor:
        x = self.x[self.neighbours[rows].flatten()].to(device)
        probs = forward(model, x, ctx).logits.float().softmax(-1)
        return probs.reshape(len(rows), self.config.k, -1)

    # -- hooks -------------------------------------------------------------------------------------------------
    @hookimpl
    def before_experience(self, experience: Any) -> None:
        self._prepare(experience)

    @hookimpl
    def regularize(self, model: nn.Module, batch: dict, outputs: Any, ctx: Any) -> dict[str, torch.Tensor]:
        self._prepare(ctx.experience)
        logits = outputs.logits
        keep, rows = self._rows(batch)
        if len(rows) == 0:
            return {"laplacian": logits.sum() * 0.0}
        f = logits[keep.to(logits.device)].float().softmax(-1)
        f_nbrs = self._neighbour_outputs(model, rows, ctx, logits.device)
        lam = self.lam[rows].to(logits.device)
        weights = self.weights[rows].to(logits.device)
        # Minibatch estimate of sum_{i=1..N} lambda_i (...): the batch mean times N.
        scale = len(self.lam) / len(rows)
        penalty = functional.weighted_laplacian_penalty(f, f_nbrs, weights, lam)
        return {"laplacian": self.config.weight * scale * penalty}

    @hookimpl
    def after_step(self, model: nn.Module, batch: dict, ctx: Any) -> dict[str, float]:
        self._prepare(ctx.experience)
        keep, rows = self._rows(batch)
        if len(rows) > 0:
            device = batch["x"].device
            with torch.no_grad():
                f = forward(model, batch["x"][keep.to(device)], ctx).logits.float().softmax(-1)
                f_nbrs = self._neighbour_outputs(model, rows, ctx, device)
                grad_sq = functional.gradient_norm_estimate(f, f_nbrs, self.distances[rows].to(device)).cpu()
            self.lam[rows] = functional.dual_step(self.lam[rows], grad_sq, self.rho, self.config.dual_step)
            self.rho = functional.rho_step(self.rho, float(self.lam.sum()), self.config.rho_step, self.config.rho_max)
        return {"rho": self.rho, "lambda_sum": float(self.lam.sum()), "lambda_max": float(self.lam.max())}

    # -- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "lam": None if self.lam is None else self.lam.clone(),
            "lam_experience": self.lam_experience,
            "rho": self.rho,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lam = state.get("lam")
        self.lam = None if lam is None else lam.clone()
        self.lam_experience = state.get("lam_experience")
        self.rho = float(state.get("rho", self.config.rho_init))
