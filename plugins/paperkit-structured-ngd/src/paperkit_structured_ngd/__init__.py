"""Structured (inverse-free, Kronecker-factored) natural-gradient descent of Lin et al. (ICML 2023) for paperkit.

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_structured_ngd.functional`; :mod:`paperkit_structured_ngd.hooks` wires it to the
engine. Defaults are the authors' code, yorkerlin/StructuredNGD-DL: ``main.py``'s command-line defaults and the
``LocalOptimizer`` (``optimizers/local_cov.py``) constants; ``faster`` as the experiment scripts pass it.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["PAPER", "StructuredNgdConfig", "method"]

_UNIT = [v.ge(0.0), v.lt(1.0)]


def _steps_pair(instance: object, attribute: attrs.Attribute, value: tuple[int, int]) -> None:
    if len(value) != 2 or not all(isinstance(s, int) and s >= 0 for s in value) or value[0] > value[1]:
        raise ValueError(f"'{attribute.name}' must be two step counts 0 <= a <= b: {list(value)}")


def _lrs_pair(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(s >= 0.0 for s in value):
        raise ValueError(f"'{attribute.name}' must be two non-negative factor step sizes: {list(value)}")


@attrs.define
class StructuredNgdConfig:
    """The update's settings; names follow the authors' code (paper symbols in the help)."""

    lr: float = option(
        0.01, help="Step size beta_2 of the weights (main.py --learning_rate default 0.01; the ImageNet-100 scripts "
        "tune it per network, 4e-4 to 4e-3).", validator=v.gt(0.0),
    )
    momentum: float = option(
        0.9, help="Momentum alpha_2 of the preconditioned gradient, m <- alpha_2 m + d (main.py --momentum 0.9).",
        validator=_UNIT,
    )
    damping: float = option(
        5e-3, help="Damping lambda of the Kronecker factors (main.py --damping 5e-3; the ImageNet-100 scripts use "
        "0.005 except repvgg, 0.0005).", validator=v.ge(0.0),
    )
    beta2: float = option(
        0.5, help="Momentum alpha_1 of the factor updates, m_K <- alpha_1 m_K + sym(n_K) (main.py --beta2 0.5).",
        validator=_UNIT,
    )
    weight_decay: float = option(
        3e-3, help="Weight decay gamma added to the preconditioned gradient, as the reference's _step does (main.py "
        "--weight_decay 3e-3; the ImageNet-100 scripts use 0.01).", validator=v.ge(0.0),
    )
    update_freq: int = option(
        10, help="Steps T between factor updates; the Kronecker statistics are recorded on those steps only "
        "(main.py --TCov = --TInv = 10; the scripts use 15 to 60).", validator=[v.ge(1), v.le(1_000_000)],
    )
    lr_cov: float = option(
        1e-2, help="Factor step size beta_1 after the warm-up, K <- K (I - beta_1 m_K) (main.py --lr_cov 1e-2).",
        validator=v.ge(0.0),
    )
    lr_cov_warmup: bool = option(
        True, help="The reference's hard-coded factor warm-up (local_cov.py _update_local): warmup_lrs[0] for steps "
        "<= warmup_steps[0], warmup_lrs[1] for steps < warmup_steps[1], then lr_cov.",
    )
    warmup_steps: tuple[int, int] = option(
        (100, 500), help="Ends of the two warm-up phases of the factor step size (local_cov.py: 100 and 500).",
        validator=_steps_pair,
    )
    warmup_lrs: tuple[float, float] = option(
        (2e-4, 2e-3), help="Factor step sizes of the two warm-up phases (local_cov.py: 2e-4 and 2e-3).",
        validator=_lrs_pair,
    )
    weight_decay_delay: int = option(
        20, help="Weight decay applies from step weight_decay_delay * update_freq on (local_cov.py _step hard-codes "
        "20 * TCov); 0 applies it from the start.", validator=[v.ge(0), v.le(1_000_000)],
    )
    batch_averaged: bool = option(
        True, help="The loss is a batch mean, so the output-gradient factor is rescaled by the batch size "
        "(LocalOptimizer batch_averaged=True, utils/kfac_utils.py ComputeCovG).",
    )
    faster: bool = option(
        True, help="Cache K K^T and C C^T after each factor update and precondition with them (the experiment "
        "scripts' --faster 1); false multiplies by K and C at every step. The same update either way.",
    )


PAPER = Paper(
    title="Simplifying Momentum-based Positive-definite Submanifold Optimization with Applications to Deep Learning",
    year=2023,
    arxiv="2302.09738",
    authors="Wu Lin, Valentin Duruisseaux, Melvin Leok, Frank Nielsen, Mohammad Emtiyaz Khan, Mark Schmidt",
    venue="ICML",
)

_PLAN = "paperkit_structured_ngd:claims/vs-first-order.toml"
_QUICK = ("run.max_steps=60",)

method = Method(
    key="structured-ngd",
    summary="Matrix-inverse-free Kronecker-factored natural gradient (KFAC-like): per layer, factors K, C with "
    "C C^T G K K^T as the preconditioned gradient, updated by momentum in generalized Riemannian normal "
    "coordinates using matrix products only; SGD with momentum on top, and for non-layer parameters.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_structured_ngd.hooks:StructuredNgd",
    config=StructuredNgdConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-sgd",
            statement="The matrix-inverse-free structured NGD update trains deep nets to a better test accuracy than "
            "SGD with momentum under the same number of iterations (Sec. 5, ImageNet-100 / CIFAR-100 CNN "
            "experiments; SGD is one of the reference scripts' baselines).",
            plan=_PLAN, metric="classification/accuracy", variant="structured-ngd", baseline="sgd",
            direction="higher", margin=0.0, seeds=(0, 1, 2, 3, 4), quick=_QUICK, quick_seeds=(0, 1),
        ),
        Claim(
            id="beats-adamw",
            statement="The same update reaches a better test accuracy than AdamW under the same number of "
            "iterations (Sec. 5; AdamW is one of the reference scripts' baselines).",
            plan=_PLAN, metric="classification/accuracy", variant="structured-ngd", baseline="adamw",
            direction="higher", margin=0.0, seeds=(0, 1, 2, 3, 4), quick=_QUICK, quick_seeds=(0, 1),
        ),
    ),
)
