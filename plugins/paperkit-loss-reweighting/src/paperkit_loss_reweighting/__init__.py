"""paperkit plugin: loss-based sample reweighting, Sow et al., "Dynamic Loss-Based Sample Reweighting for Improved
Large Language Model Pretraining" (ICLR 2025).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_loss_reweighting.functional`; :mod:`paperkit_loss_reweighting.hooks`
wires it to the engine as the plan's ``loss``.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

STRATEGY_NAMES = ("linupper", "quadratic", "extremes", "upper", "uniform")


@attrs.define
class LossReweightingConfig:
    """The reweighting's options; defaults are the paper's recommended strategy and the reference code's values."""

    strategy: str = option(
        "linupper",
        help="g applied to the normalized losses h in [-delta, delta]: linupper min(h + delta, delta) (the paper's "
        "recommended strategy, down-weights the lowest losses), quadratic 1 - h^2/delta^2 (reference code's 'mid'), "
        "extremes |h|, upper (h + delta)/2 (reference trainer's f_func_upper), uniform (plain mean: the baseline).",
        validator=v.in_(STRATEGY_NAMES),
    )
    r: float = option(
        1.0,
        help="Strength r of the KL regularizer toward uniform weights, w = softmax(g / r) (reference trainer's kl_reg: "
        "default 1.0, config ours_nodr.json 1.0, the GPT-2 medium/large configs 0.4; DataFlex's LossWeighter r = 1).",
        validator=v.gt(0.0),
    )
    delta: float = option(
        1.0,
        help="Half-width delta of the normalization range [-delta, delta] (reference code and DataFlex: 1.0 "
        "throughout). Only delta / r matters for linupper, extremes and upper; quadratic does not depend on it.",
        validator=v.gt(0.0),
    )
    warmup: float = option(
        0.05,
        help="Fraction of each experience's planned optimizer steps trained with uniform weights before reweighting "
        "starts, so that losses are informative (reference configs: burnout_steps 1000 of max_steps 20000).",
        validator=[v.ge(0.0), v.le(1.0)],
    )


PAPER = Paper(
    title="Dynamic Loss-Based Sample Reweighting for Improved Large Language Model Pretraining",
    year=2025,
    arxiv="2502.06733",
    authors="Daouda Sow, Herbert Woisetschläger, Saikiran Bulusu, Shiqiang Wang, Hans-Arno Jacobsen, Yingbin Liang",
    venue="ICLR",
    url="https://openreview.net/forum?id=gU4ZgQNsOC",
)

method = Method(
    key="loss-reweighting",
    summary="Online instance reweighting: each sample's loss weight is softmax(g(min-max normalized loss) / r) over "
    "the batch; LinUpper down-weights the lowest-loss samples.",
    paper=PAPER,
    hooks=("loss",),
    implementation="paperkit_loss_reweighting.hooks:LossReweighting",
    config=LossReweightingConfig,
    touches=("loss", "weights"),
    honours=("target", "weight"),
    kinds=("class", "next-token", "regression"),
    claims=(
        Claim(
            id="linupper-next-token",
            statement="Reweighting each minibatch's samples by their losses with the LinUpper strategy, which "
            "de-prioritizes the lowest-loss (redundant) sequences, reaches a lower test loss than uniform weights "
            "at the same pretraining budget (abstract; the GPT-2 and Llama pretraining experiments).",
            plan="paperkit_loss_reweighting:claims/next-token.toml",
            metric="language-model/loss",
            variant="linupper",
            baseline="uniform",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.epochs=1",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["LossReweightingConfig", "PAPER", "STRATEGY_NAMES", "method"]
