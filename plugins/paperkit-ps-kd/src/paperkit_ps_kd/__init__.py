"""paperkit plugin: PS-KD, Self-Knowledge Distillation with Progressive Refinement of Targets (Kim et al., ICCV 2021).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_ps_kd.functional`; :mod:`paperkit_ps_kd.hooks` wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class PsKdConfig:
    """PS-KD's one hyperparameter, and the binning of the calibration metric."""

    alpha_T: float = option(
        0.8,
        help="alpha_T, the weight of the model's past prediction in the target of the last epoch; "
        "alpha_t = alpha_T * t / T grows linearly over the T epochs (paper Sec. 3). 0.8: the reference code's "
        "default and every command of its README (lgcnsai/PS-KD-Pytorch main.py --alpha_T, CIFAR-100 and "
        "ImageNet). 0 leaves the batch untouched (plain cross-entropy) and only reports the metrics.",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    ece_bins: int = option(
        15,
        help="Equal-width confidence bins of the expected calibration error reported as ps-kd/ece (15, the usual "
        "choice since Guo et al., 2017; the reference code's utils/metric.py uses bin_size 0.1, i.e. 10).",
        validator=v.ge(1),
    )


PAPER = Paper(
    title="Self-Knowledge Distillation with Progressive Refinement of Targets",
    year=2021,
    arxiv="2006.12000",
    authors="Kyungyul Kim, ByeongMoon Ji, Doyoung Yoon, Sangheum Hwang",
    venue="ICCV",
)

_PLAN = "paperkit_ps_kd:claims/mnist1d-mlp.toml"
_SEEDS = tuple(range(100, 110))  # 10 seeds; seeds 0-2 were used for the learning-rate sweep (see the plan)
_QUICK = ("run.epochs=15",)
_QUICK_SEEDS = (100, 101, 102)

method = Method(
    key="ps-kd",
    summary="Progressive self-knowledge distillation: train on (1 - alpha_t) * label + alpha_t * the model's own "
    "prediction for the sample in the previous epoch, alpha_t growing linearly to alpha_T; reports ECE and AURC.",
    paper=PAPER,
    hooks=("continual_step", "evaluate"),
    implementation="paperkit_ps_kd.hooks:PsKd",
    config=PsKdConfig,
    touches=("targets", "metrics"),
    section="transform",
    batch_keys=("target",),
    before=("mixup",),  # mixup must mix PS-KD's per-sample targets, not PS-KD read rows of mixed samples
    claims=(
        Claim(
            id="accuracy",
            statement="PS-KD improves the test accuracy of the same network trained with plain cross-entropy "
            "(abstract; Tables 1-2: lower top-1 error than the baseline for every network on CIFAR-100 and ImageNet).",
            plan=_PLAN,
            metric="classification/accuracy",
            variant="ps-kd",
            baseline="cross-entropy",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="calibration",
            statement="PS-KD gives better calibrated confidences than plain cross-entropy: a lower expected "
            "calibration error on the test set (abstract; Tables 1-2, ECE column: lower for five of the six "
            "networks, e.g. PreAct ResNet-18 on CIFAR-100 11.84 -> 1.77).",
            plan=_PLAN,
            metric="ps-kd/ece",
            variant="ps-kd",
            baseline="cross-entropy",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["PAPER", "PsKdConfig", "method"]
