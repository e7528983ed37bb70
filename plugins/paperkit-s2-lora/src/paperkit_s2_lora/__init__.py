"""paperkit plugin: S2-LoRA, Sparsely Shared LoRA (Liu, Qin, Peng & Lee, ICASSP 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_s2_lora.functional`; :mod:`paperkit_s2_lora.hooks`
wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class S2LoraConfig:
    """S2-LoRA's options. The paper's PDF could not be read here (abstract only): defaults that are not the
    abstract's say where they come from instead (AdaLoRA/LoRA as implemented in PEFT, or ours)."""

    rank: int = option(
        8,
        help="Rank r of the globally shared factors A (r×in) and B (out×r); each matrix trains r coefficients. "
        "8: PEFT's LoRA default (the paper's own r is not in the abstract).",
        validator=v.ge(1),
    )
    alpha: float | None = option(
        None,
        help="Scaling numerator: ΔW_i = (alpha/r)·B·diag(c_i)·A. Default (none): alpha = r, a scaling of 1 "
        "(the coefficients c_i carry the scale themselves, as AdaLoRA's Λ does).",
        validator=v.optional(v.gt(0.0)),
    )
    l1: float = option(
        1e-3,
        help="λ of the sparsity constraint λ·Σ_i ‖c_i‖₁ on the rank coefficients (abstract: 'rank coefficients that "
        "are constrained to be sparse'); the paper's value is not in the abstract, 1e-3 is ours. 0 turns it off.",
        validator=v.ge(0.0),
    )
    init: str = option(
        "adalora",
        help="'adalora': c = 0, A, B ~ N(0, std²) (AdaLoRA's init of Λ, P, Q, PEFT AdaLoraLayer; S2-LoRA keeps "
        "AdaLoRA's rank coefficients). 'lora': A Kaiming-uniform, B = 0, c = 1 (LoRA's). Both start at ΔW = 0; "
        "A, B always train (unlike VeRA's frozen random factors).",
        validator=v.in_(("adalora", "lora")),
    )
    std: float = option(
        0.02,
        help="Standard deviation of A and B with init = 'adalora' (PEFT AdaLoRA: normal_(std=0.02)).",
        validator=v.gt(0.0),
    )
    dropout: float = option(
        0.0, help="Dropout on the adapter's input (PEFT's lora_dropout default, 0).", validator=[v.ge(0.0), v.lt(1.0)]
    )
    threshold: float = option(
        0.1,
        help="Reporting only: a coefficient counts toward its matrix's learned rank when |c_ij| ≥ threshold × the "
        "model's largest |c| (ours; the paper reads the rank distribution off the sparse coefficients).",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names or 'all-linear' (every nn.Linear but the classifier head). "
        "Layers of the same (out, in) shape share one A, B pair (the paper shares them across Whisper's modules).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] for a new classifier head.",
    )


PAPER = Paper(
    title="Sparsely Shared LoRA on Whisper for Child Speech Recognition",
    year=2024,
    arxiv="2309.11756",
    authors="Wei Liu, Ying Qin, Zhiyuan Peng, Tan Lee",
    venue="ICASSP",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="s2-lora",
    summary="S2-LoRA: ΔW_i = B·diag(c_i)·A with A, B shared by every adapted matrix of a shape and only the rank "
    "coefficients c_i per matrix, L1-penalized to be sparse.",
    paper=PAPER,
    hooks=("adapt", "regularize", "after_run"),
    implementation="paperkit_s2_lora.hooks:S2LoRA",
    config=S2LoraConfig,
    touches=("model", "parameters", "loss"),
    kinds=("class", "multi-label", "regression", "next-token"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="non-inferior-to-lora",
            statement=(
                "With far fewer trainable parameters, S2-LoRA adapts a pretrained transformer about as well as "
                "LoRA/AdaLoRA (abstract: 'with much fewer trainable parameters, S2-LoRA can achieve comparable "
                "in-domain adaptation performance to AdaLoRA'): test accuracy at most 3 points below LoRA's."
            ),
            plan="paperkit_s2_lora:claims/minilm.toml",
            metric="classification/accuracy",
            variant="s2-lora",
            baseline="lora",
            direction="higher",
            margin=-0.03,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "S2LoraConfig", "method"]
