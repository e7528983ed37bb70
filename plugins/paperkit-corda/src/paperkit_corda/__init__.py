"""paperkit plugin: CorDA, context-oriented decomposition adaptation (Yang et al., NeurIPS 2024).

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_corda.functional`; :mod:`paperkit_corda.hooks` wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _strings(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list non-empty strings")


@attrs.define
class CordaConfig:
    """CorDA's options; defaults from the paper (Sec. 4) and PEFT's ``LoraConfig``/``CordaConfig`` (the reference)."""

    rank: int = option(
        8, help="r: the number of components of W = U Σ V̂ᵀ that train (PEFT's default r = 8; the paper uses r = 128 "
        "on LLaMA-2-7B).", validator=v.ge(1),
    )
    alpha: float | None = option(
        None, help="Scaling numerator: the update is (alpha/r)·B·A with Σ_r divided by alpha/r, so the selected part is "
        "unchanged. Default (none): alpha = r, a scaling of 1, as PEFT's defaults (r = 8, lora_alpha = 8).",
        validator=v.optional(v.gt(0.0)),
    )
    dropout: float = option(0.0, help="Dropout on the adapter's input (PEFT's default lora_dropout = 0).",
                            validator=[v.ge(0.0), v.lt(1.0)])
    mode: str = option(
        "ipa", help="'ipa' (instruction-previewed, Sec. 3.3): the r LARGEST components train, context from the "
        "fine-tuning task; 'kpa' (knowledge-preserved): the r SMALLEST train, the principal ones stay frozen "
        "(PEFT CordaConfig.corda_method 'ipm'/'kpm', default 'ipm').",
        validator=v.in_(("ipa", "kpa")),
    )
    samples: int = option(
        256, help="Context samples (sequences) the covariance is averaged over (Sec. 4: 256 samples; PEFT's "
        "preprocess_corda docstring: 256 is enough). Vector inputs: one sample per drawn batch, as in PEFT's hook.",
        validator=v.ge(1),
    )
    sentences: list[str] = option(
        attrs.Factory(list),
        help="Context sentences (text tasks only, tokenized for MiniLM at the task's max_length): empty = the run's "
        "own training samples (IPA's context); KPA's knowledge context is data from another domain (the paper: "
        "TriviaQA and NQ-open questions), listed here.",
        validator=_strings,
    )
    padding_id: int | None = option(
        0, help="Token positions with this input id are left out of the covariance (the reference calibrates on "
        "unpadded sequences; the MiniLM text tasks pad with 0). None keeps every position.",
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names or 'all-linear' (every nn.Linear but the classifier head; the "
        "paper adapts every linear layer of the transformer blocks).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save (['head'] for a new classifier head).",
        validator=_strings,
    )


PAPER = Paper(
    title="CorDA: Context-Oriented Decomposition Adaptation of Large Language Models",
    year=2024,
    arxiv="2406.05223",
    authors="Yibo Yang, Xiaojie Li, Zhongzhu Zhou, Shuaiwen Leon Song, Jianlong Wu, Liqiang Nie, Bernard Ghanem",
    venue="NeurIPS",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="corda",
    summary="CorDA: LoRA's architecture with A, B from the SVD of W·C (C the input covariance of context samples); "
    "IPA trains the largest components, KPA the smallest; the residual stays frozen.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_corda.hooks:Corda",
    config=CordaConfig,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="ipa-beats-lora",
            statement=(
                "Instruction-previewed CorDA (the r largest components of the context-oriented decomposition, "
                "context from the fine-tuning task) fine-tunes to a higher accuracy than LoRA at the same rank and "
                "steps (Table 2–3: CorDA IPA above LoRA on math, code and instruction following)."
            ),
            plan="paperkit_corda:claims/ipa_beats_lora.toml",
            metric="classification/accuracy",
            variant="corda-ipa",
            baseline="lora",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=4", "task.per_class=12", "variants.corda-ipa.adapt.samples=8"),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["CordaConfig", "PAPER", "method"]
