"""FAdam (Hwang, 2024) for paperkit: the record and its config. No torch import here.

The math is in :mod:`paperkit_fadam.functional`, the hook in :mod:`paperkit_fadam.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["FAdamConfig", "PAPER", "method"]


def _betas(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1): {list(value)}")


@attrs.define
class FAdamConfig:
    """Defaults: the paper's Algorithm 1, and pytorch-optimizer's FAdam (v4.1) where the paper gives none."""

    lr: float = option(1e-3, help="Learning rate eta (pytorch-optimizer's default; the paper tunes it per task).", validator=v.gt(0.0))
    betas: tuple[float, float] = option(
        (0.9, 0.999), help="beta1 (momentum of the natural gradient) and beta2 (Fisher EMA, debiased as in Sec. 3.4.4) (Algorithm 1).",
        validator=_betas,
    )
    weight_decay: float = option(0.1, help="lambda of the Fisher weight decay theta/(f^p + eps'^(2p)) (Algorithm 1, Sec. 3.4; pytorch-optimizer 0.1).", validator=v.ge(0.0))
    clip: float = option(
        1.0, help="c: the natural gradient and the weight-decay direction are scaled to RMS <= c (Algorithm 1, Sec. 3.4). "
        "inf switches both clips off (ablation; then the Fisher weight decay can blow up, see the card).", validator=v.gt(0.0),
    )
    p: float = option(0.5, help="Exponent of the Fisher in the denominator f^p (Algorithm 1: 1/2, Adam's square root).", validator=v.gt(0.0))
    eps: float = option(1e-8, help="epsilon, the upper bound of the adaptive eps' = min(eps, eps2*RMS(g)); f^p + eps'^(2p) is the denominator (Algorithm 1: 1e-8).", validator=v.ge(0.0))
    eps2: float = option(0.01, help="eps2 of the adaptive epsilon eps' = min(eps, eps2*RMS(g)) (pytorch-optimizer 4.1's eps_2).", validator=v.ge(0.0))
    clip_gradient: bool = option(
        True, help="Clip the natural gradient (Algorithm 1); false keeps only the weight-decay clip (ablation).",
    )
    adaptive_eps: bool = option(True, help="Adaptive epsilon (Algorithm 1); false: the constant eps^(2p) of Adam (ablation).")
    fisher_weight_decay: bool = option(
        True, help="Fisher weight decay (Sec. 3.4): decay theta/(f^p + eps'^(2p)), RMS-clipped; false: AdamW's decoupled lambda*theta (ablation).",
    )


PAPER = Paper(
    title="FAdam: Adam is a natural gradient optimizer using diagonal empirical Fisher information",
    year=2024,
    arxiv="2405.12807",
    authors="Dongseong Hwang",
    venue="arXiv preprint",
)

method = Method(
    key="fadam",
    summary="Adam read as natural gradient with a diagonal empirical Fisher: debiased beta2, adaptive epsilon, "
    "RMS-clipped natural gradient before the momentum, Fisher-preconditioned weight decay.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_fadam.hooks:FAdamMethod",
    config=FAdamConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="beats-adamw",
            statement="FAdam outperforms Adam(W) (abstract; LLM, ASR and VQ-VAE experiments, SOTA in ASR): "
            "lower held-out loss than tuned AdamW at the same budget.",
            plan="paperkit_fadam:claims/beats-adamw.toml",
            metric="classification/loss", variant="fadam", baseline="adamw", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7), quick=("run.max_steps=30",), quick_seeds=(0, 1),
        ),
        Claim(
            id="fisher-weight-decay",
            statement="Weight decay refined by the Fisher geometry (Sec. 3.4: decay theta/(f^p + eps'^(2p)), RMS-clipped) "
            "improves on AdamW's decoupled weight decay inside FAdam: lower held-out loss.",
            plan="paperkit_fadam:claims/fisher-weight-decay.toml",
            metric="classification/loss", variant="fadam", baseline="decoupled-wd", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7), quick=("run.max_steps=30",), quick_seeds=(0, 1),
        ),
        Claim(
            id="gradient-clip",
            statement="Clipping the natural gradient to RMS <= 1 before the momentum (Sec. 3.4) improves FAdam: "
            "lower held-out loss than without the clip.",
            plan="paperkit_fadam:claims/gradient-clip.toml",
            metric="classification/loss", variant="fadam", baseline="unclipped", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7), quick=("run.max_steps=30",), quick_seeds=(0, 1),
        ),
    ),
)
