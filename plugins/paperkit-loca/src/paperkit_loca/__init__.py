"""paperkit plugin: LoCA, Location-Aware Cosine Adaptation for parameter-efficient fine-tuning (Du et al., ICLR 2025).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_loca.functional`; :mod:`paperkit_loca.hooks` wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value}")


@attrs.define
class LocaConfig:
    n_frequency: int = option(
        1000,
        help="n, the number of learnable spectral coefficients per adapted layer (the paper's budget on GLUE with "
        "RoBERTa: n = 1000 on the query and value projections, as FourierFT's; PEFT FourierFTConfig's default).",
        validator=v.ge(1),
    )
    scale: float = option(
        1.0,
        help="α in ΔW = α·iDCT2(S) (paper Eq. 1); 1.0 is the authors' GLUE setting (TL-UESTC/LoCA scripts, scale=1). "
        "With transform = 'dft' PEFT's FourierFT default is 150 (its ifft2 divides by out·in; the DCT is orthonormal).",
        validator=_positive,
    )
    transform: str = option(
        "dct",
        help="'dct': LoCA's orthonormal inverse DCT-II (Sec. 4.2). 'dft': FourierFT's Re(ifft2(S)) (Gao et al., 2024; "
        "PEFT FourierFT), the paper's baseline and our ablation of the transform.",
        validator=v.in_(("dct", "dft")),
    )
    locations: str = option(
        "dynamic",
        help="'dynamic': LoCA's learned locations, moved by the finite-difference gradient estimate (Sec. 4.3) on the "
        "alternating schedule below. 'fixed': the random locations stay put (FourierFT's; the ablation of "
        "relocation).",
        validator=v.in_(("dynamic", "fixed")),
    )
    location_seed: int | None = option(
        None,
        help="Seed of the random starting locations (n distinct entries: PEFT FourierFT's randperm draw, the same for "
        "every layer of one shape). None: derived from the run seed, so seeds also vary the locations; PEFT's "
        "default is random_loc_seed = 777 (needed for the PEFT export).",
    )
    coefficient_steps: int = option(
        10,
        help="B_a: coefficient steps per cycle of the alternating schedule (Sec. 4.4; the authors' layer: steps "
        "0-9 of every 30 train the coefficients).",
        validator=v.ge(1),
    )
    location_steps: int = option(
        20,
        help="B_l: location steps per cycle (Sec. 4.4; the authors' layer: steps 10-29 of every 30 move the locations, "
        "the coefficients frozen meanwhile). 0 never moves them.",
        validator=v.ge(0),
    )
    location_until: int = option(
        1000,
        help="B_s: the step from which the locations are frozen and only the coefficients train (Sec. 4.4; the "
        "authors' learn_location_iter, about 10% of the steps in their runs; their script default 1000).",
        validator=v.ge(0),
    )
    location_lr: float = option(
        0.02,
        help="The locations' learning rate as a multiple of the optimizer's (the authors' GLUE runs: lr 1e-4 for "
        "the locations against 5e-3 for the coefficients, a ratio of 0.02; the authors' separate lr_positions). "
        "Weight decay never acts on the locations.",
        validator=_positive,
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1') or 'all-linear' (every nn.Linear but the "
        "classifier head). The paper adapts the query and value projections on GLUE (as FourierFT).",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier head is "
        "new (a pretrained encoder on a new task; the paper trains the GLUE head).",
    )


PAPER = Paper(
    title="LoCA: Location-Aware Cosine Adaptation for Parameter-Efficient Fine-Tuning",
    year=2025,
    arxiv="2502.06820",
    authors="Zhekai Du, Yinjie Min, Jingjing Li, Ke Lu, Changliang Zou, Liuhua Peng, Tingjin Chu, Mingming Gong",
    venue="ICLR 2025",
)

_PLAN = "paperkit_loca:claims/minilm.toml"
_SEEDS = (0, 1, 2, 3, 4)
_QUICK = ("run.max_steps=3", "task.per_class=12", "run.batch_size=8")

method = Method(
    key="loca",
    summary="LoCA: W' = W0 + α·iDCT2(S), S a DCT spectrum with n learnable coefficients whose locations are moved "
    "during training by finite-difference gradient estimates; with transform = 'dft', locations = 'fixed' it is "
    "FourierFT.",
    paper=PAPER,
    hooks=("adapt", "optimize", "after_run"),
    implementation="paperkit_loca.hooks:Loca",
    config=LocaConfig,
    touches=("model", "parameters", "gradients"),
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    license="Apache-2.0",
    claims=(
        Claim(
            id="beats-fourierft",
            statement=(
                "At the same number of spectral coefficients per layer, LoCA (iDCT with learned locations) fine-tunes "
                "better than FourierFT (iDFT with fixed random locations) (abstract; Sec. 5, GLUE with RoBERTa and "
                "ViT image classification against FourierFT at n = 1000 / 3000). Here: a lower test loss after the "
                "budget on a MiniLM text task."
            ),
            plan=_PLAN,
            metric="classification/loss",
            variant="loca",
            baseline="fourierft",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
        Claim(
            id="relocation-helps",
            statement=(
                "Selecting the locations helps (Sec. 4.3, ablation of location learning): LoCA with learned "
                "locations reaches a lower test loss than the same iDCT update with its random locations fixed."
            ),
            plan=_PLAN,
            metric="classification/loss",
            variant="loca",
            baseline="dct-fixed",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PAPER", "LocaConfig", "method"]
