"""paperkit plugin: Bone, block affine transformation as parameter-efficient fine-tuning (Kang, 2024).

This module holds the record only (no torch import): the config, the paper,
the claims. The math is in :mod:`paperkit_bone.functional`, the hooks in
:mod:`paperkit_bone.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _dropout(instance: BoneConfig, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"'dropout' must be in [0, 1), got {value}")
    if value > 0 and instance.structure == "affine":
        raise ValueError(
            "'dropout' applies to structure = 'shared' only: the affine (Weight Guide) update forms W' and has no "
            "adapter input to drop (PEFT's init_weights='bat' ignores miss_dropout)"
        )


@attrs.define
class BoneConfig:
    rank: int = option(
        64,
        help="Block size r (the paper's b, PEFT's r): W is cut into r×r blocks and each block row i trains one r×r "
        "matrix B_i, out·r values per layer. 64 is the paper's LLaMA2/RWKV6 setting (reference code JL-er/Bone: "
        "BONE_CONFIG r = 64, bone_r = 64) and PEFT's MissConfig default.",
        validator=v.ge(1),
    )
    structure: str = option(
        "affine",
        help="'affine': the paper's Bone, ΔW_ij = W_ij·B_i + B_i (the Weight Guide, method section; PEFT MiSS init_weights="
        "'bat'; needs r to divide in and out). 'shared': the same parameter count without the guide, ΔW = Bᵀ repeated over the "
        "column blocks, B of shape r×out (what the paper's later revisions DiSHA/MiSS call 'Bone'; PEFT's default "
        "init_weights=True).",
        validator=v.in_(("affine", "shared")),
    )
    dropout: float = option(
        0.0,
        help="Dropout on the adapter's input, structure 'shared' only (PEFT's miss_dropout, default 0; the reference "
        "code has none).",
        validator=_dropout,
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the paper adapts every projection of the blocks: q, k, v, o, gate, up, down).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="Bone: Block Affine Transformation as Parameter Efficient Fine-tuning Methods for Large Language Models",
    year=2024,
    arxiv="2409.15371",
    authors="Jiale Kang",
    venue="arXiv",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="bone",
    summary="Bone: W' = W + ΔW with ΔW_ij = W_ij·B_i + B_i on r×r blocks; one zero-initialized r×r matrix per block "
    "row, guided by the frozen weights.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_bone.hooks:Bone",
    config=BoneConfig,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-lora",
            statement=(
                "At the same number of trainable parameters and steps, Bone converges faster than LoRA: a pretrained "
                "transformer fine-tuned with Bone reaches a lower loss (abstract: 'rapid convergence and superior "
                "data fitting'; experiments: LLaMA2-7B on MetaMathQA, training loss against LoRA and PiSSA)."
            ),
            plan="paperkit_bone:claims/minilm.toml",
            metric="classification/loss",
            variant="bone",
            baseline="lora",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="weight-guide",
            statement=(
                "The Weight Guide is what helps (abstract, method section): at the same block size and parameter count, the "
                "affine update W_ij·B_i + B_i reaches a lower loss than a B added to every block without the frozen "
                "weights' guidance (our ablation; that unguided structure is what the paper's later revisions call "
                "Bone and PEFT's MiSS default)."
            ),
            plan="paperkit_bone:claims/minilm.toml",
            metric="classification/loss",
            variant="bone",
            baseline="shared",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "BoneConfig", "method"]
