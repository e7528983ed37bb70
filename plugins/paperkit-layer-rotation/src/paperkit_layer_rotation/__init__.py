"""paperkit plugin: layer rotation and Layca (Carbonnelle & De Vleeschouwer, 2019).

Two methods from one paper: ``layer-rotation`` monitors the cosine distance of
every layer from its initialization (curves, a plot and a summary), and
``layca`` is an optimizer that controls that rotation through the learning
rate. This module holds only the records (no torch); the math is in
:mod:`paperkit_layer_rotation.functional`, the hook shells in
:mod:`paperkit_layer_rotation.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class LayerRotationConfig:
    """When to measure and whether to draw."""

    every: int = option(
        0, help="Measure every N optimizer steps; 0 measures at the end of every epoch (the paper's curves are per epoch).",
        validator=v.ge(0),
    )
    plot: bool = option(True, help="Write layer-rotation.png (the paper's layer rotation curves) into the run directory.")


def _fractions(instance: object, attribute: attrs.Attribute, value: list[float]) -> None:
    if any(not 0.0 < f < 1.0 for f in value) or any(a >= b for a, b in zip(value, value[1:])):
        raise ValueError(f"'{attribute.name}' must be increasing fractions in (0, 1): {list(value)}")


@attrs.define
class LaycaConfig:
    """Layca on top of SGD; defaults from the authors' PyTorch example (layer-rotation-tools)."""

    lr: float = option(3**-3, help="Rotation of every kernel per step: atan(lr) radians (3^-3: 2.1 degrees), the rate of the authors' PyTorch example.", validator=v.gt(0.0))
    momentum: float = option(0.0, help="SGD momentum of the step Layca normalizes (0 in the authors' example).", validator=[v.ge(0.0), v.lt(1.0)])
    others: Literal["sgd", "frozen"] = option(
        "sgd",
        help="Everything but the non-zero kernels (biases, norm scales, zero-initialized weights): 'sgd' takes the plain SGD "
        "step (authors' PyTorch example), "
        "'frozen' leaves them untrained (authors' Keras paper experiments, layca_optimizers.py).",
        validator=v.in_(["sgd", "frozen"]),
    )
    decay_at: list[float] = option(
        attrs.Factory(lambda: [0.7, 0.9]),
        help="Fractions of the experience's steps after which the learning rate is multiplied by decay_factor "
        "(the authors' PyTorch example divides it by 5 at epochs 70 and 90 of 100); [] keeps it constant.",
        validator=_fractions,
    )
    decay_factor: float = option(0.2, help="Learning-rate multiplier at each decay_at point (1/5 in the authors' PyTorch example).",
                                 validator=[v.gt(0.0), v.le(1.0)])
    alpha: float = option(
        0.0,
        help="The paper's layer-wise rate configurations (its systematic study; authors' get_learning_rate_multipliers): 0 rotates every "
        "kernel alike; alpha > 0 slows the layers near the input (the first by (1-alpha)^5), alpha < 0 those near the output "
        "(the last by (1+alpha)^5). The paper's study used -0.8 to 0.8 with others = 'frozen'.",
        validator=[v.gt(-1.0), v.lt(1.0)],
    )


PAPER = Paper(
    title="Layer rotation: a surprisingly powerful indicator of generalization in deep networks?",
    year=2019,
    arxiv="1806.01603",
    authors="Simon Carbonnelle, Christophe De Vleeschouwer",
    venue="ICML 2019 Workshop on Identifying and Understanding Deep Learning Phenomena",
)

layer_rotation_method = Method(
    key="layer-rotation",
    summary="Layer rotation: per-layer cosine distance between current and initial weights, logged, plotted and summarized.",
    paper=PAPER,
    hooks=("before_experience", "after_step", "after_run"),
    implementation="paperkit_layer_rotation.hooks:LayerRotation",
    config=LayerRotationConfig,
    touches=("metrics",),
    claims=(
        Claim(
            id="rotation-predicts-generalization",
            statement="Larger cosine distances between each layer's final and initial weights translate into better "
            "generalization (abstract; the paper's systematic study of layer rotation configurations with Layca, each run "
            "trained to a training-loss stopping criterion): with Layca at the authors' rate 3^-3, layers rotate more and "
            "test accuracy is higher than at a rate of 3^-5, with both arms trained until they fit the training set "
            "(120 epochs each, the smallest shared budget at which the 3^-5 arm reaches training loss <= 5e-3; chosen on "
            "seeds 10-11).",
            plan="paperkit_layer_rotation:claims/layca-rotation.toml",
            metric="classification/accuracy",
            variant="high-rotation",
            baseline="low-rotation",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=60",),
            quick_seeds=(0, 1, 2),
        ),
    ),
)


layca_method = Method(
    key="layca",
    summary="Layca: SGD whose per-layer step is projected orthogonally to the weights and normalized, so the learning rate sets the layer rotation rate.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_layer_rotation.hooks:LaycaMethod",
    config=LaycaConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
)

__all__ = ["LaycaConfig", "LayerRotationConfig", "PAPER", "layca_method", "layer_rotation_method"]
