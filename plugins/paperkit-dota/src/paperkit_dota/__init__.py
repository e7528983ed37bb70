"""paperkit plugin: DoTA, weight-decomposed tensor adaptation (Hu, Cheng, Liu, Liu, Luan, Wang & Liu, 2024).

This module holds the record only (no torch import): the config, the paper,
the claims. The math is in :mod:`paperkit_dota.functional`, the hooks in
:mod:`paperkit_dota.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class DoTAConfig:
    bond: int = option(
        8,
        help="Bond dimension D of the MPO (truncation of each sequential SVD): the adapter's size and the accuracy of "
        "MPO_D(W0). The paper varies D to trade parameters (Method, Experiments); 8 is our default for a 384-wide "
        "MiniLM (3 cores of 8·8·6: 4,896 values per 384×384 layer, fewer than LoRA rank 8's 6,144).",
        validator=v.ge(1),
    )
    cores: int = option(
        3,
        help="Number n of local tensors: out and in are each factored into n balanced factors (384 → 8·8·6), the weight "
        "is reshaped to (o1, i1, …, on, in). The paper's MPO shapes come from MPOP (Liu et al., 2021); 3 is our "
        "choice for 384-wide layers (not from the paper, whose code is unreleased).",
        validator=[v.ge(2), v.le(8)],
    )
    init: str = option(
        "mpo",
        help="'mpo': DoTA, the cores of MPO_D(W0) and the frozen residual W0 − MPO_D(W0) (Method). 'random': the "
        "paper's ablation, a randomly initialized tensor adapter of the same shapes (here: Gaussian cores scaled to "
        "‖MPO_D(W0)‖_F, the same residual construction so the start is preserved).",
        validator=v.in_(("mpo", "random")),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the paper adapts the attention and MLP projections of LLaMA).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="DoTA: Weight-Decomposed Tensor Adaptation for Large Language Models",
    year=2024,
    arxiv="2412.20891",
    authors="Xiaolin Hu, Xiang Cheng, Peiyu Liu, Wei Liu, Jian Luan, Bin Wang, Yong Liu",
    venue="arXiv",
)

_QUICK = ("run.max_steps=3", "task.per_class=12", "run.batch_size=8")

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="dota",
    summary="DoTA: W' = W_res + MPO(G); the MPO cores G start as the TT-SVD of W0 (bond D), the residual "
    "W0 − MPO_D(W0) is frozen, only the cores train.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_dota.hooks:DoTA",
    config=DoTAConfig,
    touches=("model", "parameters"),
    claims=(
        Claim(
            id="beats-random-init",
            statement=(
                "Initializing a tensor (MPO) adapter from the MPO decomposition of the pretrained weight beats a randomly "
                "initialized tensor adapter of the same shape: after the same fine-tuning budget the loss is lower "
                "(abstract: 'random initialization significantly diverges from the validation loss achieved by full "
                "fine-tuning'; 'DoTA outperforms random initialization methods')."
            ),
            plan="paperkit_dota:claims/minilm.toml",
            metric="classification/loss",
            variant="dota",
            baseline="random",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
        Claim(
            id="beats-lora",
            statement=(
                "With fewer trainable parameters than LoRA, DoTA reaches a lower loss after the same fine-tuning budget "
                "(abstract: 'outperforms ... with fewer parameters'; Experiments: LLaMA commonsense and arithmetic "
                "reasoning against LoRA)."
            ),
            plan="paperkit_dota:claims/minilm.toml",
            metric="classification/loss",
            variant="dota",
            baseline="lora",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "DoTAConfig", "method"]
