"""Rank of the learned perturbation W_t − W_0, as plain functions (Boix-Adserà et al., NeurIPS 2023).

The paper's observation (abstract; Sec. 4, Fig. 4): during training the difference between the
trained and the initial weights grows in rank gradually, and more clearly so the smaller the
initialization. Its measurement is the *stable rank* of the perturbation of each attention head's
two bilinear forms,

    ΔW_K W_Qᵀ = W_K(t) W_Q(t)ᵀ − W_K(0) W_Q(0)ᵀ          (the query-key form of a head)
    ΔW_V W_Oᵀ = W_V(t) W_O(t)ᵀ − W_V(0) W_O(0)ᵀ          (the value-output form of a head)

with srank(M) = ‖M‖_F² / ‖M‖_2² (Fig. 4's caption), mean and spread over the heads of a layer.
In the paper's notation a head's projections are d × d_head matrices acting as x W; torch stores
``nn.Linear`` weights as (out, in), so a head's W_Q is ``W_q[rows of h]ᵀ`` and its W_O is
``W_out[:, columns of h]`` (see :func:`head_forms`).

Beside the paper's stable rank we report two other smooth/hard ranks of any matrix:

- the effective rank of Roy & Vetterli (EUSIPCO 2007, Eqs. 1–3): exp of the Shannon entropy of
  the singular values normalized to sum to one;
- the numerical rank at a relative threshold: the number of singular values above
  ``rel_tol · σ_max``.

All three are computed in float64 from the singular values; a zero matrix has rank 0.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn


# -- ranks of one matrix ----------------------------------------------------------------
def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of a 2-D tensor, in float64 on the CPU."""
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    return torch.linalg.svdvals(matrix.detach().to(device="cpu", dtype=torch.float64))


def stable_rank(s: torch.Tensor) -> float:
    """srank = ‖M‖_F² / ‖M‖_2² = Σ σ_i² / σ_1² (paper, Fig. 4 caption); 0 for a zero matrix."""
    top = float(s.max()) if s.numel() else 0.0
    if top == 0.0:
        return 0.0
    return float((s**2).sum() / top**2)


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli's erank = exp(−Σ p_i log p_i) with p_i = σ_i / Σ σ_j (their Eqs. 1–3); 0 for a zero matrix."""
    total = float(s.sum()) if s.numel() else 0.0
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(float(-(p * p.log()).sum())))


def numerical_rank(s: torch.Tensor, rel_tol: float) -> int:
    """Number of singular values strictly above rel_tol · σ_max (0 for a zero matrix)."""
    top = float(s.max()) if s.numel() else 0.0
    if top == 0.0:
        return 0
    return int((s > rel_tol * top).sum())


def rank_measures(matrix: torch.Tensor, rel_tol: float = 1e-2) -> dict[str, float]:
    """The three ranks of one matrix: ``stable_rank``, ``effective_rank``, ``numerical_rank``."""
    s = singular_values(matrix)
    return {"stable_rank": stable_rank(s), "effective_rank": effective_rank(s),
            "numerical_rank": float(numerical_rank(s, rel_tol))}


# -- which matrices ---------------------------------------------------------------------
def select_weights(model: nn.Module, patterns: Sequence[str]) -> dict[str, torch.Tensor]:
    """The model's 2-D parameters whose name matches any of the glob patterns, by name, in model order."""
    return {name: p for name, p in model.named_parameters()
            if p.ndim == 2 and any(fnmatch.fnmatchcase(name, pat) for pat in patterns)}


def attention_modules(model: nn.Module) -> dict[str, tuple[int, dict[str, str]]]:
    """The attention layers whose heads we can split, by module name: (heads, parameter names of q, k, v, out).

    Recognizes ``nn.MultiheadAttention`` with a packed ``in_proj_weight`` (the core ``transformer``) and any
    module with ``nn.Linear`` attributes ``q``, ``k``, ``v``, ``out`` and an int ``heads`` (the core
    ``causal-transformer``'s ``CausalSelfAttention``).
    """
    found: dict[str, tuple[int, dict[str, str]]] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            p = f"{prefix}in_proj_weight"
            found[name] = (module.num_heads, {"qkv": p, "out": f"{prefix}out_proj.weight"})
        elif all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q", "k", "v", "out")) \
                and isinstance(getattr(module, "heads", None), int):
            found[name] = (module.heads, {a: f"{prefix}{a}.weight" for a in ("q", "k", "v", "out")})
    return found


def split_projections(params: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> tuple[torch.Tensor, ...]:
    """(W_q, W_k, W_v, W_out) in torch's (out, in) layout from a parameter table and the names of one layer."""
    if "qkv" in names:
        wq, wk, wv = params[names["qkv"]].chunk(3, dim=0)
    else:
        wq, wk, wv = (params[names[a]] for a in ("q", "k", "v"))
    return wq, wk, wv, params[names["out"]]


def head_forms(wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor,
               heads: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each head's W_K W_Qᵀ and W_V W_Oᵀ (d × d, float64) from torch-layout projections.

    With torch's y = x Wᵀ, head h's paper matrices are W_Q = W_q[h]ᵀ, W_K = W_k[h]ᵀ, W_V = W_v[h]ᵀ
    (d × d_head, rows h·d_head … of W_q, W_k, W_v) and W_O = W_out[:, h] (d × d_head), so
    W_K W_Qᵀ = W_k[h]ᵀ W_q[h] and W_V W_Oᵀ = W_v[h]ᵀ W_out[:, h]ᵀ.
    """
    wq, wk, wv, wo = (w.detach().to(device="cpu", dtype=torch.float64) for w in (wq, wk, wv, wo))
    dh = wq.shape[0] // heads
    qk, vo = [], []
    for h in range(heads):
        rows = slice(h * dh, (h + 1) * dh)
        qk.append(wk[rows].T @ wq[rows])
        vo.append(wv[rows].T @ wo[:, rows].T)
    return qk, vo


def mean_and_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (the paper's shaded band is over heads)."""
    xs = list(values)
    if not xs:
        return 0.0, 0.0
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def perturbation_ranks(current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                       weights: Sequence[str], attention: Mapping[str, tuple[int, dict[str, str]]],
                       rel_tol: float = 1e-2, per_layer: bool = True) -> dict[str, float]:
    """Ranks of ΔW = W_t − W_0 for every chosen weight, and of every head's ΔW_K W_Qᵀ and ΔW_V W_Oᵀ.

    Returns the means over weights (``stable_rank``, ``effective_rank``, ``numerical_rank``), the means and
    spreads over all heads of all layers (``qk/stable_rank``, ``qk/stable_rank_std``, ``vo/...``) and, with
    ``per_layer``, ``<weight>/<rank>`` and ``<attention layer>/qk/stable_rank`` (mean over its heads).
    """
    out: dict[str, float] = {}
    sums: dict[str, list[float]] = {"stable_rank": [], "effective_rank": [], "numerical_rank": []}
    for name in weights:
        ranks = rank_measures(current[name].detach().to(torch.float64).cpu() - initial[name].to(torch.float64).cpu(), rel_tol)
        for k, value in ranks.items():
            sums[k].append(value)
            if per_layer:
                out[f"{name}/{k}"] = value
    for k, values in sums.items():
        if values:
            out[k] = sum(values) / len(values)
    all_heads: dict[str, dict[str, list[float]]] = {"qk": {}, "vo": {}}
    for layer, (heads, names) in attention.items():
        now = head_forms(*split_projections(current, names), heads)
        then = head_forms(*split_projections(initial, names), heads)
        for form, a, b in (("qk", now[0], then[0]), ("vo", now[1], then[1])):
            layer_ranks = [rank_measures(x - y, rel_tol) for x, y in zip(a, b)]
            for k in ("stable_rank", "effective_rank", "numerical_rank"):
                values = [r[k] for r in layer_ranks]
                all_heads[form].setdefault(k, []).extend(values)
                if per_layer:
                    out[f"{layer}/{form}/{k}"] = mean_and_std(values)[0]
    for form, table in all_heads.items():
        for k, values in table.items():
            m, s = mean_and_std(values)
            out[f"{form}/{k}"], out[f"{form}/{k}_std"] = m, s
    return out


def first_reached(history: Sequence[tuple[int, Mapping[str, float]]], key: str, levels: Iterable[float]) -> dict[float, int | None]:
    """For each rank level, the first logged step at which ``key`` was at least that level (None: never)."""
    result: dict[float, int | None] = {}
    for level in levels:
        result[level] = next((step for step, values in history if values.get(key, -math.inf) >= level), None)
    return result


def value_at_fraction(history: Sequence[tuple[int, Mapping[str, float]]], key: str, step: float) -> float | None:
    """``key`` at the first logged step at or after ``step`` (None when nothing was logged there)."""
    return next((values[key] for s, values in history if s >= step and key in values), None)
