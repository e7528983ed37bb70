"""paperkit plugin: Transformers learn through gradual rank increase (Boix-Adserà et al., NeurIPS 2023).

A diagnostic: it keeps the initial value W_0 of the chosen weight matrices and logs, every few steps,
the ranks of the learned perturbation W_t − W_0 — the paper's stable rank of each attention head's
Δ(W_K W_Qᵀ) and Δ(W_V W_Oᵀ), and the stable, effective and numerical rank of every chosen weight.
This module holds only the record and its config (no torch); the math is in
:mod:`paperkit_rank_increase.functional`, the hook shells in :mod:`paperkit_rank_increase.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _patterns(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"'{attribute.name}' must be a list of non-empty glob patterns: {value!r}")


def _levels(instance: object, attribute: attrs.Attribute, value: list[float]) -> None:
    if any(not (isinstance(x, (int, float)) and x > 0) for x in value) or any(a >= b for a, b in zip(value, value[1:])):
        raise ValueError(f"'{attribute.name}' must be increasing positive rank levels: {list(value)}")


@attrs.define
class RankIncreaseConfig:
    """When and what to measure. The paper measures the stable rank of the per-head attention forms (Fig. 4)."""

    every: int = option(
        10, help="Measure every N optimizer steps (and always at the last one). The paper plots the rank "
        "throughout training (Fig. 4); 10 keeps the SVDs cheap on our small models.", validator=v.ge(1),
    )
    weights: list[str] = option(
        attrs.Factory(lambda: ["encoder.layers.*", "blocks.*"]),
        help="Glob patterns over parameter names; every matching 2-D weight has the ranks of its ΔW logged. The "
        "default takes every weight matrix of the core 'transformer' (encoder.layers.N.self_attn.in_proj_weight, "
        "out_proj, linear1, linear2) and 'causal-transformer' (blocks.N.attn.q/k/v/out, blocks.N.mlp.0/2), not "
        "the embedding or the head. [] logs only the per-head forms.",
        validator=_patterns,
    )
    heads: bool = option(
        True, help="Also log the paper's measurement: the ranks of each attention head's Δ(W_K W_Qᵀ) and Δ(W_V W_Oᵀ), "
        "mean and std over all heads (Fig. 4; nn.MultiheadAttention and the causal-transformer's attention).",
    )
    rel_tol: float = option(
        1e-2, help="Numerical rank = number of singular values above rel_tol·σ_max. Not from the paper (which reports "
        "the stable rank only): 1e-2 is our choice, far above float round-off and the noise of a few SGD steps.",
        validator=[v.gt(0.0), v.lt(1.0)],
    )
    per_layer: bool = option(True, help="Log every weight's and every attention layer's ranks, not only the means.")
    early_fraction: float = option(
        0.1, help="after_run reports the ranks at this fraction of the run's steps next to the final ones "
        "(the paper's 'rank grows gradually': early ranks lower than late ones).", validator=[v.gt(0.0), v.lt(1.0)],
    )
    levels: list[float] = option(
        attrs.Factory(lambda: [1.0, 2.0, 4.0, 8.0, 16.0]),
        help="after_run reports the first measured step at which each mean rank reached each of these levels "
        "(the paper's rank-by-rank stages, Theorem 1.1); -1 where it never did.", validator=_levels,
    )


PAPER = Paper(
    title="Transformers learn through gradual rank increase",
    year=2023,
    arxiv="2306.07042",
    authors="Enric Boix-Adserà, Etai Littwin, Emmanuel Abbe, Samy Bengio, Joshua Susskind",
    venue="NeurIPS 2023",
)

method = Method(
    key="rank-increase",
    summary="Logs the stable, effective and numerical rank of the learned perturbation W_t − W_0 of every chosen weight "
    "and of each attention head's W_K W_Qᵀ and W_V W_Oᵀ during training, and when each rank level was first reached.",
    paper=PAPER,
    hooks=("before_experience", "after_step", "after_run"),
    implementation="paperkit_rank_increase.hooks:RankIncrease",
    config=RankIncreaseConfig,
    touches=("metrics",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="small-init-low-rank",
            statement="With small initialization the learned perturbation has low rank that grows gradually (abstract; "
            "Theorem 1.1 and Sec. 4, Fig. 4): after the same number of Adam steps the heads' Δ(W_K W_Qᵀ) has a lower "
            "stable rank when every weight matrix starts at a small scale than at the default scale.",
            plan="paperkit_rank_increase:claims/small-init-low-rank.toml",
            metric="rank-increase/final/qk/stable_rank",
            variant="small-init",
            baseline="default-init",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=1",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["RankIncreaseConfig", "PAPER", "method"]
