"""paperkit plugin: OFTv2, orthogonal finetuning made scalable (Qiu, Liu, Weller & Schölkopf, 2025).

This module holds the record only (no torch import): the config, the paper,
the claim. The math is in :mod:`paperkit_oftv2.functional`, the hooks in
:mod:`paperkit_oftv2.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class OFTv2Config:
    block_size: int = option(
        32,
        help="Block size b of the block-diagonal rotation R = diag(R_1..R_r), r = in/b blocks, in·(b−1)/2 trainable "
        "values per layer (Sec. 3.1; PEFT OFTConfig oft_block_size default 32). Must divide each target's in_features.",
        validator=v.ge(2),
    )
    neumann: bool = option(
        True,
        help="true: the Cayley–Neumann parameterization, R ≈ (I+Q)(I + Σ_{i≤k} Q^i) (Sec. 3.3; PEFT "
        "use_cayley_neumann=True, its default). false: the exact Cayley transform, as PEFT computes it: (I−Q)(I+Q)⁻¹ by a linear solve.",
    )
    terms: int = option(
        5,
        help="Terms of the truncated Neumann series, PEFT's num_cayley_neumann_terms (default 5; 5 keeps powers of Q up "
        "to Q⁴, the paper's k = 3); used when neumann = true.",
        validator=[v.ge(1), v.le(32)],
    )
    block_share: bool = option(
        False, help="One rotation block shared by every block of a layer (PEFT block_share, default false)."
    )
    form: str = option(
        "input",
        help="'input': OFTv2's input-centric forward base(x·R), matrix-vector products only (Sec. 3.2, Eq. 2). 'weight': the "
        "original OFT's weight-centric forward, W' = W0·Rᵀ formed every step (Eq. 1; same outputs, cubic cost; for comparison).",
        validator=v.in_(("input", "weight")),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the paper adapts every linear layer of the transformer blocks).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task).",
    )


PAPER = Paper(
    title="Orthogonal Finetuning Made Scalable",
    year=2025,
    arxiv="2506.19847",
    authors="Zeju Qiu, Weiyang Liu, Adrian Weller, Bernhard Schölkopf",
    venue="EMNLP",
)

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="oftv2",
    summary="OFTv2: the frozen weight is rotated on its input side, y = W0ᵀ(R x), by a block-diagonal orthogonal R "
    "from skew-symmetric parameters via a Cayley–Neumann series; R = I at the start.",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_oftv2.hooks:OFTv2",
    config=OFTv2Config,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="matches-lora",
            statement=(
                "At a comparable number of trainable parameters and the same steps, OFTv2 fine-tunes a pretrained "
                "transformer at least as well as LoRA (abstract: 'without compromising performance'; "
                "Sec. 7, Tables 3-4: OFTv2 at about half LoRA's parameters matches or beats it on BART and Llama-2): "
                "its final test loss is not worse than LoRA's by more than 0.05 nats."
            ),
            plan="paperkit_oftv2:claims/minilm.toml",
            metric="classification/loss",
            variant="oftv2",
            baseline="lora",
            direction="lower",
            margin=-0.05,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=3", "task.per_class=12", "run.batch_size=8"),
            quick_seeds=(0,),
        ),
    ),
)

__all__ = ["PAPER", "OFTv2Config", "method"]
