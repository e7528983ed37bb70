"""paperkit plugin: Neural Redshift (Teney, Nicolicioiu, Hartmann & Abbasnejad, CVPR 2024).

A diagnostic: the complexity of the function a network implements, measured on a dense grid over a fixed 2-D
slice of its input space, before training (the random network, the paper's object) and after it. This module holds
only the record and its config (no torch); the math lives in :mod:`paperkit_neural_redshift.functional`, the hook
shells in :mod:`paperkit_neural_redshift.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _positive_or_none(_instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not value > 0.0:
        raise ValueError(f"{attribute.name} must be > 0 or unset, got {value!r}")


@attrs.define
class NeuralRedshiftConfig:
    """Where the grid lies and when to measure."""

    grid: int = option(
        64,
        help="Points per side of the square grid (grid² inputs). The paper evaluates its R²->R networks on a "
        "dense regular grid; the co-author's code (ArmandNM/neural-redshift, scripts/visualization.py) uses 300 "
        "per side. 64 is our choice for cost: frequencies up to the Nyquist limit of 32 cycles per side are "
        "resolved, and white noise measures 24.5.",
        validator=[v.ge(8), v.le(512)],
    )
    radius: float | None = option(
        None,
        help="Half-side of the square, in input units: the grid spans [-radius, radius)² along the two "
        "directions. Unset: the root-mean-square distance of the first evaluation set's inputs from the centre, "
        "so the slice covers the region the data occupies (the paper's inputs are 2-D and its grid is [-1, 1]², "
        "the co-author code's X1, X2, Y1, Y2; a 64-D input has no such natural box).",
        validator=_positive_or_none,
    )
    center: Literal["mean", "origin"] = option(
        "mean",
        help="Centre of the slice: 'mean', the mean of the first evaluation set's inputs; 'origin', the zero "
        "input (the paper's grid is centred on the origin of its input plane). The same for standardized tasks.",
        validator=v.in_(["mean", "origin"]),
    )
    phases: Literal["initial", "all"] = option(
        "all",
        help="'all': measure at every evaluation (before training, then after every experience), as the paper "
        "compares the complexity at initialization with that of the trained model (its section on trained models); "
        "'initial': only before training, the random networks of its main analysis. The initial values always land "
        "in the run summary as initial/<name>.",
        validator=v.in_(["initial", "all"]),
    )


PAPER = Paper(
    title="Neural Redshift: Random Networks are not Random Functions",
    year=2024,
    arxiv="2403.02241",
    authors="Damien Teney, Armand Mihai Nicolicioiu, Valentin Hartmann, Ehsan Abbasnejad",
    venue="CVPR 2024",
)

_PLAN = "paperkit_neural_redshift:claims/components.toml"
_METRIC = "neural-redshift/initial/mean_frequency"
_SEEDS = tuple(range(100, 120))  # 20 random networks per arm; seeds 0-19 were used to design the plan
_QUICK_SEEDS = tuple(range(100, 106))
_SCALE = (
    " Scale-down: the paper samples MLPs with 2-D inputs and one output (weights and biases uniform) and "
    "measures them on a grid over [-1, 1]²; here the embedded MLP (width 128, PyTorch's default initialization) "
    "on the digits task, measured on a 64×64 grid over a random 2-D slice of its 64-D input space (centred on the "
    "inputs' mean, half-side their RMS distance from it), averaged over its 10 logits, never trained, 20 random "
    "networks per arm."
)

method = Method(
    key="neural-redshift",
    summary="Neural Redshift: the complexity of the function the network implements on a fixed 2-D slice of its "
    "input space (mean spatial frequency of its outputs, weighted by Fourier magnitude; Lempel-Ziv phrases of "
    "its binarized outputs), measured before training (the random network) and after each experience.",
    paper=PAPER,
    hooks=("evaluate", "after_run"),
    implementation="paperkit_neural_redshift.hooks:NeuralRedshift",
    config=NeuralRedshiftConfig,
    touches=("metrics",),
    kinds=("class", "multi-label", "regression"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="relu-vs-sine",
            statement="Random networks are biased to a level of complexity set by their components: with ReLUs "
            "they implement low-frequency functions, while with sine activations (and other periodic or "
            "large-magnitude activations) they implement high-frequency ones (abstract; the paper's analysis of "
            "activation functions). Here: the mean frequency of a random 8-block ReLU MLP is lower than that of the same MLP "
            "with sine activations sin(30·x) (the core's SIREN unit; the 30 is the paper's 'prefactor before each "
            "activation')." + _SCALE,
            plan=_PLAN,
            metric=_METRIC,
            variant="relu-8",
            baseline="sine-8",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="relu-depth",
            statement="ReLU networks keep their simplicity bias at any depth (the paper's contributions, as quoted "
            "in a reader's summary: 'ReLU networks also have the unique property of maintaining their simplicity bias "
            "for any depth and weight magnitudes'). Here, a "
            "non-inferiority claim: the mean frequency of a random 8-block ReLU MLP exceeds that of a 1-block one "
            "by less than 0.5 cycles per side ('lower' with margin -0.5)." + _SCALE,
            plan=_PLAN,
            metric=_METRIC,
            variant="relu-8",
            baseline="relu-1",
            direction="lower",
            margin=-0.5,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="relu-depth-hann",
            statement="The same non-inferiority claim as relu-depth (ReLU networks keep their simplicity bias at "
            "any depth), measured with our windowed variant of the Fourier measure (each map's "
            "mean removed and a separable Hann window applied before the DFT, which removes the edge-jump leakage "
            "that gives even a linear map 8.6 cycles per side on the paper's unwindowed DFT, and 1.7 here): the "
            "8-block ReLU MLP exceeds the 1-block one by less than 0.5 cycles per side." + _SCALE,
            plan=_PLAN,
            metric="neural-redshift/initial/mean_frequency_hann",
            variant="relu-8",
            baseline="relu-1",
            direction="lower",
            margin=-0.5,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="residual-lowers",
            statement="Residual connections push the preferred complexity down, for every activation (abstract: "
            "the simplicity bias 'depends on components such as ReLUs, residual connections, and layer "
            "normalizations'; the paper's analysis of residual connections). Here: the random 8-block sine MLP with residual "
            "blocks x + W2·sin(30·W1·x) has a lower mean frequency than the plain one." + _SCALE,
            plan=_PLAN,
            metric=_METRIC,
            variant="sine-8-residual",
            baseline="sine-8",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["NeuralRedshiftConfig", "PAPER", "method"]
