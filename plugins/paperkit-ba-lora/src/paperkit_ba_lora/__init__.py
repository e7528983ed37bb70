"""paperkit plugin: BA-LoRA, bias-alleviating low-rank adaptation (Chang, Chang & Wu, 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_ba_lora.functional`; :mod:`paperkit_ba_lora.hooks`
wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

_REPO = "reference code cyp-jlu-ai/BA-LoRA train.py"


@attrs.define
class BaLoraConfig:
    """BA-LoRA's regularizer options; each default is the reference code's (its ``ScriptArguments`` and script)."""

    k: int = option(
        3, help=f"Number k of top singular values in the SVD regularizer -sum_{{i<=k}} s_i / sum s_i ({_REPO}: k = 3).",
        validator=v.ge(1),
    )
    lambda1: float = option(
        1e-4, help=f"Weight of the consistency regularizer, MSE of L2-normalized logits vs the frozen pretrained "
        f"model's ({_REPO} and scripts/ba-lora.sh: lambda1 = 1e-4). 0 leaves the term (and the frozen copy) out.",
        validator=v.ge(0.0),
    )
    lambda2: float = option(
        3e-4, help=f"Weight of the diversity regularizer, squared off-diagonal batch covariance of the logits over "
        f"the number of outputs ({_REPO} and scripts/ba-lora.sh: lambda2 = 3e-4).",
        validator=v.ge(0.0),
    )
    lambda3: float = option(
        1e-4, help=f"Weight of the SVD regularizer ({_REPO} and scripts/ba-lora.sh: lambda3 = 1e-4).",
        validator=v.ge(0.0),
    )
    svd_gradient: bool = option(
        True, help="Whether the SVD term trains (gradient through the singular values). True: the paper's objective "
        "(a loss term minimized with the rest) and the reference code's latest train.py (commit e119f2f); False: "
        "the term is computed under no_grad, a logged constant, as in the reference's earlier commit 54c44cb.",
        validator=v.instance_of(bool),
    )


PAPER = Paper(
    title="BA-LoRA: Bias-Alleviating Low-Rank Adaptation to Mitigate Catastrophic Inheritance in Large Language Models",
    year=2024,
    arxiv="2408.04556",
    authors="Yupeng Chang, Yi Chang, Yuan Wu",
    venue="arXiv",
)

method = Method(
    key="ba-lora",
    summary=(
        "BA-LoRA: LoRA plus three output regularizers: consistency with the frozen pretrained model's normalized "
        "logits, decorrelated logits over the batch, and logit energy in the top-k singular values."
    ),
    paper=PAPER,
    hooks=("init", "regularize"),
    section="regularize",
    implementation="paperkit_ba_lora.hooks:BaLora",
    config=BaLoraConfig,
    touches=("loss",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-lora",
            statement=(
                "BA-LoRA outperforms LoRA on natural language understanding at equal rank and budget (abstract; "
                "Sec. 4, GLUE with LLaMA-2/Mistral/Gemma): here, MiniLM adapted to the sentiment reviews with LoRA "
                "on query/value, test accuracy of BA-LoRA's regularized loss vs plain LoRA."
            ),
            plan="paperkit_ba_lora:claims/beats_lora.toml",
            metric="classification/accuracy",
            variant="ba-lora",
            baseline="lora",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=4", "task.per_class=24", "run.batch_size=8"),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["BaLoraConfig", "PAPER", "method"]
