"""paperkit plugin: the LDR-KL and ALDR-KL losses of Zhu, Ying & Yang, "Label Distributionally Robust Losses for
Multi-class Classification: Consistency, Robustness and Adaptivity" (ICML 2023).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_ldr_kl.functional`; :mod:`paperkit_ldr_kl.hooks` wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

REFERENCE = "github.com/Optimization-AI/ICML2023_LDR"


@attrs.define
class LdrKlConfig:
    """LDR-KL's temperature and margin, the score normalization, and the adaptive variant (ALDR-KL).

    Defaults are the reference code's experiment defaults (``experiment.py``, ``run_demo_ALDR.sh``).
    """

    lam: float = option(
        10.0,
        help="λ, the weight of KL(p || uniform) in the worst case over label weights p; for ALDR-KL its anchor λ_0. "
        "Small λ -> the Crammer-Singer SVM loss (max), large λ -> the average of the margin differences. "
        f"10: {REFERENCE} experiment.py (parameter_set = [10] for LDR and ALDR; the commented-out [0.1, 1.0, 10] "
        "beside it is the grid its 5-fold cross-validation loop would search).",
        validator=v.gt(0.0),
    )
    margin: float = option(
        0.1,
        help="c, the margin added to every non-label class's score difference, c·1[k != y]. "
        "0.1: reference experiment.py (--margin default; LDRLoss_V1's own default of 2.0 is not what the runs use).",
        validator=v.ge(0.0),
    )
    normalize: Literal["auto", "softplus", "l1", "none"] = option(
        "auto",
        help="How logits z become the scores f the loss sees. softplus: f = softplus(z) / mean_k softplus(z) "
        "(reference LDRLoss_V1); l1: f = z / mean_k |z_k| (reference ALDRLoss_V1, softplus=False, its default except "
        "on CIFAR-100); none: f = z. auto: softplus for LDR-KL, l1 for ALDR-KL, as the reference runs do.",
        validator=v.in_(["auto", "softplus", "l1", "none"]),
    )
    adaptive: bool = option(
        False,
        help="ALDR-KL: every training sample gets its own λ_i = λ_0 (1 - KL(p_i || uniform) / (α log K)), updated at "
        "each visit (reference ALDRLoss_V1; needs batch['index']).",
    )
    alpha: float = option(
        2.0,
        help="α of ALDR-KL's penalty (α log K / (2 λ_0)) (λ_i - λ_0)^2; λ_i stays in [λ_0 (1 - 1/α), λ_0]. "
        "2: reference experiment.py --alpha default and run_demo_ALDR.sh; must exceed 1 (reference comment 'alpha > "
        "1.0') so that λ_i stays positive. Used only with adaptive = true.",
        validator=v.gt(1.0),
    )


PAPER = Paper(
    title="Label Distributionally Robust Losses for Multi-class Classification: Consistency, Robustness and Adaptivity",
    year=2023,
    arxiv="2112.14869",
    authors="Dixian Zhu, Yiming Ying, Tianbao Yang",
    venue="ICML",
)

method = Method(
    key="ldr-kl",
    summary="LDR-KL loss: the worst case over label weights of the margin-augmented score differences, KL-regularized "
    "towards uniform (λ between SVM-like max and robust average); ALDR-KL adapts λ per sample.",
    paper=PAPER,
    hooks=("loss", "after_step"),
    implementation="paperkit_ldr_kl.hooks:LdrKl",
    config=LdrKlConfig,
    touches=("loss",),
    honours=("weight",),
    claims=(
        Claim(
            id="noisy-digits-40",
            statement="Under 40% symmetric label noise, a network trained with the LDR-KL loss (λ = 10, c = 0.1, "
            "the reference defaults) reaches a higher clean test accuracy than the same network trained with "
            "cross-entropy, the paper's baseline (the paper's experiments: LDR-KL and ALDR-KL against CE and 12 "
            "other losses under uniform and class-dependent label noise; abstract: 'stable and competitive').",
            plan="paperkit_ldr_kl:claims/noisy-digits-40.toml",
            metric="classification/accuracy",
            variant="ldr-kl",
            baseline="cross-entropy",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5),
            quick=("run.epochs=20",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="large-lambda-robust",
            statement="λ interpolates between an SVM-like loss (small λ: the worst case puts all weight on the "
            "largest margin violation) and a symmetric average (large λ), and the large-λ end is the robust one: "
            "under 40% symmetric label noise LDR-KL with λ = 10 beats LDR-KL with λ = 0.1 in clean test accuracy, "
            "each at its own tuned learning rate (abstract: the LDR family unifies CE- and SVM-type losses; the "
            "reference code's λ grid is {0.1, 1, 10}).",
            plan="paperkit_ldr_kl:claims/noisy-digits-40.toml",
            metric="classification/accuracy",
            variant="ldr-kl",
            baseline="ldr-kl-small-lambda",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=20",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["LdrKlConfig", "PAPER", "REFERENCE", "method"]
