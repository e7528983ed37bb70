"""paperkit plugin: weight selection (Xu et al., "Initializing Models with Larger Ones", ICLR 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_weight_selection.functional`; :mod:`paperkit_weight_selection.hooks`
wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _reference(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{attribute.name}' must name the teacher's weights: a file or variant:NAME")


@attrs.define
class WeightSelectionConfig:
    """Options of ``weight-selection``; each help text says where its default comes from."""

    teacher: str = option(
        "variant:large",
        help="The larger pretrained model's weights: a safetensors file, or variant:NAME (that variant of this plan, "
        "trained first; variant:NAME@SEED shares one teacher across seeds, as one pretrained model is in the paper). "
        "It must have the student's module names, with at least as many layers and elements.",
        validator=_reference,
    )
    layers: str = option(
        "first-n",
        help="Layer selection (the paper's method section): 'first-n' gives student layer i the teacher's layer i "
        "(the paper's choice; the reference code does it implicitly by looking each student key up in the teacher); "
        "'uniform' spaces the chosen layers evenly over the teacher's (the alternative the paper compares with; not "
        "in the code).",
        validator=v.in_(("first-n", "uniform")),
    )
    elements: str = option(
        "uniform",
        help="Element selection along every dimension (method section): 'uniform' keeps evenly spaced indices (every "
        "(t/s)-th from 0 when s divides t, else round(linspace(0, t-1, s)); the reference code's only rule, "
        "uniform_element_selection), 'consecutive' the first s, 'random' s random ones (alternatives the paper "
        "compares; not in the code).",
        validator=v.in_(("uniform", "consecutive", "random")),
    )
    consistent: bool = option(
        True,
        help="For elements = 'random': one draw per (teacher size, student size) serves every tensor, so layer l's "
        "kept outputs are layer l+1's kept inputs (the paper's 'consistency'); false draws afresh per tensor and "
        "dimension (its ablation). 'uniform' and 'consecutive' are always consistent.",
    )
    select_head: bool = option(
        False,
        help="Also select the classifier head's weights from the teacher's. The reference code skips keys "
        "containing 'head' by default (target data differs from the teacher's) and says to remove that "
        "constraint when the data set is the same.",
    )


PAPER = Paper(
    title="Initializing Models with Larger Ones",
    year=2024,
    arxiv="2311.18823",
    authors="Zhiqiu Xu, Yanjie Chen, Kirill Vishniakov, Yida Yin, Zhiqiang Shen, Trevor Darrell, Lingjie Liu, "
    "Zhuang Liu",
    venue="ICLR",
)

method = Method(
    key="weight-selection",
    summary="Initialize a small model from a larger pretrained one of the same family: its first N layers, "
    "and in every tensor evenly spaced elements, the same indices from layer to layer.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_weight_selection.hooks:WeightSelection",
    config=WeightSelectionConfig,
    touches=("parameters",),
    claims=(
        Claim(
            id="headline",
            statement="A small model initialized by weight selection from a larger pretrained model of its family "
            "reaches a higher accuracy than from random initialization, and in less training (abstract; the authors' "
            "README: ViT-T on CIFAR-100 72.4 -> 81.4 from ViT-S). Here: an MLP of width 32, depth 2, selected from a "
            "digits-trained MLP of width 64, depth 4, has a higher test accuracy after 1 epoch.",
            plan="paperkit_weight_selection:claims/headline.toml",
            metric="classification/accuracy",
            variant="weight-selection",
            baseline="random-init",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.max_steps=5",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="with-distillation",
            statement="Weight selection can be used together with knowledge distillation, improving on distillation "
            "alone (abstract). Here: the same student distilled from the same teacher (T = 4, alpha = 0.9) has a "
            "higher test accuracy after 1 epoch when it starts from the teacher's selected weights.",
            plan="paperkit_weight_selection:claims/headline.toml",
            metric="classification/accuracy",
            variant="weight-selection-distill",
            baseline="distill",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.max_steps=5",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="wide-teacher",
            statement="The headline claim with a teacher 8 times wider than the student (width 256, depth 4, to "
            "width 32, depth 2; the paper's pairs halve the width): higher test accuracy after 1 epoch than random "
            "initialization.",
            plan="paperkit_weight_selection:claims/headline.toml",
            metric="classification/accuracy",
            variant="weight-selection-wide",
            baseline="random-init",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.max_steps=5",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "WeightSelectionConfig", "method"]
