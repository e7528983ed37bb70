"""NovoGrad (Ginsburg et al., 2019) for paperkit: the record and its config. No torch import here.

The math is in :mod:`paperkit_novograd.functional`, the hooks in :mod:`paperkit_novograd.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["NovoGradConfig", "PAPER", "method"]


def _betas(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1): {list(value)}")


@attrs.define
class NovoGradConfig:
    """Defaults: Algorithm 1 of the paper and the authors' code (OpenSeq2Seq ``NovoGrad``, NeMo ``Novograd``)."""

    lr: float = option(
        1e-3, help="Learning rate lambda of w <- w - lambda*m (NeMo, timm and pytorch-optimizer default 1e-3; "
        "NovoGrad's layer steps have norm ~lr, so it usually wants a larger lr than Adam).", validator=v.gt(0.0),
    )
    betas: tuple[float, float] = option(
        (0.95, 0.98), help="(beta1, beta2): momentum of m and EMA rate of the layer-wise second moment v "
        "(authors' code: OpenSeq2Seq and NeMo defaults 0.95, 0.98).", validator=_betas,
    )
    eps: float = option(1e-8, help="epsilon of the normalization g/sqrt(v + eps) (Algorithm 1; all reference code 1e-8).",
                        validator=v.ge(0.0))
    weight_decay: float = option(
        0.0, help="d of the decoupled weight decay term d*w added to the normalized gradient inside the momentum "
        "(Algorithm 1; reference code default 0).", validator=v.ge(0.0),
    )
    grad_averaging: bool = option(
        False, help="m <- beta1*m + (1-beta1)*(...) instead of beta1*m + (...) (reference code option, default off "
        "as in Algorithm 1).",
    )
    eps_inside_sqrt: bool = option(
        True, help="true: g/sqrt(v + eps) (Algorithm 1, OpenSeq2Seq); false: g/(sqrt(v) + eps) (NeMo, timm, "
        "pytorch-optimizer, Apex).",
    )
    amsgrad: bool = option(False, help="Normalize by the running maximum of v (NeMo/timm option; not in the paper).")


PAPER = Paper(
    title="Stochastic Gradient Methods with Layer-wise Adaptive Moments for Training of Deep Networks",
    year=2019,
    arxiv="1905.11286",
    authors="Boris Ginsburg, Patrice Castonguay, Oleksii Hrinchuk, Oleksii Kuchaiev, Vitaly Lavrukhin, Ryan Leary, "
    "Jason Li, Huyen Nguyen, Yang Zhang, Jonathan M. Cohen",
    venue="arXiv preprint (v3 2020: 'Training Deep Networks with Stochastic Gradient Normalized by Layerwise "
    "Adaptive Second Moments')",
)

method = Method(
    key="novograd",
    summary="NovoGrad: SGD with momentum on gradients normalized by a per-layer (scalar) second moment, "
    "with decoupled weight decay; half of Adam's optimizer state.",
    paper=PAPER,
    hooks=("optimize", "after_run"),
    implementation="paperkit_novograd.hooks:NovoGradMethod",
    config=NovoGradConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="on-par-with-adamw",
            statement="NovoGrad performs on par with or better than well-tuned Adam/AdamW, with half of Adam's "
            "memory (abstract). Checked: test accuracy at most 1 point below AdamW's, same budget, tuned lr per arm "
            "(the state size is reported in summary.novograd).",
            plan="paperkit_novograd:claims/on-par-with-adamw.toml",
            metric="classification/accuracy",
            variant="novograd",
            baseline="adamw",
            direction="higher",
            margin=-0.01,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.max_steps=60",),
            quick_seeds=(0, 1),
        ),
    ),
)
