"""SGDP and AdamP (Heo et al., ICLR 2021) for paperkit: the records and their configs. No torch import here.

Two records from one paper, as the paper and every implementation (the authors'
``adamp`` package, timm, pytorch-optimizer) ship two optimizers: ``adamp``
(Adam + projection) and ``sgdp`` (momentum SGD + projection). Their options
differ (betas and ε against momentum, dampening and Nesterov), as they do
between the built-in ``adamw`` and ``sgd``. The math is in
:mod:`paperkit_adamp.functional`, the hooks in :mod:`paperkit_adamp.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["AdamPConfig", "PAPER", "SGDPConfig", "adamp_method", "sgdp_method"]

_REF = "clovaai/AdamP"


def _betas(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1): {list(value)}")


_NUMERICS_HELP = (
    "Which published arithmetic to follow bit for bit: 'pytorch-optimizer' (pytorch-optimizer 4.x, foreach=False) or "
    "'authors' ({}, the code timm copies). {}"
)


@attrs.define
class AdamPConfig:
    """Defaults are the authors' ``AdamP`` class (clovaai/AdamP 0.3.0) and the paper (Sec. 3: δ = 0.1)."""

    lr: float = option(1e-3, help=f"Learning rate ({_REF} AdamP default and README example).", validator=v.gt(0.0))
    betas: tuple[float, float] = option((0.9, 0.999), help=f"Adam's (beta1, beta2) ({_REF} default, as torch.optim.Adam).",
                                        validator=_betas)
    eps: float = option(1e-8, help=f"Adam's epsilon, also the epsilon of the cosine and of the norm in the projection ({_REF} default).",
                        validator=v.gt(0.0))
    weight_decay: float = option(0.0, help=f"Decoupled (AdamW-style) weight decay lambda ({_REF} default 0; its README example uses 1e-2).",
                                 validator=v.ge(0.0))
    delta: float = option(0.1, help="Scale-invariance threshold: project when max |cos(w, grad)| < delta/sqrt(dim) (paper Sec. 3, "
                                    f"{_REF} default). 0 never projects (plain AdamW with this arithmetic).", validator=v.ge(0.0))
    wd_ratio: float = option(0.1, help=f"Weight decay multiplier on projected (scale-invariant) weights ({_REF} default and README).",
                             validator=[v.ge(0.0), v.le(1.0)])
    nesterov: bool = option(False, help=f"Nesterov momentum: beta1*m + (1-beta1)*g in place of m ({_REF} default off, added in v0.2.0).")
    numerics: Literal["pytorch-optimizer", "authors"] = option(
        "pytorch-optimizer",
        help=_NUMERICS_HELP.format(_REF, "They differ in where epsilon sits: pytorch-optimizer divides by (sqrt(v)+eps)/sqrt(1-beta2^t), "
                                   "the authors (and torch.optim.Adam) by sqrt(v)/sqrt(1-beta2^t) + eps."),
        validator=v.in_(["pytorch-optimizer", "authors"]),
    )


@attrs.define
class SGDPConfig:
    """Defaults are the authors' README example ``SGDP(lr=0.1, momentum=0.9, nesterov=True)`` and the paper (δ = 0.1)."""

    lr: float = option(0.1, help=f"Learning rate ({_REF} README example; the class has no default).", validator=v.gt(0.0))
    momentum: float = option(0.9, help=f"Momentum mu ({_REF} README example; class default 0, where there is no momentum to correct).",
                             validator=[v.ge(0.0), v.lt(1.0)])
    dampening: float = option(0.0, help=f"Dampening tau of b <- mu*b + (1-tau)*g ({_REF} default, as torch.optim.SGD).",
                              validator=[v.ge(0.0), v.le(1.0)])
    nesterov: bool = option(True, help=f"Nesterov momentum: g + mu*b in place of b ({_REF} README example; class default off).")
    weight_decay: float = option(0.0, help=f"Decoupled weight decay lambda, applied as lr*lambda*ratio/(1-mu) ({_REF} default 0; "
                                           "README example 1e-5).", validator=v.ge(0.0))
    eps: float = option(1e-8, help=f"Epsilon of the cosine and of the norm in the projection ({_REF} default).", validator=v.gt(0.0))
    delta: float = option(0.1, help="Scale-invariance threshold: project when max |cos(w, grad)| < delta/sqrt(dim) (paper Sec. 3, "
                                    f"{_REF} default). 0 never projects (plain SGD with decoupled decay).", validator=v.ge(0.0))
    wd_ratio: float = option(0.1, help=f"Weight decay multiplier on projected (scale-invariant) weights ({_REF} default and README).",
                             validator=[v.ge(0.0), v.le(1.0)])
    numerics: Literal["pytorch-optimizer", "authors"] = option(
        "pytorch-optimizer",
        help=_NUMERICS_HELP.format(_REF, "Without Nesterov the authors' update is the momentum buffer itself, so their in-place "
                                   "projection also projects the stored momentum; pytorch-optimizer projects a copy."),
        validator=v.in_(["pytorch-optimizer", "authors"]),
    )


PAPER = Paper(
    title="AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
    year=2021,
    arxiv="2006.08217",
    authors="Byeongho Heo, Sanghyuk Chun, Seong Joon Oh, Dongyoon Han, Sangdoo Yun, Gyuwan Kim, Youngjung Uh, Jung-Woo Ha",
    venue="ICLR 2021",
)

_STATEMENT = (
    "{base}P brings gains over {base} on networks with scale-invariant (normalized) weights (abstract: 'uniform gains' on 13 "
    "benchmarks) by removing the radial component of each update: with the same learning rate, cosine schedule and budget, "
    "{what}"
)

adamp_method = Method(
    key="adamp",
    summary="AdamP: Adam(W) whose update on scale-invariant weights (detected by a near-zero cosine with the gradient) has its "
            "radial, norm-increasing component projected out.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_adamp.hooks:AdamPMethod",
    config=AdamPConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="beats-adamw",
            statement=_STATEMENT.format(base="Adam", what="AdamP ends with a lower test loss than AdamW on a BatchNorm MLP."),
            plan="paperkit_adamp:claims/adamp-vs-adamw.toml",
            metric="classification/loss", variant="adamp", baseline="adamw", direction="lower", margin=0.0,
            seeds=tuple(range(10)), quick=("run.max_steps=60",), quick_seeds=(0, 1),
        ),
        Claim(
            id="projection-matters",
            statement=_STATEMENT.format(base="Adam", what="AdamP ends with a lower test loss than the same optimizer with the "
                                        "projection switched off (delta = 0), the ablation of the contribution."),
            plan="paperkit_adamp:claims/adamp-ablation.toml",
            metric="classification/loss", variant="adamp", baseline="no-projection", direction="lower", margin=0.0,
            seeds=tuple(range(10)), quick=("run.max_steps=60",), quick_seeds=(0, 1),
        ),
    ),
)

sgdp_method = Method(
    key="sgdp",
    summary="SGDP: momentum SGD whose update on scale-invariant weights (detected by a near-zero cosine with the gradient) has "
            "its radial, norm-increasing component projected out.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_adamp.hooks:SGDPMethod",
    config=SGDPConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="beats-sgd",
            statement=_STATEMENT.format(base="SGD", what="SGDP ends with a lower test loss than Nesterov momentum SGD on a "
                                        "BatchNorm MLP."),
            plan="paperkit_adamp:claims/sgdp.toml",
            metric="classification/loss", variant="sgdp", baseline="sgd", direction="lower", margin=0.0,
            seeds=tuple(range(10)), quick=("run.max_steps=60",), quick_seeds=(0, 1),
        ),
    ),
)
