"""paperkit plugin: SVFT, parameter-efficient fine-tuning with singular vectors (Lingam et al., NeurIPS 2024).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_svft.functional`; :mod:`paperkit_svft.hooks` wires it to the
engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

PATTERNS = ("plain", "banded", "random", "top-k")


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _off_diag(instance: SvftConfig, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"'off_diag' must be an integer >= 0, got {value!r}")
    if instance.pattern == "plain" and value:
        raise ValueError("the 'plain' pattern is the diagonal of M: leave off_diag = 0 (or use pattern = 'banded')")


def _rank(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"'rank' must be an integer >= 1 or unset (every singular vector), got {value!r}")


@attrs.define
class SvftConfig:
    """SVFT's options; each default names its source (the paper, Sec. 3, or the reference code
    VijayLingam95/SVFT ``svft/svft_layers.py`` and its run scripts)."""

    pattern: str = option(
        "banded",
        help="Sparsity pattern of M (Sec. 3): 'plain' (the diagonal: singular values only), 'banded' (|i − j| ≤ "
        "off_diag), 'random' (k positions drawn uniformly, repeats add up), 'top-k' (the k largest entries of the "
        "reference's alignment score). Default 'banded' with off_diag 0 = plain: the reference's default pattern and "
        "its SVFT_plain run (LLM-Adapters/run_commonsense.sh: --pattern banded --off_diag 0).",
        validator=v.in_(PATTERNS),
    )
    off_diag: int = option(
        0,
        help="d, the off-diagonals on each side of M's band (Sec. 3); random and top-k train as many coefficients, "
        "k = n(2d+1) − d(d+1). 0 = plain (reference SVFT_plain); the paper's other runs use d = 2..16 "
        "(run_commonsense.sh: random d = 16).",
        validator=_off_diag,
    )
    rank: int | None = option(
        None,
        help="How many singular triplets U, V keep (the reference's rank; unset = all, n = min(out, in), its "
        "default). Unlike the reference, a truncated rank keeps the frozen W whole and adds U_r M V_rᵀ.",
        validator=_rank,
    )
    init: str = option(
        "kaiming",
        help="How S (the trainable entries) starts: 'kaiming' is the reference code's draw (nn.init.kaiming_normal_ "
        "on the 1×k row, N(0, 2/k), halved by the gate at start), which moves the model off the base model; 'zeros' "
        "starts at M = 0 (exactly the base model).",
        validator=v.in_(("kaiming", "zeros")),
    )
    gate: bool = option(
        True,
        help="Multiply M by sigmoid(g), one trainable scalar g per layer starting at 0 (reference SVFTLayer.gate; "
        "not in the paper's equations). False trains S alone.",
        validator=v.instance_of(bool),
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head; the reference adapts q, k, v, o, gate, up, down: run_commonsense.sh).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task; the reference's ViT runs train the head too).",
    )


PAPER = Paper(
    title="SVFT: Parameter-Efficient Fine-Tuning with Singular Vectors",
    year=2024,
    arxiv="2405.19597",
    authors="Vijay Lingam, Atula Tejaswi, Aditya Vavre, Aneesh Shetty, Gautham Krishna Gudur, Joydeep Ghosh, "
    "Alex Dimakis, Eunsol Choi, Aleksandar Bojchevski, Sujay Sanghavi",
    venue="NeurIPS",
)

_QUICK = ("run.max_steps=3", "task.per_class=12", "run.batch_size=8")

method = Method(
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    key="svft",
    summary="SVFT: W' = W + U M Vᵀ with U, V the frozen singular vectors of W and only a sparse M trained "
    "(plain = its diagonal, banded, random or top-k entries).",
    paper=PAPER,
    hooks=("adapt", "after_run"),
    implementation="paperkit_svft.hooks:Svft",
    config=SvftConfig,
    touches=("model", "parameters"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-lora",
            statement=(
                "With fewer trainable parameters than LoRA, SVFT fine-tunes a pretrained transformer better (abstract: SVFT recovers up to 96% of full fine-tuning while training 0.006–0.25% of the "
                "parameters, against up to 85% with 0.03–0.8% for existing methods; LoRA is the paper's baseline): "
                "banded SVFT (d = 2) reaches a lower loss than LoRA of rank 4, which trains 1.6 times as many values."
            ),
            plan="paperkit_svft:claims/minilm.toml",
            metric="classification/loss",
            variant="svft",
            baseline="lora",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PATTERNS", "PAPER", "SvftConfig", "method"]
