"""Adafactor (Shazeer & Stern, 2018) for paperkit: the record and its config. No torch import here.

The math is in :mod:`paperkit_adafactor.functional`, the hooks in :mod:`paperkit_adafactor.hooks`.
"""

from __future__ import annotations

from typing import Literal

from attrs import define
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["AdafactorConfig", "PAPER", "method"]


@define
class AdafactorConfig:
    """Defaults are the paper's recommended setting (Sec. 9), also the authors' tensor2tensor defaults."""

    lr: float = option(
        1e-2,
        help="Cap of the relative step rho_t = min(lr, 1/sqrt(t)) (paper Sec. 8-9: 1e-2; torch.optim.Adafactor's lr "
        "plays the same role); the constant rho when relative_step = false.",
        validator=v.gt(0.0),
    )
    relative_step: bool = option(True, help="rho_t = min(lr, 1/sqrt(t)) (paper Sec. 8-9); false: rho_t = lr, for an external schedule.")
    scale_parameter: bool = option(
        True, help="Step alpha_t = max(eps2, RMS(theta)) * rho_t, relative to the parameter's scale (paper Sec. 8, Alg. 4 line 9).",
    )
    decay_c: float = option(
        0.8, help="Exponent c of the second-moment decay beta2_t = 1 - t^(-c) (paper Sec. 7 and 9, tensor2tensor adafactor_decay_rate_pow(0.8)).", validator=v.ge(0.0),
    )
    beta1: float = option(
        0.0, help="Momentum of the scaled update; 0 keeps none, the paper's memory-saving setting (Sec. 9, tensor2tensor default).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    clip_threshold: float = option(
        1.0, help="Update clipping threshold d: U / max(1, RMS(U)/d) (paper Sec. 6 and 9: d = 1; inf disables clipping).",
        validator=v.gt(0.0),
    )
    eps1: float = option(1e-30, help="epsilon1, regularizes the squared gradient (paper Sec. 9; tensor2tensor adds 1e-30 to grad^2).", validator=v.ge(0.0))
    eps2: float = option(1e-3, help="epsilon2, floor of the parameter RMS in the step size (paper Sec. 9; tensor2tensor _parameter_scale 0.001).", validator=v.ge(0.0))
    factored: bool = option(
        True, help="Factor the second moment of every >=2-D parameter into row and column statistics (paper Sec. 3); "
        "false keeps a full second moment (the paper's unfactored ablation).",
    )
    weight_decay: float = option(0.0, help="Decoupled weight decay (not in the paper; 0 by default).", validator=v.ge(0.0))
    weight_decay_scale: Literal["step", "lr"] = option(
        "step", help="step: theta <- theta (1 - weight_decay * alpha_t) (transformers/fairseq, pytorch-optimizer); "
        "lr: theta <- theta (1 - weight_decay * lr) (torch.optim.Adafactor).",
        validator=v.in_(["step", "lr"]),
    )
    eps1_placement: Literal["gradient", "denominator"] = option(
        "gradient", help="gradient: statistics of G^2 + eps1 (paper Alg. 4-5, tensor2tensor, fairseq); denominator: "
        "statistics of G^2, eps1 clamps mean(R) and V (torch.optim.Adafactor, with eps1 = float32 eps = 1.1920929e-07).",
        validator=v.in_(["gradient", "denominator"]),
    )


PAPER = Paper(
    title="Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    year=2018,
    arxiv="1804.04235",
    authors="Noam Shazeer, Mitchell Stern",
    venue="ICML",
)

_BUDGET = ("run.max_steps=60",)

method = Method(
    key="adafactor",
    summary="Adam-like adaptive steps with a factored (row + column) second moment, update clipping, an increasing "
    "decay 1 - t^-0.8 and parameter-relative step sizes; no momentum, so optimizer memory is sublinear in the weights.",
    paper=PAPER,
    hooks=("optimize", "after_run"),
    implementation="paperkit_adafactor.hooks:AdafactorMethod",
    config=AdafactorConfig,
    touches=("parameters", "optimizer", "metrics"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="comparable-to-adam",
            statement="Adafactor at its recommended setting (factored, no momentum, relative step, clipping d = 1, "
            "beta2_t = 1 - t^-0.8) achieves results comparable to the published Adam regime while using very little "
            "auxiliary storage (abstract): its test cross-entropy is at most 0.05 nats above tuned Adam's.",
            plan="paperkit_adafactor:claims/comparable-to-adam.toml",
            metric="classification/loss", variant="adafactor", baseline="adam", direction="lower", margin=-0.05,
            seeds=(0, 1, 2, 3, 4, 5), quick=_BUDGET, quick_seeds=(0, 1),
        ),
        Claim(
            id="factored-matches-full",
            statement="Keeping only row and column statistics of the second moment 'produces similar results to the "
            "baseline' full second moment (abstract, Sec. 3): factored Adafactor's test cross-entropy is at most 0.05 "
            "nats above the unfactored ablation's.",
            plan="paperkit_adafactor:claims/factored-matches-full.toml",
            metric="classification/loss", variant="factored", baseline="full", direction="lower", margin=-0.05,
            seeds=(0, 1, 2, 3, 4, 5), quick=_BUDGET, quick_seeds=(0, 1),
        ),
    ),
)
