"""paperkit plugin: qGOFT, quasi-orthogonal fine-tuning via Givens rotations (Ma et al., ICML 2024).

This module holds the record only (no torch import): the config, the paper,
the claim. The math is in :mod:`paperkit_qgoft.functional`, the hooks in
:mod:`paperkit_qgoft.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class QGOFTConfig:
    quasi: bool = option(
        True,
        help="true: qGOFT, every 2×2 Givens block has four free entries (flexible norm and relative angle, Sec. 3.3), "
        "started at the identity and kept near-orthogonal by the soft regularizer. false: GOFT, one angle per rotation, "
        "R exactly orthogonal (Sec. 3.2).",
    )
    orth_weight: float = option(
        1e-3,
        help="λ of the soft orthogonality term λ Σ ‖BᵀB − I‖_F² summed over every quasi-Givens block (Sec. 3.3). The "
        "paper tunes it per task and gives no single default (unverified detail); 1e-3 is ours. 0 switches it off; "
        "unused when quasi = false.",
        validator=[v.ge(0.0), v.le(1e3)],
    )
    layout: str = option(
        "tree",
        help="'tree': the paper's d − 1 rotations in ⌈log₂ d⌉ parallel layers, planes (i, i + 2^l) for i ≡ 0 mod 2^(l+1) "
        "(Sec. 3.2, O(d) parameters). 'butterfly': every plane (i, i ⊕ 2^l) in each layer, (d/2)·⌈log₂ d⌉ rotations "
        "(the FFT/BOFT pattern; an extension).",
        validator=v.in_(("tree", "butterfly")),
    )
    side: str = option(
        "input",
        help="'input': W' = R W0 in OFT's convention (W0 is d×n with d the input width, z = W'ᵀx), i.e. y = base(x R), "
        "the rotation acting on the layer's input (paper Sec. 3.1, following OFT). 'output': the rotation acts on the "
        "layer's output, y = (x W0ᵀ) R + bias.",
        validator=v.in_(("input", "output")),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the paper adapts the attention and feed-forward weights of every block).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="Parameter Efficient Quasi-Orthogonal Fine-Tuning via Givens Rotation",
    year=2024,
    arxiv="2404.04316",
    authors="Xinyu Ma, Xu Chu, Zhibang Yang, Yang Lin, Xin Gao, Junfeng Zhao",
    venue="ICML",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="qgoft",
    summary="qGOFT: the frozen weight is rotated by R = G_1⋯G_L, ⌈log₂ d⌉ parallel layers of d − 1 Givens rotations "
    "(O(d) parameters), relaxed to quasi-Givens 2×2 blocks with free entries under a soft orthogonality "
    "regularizer; R = I at the start.",
    paper=PAPER,
    hooks=("adapt", "regularize", "after_run"),
    implementation="paperkit_qgoft.hooks:QGOFT",
    config=QGOFTConfig,
    touches=("model", "parameters", "loss"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="matches-lora",
            statement=(
                "With fewer trainable parameters than LoRA, qGOFT fine-tunes a pretrained transformer at least as "
                "well as LoRA (abstract; Sec. 5, GLUE tables: qGOFT with O(d) parameters per layer matches or beats "
                "LoRA and OFT): its final test loss is not worse than LoRA's (rank 2, about the same parameters) by "
                "more than 0.05 nats."
            ),
            plan="paperkit_qgoft:claims/minilm.toml",
            metric="classification/loss",
            variant="qgoft",
            baseline="lora",
            direction="lower",
            margin=-0.05,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0,),
        ),
    ),
)

__all__ = ["PAPER", "QGOFTConfig", "method"]
