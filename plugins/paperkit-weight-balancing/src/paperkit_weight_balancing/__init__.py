"""paperkit plugin: weight balancing for long-tailed recognition (Alshammari et al., CVPR 2022), as analysed
and simplified by Hasegawa & Sato, "Exploring Weight Balancing on Long-Tailed Recognition Problem" (ICLR 2024).

This module holds only the records and their configs (no torch): ``paperkit plugins`` imports it to list
the methods. The math lives in :mod:`paperkit_weight_balancing.functional`;
:mod:`paperkit_weight_balancing.hooks` wires it to the engine. Three records:

* ``weight-balancing``: WB's second stage (classifier retraining with the class-balanced loss, weight
  decay and MaxNorm); stage 1 is the plan's cross-entropy with SGD weight decay (see the claim plan).
* ``weight-balancing-one-stage``: Hasegawa & Sato's one-stage recipe (weight decay, feature
  regularization, a fixed ETF classifier), and ``multiplicative-logit-adjustment``, its post-hoc step.
* ``fisher-discriminant-ratio``: their analysis metric, Fisher's discriminant ratio of the features.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

HASEGAWA = "HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem"
ALSHAMMARI = "ShadeAlsha/LTR-weight-balancing"


@attrs.define
class WeightBalancingConfig:
    """WB's second stage; defaults are Alshammari et al.'s demo 2 (CIFAR-100-LT), which Hasegawa & Sato keep."""

    weight_decay: float = option(
        0.1,
        help="lambda of the weight decay g <- g + lambda theta on the parameters that train (the classifier): "
        f"0.1 ({ALSHAMMARI} demo2_second-stage-training, SGD weight_decay). Leave the optimizer's own "
        "weight_decay at 0.",
        validator=v.ge(0.0),
    )
    max_norm: float = option(
        0.1,
        help="MaxNorm radius as a fraction t of the classifier's norm range at the start: delta = min||w_c|| + "
        f"t (max||w_c|| - min||w_c||) (thresh = 0.1, {ALSHAMMARI} demo 2 and {HASEGAWA} set_norm).",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    max_norm_every: Literal["epoch", "step", "never"] = option(
        "epoch",
        help="When the rows are projected onto the MaxNorm ball: after every epoch (both references' train_model "
        "call PGD once per epoch), after every step, or never (no MaxNorm).",
    )
    cb_beta: float = option(
        0.9999,
        help="beta of the class-balanced weights (1 - beta) / (1 - beta^n_c) (Cui et al., 2019); 0.9999 in both "
        "references' stage 2 (CB_loss(..., 'softmax', 0.9999, 2.0)); 1: inverse frequency; 0: plain cross-entropy.",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    cb_form: Literal["softmax-ce", "softmax-bce"] = option(
        "softmax-ce",
        help=f"softmax-ce: weighted softmax cross-entropy ({HASEGAWA} CB_loss 'softmax'); softmax-bce: binary "
        f"cross-entropy of the softmax probabilities, what {ALSHAMMARI}'s demo computes (vandit15's CB_loss).",
    )
    retrain: Literal["classifier", "all"] = option(
        "classifier",
        help="classifier: freeze everything but the classifier (WB's stage 2, Alshammari et al. Sec. 4); all: train "
        "every parameter (the class-balanced loss, WD and MaxNorm in one stage, an ablation).",
    )
    head: str = option("head", help="Name of the model's linear classifier (paperkit's models call it head).")


@attrs.define
class OneStageConfig:
    """Hasegawa & Sato's one-stage recipe; defaults are their CIFAR-10-LT JSONs (jsons/Cifar10/first.json, second.json)."""

    weight_decay: float = option(
        5e-3,
        help=f"lambda of the weight decay on every trainable parameter but the fixed classifier (5e-3, {HASEGAWA} "
        "jsons/Cifar10/first.json; Alshammari et al.'s stage 1 uses the same value).",
        validator=v.ge(0.0),
    )
    feature_regularization: float = option(
        0.01,
        help="zeta of the feature penalty zeta/2 mean ||h||^2 on the penultimate features "
        f"(features_regularization = 0.01, {HASEGAWA} jsons/Cifar10/first.json).",
        validator=v.ge(0.0),
    )
    etf: Literal["draw", "keep", "off"] = option(
        "draw",
        help=f"draw: replace the classifier by a fixed simplex ETF with a trainable bias (use_etf = true, "
        f"train_etf_norm = false, {HASEGAWA} jsons/Cifar10/first.json); keep: the classifier weight was loaded from a "
        "run that drew it (run.init_from): keep it fixed as it is, bias included; off: a learned classifier that "
        "takes weight decay like the rest.",
    )
    head: str = option("head", help="Name of the model's linear classifier (paperkit's models call it head).")


@attrs.define
class LogitAdjustmentConfig:
    """The post-hoc step of the one-stage recipe (Hasegawa & Sato's second.py with 0 epochs)."""

    tau: float = option(
        1.6,
        help="tau of the multiplicative logit adjustment z_c <- pi_c^(-tau) z_c (pi_c: the training class frequencies), "
        f"folded into the classifier (1.6 for CIFAR-10-LT, 0.65 for CIFAR-100-LT, {HASEGAWA} jsons/*/second.json); "
        "0: none.",
        validator=v.ge(0.0),
    )
    head: str = option("head", help="Name of the model's linear classifier (paperkit's models call it head).")


@attrs.define
class FisherRatioConfig:
    """What the Fisher discriminant ratio is computed on."""

    train_set: bool = option(
        True,
        help=f"Also report the ratio on the training set (the reference's calc_fdr is run on both, {HASEGAWA} "
        "utils/trainval.py).",
    )


PAPER = Paper(
    title="Exploring Weight Balancing on Long-Tailed Recognition Problem",
    year=2024,
    arxiv="2305.16573",
    authors="Naoya Hasegawa, Issei Sato",
    venue="ICLR",
)

ORIGINAL = Paper(
    title="Long-Tailed Recognition via Weight Balancing",
    year=2022,
    arxiv="2203.14197",
    authors="Shaden Alshammari, Yu-Xiong Wang, Deva Ramanan, Shu Kong",
    venue="CVPR",
)

PLAN = "paperkit_weight_balancing:claims/long-tail.toml"

#: The CI budget: every producer 4 epochs, every arm 2 (the arms stay equal), two seeds.
QUICK = (
    *(f"variants.{v}.run.epochs=4" for v in ("ce-stage1", "ce-matched-stage1", "wd-stage1", "one-stage-stage1")),
    *(f"variants.{v}.run.epochs=2" for v in ("ce", "ce-matched", "stage1-wd", "wb", "one-stage-train", "one-stage")),
)
SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)

CLAIMS = (
    Claim(
        id="wb-tail-accuracy",
        statement="Weight balancing (stage 1: cross-entropy with weight decay; stage 2: the classifier retrained with "
        "the class-balanced loss, weight decay and MaxNorm) raises the accuracy on the tail classes over plain "
        "cross-entropy training, which favours the head classes (Alshammari et al., Sec. 1 and Fig. 1, per-class "
        "accuracy on CIFAR-100-LT).",
        plan=PLAN,
        metric="classification/tail_accuracy",
        variant="wb",
        baseline="ce",
        seeds=SEEDS,
        quick=QUICK,
        paper=ORIGINAL,
    ),
    Claim(
        id="wb-accuracy",
        statement="Weight balancing reaches a higher accuracy on the balanced test set than plain cross-entropy "
        "(Alshammari et al., Table 1; CIFAR-100-LT, ratio 100: about 39% for the naive model, above 52% for WB, "
        f"{ALSHAMMARI} README).",
        plan=PLAN,
        metric="classification/accuracy",
        variant="wb",
        baseline="ce",
        seeds=SEEDS,
        quick=QUICK,
        paper=ORIGINAL,
    ),
    Claim(
        id="second-stage",
        statement="The second stage matters: retraining the classifier with the class-balanced loss, weight decay and "
        "MaxNorm beats the stage-1 model (cross-entropy with weight decay) trained for the same epochs "
        "(Alshammari et al., Sec. 4; Hasegawa & Sato, Sec. 5).",
        plan=PLAN,
        metric="classification/accuracy",
        variant="wb",
        baseline="stage1-wd",
        seeds=SEEDS,
        quick=QUICK,
        paper=ORIGINAL,
    ),
    Claim(
        id="fdr-weight-decay",
        statement="Weight decay with cross-entropy raises Fisher's discriminant ratio of the features the first stage "
        "learns (Hasegawa & Sato, abstract and Sec. 4), measured on the training set, against the same training "
        "without weight decay.",
        plan=PLAN,
        metric="fisher-discriminant-ratio/train",
        variant="stage1-wd",
        baseline="ce-matched",
        seeds=SEEDS,
        quick=QUICK,
    ),
)

ONE_STAGE_CLAIMS = (
    Claim(
        id="one-stage-vs-wb",
        statement="Training in one stage with weight decay, feature regularization and a fixed ETF classifier, then "
        "adjusting the logits multiplicatively, is more accurate than two-stage weight balancing (Hasegawa & Sato, "
        "abstract: 'reducing the number of training stages to one while increasing accuracy').",
        plan=PLAN,
        metric="classification/accuracy",
        variant="one-stage",
        baseline="wb",
        seeds=SEEDS,
        quick=QUICK,
    ),
)

method = Method(
    key="weight-balancing",
    summary="Weight balancing's second stage: retrain only the classifier of a weight-decayed model with the "
    "class-balanced loss, weight decay and MaxNorm.",
    paper=PAPER,
    also=(ORIGINAL,),
    hooks=("adapt", "optimize", "loss", "after_step"),
    implementation="paperkit_weight_balancing.hooks:WeightBalancing",
    config=WeightBalancingConfig,
    touches=("parameters", "gradients", "loss", "weights"),
    honours=("target", "weight"),
    claims=CLAIMS,
)

one_stage_method = Method(
    key="weight-balancing-one-stage",
    summary="Hasegawa & Sato's one-stage weight balancing: weight decay, feature regularization and a fixed ETF "
    "classifier (then multiplicative-logit-adjustment, post hoc).",
    paper=PAPER,
    also=(ORIGINAL,),
    hooks=("adapt", "optimize", "regularize"),
    implementation="paperkit_weight_balancing.hooks:OneStage",
    config=OneStageConfig,
    touches=("parameters", "gradients", "loss"),
    claims=ONE_STAGE_CLAIMS,
)

logit_adjustment_method = Method(
    key="multiplicative-logit-adjustment",
    summary="Post-hoc multiplicative logit adjustment z_c <- pi_c^(-tau) z_c, folded into a trained model's classifier "
    "(the last step of Hasegawa & Sato's one-stage recipe).",
    paper=PAPER,
    hooks=("adapt",),
    implementation="paperkit_weight_balancing.hooks:LogitAdjustment",
    config=LogitAdjustmentConfig,
    touches=("parameters",),
)

fisher_method = Method(
    key="fisher-discriminant-ratio",
    summary="Fisher's discriminant ratio tr(S_W^-1 S_B) of the penultimate features on the test and training sets.",
    paper=PAPER,
    hooks=("evaluate",),
    implementation="paperkit_weight_balancing.hooks:FisherRatio",
    config=FisherRatioConfig,
    touches=("metrics",),
)

__all__ = [
    "ALSHAMMARI",
    "FisherRatioConfig",
    "HASEGAWA",
    "LogitAdjustmentConfig",
    "ORIGINAL",
    "OneStageConfig",
    "PAPER",
    "WeightBalancingConfig",
    "fisher_method",
    "logit_adjustment_method",
    "method",
    "one_stage_method",
]
