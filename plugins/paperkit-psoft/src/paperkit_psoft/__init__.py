"""paperkit plugin: PSOFT, efficient orthogonal fine-tuning with principal subspace adaptation (Wu et al., ICLR 2026).

This module holds the record only (no torch import): the config, the paper, the claim. The math is in
:mod:`paperkit_psoft.functional`, the hooks in :mod:`paperkit_psoft.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _neumann_eps(instance: PsoftConfig, attribute: attrs.Attribute, value: float | None) -> None:
    if value is None:
        return
    if not 0.0 < value < 1.0:
        raise ValueError(f"'neumann_eps' must be in (0, 1), got {value}")
    if instance.neumann_terms is None:
        raise ValueError("'neumann_eps' bounds Q in the Cayley-Neumann series: set neumann_terms too")


def _neumann_terms(instance: PsoftConfig, attribute: attrs.Attribute, value: int | None) -> None:
    if value is None:
        return
    if value < 1:
        raise ValueError(f"'neumann_terms' must be >= 1, got {value}")
    if not instance.orthogonal:
        raise ValueError("'neumann_terms' approximates the Cayley transform: it needs orthogonal = true")


@attrs.define
class PsoftConfig:
    rank: int = option(
        32,
        help="r: the size of the principal subspace (top-r singular triplets of W) and of the r×r matrix R; "
        "r(r-1)/2 + 2r values train per layer. 32 is PEFT's PsoftConfig default; the authors' GLUE script "
        "(fei407/PSOFT 1-NLU, DeBERTaV3-base) uses 46.",
        validator=v.ge(1),
    )
    alpha: float = option(
        32.0,
        help="Scaling numerator s = alpha/r (PEFT's psoft_alpha, default 32). B is built as U_r S_r / s, so s "
        "cancels in W' = W + s·B(R-I)A: it changes nothing but rounding; kept for PEFT parity.",
        validator=v.gt(0.0),
    )
    dropout: float = option(
        0.0, help="Dropout on the adapter's input (PEFT's psoft_dropout, default 0).", validator=[v.ge(0.0), v.lt(1.0)],
    )
    init: str = option(
        "psoft",
        help="'psoft': A = V_r^T (orthonormal rows), B = U_r S_r, the paper's condition for strictly preserving the "
        "subspace's geometry (Sec. 3; PEFT ab_svd_init='psoft_init', the default). 'pissa': symmetric "
        "A = S_r^1/2 V_r^T, B = U_r S_r^1/2 (PEFT 'pissa_init'), the ablation without it.",
        validator=v.in_(("psoft", "pissa")),
    )
    orthogonal: bool = option(
        True,
        help="R = Cayley(Q) with Q skew-symmetric, r(r-1)/2 values (PEFT psoft_orth, default true); false: R is a "
        "free r×r matrix started at I.",
    )
    scale_out: bool = option(
        True,
        help="Train the vector β after R, R = diag(β)·R_orth (the paper's tunable vectors that relax orthogonality; "
        "PEFT psoft_mag_b, default true).",
    )
    scale_in: bool = option(
        True,
        help="Train the vector α before R, R = R_orth·diag(α) (PEFT psoft_mag_a, default true).",
    )
    neumann_terms: int | None = option(
        None,
        help="None: the exact Cayley transform (torch.linalg.solve; PEFT's default use_cayley_neumann=false). N: "
        "its N-term Cayley-Neumann approximation (cheaper, approximately orthogonal); the authors' scripts use 5.",
        validator=_neumann_terms,
    )
    neumann_eps: float | None = option(
        None,
        help="With neumann_terms: rescale Q to Frobenius norm eps when larger (PEFT cayley_neumann_eps, default none).",
        validator=_neumann_eps,
    )
    niter: int | None = option(
        None,
        help="None: exact SVD of W (PEFT psoft_svd='full', the default). N: randomized SVD with N subspace "
        "iterations (torch.svd_lowrank; PEFT psoft_svd='lowrank', psoft_svd_lowrank_niter).",
        validator=v.optional(v.ge(0)),
    )
    svd_seed: int = option(
        0, help="Seed of the randomized SVD's forked generator (PEFT random_seed, default 0); niter only.", validator=v.ge(0),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head). The paper adapts the attention and MLP projections of each block.",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="Efficient Orthogonal Fine-Tuning with Principal Subspace Adaptation",
    year=2025,
    arxiv=None,
    authors="Fei Wu, Jia Hu, Geyong Min, Shiqiang Wang",
    venue="ICLR 2026",
    url="https://openreview.net/forum?id=FSHrinMArK",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="psoft",
    summary="PSOFT: W' = W + B(R - I)A with A = V_r^T, B = U_r S_r from the SVD of W (frozen); only the r×r "
    "Cayley-orthogonal R and two scaling vectors train.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_psoft.hooks:PSOFT",
    config=PsoftConfig,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-lora",
            statement=(
                "At a comparable number of trainable parameters, PSOFT fine-tunes a pretrained transformer better "
                "than LoRA (abstract; Sec. 4, Tables 1-4: DeBERTaV3-base on GLUE, ViT-B on VTAB-1K, LLaMA on math and "
                "commonsense, against LoRA, PiSSA and orthogonal fine-tuning at matched budgets): here, a lower "
                "test loss after the same number of steps."
            ),
            plan="paperkit_psoft:claims/minilm.toml",
            metric="classification/loss",
            variant="psoft",
            baseline="lora",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0,),
        ),
    ),
)

__all__ = ["PAPER", "PsoftConfig", "method"]
