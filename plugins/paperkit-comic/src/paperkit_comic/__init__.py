"""paperkit plugin: COMIC (Correction → ModificatIon → balanCe), Zhang et al., ICCV 2023, "Learning in Imperfect
Environment: Multi-Label Classification with Long-Tailed Distribution and Partial Labels".

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_comic.functional`; :mod:`paperkit_comic.hooks` wires it to the engine as the
plan's ``loss`` on multi-label tasks.

Defaults come from the authors' release (github.com/wannature/COMIC, commit 1de14e5; no license file): the
PLT-COCO configuration ``config/coco/resnet50_plt.yaml``, its loss ``loss/PriorFocalModifierLoss.py``, the label
corrector ``loss/ReflectiveLabelCorrectorLoss.py`` and the training loop ``models/BalancedlNetwork.py``. The paper's
PDF could not be read here (only its abstract), so no equation number is cited.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

UNOBSERVED = ("negative", "ignore")


@attrs.define
class ComicConfig:
    """COMIC's Correction (reflective label corrector) and Modification (multi-focal modifier) as one loss."""

    gamma_pos: float = option(
        0.0,
        help="gamma+, focusing exponent of positive entries, (1 - p)^gamma+ (authors' resnet50_plt.yaml "
        "loss_params gamma_pos 0; also ASL's default, Ridnik et al. 2021).",
        validator=v.ge(0.0),
    )
    gamma_neg: float = option(
        3.0,
        help="gamma-, focusing exponent of negative entries before the head-tail term: p_m^(gamma- + w_c) "
        "(authors' resnet50_plt.yaml gamma_neg 3 and ReflectiveLabelCorrectorLoss gamma_neg 3; ASL uses 4).",
        validator=v.ge(0.0),
    )
    clip: float = option(
        0.05,
        help="Probability margin m of negatives, p_m = max(p - m, 0) (ASL's probability shifting; authors' "
        "resnet50_plt.yaml clip 0.05 and the corrector's clip 0.05). 0 switches it off.",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    head_tail: bool = option(
        True,
        help="The head-tail modifier: every entry of label c is weighted by w_c = (1 - log(n_c / n_max))^k and w_c "
        "is added to gamma- (authors' PriorFocalModifierLoss / MultiGrainedFocalLoss). false: w_c = 1, nothing "
        "added (plain ASL).",
    )
    weight_exponent: float = option(
        1 / 3,
        help="k in w_c = (1 - log(n_c / n_max))^k, n_c the observed training positives of label c (authors' "
        "PriorFocalModifierLoss.create_weight, the configured loss: 1/3; MultiGrainedFocalLoss uses 1/6).",
        validator=v.gt(0.0),
    )
    correction: bool = option(
        True,
        help="The reflective label corrector: unobserved entries the model scores above the class-aware threshold "
        "are recalled as positives and learned from in a second term (authors' BalancedlNetwork: "
        "PerformanceLoss + 0.2 * ReflectiveLabelCorrectorLoss).",
    )
    tau: float = option(
        0.7,
        help="tau: an unobserved entry is recalled when sigmoid(z) > tau and above its label's batch-mean "
        "prediction (the class-aware threshold; ReflectiveLabelCorrectorLoss default tau 0.7).",
        validator=[v.gt(0.0), v.lt(1.0)],
    )
    margin: float = option(
        1.0,
        help="Logit margin subtracted from observed positives in the corrector, z - margin*y "
        "(ReflectiveLabelCorrectorLoss default margin 1.0). 0 switches it off.",
        validator=v.ge(0.0),
    )
    correction_weight: float = option(
        0.2,
        help="lambda, weight of the corrector term added to the multi-focal modifier term (BalancedlNetwork.train: "
        "0.2 * rlc_loss).",
        validator=v.ge(0.0),
    )
    correction_exponent: float = option(
        1 / 6,
        help="k' of the corrector's label weights (1 - log(n'_c / n'_max))^k', n'_c the observed positives plus "
        "the labels recalled so far this epoch (ReflectiveLabelCorrectorLoss: 1/6, counts reset every epoch).",
        validator=v.gt(0.0),
    )
    unobserved: str = option(
        "negative",
        help="What an unobserved entry (batch['label_mask'] 0) is before correction: negative (the paper's PLT-MLC "
        "setting, where missing labels are simply absent, i.e. 0) or ignore (left out of the loss unless "
        "recalled, as the built-in binary-cross-entropy does).",
        validator=v.in_(UNOBSERVED),
    )
    detach_focal: bool = option(
        True,
        help="Treat the focusing factors (1 - p_t)^gamma as constants in the gradient (authors' resnet50_plt.yaml "
        "disable_torch_grad_focal_loss true; ASL's option of the same name).",
    )


PAPER = Paper(
    title="Learning in Imperfect Environment: Multi-Label Classification with Long-Tailed Distribution and Partial "
    "Labels",
    year=2023,
    arxiv="2304.10539",
    authors="Wenqiao Zhang, Changshuo Liu, Lingze Zeng, Beng Chin Ooi, Siliang Tang, Yueting Zhuang",
    venue="ICCV",
    url="https://github.com/wannature/COMIC",
)

_STATEMENT = (
    "On partially labelled, long-tailed multi-label data (PLT-MLC), COMIC's correction of missing labels over a "
    "class-aware threshold and its multi-focal modifier loss reach a higher mAP than {baseline} at the same "
    "training budget (abstract; PLT-COCO and PLT-VOC tables). Our loss leaves out the Balance stage (three "
    "networks)."
)

method = Method(
    key="comic",
    summary="COMIC's loss for partially labelled long-tailed multi-label data: a multi-focal modifier (ASL-style "
    "focusing with head-tail label weights) plus a term on missing labels recalled over a class-aware threshold.",
    paper=PAPER,
    hooks=("loss",),
    implementation="paperkit_comic.hooks:Comic",
    config=ComicConfig,
    touches=("loss", "targets"),
    honours=("target", "weight"),
    kinds=("multi-label",),
    license="Apache-2.0",
    claims=(
        Claim(
            id="map-vs-bce",
            statement=_STATEMENT.format(baseline="binary cross-entropy (paperkit's, which ignores unobserved labels)"),
            plan="paperkit_comic:claims/plt-multi-label.toml",
            metric="multi-label/mAP",
            variant="comic",
            baseline="binary-cross-entropy",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.epochs=4",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="map-vs-bce-negative",
            statement=_STATEMENT.format(
                baseline="binary cross-entropy with missing labels as negatives (the paper's BCE baseline)"
            ),
            plan="paperkit_comic:claims/plt-multi-label.toml",
            metric="multi-label/mAP",
            variant="comic",
            baseline="bce-negative",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.epochs=4",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="correction-helps",
            statement="Adding the reflective label corrector to the multi-focal modifier raises mAP (the paper's "
            "ablation of Correction; abstract: 'learn from these recall labels during training').",
            plan="paperkit_comic:claims/plt-multi-label.toml",
            metric="multi-label/mAP",
            variant="comic",
            baseline="mfm",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.epochs=4",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["ComicConfig", "PAPER", "UNOBSERVED", "method"]
