"""paperkit plugin: diagonal state-space models and their initializations (S4D; S4-PTD).

One method, two papers: Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of
Diagonal State Space Models" (NeurIPS 2022; S4D-Lin, S4D-Inv, S4D-LegS), and Yu, Nigmetov,
Morozov, Mahoney & Erichson, "Robustifying State-space Models for Long Sequences via Approximate
Diagonalization" (ICLR 2024; perturb-then-diagonalize, S4-PTD). Each has one claim.

The distribution also registers a model, ``s4d`` (``paperkit.models`` entry point): the small S4D
classifier of the reference repository's ``example.py`` (encoder, residual S4D blocks with the
FFT convolution kernel, mean pooling, head), which the method initializes.

This module holds only the records and their configs (no torch): ``paperkit plugins`` imports it
to list the method and the model. The math lives in :mod:`paperkit_s4d_init.functional`, the
layers in :mod:`paperkit_s4d_init.layers`; :mod:`paperkit_s4d_init.hooks` wires the init to the
engine.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, ModelSpec, Paper, option

SCHEMES = ("lin", "inv", "legs", "ptd", "random")


def _dt_max_above_min(instance: object, attribute: attrs.Attribute, value: float) -> None:
    dt_min = instance.dt_min  # type: ignore[attr-defined]
    if value < dt_min:
        raise ValueError(f"'{attribute.name}' ({value}) must be at least dt_min ({dt_min})")


def _ptd_takes_no_rescaling(instance: S4dInitConfig, attribute: attrs.Attribute, value: str) -> None:
    if value == "ptd" and (instance.real_random or instance.real_scale != 1.0 or instance.imag_scale != 1.0):
        raise ValueError(
            "scheme 'ptd' takes its eigenvalues from A + E as they are; real_random, real_scale and imag_scale "
            "apply to lin, inv, legs and random only"
        )


@attrs.define
class S4dInitConfig:
    """Options of ``s4d-init``; each help text says where its default comes from."""

    scheme: Literal["lin", "inv", "legs", "ptd", "random"] = option(
        "lin",
        help="Initialization of the diagonal A (and of B, folded into C). 'lin': S4D-Lin, A_n = -1/2 + iπn (S4D "
        "paper Sec. 4; models/s4/s4d.py's default). 'inv': S4D-Inv, A_n = -1/2 + i(N/π)(N/(2n+1) - 1). 'legs': "
        "S4D-LegS, the eigenvalues of the normal part of HiPPO-LegS with B = V*B_LegS (imaginary part clipped "
        "to ±2, dplr.py). 'ptd': perturb-then-diagonalize (Yu et al., ICLR 2024): eigenvalues Λ of "
        "A_LegS + E, B = V⁻¹B_LegS, C = C₀V. 'random': the repository's init='rand' ablation, Im(A) = exp(N(0,1)).",
        validator=[v.in_(SCHEMES), _ptd_takes_no_rescaling],
    )
    dt_min: float = option(
        0.001, help="Δ is drawn log-uniformly between dt_min and dt_max, one per channel (S4D paper; s4d.py dt_min=0.001).",
        validator=[v.gt(0.0), v.le(1.0)],
    )
    dt_max: float = option(
        0.1, help="Upper end of the log-uniform Δ range (s4d.py dt_max=0.1).",
        validator=[v.gt(0.0), v.le(1.0), _dt_max_above_min],
    )
    real_random: bool = option(
        False,
        help="Re(A) = -U[0, 1) instead of -1/2 (dplr.py real_random; the S4D paper's ablation of the real part). "
        "The claims' random baseline sets it.",
    )
    real_scale: float = option(
        1.0, help="Factor on -Re(A) (dplr.py real_scale).", validator=[v.gt(0.0), v.le(1e4)],
    )
    imag_scale: float = option(
        1.0, help="Factor on Im(A) (dplr.py imag_scale; the S4D paper's ablation of the imaginary part's scale).",
        validator=[v.ge(0.0), v.le(1e4)],
    )
    epsilon: float = option(
        1.0,
        help="PTD only: spectral norm ‖E‖₂ of the real Gaussian perturbation E added to HiPPO-LegS before it is "
        "diagonalized. The paper chooses E by trading κ(V) against ‖E‖ (Sec. 4.2); its value was not available "
        "here, so 1.0 is this plugin's choice (unverified): at N = 64 it brings κ(V) from ~1e20 to ~1e4 and moves "
        "the transfer function by ~0.1 (README).",
        validator=[v.gt(0.0), v.le(1e3)],
    )


def _even(attribute: attrs.Attribute, value: int) -> None:
    if value % 2:
        raise ValueError(f"'{attribute.name}' must be even (the state holds N/2 conjugate pairs), got {value}")


@attrs.define
class S4DModelConfig:
    """Options of the ``s4d`` model: the reference repository's ``example.py`` classifier, sizes configurable."""

    d_model: int = option(128, help="H, the model width and number of independent SSMs per layer (example.py --d_model).",
                          validator=[v.ge(1), v.le(8192)])
    d_state: int = option(64, help="N, the state size of each SSM; N/2 complex-conjugate pairs are stored (s4d.py N=64).",
                          validator=[v.ge(2), v.le(4096), lambda i, a, x: _even(a, x)])
    layers: int = option(4, help="Residual S4D blocks (example.py --n_layers).", validator=[v.ge(1), v.le(256)])
    dropout: float = option(0.1, help="Channel dropout inside and after each block (example.py --dropout).",
                            validator=[v.ge(0.0), v.lt(1.0)])
    prenorm: bool = option(False, help="LayerNorm before each block instead of after the residual sum (example.py "
                           "--prenorm, off by default).")
    dt_min: float = option(0.001, help="The block's own S4D-Lin init: Δ log-uniform from dt_min (s4d.py).",
                           validator=[v.gt(0.0), v.le(1.0)])
    dt_max: float = option(0.1, help="... to dt_max (s4d.py).", validator=[v.gt(0.0), v.le(1.0), _dt_max_above_min])


S4D = Paper(
    title="On the Parameterization and Initialization of Diagonal State Space Models",
    year=2022,
    arxiv="2206.11893",
    authors="Albert Gu, Ankit Gupta, Karan Goel, Christopher Ré",
    venue="NeurIPS",
)

PTD = Paper(
    title="Robustifying State-space Models for Long Sequences via Approximate Diagonalization",
    year=2024,
    arxiv="2310.01698",
    authors="Annan Yu, Arnur Nigmetov, Dmitriy Morozov, Michael W. Mahoney, N. Benjamin Erichson",
    venue="ICLR",
)

s4d_model = ModelSpec(
    "s4d",
    "Diagonal SSM classifier (S4D): linear encoder, residual S4D blocks (Vandermonde kernel, FFT convolution), "
    "mean pooling, linear head; the state-spaces/s4 example.py model.",
    "paperkit_s4d_init.layers:build",
    S4DModelConfig,
)

_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)

def check_plan(plan: Any, config: Any) -> None:
    """Only the S4D model has diagonal state-space kernels to initialize."""
    if plan.model.key != "s4d":
        raise ValueError(f'initializes S4D kernels; the plan\'s model is "{plan.model.key}": use [model] name = "s4d"')


method = Method(
    check=check_plan,
    key="s4d-init",
    summary="Initialize every S4D kernel's diagonal state matrix, Δ and C: S4D-Lin / S4D-Inv / S4D-LegS, the "
    "perturb-then-diagonalize HiPPO-LegS (PTD), or the random-diagonal baseline.",
    paper=S4D,
    also=(PTD,),
    hooks=("init",),
    implementation="paperkit_s4d_init.hooks:S4dInit",
    config=S4dInitConfig,
    touches=("parameters",),
    license="Apache-2.0",
    claims=(
        Claim(
            id="lin-vs-random",
            statement="S4D paper (Sec. 4-5, init ablations): the structured S4D-Lin initialization (A_n = -1/2 + iπn) "
            "trains a diagonal SSM to better accuracy than a random diagonal initialization (random Re(A) and Im(A)) "
            "at the same budget (here: higher test accuracy on sequential digits).",
            plan="paperkit_s4d_init:claims/sequential-digits.toml",
            metric="classification/accuracy",
            variant="lin",
            baseline="random",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="ptd-vs-legs",
            statement="Yu et al. (Sec. 5): the perturb-then-diagonalize initialization of HiPPO-LegS trains to an "
            "accuracy at least comparable to the diagonal S4D-LegS initialization (here: test accuracy on sequential "
            "digits at most 1 point below, a non-inferiority margin).",
            plan="paperkit_s4d_init:claims/sequential-digits.toml",
            metric="classification/accuracy",
            variant="ptd",
            baseline="legs",
            direction="higher",
            margin=-0.01,
            seeds=_SEEDS,
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
            paper=PTD,
        ),
    ),
)

__all__ = ["PTD", "S4D", "SCHEMES", "S4DModelConfig", "S4dInitConfig", "method", "s4d_model"]
