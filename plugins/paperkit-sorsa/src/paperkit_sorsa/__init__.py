"""paperkit plugin: SORSA, singular values and orthonormal regularized singular vectors adaptation (Cao, 2024).

This module holds the record only (no torch import): the config, the paper,
the claim. The math is in :mod:`paperkit_sorsa.functional`, the hooks in
:mod:`paperkit_sorsa.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _names(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list module names")


@attrs.define
class SorsaConfig:
    rank: int = option(
        4,
        help="Rank r: the top-r singular triplets of each target weight train (U_p, S_p, V_pᵀ), the rest stays frozen "
        "(reference code Gunale0926/SORSA sorsalib SORSAConfig rank = 4; the paper's Llama 2 runs use 128, "
        "scripts/train_sorsa.sh).",
        validator=v.ge(1),
    )
    alpha: float | None = option(
        None,
        help="Scaling numerator s = alpha/r on the principal part, W' = W_res + s·U_p diag(S_p) V_pᵀ (the residual absorbs "
        "it, so the start is unchanged). Default (none): s = 1, the paper's form and the reference's default "
        "(SORSAConfig alpha = None; 'not mentioned in the paper, works same with LoRA').",
        validator=v.optional(v.gt(0.0)),
    )
    dropout: float = option(
        0.0, help="Dropout on the adapter's input (reference SORSAConfig dropout = 0; not in the paper).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    gamma: float = option(
        4e-4,
        help="γ, the orthonormal regularizer's learning rate: the step adds −γ ∇L_reg (Sec. 3.3), implemented as the loss "
        "term (γ/η)·L_reg (reference trainer: s_gamma = gamma / learning_rate). 4e-4: the paper's runs and the reference "
        "run.py default (--gamma 4e-4, with lr 3e-5). 0 switches the regularizer off (an ablation: PiSSA's split with "
        "a separate Σ).",
        validator=v.ge(0.0),
    )
    lr: float | None = option(
        None,
        help="η in γ/η. Default (none): the plan's optimizer's lr (its base rate, as the reference divides by "
        "TrainingArguments.learning_rate, not the scheduled one).",
        validator=v.optional(v.gt(0.0)),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the paper adapts every projection of Llama 2: q, k, v, o, gate, up, down).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is new "
        "(a pretrained encoder on a new task).",
        validator=_names,
    )


PAPER = Paper(
    title="SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language Models",
    year=2024,
    arxiv="2409.00055",
    authors="Yang Cao",
    venue="arXiv",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="sorsa",
    summary="SORSA: W = W_res + U_p diag(S_p) V_pᵀ from the SVD; U_p, S_p, V_pᵀ train (residual frozen) under the "
    "orthonormal regularizer γ(‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F).",
    paper=PAPER,
    hooks=("adapt", "regularize", "after_run"),
    implementation="paperkit_sorsa.hooks:Sorsa",
    config=SorsaConfig,
    touches=("model", "parameters", "loss"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="faster-than-pissa",
            statement=(
                "With the same rank, target layers and steps, SORSA (PiSSA's SVD split with S_p trained as its own "
                "vector and the orthonormal regularizer) reaches a lower loss than PiSSA when a pretrained model is "
                "fine-tuned (abstract: 'SORSA shows a faster convergence than PiSSA and LoRA'; Fig. 'training loss', "
                "Llama 2 7B on MetaMathQA)."
            ),
            plan="paperkit_sorsa:claims/minilm.toml",
            metric="classification/loss",
            variant="sorsa",
            baseline="pissa",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=6"),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "SorsaConfig", "method"]
