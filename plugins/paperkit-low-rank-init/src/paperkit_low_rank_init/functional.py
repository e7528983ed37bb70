"""Low-rank initial weights and the lazy/rich measures of Liu et al. (ICLR 2024), as plain functions.

The paper asks how the *effective rank* of the initial weights W_0 sets the learning regime. Its
initializations (the authors' code, ``BioRNN_RichLazy/main.py``) start from one full-rank Gaussian draw

    W_G = σ · G / √fan_in,            G_ij ~ N(0, 1)                 (σ = W0sig = 1.25 in main.py)

and keep its top-r singular triplets, rescaled to the Gaussian's Frobenius norm:

    W_0 = U_r S_r V_rᵀ · ‖W_G‖_F / ‖U_r S_r V_rᵀ‖_F                  (:func:`low_rank_like`)

so every arm has the same norm and only the rank differs (r = N gives W_G back). The "aligned" exception
(abstract; Sec. 2.3, Proposition 1, Fig. 3: a low-rank W_1 aligned with the task statistics learns lazily)
is :func:`aligned_low_rank`: the same U_r, S_r and norm with the right singular vectors replaced by the
task's input directions (:func:`task_directions`).

The regime is measured as in the paper and its code, between the start and the end of training:

- weight change ‖W_T − W_0‖_F (main.py's ``delta_Wr_norm``) and relative to ‖W_0‖_F (:func:`weight_change`);
- tangent kernel alignment KA(K_0, K_T) = ⟨K_0, K_T⟩_F / (‖K_0‖_F ‖K_T‖_F) with K = J Jᵀ, J the Jacobian of
  every (sample, output) logit w.r.t. the chosen weights (main.py: the recurrent weight) (:func:`tangent_kernel`,
  :func:`alignment`); the paper plots the change 1 − KA;
- representation alignment of the Gram matrices H Hᵀ of the hidden activity fed to the readout
  (main.py's ``rep_sim``) and the sign similarity of that activity (main.py's ``sign_sim``).

Large changes / low alignment = rich; small changes / alignment near 1 = lazy.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn


# -- the initializations -------------------------------------------------------------------
def gaussian_weight(shape: tuple[int, int], sigma: float, generator: torch.Generator,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """W_G = σ · G / √fan_in with G standard normal, drawn on the CPU (main.py's ``W0_Gauss``; fan_in = N there)."""
    out_features, fan_in = shape
    g = torch.randn(out_features, fan_in, generator=generator, dtype=torch.float64)
    return (sigma * g / math.sqrt(fan_in)).to(dtype)


def truncated_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``rank`` singular triplets (U_r, S_r, V_rᵀ) of a 2-D tensor, in float64."""
    u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank]


def low_rank_like(weight: torch.Tensor, rank: int | None) -> torch.Tensor:
    """Rank-``rank`` truncation of ``weight`` rescaled to ``weight``'s Frobenius norm (main.py's ``W0new``).

    ``rank=None`` or ``rank >= min(shape)`` returns ``weight`` itself: the full-rank arm of the paper.
    """
    if rank is None or rank >= min(weight.shape):
        return weight.clone()
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    u, s, vh = truncated_svd(weight, rank)
    w = (u * s) @ vh
    return (w * (torch.linalg.matrix_norm(weight.to(torch.float64)) / torch.linalg.matrix_norm(w))).to(weight.dtype)


def task_directions(x: torch.Tensor, y: torch.Tensor, num_classes: int, rank: int) -> torch.Tensor:
    """``rank`` orthonormal input directions (rows, rank × d) carrying the task statistics of inputs ``x``, labels ``y``.

    First the right singular vectors of the input-output cross-covariance Σ_yx = E[(e_y − ē)(x − x̄)ᵀ]
    (the direction β of Proposition 1's teacher, for more than one output), strongest first; beyond its
    rank (at most num_classes − 1), the top principal directions of the input covariance in the orthogonal
    complement (data statistics). Ours: the paper states the aligned case for a two-layer linear net only.
    """
    x = x.reshape(len(x), -1).to(torch.float64)
    d = x.shape[1]
    if not 1 <= rank <= d:
        raise ValueError(f"rank {rank} must be between 1 and the input dimension {d}")
    xc = x - x.mean(0, keepdim=True)
    e = torch.nn.functional.one_hot(y.long(), num_classes).to(torch.float64)
    cross = (e - e.mean(0, keepdim=True)).T @ xc / len(x)  # C × d
    _u, s, vh = torch.linalg.svd(cross, full_matrices=False)
    keep = int((s > 1e-10 * s.max().clamp_min(1e-300)).sum()) if s.numel() else 0
    v = vh[: min(keep, rank)]
    if len(v) < rank:
        project = torch.eye(d, dtype=torch.float64) - v.T @ v
        cov = project @ (xc.T @ xc / len(x)) @ project
        _vals, vecs = torch.linalg.eigh(cov)  # ascending
        extra = vecs[:, torch.arange(d - 1, -1, -1)][:, : rank - len(v)].T
        extra = extra - (extra @ v.T) @ v if len(v) else extra
        v = torch.cat([v, extra])
        v = torch.linalg.qr(v.T).Q.T  # orthonormal rows, same span and order
    return v


def aligned_low_rank(weight: torch.Tensor, rank: int, directions: torch.Tensor) -> torch.Tensor:
    """W_0 = U_r S_r D ‖W‖_F/‖U_r S_r D‖_F: ``weight``'s top-r left vectors and singular values, rows of ``directions``
    (r × fan_in, orthonormal) as the right singular vectors — a rank-r init whose row space is the task's."""
    if directions.shape != (rank, weight.shape[1]):
        raise ValueError(f"directions must be {rank} × {weight.shape[1]}, got {tuple(directions.shape)}")
    u, s, _vh = truncated_svd(weight, rank)
    w = (u * s) @ directions.to(torch.float64)
    return (w * (torch.linalg.matrix_norm(weight.to(torch.float64)) / torch.linalg.matrix_norm(w))).to(weight.dtype)


def select_layers(model: nn.Module, patterns: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose name matches any glob pattern, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


# -- the measures -------------------------------------------------------------------------
def effective_rank(weight: torch.Tensor) -> float:
    """exp of the entropy of the normalized singular values (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = torch.linalg.svdvals(weight.detach().to(torch.float64))
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def weight_change(current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]) -> tuple[float, float]:
    """(‖W_T − W_0‖_F, ‖W_T − W_0‖_F / ‖W_0‖_F) over the chosen weights taken together (main.py's ``delta_Wr_norm``)."""
    delta = sum(float(((current[n].detach().double().cpu() - w0.double().cpu()) ** 2).sum()) for n, w0 in initial.items())
    norm = sum(float((w0.double() ** 2).sum()) for w0 in initial.values())
    change = math.sqrt(delta)
    return change, change / math.sqrt(norm) if norm > 0 else 0.0


def tangent_kernel(jacobians: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """K = J Jᵀ over the parameters ``names``: J is (B·C) × P, one row per (sample, output) logit (main.py's ``K0``)."""
    rows = [jacobians[n].reshape(jacobians[n].shape[0] * jacobians[n].shape[1], -1).double() for n in names]
    j = torch.cat(rows, dim=1)
    return j @ j.T


def alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨A, B⟩_F / (‖A‖_F ‖B‖_F): the paper's kernel and representation alignment (uncentered; 1 when A ∝ B)."""
    a, b = a.double(), b.double()
    denom = float(torch.linalg.norm(a) * torch.linalg.norm(b))
    return float((a * b).sum()) / denom if denom > 0 else 0.0


def gram(h: torch.Tensor) -> torch.Tensor:
    """H Hᵀ of the (samples × units) representation (main.py's ``KR``)."""
    h = h.reshape(len(h), -1).double()
    return h @ h.T


def sign_similarity(h: torch.Tensor, h0: torch.Tensor) -> float:
    """Fraction of activations whose sign is unchanged since initialization (main.py's ``sign_sim``)."""
    return float((torch.sign(h) == torch.sign(h0)).double().mean())


def regime_measures(weights: Mapping[str, torch.Tensor], initial_weights: Mapping[str, torch.Tensor],
                    kernel: torch.Tensor, initial_kernel: torch.Tensor,
                    features: torch.Tensor | None = None, initial_features: torch.Tensor | None = None) -> dict[str, float]:
    """Every measure of the paper between the start and now, named as the plugin reports them."""
    change, relative = weight_change(weights, initial_weights)
    ka = alignment(kernel, initial_kernel)
    out = {"weight_change": change, "relative_weight_change": relative, "kernel_alignment": ka,
           "kernel_change": 1.0 - ka,
           "relative_kernel_change": float(torch.linalg.norm(kernel - initial_kernel) / torch.linalg.norm(initial_kernel))
           if float(torch.linalg.norm(initial_kernel)) > 0 else 0.0}
    if features is not None and initial_features is not None:
        ra = alignment(gram(features), gram(initial_features))
        out |= {"representation_alignment": ra, "representation_change": 1.0 - ra,
                "sign_similarity": sign_similarity(features, initial_features)}
    return out
