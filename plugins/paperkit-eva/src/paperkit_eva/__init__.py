"""paperkit plugin: EVA, Explained Variance Adaptation (Paischer et al., 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_eva.functional`; :mod:`paperkit_eva.hooks` wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _names(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list module names")


@attrs.define
class EvaConfig:
    """EVA's options; defaults are PEFT's (``LoraConfig``, ``EvaConfig``), the reference the paper's authors wrote."""

    rank: int = option(
        8, help="r: the rank every layer would get, and the mean rank after redistribution (the budget is r per "
        "target layer; PEFT's default r = 8; the paper uses r = 16 for language generation).", validator=v.ge(1),
    )
    alpha: float | None = option(
        8.0, help="The update is scaled by alpha / r (Hu et al. 2021); PEFT's default lora_alpha = 8. None: alpha = r.",
        validator=v.optional(v.gt(0.0)),
    )
    dropout: float = option(0.0, help="Dropout on the adapter's input (PEFT's default lora_dropout = 0).",
                            validator=[v.ge(0.0), v.lt(1.0)])
    rho: float = option(
        2.0, help="Each layer may keep up to round(rho·r) components before the budget is shared out by explained "
        "variance (Sec. 3.2; PEFT EvaConfig.rho = 2; rho = 1: no redistribution, every layer keeps r).",
        validator=[v.ge(1.0), v.le(1000.0)],
    )
    tau: float = option(
        0.99, help="A component has converged when its cosine similarity with the previous minibatch's is >= tau "
        "(Sec. 3.1; PEFT EvaConfig.tau = 0.99).", validator=[v.ge(0.0), v.le(1.0)],
    )
    whiten: bool = option(False, help="Divide each component by sqrt of its singular value (PEFT EvaConfig.whiten = "
                          "False; the paper reports it helps for vision).")
    adjust_scaling: bool = option(
        True, help="Keep alpha_l / r_l = alpha / r for redistributed ranks (PEFT EvaConfig.adjust_scaling_factors = True).",
    )
    batches: int = option(
        32, help="Distinct training minibatches (of the run's batch size) drawn for the SVD, cycled until convergence "
        "as PEFT cycles its dataloader (ours: at most one epoch of the first experience).", validator=v.ge(1),
    )
    max_iterations: int | None = option(
        200, help="Cap on SVD forwards; reaching it warns and keeps the components as they are (PEFT has no cap: "
        "None).", validator=v.optional(v.ge(1)),
    )
    padding_id: int | None = option(
        0, help="Token positions with this id are left out of the SVD (PEFT drops attention_mask = 0; the MiniLM "
        "text tasks pad with 0). Only integer token inputs; None keeps every position.",
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names or 'all-linear' (every nn.Linear but the classifier head).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save (['head'] for a new classifier head).",
        validator=_names,
    )


PAPER = Paper(
    title="One Initialization to Rule them All: Fine-tuning via Explained Variance Adaptation",
    year=2024,
    arxiv="2410.07170",
    authors="Fabian Paischer, Lukas Hauzenberger, Thomas Schmied, Benedikt Alkin, Marc Peter Deisenroth, Sepp Hochreiter",
    venue="arXiv",
)

method = Method(
    key="eva",
    summary="EVA: LoRA with A from the top right-singular vectors of each layer's input activations (incremental SVD "
    "on minibatches) and ranks redistributed across layers by explained variance; B = 0.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_eva.hooks:Eva",
    config=EvaConfig,
    touches=("model", "parameters"),
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    license="Apache-2.0",
    claims=(
        Claim(
            id="faster-convergence",
            statement=(
                "At the same rank and number of steps, EVA's data-driven initialization fine-tunes a pretrained "
                "encoder to a higher accuracy than LoRA's random initialization (abstract: 'EVA exhibits faster "
                "convergence than competitors'; Sec. 4, Fig. 1)."
            ),
            plan="paperkit_eva:claims/faster_convergence.toml",
            metric="classification/accuracy",
            variant="eva",
            baseline="lora",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=4", "task.per_class=12", "variants.eva.adapt.batches=4"),
            quick_seeds=(0,),
        ),
    ),
)

__all__ = ["EvaConfig", "PAPER", "method"]
