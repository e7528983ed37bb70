"""paperkit plugin: The Impact of Initialization on LoRA Finetuning Dynamics (Hayou, Ghosh & Yu, NeurIPS 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_lora_init_ab.functional`; :mod:`paperkit_lora_init_ab.hooks`
wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class LoraInitABConfig:
    """LoRA's options (as the built-in ``lora``) plus which factor starts random."""

    init: Literal["A", "B"] = option(
        "A",
        help="Which factor starts random (Sec. 3): 'A' = Init[A], A random and B = 0 (Hu et al. 2021, PEFT's default "
        "init_lora_weights=True, the paper's recommendation); 'B' = Init[B], A = 0 and B random. B·A = 0 either way.",
        validator=v.in_(("A", "B")),
    )
    distribution: Literal["kaiming-uniform", "gaussian"] = option(
        "kaiming-uniform",
        help="The random factor's draw, of variance Θ(1/fan-in) (the paper's σ_A² = Θ(1/n), σ_B² = Θ(1/r)): "
        "'kaiming-uniform' = U(±1/√fan_in), PEFT's and microsoft/LoRA's draw of A (kaiming_uniform_, a = √5); "
        "'gaussian' = N(0, 1/fan_in).",
        validator=v.in_(("kaiming-uniform", "gaussian")),
    )
    rank: int = option(8, help="Rank r of the update B·A (PEFT's default r = 8; the claim uses Hu et al.'s RoBERTa setting r = 8, alpha = 16).", validator=v.ge(1))
    alpha: float = option(
        8.0, help="The update is scaled by alpha / rank (Hu et al. 2021, Sec. 4.1); PEFT's default lora_alpha = 8.",
        validator=v.gt(0.0),
    )
    dropout: float = option(
        0.0, help="Dropout on the adapter's input (PEFT's default lora_dropout = 0).", validator=[v.ge(0.0), v.lt(1.0)]
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1', "
        "'encoder.encoder.layer.*.attention.self.query') or 'all-linear' (every nn.Linear but the classifier head).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier "
        "head is new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="The Impact of Initialization on LoRA Finetuning Dynamics",
    year=2024,
    arxiv="2406.08447",
    authors="Soufiane Hayou, Nikhil Ghosh, Bin Yu",
    venue="NeurIPS",
)

_QUICK = ("run.max_steps=4", "task.per_class=16")

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="lora-init-ab",
    summary="LoRA started with Init[A] (A random, B = 0: PEFT's default) or Init[B] (A = 0, B random); B·A = 0 either way.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_lora_init_ab.hooks:LoraInitAB",
    config=LoraInitABConfig,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="init-a-beats-init-b",
            statement=(
                "Init[A] (B = 0, A random) yields better fine-tuning performance than Init[B] (A = 0, B random) when "
                "each uses its own best learning rate (abstract; Sec. 5): on the pretrained MiniLM, LoRA started "
                "with Init[A] reaches a higher test accuracy than LoRA started with Init[B], each at the learning "
                "rate a sweep on non-claim seeds found best for it."
            ),
            plan="paperkit_lora_init_ab:claims/init_a_vs_b.toml",
            metric="classification/accuracy",
            variant="init-a",
            baseline="init-b",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["LoraInitABConfig", "PAPER", "method"]
