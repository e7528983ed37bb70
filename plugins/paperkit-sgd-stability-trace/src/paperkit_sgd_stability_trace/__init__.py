"""paperkit plugin: the stability diagnostic of Wu & Su, "The Implicit Regularization of Dynamical Stability in
Stochastic Gradient Descent" (ICML 2023).

The paper is theory and proposes no training method: a global minimum that is linearly stable for SGD with
learning rate η has tr(H) ≤ 2/η, while stability for GD only bounds λ_max(H) ≤ 2/η. This plugin measures both
sides at the end of a run (and optionally every N steps): Hutchinson's tr(H) with its standard error, λ_max(H) by
power iteration, the training loss, η, and the ratios η·tr(H)/2 and η·λ_max/2.

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_sgd_stability_trace.functional`; :mod:`paperkit_sgd_stability_trace.hooks` wires it
to the engine.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _positive_or_none(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"'{attribute.name}' must be a positive number or unset, got {value!r}")


@attrs.define
class SgdStabilityTraceConfig:
    """What to measure and how precisely. The paper fixes none of these (it reports exact sharpness of small
    models); the defaults are ours, chosen so the estimates' errors are small against the bound (see the README)."""

    probes: int = option(
        100,
        help="Rademacher probes of Hutchinson's tr(H) estimate (paperkit.hutchinson_trace); its standard error "
        "shrinks as 1/sqrt(probes). Ours: 100 keeps the relative error at 3-6% on the claim's network.",
        validator=v.ge(2),
    )
    power_iters: int = option(
        100,
        help="Most Hessian-vector products of the power iteration for λ_max(H) (ours).",
        validator=v.ge(1),
    )
    tol: float = option(
        1e-4,
        help="The power iteration stops once two successive Rayleigh quotients agree to this relative tolerance (ours).",
        validator=[v.gt(0.0), v.lt(1.0)],
    )
    samples: int = option(
        0,
        help="Training samples the Hessian is taken over: the first N of the final experience's training set; 0 "
        "takes all of them (the paper's bounds are on the full training loss).",
        validator=v.ge(0),
    )
    every: int = option(
        0,
        help="Also measure every N optimizer steps (logged to metrics.jsonl); 0 measures only after the run.",
        validator=v.ge(0),
    )
    lr: float | None = option(
        None,
        help="The learning rate η the bounds 2/η use; unset reads the plan's optimizer 'lr' (the base rate: set it "
        "here when a schedule changes the final rate).",
        validator=_positive_or_none,
    )
    loss: Literal["auto", "mse", "cross-entropy"] = option(
        "auto",
        help="The loss whose Hessian is measured: auto takes the plan's loss (the built-in mse or cross-entropy, "
        "with its label smoothing); the paper's theory is for the squared loss.",
        validator=v.in_(["auto", "mse", "cross-entropy"]),
    )
    bound_only: bool = option(
        False,
        help="Measure nothing and report every ratio as 1, the bound itself: only for the reference arm of a "
        "claim that tests a ratio against its bound (paperkit claims compare two arms).",
    )


PAPER = Paper(
    title="The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent",
    year=2023,
    arxiv="2305.17490",
    authors="Lei Wu, Weijie J. Su",
    venue="ICML",
)

_PLAN = "paperkit_sgd_stability_trace:claims/stability.toml"
_SEEDS = (0, 1, 2, 3, 4)
_QUICK = ("run.epochs=20",)
_QUICK_SEEDS = (0, 1, 2)


def _bound_claim(id: str, variant: str, lr: str, which: str) -> Claim:
    return Claim(
        id=id,
        statement="If a global minimum is linearly stable for SGD, then the trace of the Hessian is at most 2/η "
        "(abstract; read as the single-sample condition, see the README). Here: a two-layer ReLU network trained to near-zero "
        f"squared loss by single-sample SGD at η = {lr} ({which}) ends with η·tr(H)/2 below 1 "
        "(the reference arm reports the bound, 1).",
        plan=_PLAN,
        metric="sgd-stability-trace/trace_ratio",
        variant=variant,
        baseline="bound",
        direction="lower",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK,
        quick_seeds=_QUICK_SEEDS,
    )


def check_plan(plan: Any, config: Any) -> None:
    """With ``loss = "auto"`` the Hessian is of the plan's own loss, which must be one the method can rebuild."""
    if getattr(config, "loss", "auto") == "auto":
        keys = [use.key for use in plan.methods if "loss" in use.spec.hooks]
        if keys not in ([], ["mse"], ["cross-entropy"]):
            raise ValueError(
                f"the plan's loss is {keys}; the Hessian is measured for the built-in 'mse' or 'cross-entropy': "
                "set loss = 'mse' or 'cross-entropy' to measure one of them anyway"
            )


method = Method(
    check=check_plan,
    key="sgd-stability-trace",
    summary="Wu & Su's dynamical-stability diagnostic: Hutchinson tr(H) and power-iteration λ_max(H) of the training "
    "loss against 2/η (SGD-stable minima have η·tr(H)/2 ≤ 1, GD-stable ones η·λ_max/2 ≤ 1).",
    paper=PAPER,
    hooks=("after_step", "after_run"),
    implementation="paperkit_sgd_stability_trace.hooks:SgdStabilityTrace",
    config=SgdStabilityTraceConfig,
    touches=("metrics",),
    kinds=("class", "regression"),
    license="Apache-2.0",
    claims=(
        _bound_claim("trace-below-2-over-lr", "lr-large", "0.025", "the largest rate of our grid that converges"),
        _bound_claim("trace-below-2-over-lr-small", "lr-small", "0.01", "a rate 2.5 times smaller"),
        Claim(
            id="larger-lr-flatter",
            statement="The learning rate sets the strength of the stability-induced regularization: as it increases "
            "the regularization is more pronounced (abstract; the bound 2/η shrinks). Here: single-sample SGD at "
            "η = 0.025 ends at a near-zero-loss minimum with a smaller tr(H) than at η = 0.01, same network, data "
            "and budget.",
            plan=_PLAN,
            metric="sgd-stability-trace/trace",
            variant="lr-large",
            baseline="lr-small",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["PAPER", "SgdStabilityTraceConfig", "method"]
