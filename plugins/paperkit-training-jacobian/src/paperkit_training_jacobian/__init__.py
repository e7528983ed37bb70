"""paperkit plugin: the training Jacobian of Belrose & Scherlis (2024), "Understanding Gradient Descent through the
Training Jacobian".

One evaluate method, ``training-jacobian``: for a tiny model it replays the plan's training run as a pure function
of the initial parameters (the same batches, the same SGD/Adam/AdamW update), differentiates it in forward mode,
``J = ∂θ_T/∂θ_0``, and reports the singular value spectrum's chaotic, bulk and stable regions, the bulk's
left/right singular-vector alignment, how much the trained model's outputs move along each region's directions,
and the overlap of the bulk with a second seed's (or with a random subspace).

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_training_jacobian.functional`; :mod:`paperkit_training_jacobian.hooks` wires it
to the engine.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, TaskSpec, option


@attrs.define
class TrainingJacobianConfig:
    """How the spectrum is split into regions, what else is measured, and the replay's limits."""

    delta: float = option(
        0.01,
        help="δ of the regions: bulk |σ − 1| ≤ δ, chaotic σ > 1 + δ, stable σ < 1 − δ. The paper describes the bulk "
        "as 'extremely close to one' (abstract, Sec. 3) and the reference code ranks directions by |σ − 1| without "
        "a threshold; 0.01 is ours (the paper's exact δ could not be checked here: no PDF).",
        validator=[v.instance_of(float), v.gt(0.0), v.lt(1.0)],
    )
    overlap_with: Literal["none", "seed", "random"] = option(
        "none",
        help="'seed': also compute the Jacobian from a second initialization (the model's default init, its own "
        "seed) on the same batches and report the overlap of the two bulks (Sec. 5, 'bulk subspaces of different "
        "seeds overlap'); 'random': the overlap of the bulk with a uniformly random subspace of the same dimension "
        "(the chance level, the claim's baseline); 'none': skip it (it doubles the cost for 'seed').",
        validator=v.in_(["none", "seed", "random"]),
    )
    directions: int = option(
        64,
        help="Singular directions per region (spread evenly over it) along which the trained model is perturbed to "
        "measure max_x KL of its outputs (the reference's perturbation experiment uses all n; ours, for cost; 0: all).",
        validator=[v.instance_of(int), v.ge(0)],
    )
    perturbation: float = option(
        1.0,
        help="Size of the perturbation θ_T + size·v_i of that experiment: a unit vector, as in the reference code "
        "(experiments.ipynb, 'Perturbations': params_f + jac_svd.Vh).",
        validator=[v.gt(0.0)],
    )
    max_parameters: int = option(
        5000,
        help="Largest trainable-parameter count n accepted (J is n × n, forward mode pushes n tangents through every "
        "step); the paper's MLP has 4,810 parameters (64-64-10 on digits).",
        validator=[v.instance_of(int), v.ge(1), v.le(50_000)],
    )
    chunk_size: int = option(
        0,
        help="Tangents pushed through the replay at once (memory); 0: all n at once. The result does not depend on it.",
        validator=[v.instance_of(int), v.ge(0)],
    )
    replay_tolerance: float = option(
        1e-4,
        help="Largest |θ_T(replay) − θ_T(run)| accepted, relative to max(1, max|θ_T|): the replay is bit-exact on "
        "the CPU; a larger gap means the run did something the replay does not model, and the method fails.",
        validator=[v.gt(0.0), v.lt(1.0)],
    )


@attrs.define
class WhiteNoiseConfig:
    """Uniform-noise inputs of the digits' size with random labels (the reference's white-noise experiment)."""

    samples: int = option(1797, help="Samples, as many as digits has.", validator=[v.instance_of(int), v.ge(10)])
    input_dim: int = option(64, help="Features per sample (digits: 8 × 8 pixels).", validator=[v.instance_of(int), v.ge(1)])
    classes: int = option(10, help="Classes of the random labels (digits: 10).", validator=[v.instance_of(int), v.ge(2)])
    test_fraction: float = option(0.25, help="Held out for testing, as digits.", validator=[v.gt(0.0), v.lt(1.0)])
    standardize: bool = option(True, help="Standardize with the training set's statistics, as digits.")
    data_seed: int = option(0, help="Seed of the noise and the labels (fixed across run seeds).", validator=v.ge(0))


white_noise_task = TaskSpec(
    "white-noise",
    "Uniform-noise inputs of the digits' size with random labels (Belrose & Scherlis's white-noise experiment).",
    "paperkit_training_jacobian.tasks:white_noise",
    WhiteNoiseConfig,
)

PAPER = Paper(
    title="Understanding Gradient Descent through the Training Jacobian",
    year=2024,
    arxiv="2412.07003",
    authors="Nora Belrose, Adam Scherlis",
    venue="arXiv preprint (EleutherAI)",
)

_PLAN = "paperkit_training_jacobian:claims/bulk.toml"

CLAIMS = (
    Claim(
        id="bulk-overlaps-across-seeds",
        statement="Belrose & Scherlis (abstract, Sec. 5): 'we find substantial overlap in bulk subspaces for "
        "different random seeds'. Here: the bulk (|σ − 1| ≤ 0.01) of the training Jacobian of a 1,210-parameter MLP "
        "(64-16-10) trained with SGD on digits overlaps the bulk of a second initialization trained on the same "
        "batches more than it overlaps a uniformly random subspace of the same dimension (mean squared cosine of the "
        "principal angles).",
        plan=_PLAN,
        metric="training-jacobian/bulk_overlap",
        variant="seed",
        baseline="random",
        direction="higher",
        margin=0.0,
        seeds=(0, 1, 2, 3, 4),
        quick=("run.epochs=1",),
        quick_seeds=(0, 1),
    ),
)

#: hooks of other methods the functional replay reproduces (they act before or after training, not inside it)
_REPLAYABLE = frozenset({"init", "adapt", "evaluate", "after_run", "after_step"})
_OPTIMIZERS = ("sgd", "adam", "adamw")


def check_plan(plan: Any, config: Any) -> None:
    """Refuse at plan check what the replay cannot reproduce (the model's own layers are checked at the start)."""
    if plan.task.kind != "class":
        raise ValueError(f"the replay computes cross-entropy on class labels; the task's kind is '{plan.task.kind}'")
    if plan.run.grad_clip:
        raise ValueError("the replay does not model gradient clipping: remove [run] grad_clip")
    optimizers = []
    for use in plan.methods:
        if use.key == "training-jacobian" or use.key == "cross-entropy" or use.implicit:
            continue
        if use.key in _OPTIMIZERS and set(use.spec.hooks) == {"optimize"}:
            optimizers.append(use.key)
            continue
        other = set(use.spec.hooks) - _REPLAYABLE
        if other:
            raise ValueError(
                f"cannot replay a run with '{use.key}' ({', '.join(sorted(other))}): only the optimizers "
                f"{', '.join(_OPTIMIZERS)}, the built-in cross-entropy and init/adapt/evaluate methods are modelled"
            )
    if len(optimizers) != 1:
        raise ValueError(f"the replay needs one of the optimizers {', '.join(_OPTIMIZERS)} in [optimize]")


method = Method(
    check=check_plan,
    key="training-jacobian",
    summary="The training Jacobian ∂θ_T/∂θ_0 of a tiny model (the run replayed functionally, forward mode): the "
    "chaotic/bulk/stable regions of its singular values, the bulk's u·v alignment, the output change along each "
    "region, and the bulk's overlap with a second seed.",
    paper=PAPER,
    hooks=("evaluate", "after_step", "after_run"),
    implementation="paperkit_training_jacobian.hooks:TrainingJacobian",
    config=TrainingJacobianConfig,
    touches=("metrics",),
    exclusive=(),
    license="Apache-2.0",
    claims=CLAIMS,
)

__all__ = ["CLAIMS", "PAPER", "TrainingJacobianConfig", "WhiteNoiseConfig", "method", "white_noise_task"]
