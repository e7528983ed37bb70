"""paperkit plugin: Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by
Self-Distillation (Borup & Andersen, NeurIPS 2021).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_gt_self_distill.functional`; :mod:`paperkit_gt_self_distill.hooks`
wires it to the engine.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _two_references(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    if value and (len(value) != 2 or not all(isinstance(r, str) and r for r in value)):
        raise ValueError(
            f"{attribute.name} takes two weights references, the alpha = 1 student and the alpha = 0 student "
            f"(e.g. ['variant:round0', 'variant:round1-zero']), got {value!r}"
        )


def _clip_for_cross_entropy(instance: Any, attribute: Any, value: bool) -> None:
    if not value and instance.loss == "cross-entropy":
        raise ValueError(
            "clip_alpha = false needs loss = 'mse': targets outside [0, 1] make the cross-entropy unbounded"
        )


@attrs.define
class GtSelfDistillConfig:
    """One round of self-distillation: the teacher, the weight of the labels, the loss."""

    teacher: str | None = option(
        None,
        help="The previous round's model: variant:NAME (that variant of this plan, run first with the same seed: "
        "round1 sets variant:round0, round2 variant:round1) or a weights file. Unset: round 0, the labels alone "
        "(the paper's first fit, Algorithm 1 line 1).",
    )
    alpha: float = option(
        0.6,
        help="alpha, the weight of the ground-truth labels; 1 - alpha weighs the teacher (the paper's convention and "
        "the reference code's: alpha = 0 is pure self-distillation, alpha = 1 repeats the first fit; note that the "
        "built-in distill's alpha weighs the teacher instead). 0.6: the reference README's ResNet-50 command "
        "(Kennethborup/self_distillation, self_distiller.py --alpha 0.6). Ignored without a teacher and when "
        "alpha_from is set.",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    alpha_from: tuple[str, ...] = option(
        (),
        help="Estimate alpha instead (the paper's Algorithm 1): two weights references, the student trained with "
        "alpha = 1 (the round-0 model) and the one trained with alpha = 0 from this round's teacher; alpha is the "
        "least-squares weight of their softmax outputs against the validation labels (task.validation_fraction in the plan).",
        validator=_two_references,
    )
    clip_alpha: bool = option(
        True,
        help="Clip the estimate to [0, 1], the range of the paper's theorems (Algorithm 1 solves over all reals; "
        "an estimate above 1 extrapolates away from the teacher). The raw estimate is reported either way.",
        validator=_clip_for_cross_entropy,
    )
    loss: str = option(
        "mse",
        help="mse: the paper's weighted mean squared error on the softmax outputs, alpha*MSE(p, y) + "
        "(1 - alpha)*MSE(p, p_teacher), as the reference self_distiller.py trains its ResNets; cross-entropy: "
        "the cross-entropy to the mixed targets alpha*y + (1 - alpha)*p_teacher (not in the paper).",
        validator=v.in_(("mse", "cross-entropy")),
    )
    cache: bool = option(
        True,
        help="Compute each training sample's teacher logits once (right when no transform changes the inputs; as "
        "the built-in distill).",
    )


PAPER = Paper(
    title="Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization Imposed by Self-Distillation",
    year=2021,
    arxiv="2102.13088",
    authors="Kenneth Borup, Lars N. Andersen",
    venue="NeurIPS",
)

_PLAN = "paperkit_gt_self_distill:claims/noisy-digits-rounds.toml"
_SEEDS = tuple(range(100, 110))  # seeds 0-2 were used for the learning-rate sweep (see the plan)
_QUICK = ("run.epochs=4",)
_QUICK_SEEDS = (100, 101)

method = Method(
    key="gt-self-distill",
    summary="Iterative self-distillation with ground-truth targets: round k fits alpha*labels + (1 - alpha)*round "
    "k-1's softmax (weighted MSE), the teacher a frozen variant of the plan; alpha fixed or estimated as in Algorithm 1.",
    paper=PAPER,
    hooks=("loss", "after_run"),
    implementation="paperkit_gt_self_distill.hooks:GtSelfDistill",
    config=GtSelfDistillConfig,
    touches=("loss", "targets"),
    honours=("target", "weight"),
    claims=(
        Claim(
            id="one-round",
            statement="One self-distillation step that mixes the ground truth with the teacher (alpha from the "
            "paper's estimate) generalizes better than the model trained on the labels alone (Sec. 5 and the "
            "reference README: distilled ResNets beat the first fit for alpha in (0, 1); abstract: self-distillation "
            "'improves generalization'). Here on digits with 20% symmetric label noise.",
            plan=_PLAN,
            metric="classification/accuracy",
            variant="round1",
            baseline="round0",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="ground-truth-helps",
            statement="Including the ground-truth targets dampens the regularization of repeated self-distillation: "
            "after two steps, alpha in (0, 1) beats pure self-distillation (alpha = 0), which amplifies "
            "regularization at every step and collapses in the limit (title; abstract; Sec. 4 limit theorem).",
            plan=_PLAN,
            metric="classification/accuracy",
            variant="round2-gt",
            baseline="round2-pure",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["GtSelfDistillConfig", "PAPER", "method"]
