"""paperkit plugin: PiSSA, principal singular values and singular vectors adaptation (Meng, Wang & Zhang, NeurIPS 2024).

This module holds the record only (no torch import): the config, the paper,
the claim. The math is in :mod:`paperkit_pissa.functional`, the hooks in
:mod:`paperkit_pissa.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: "attrs.Attribute", value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class PiSSAConfig:
    rank: int = option(
        8, help="Rank r: the adapter holds the top-r singular triplets of each target weight (PEFT's default r = 8; "
        "the paper's LLM runs use 128).", validator=v.ge(1),
    )
    alpha: float | None = option(
        None, help="Scaling numerator: the update is (alpha/r)·B·A with S_r divided by alpha/r, so the principal part is "
        "unchanged. Default (none): alpha = r, a scaling of 1, as in the reference code (GraphPKU/PiSSA init_pissa.py, lora_alpha = lora_r).",
        validator=v.optional(v.gt(0.0)),
    )
    dropout: float = option(0.0, help="Dropout on the adapter's input (reference code: lora_dropout = 0).", validator=[v.ge(0.0), v.lt(1.0)])
    niter: int | None = option(
        None, help="None: exact SVD (PEFT init_lora_weights='pissa'). N: randomized SVD with N subspace iterations "
        "(torch.svd_lowrank; PEFT 'pissa_niter_N'), the paper's fast initialization.",
        validator=v.optional(v.ge(0)),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1', 'head') or 'all-linear' (every nn.Linear "
        "but the classifier head; the paper adapts every linear layer of the transformer blocks).",
        validator=_targets,
    )


method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="pissa",
    summary="PiSSA: LoRA's architecture with A, B from the principal singular triplets of W; the residual stays frozen.",
    paper=Paper(
        "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models", 2024, "2404.02948",
        "Fanxu Meng, Zhaohui Wang, Muhan Zhang", "NeurIPS",
    ),
    hooks=("adapt", "after_run"),
    implementation="paperkit_pissa.hooks:PiSSA",
    config=PiSSAConfig,
    touches=("model", "parameters"),
    claims=(
        Claim(
            id="faster-convergence",
            statement=(
                "With the same architecture, rank and number of steps, PiSSA reaches a lower loss than LoRA when a "
                "pretrained model is fine-tuned to a shifted task (Fig. 2 left: MLP pretrained on odd MNIST digits, "
                "fine-tuned on even ones)."
            ),
            plan="paperkit_pissa:claims/faster_convergence.toml",
            metric="classification/loss",
            variant="pissa",
            baseline="lora",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7),
            quick=("run.max_steps=40", "variants.pretrain.run.epochs=4"),
            quick_seeds=(0, 1, 2),
        ),
    ),
)
