"""AuON (Maity, 2025) for paperkit: the record and its config. No torch import here.

The math is in :mod:`paperkit_auon.functional`, the hook in :mod:`paperkit_auon.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["AuonConfig", "PAPER", "method"]

_UNIT = [v.ge(0.0), v.lt(1.0)]
#: Where the defaults come from (the authors' repository, ryyzn9/AuON).
_PKG = "auon/optimizer.py at bba2e82"
_TRAIN = "training/config.py at bba2e82"


def _betas(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1): {list(value)}")


@attrs.define
class AuonConfig:
    """Defaults are the authors' released package (``auon/optimizer.py``, ``training/config.py``, commit bba2e82)."""

    lr: float = option(
        0.24, help=f"Learning rate of the hidden matrices ({_PKG}, class default; the paper's LM run used 0.055, "
        f"{_TRAIN} 0.08).", validator=[v.gt(0.0), v.le(100.0)],
    )
    momentum: float = option(0.95, help=f"beta of the momentum EMA m <- lerp(m, g, 1 - beta) ({_PKG}).", validator=_UNIT)
    nesterov: bool = option(True, help=f"Nesterov look-ahead G = lerp(g, m, beta) ({_PKG} always uses it).")
    weight_decay: float = option(
        0.0, help=f"Decoupled weight decay of the hidden matrices, applied as lr*wd ({_PKG} default; {_TRAIN} 0.01).",
        validator=[v.ge(0.0), v.lt(1e3)],
    )
    gamma: float = option(
        1.5, help=f"gamma in r = sqrt(mean(cosh(gamma*G/||G||)^2)) ({_PKG}; the paper's Sec. 3.1 has none, i.e. 1).",
        validator=[v.gt(0.0), v.le(20.0)],
    )
    ns_steps: int = option(
        0, help="Newton-Schulz iterations before the cosh scale: 0 is AuON, >= 1 Hybrid-AuON (paper Sec. 3.2: one "
        f"iteration; {_PKG} HybridAuON default 5).", validator=[v.ge(0), v.lt(100)],
    )
    normalize: bool = option(
        False, help="true: divide the momentum by its Frobenius norm first, so the update has norm 1/r <= 1 (paper "
        f"Sec. 3.1 and Auon_Adam_train.py at c87b862); false: keep its magnitude ({_PKG}).",
    )
    shape_scale: bool = option(
        False, help="Multiply the step by sqrt(max(1, rows/cols)) (Auon_Adam_train.py at c87b862, the paper's runs; "
        f"not in {_PKG}).",
    )
    input_layer: Literal["adamw", "muon"] = option(
        "adamw", help="Optimizer of the first layer (the input embedding): AdamW, as the embeddings in "
        "training/trainer.py, or AuON ('muon': the hidden-matrix optimizer).", validator=v.in_(["adamw", "muon"]),
    )
    adamw_lr: float = option(0.008, help=f"AdamW learning rate of the head, input layer, biases and norms ({_TRAIN}).",
                             validator=[v.gt(0.0), v.le(100.0)])
    adamw_betas: tuple[float, float] = option((0.8, 0.95), help=f"AdamW betas of the non-matrix part ({_TRAIN}).",
                                              validator=_betas)
    adamw_eps: float = option(1e-10, help=f"AdamW epsilon of the non-matrix part ({_TRAIN}).", validator=v.gt(0.0))
    adamw_weight_decay: float = option(0.0, help=f"AdamW decoupled weight decay of the non-matrix part ({_TRAIN}).",
                                       validator=[v.ge(0.0), v.lt(1e3)])


PAPER = Paper(
    title="AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    year=2025,
    arxiv="2509.24320",
    authors="Dipan Maity",
    venue="arXiv preprint",
)

_COMPARE = "paperkit_auon:claims/comparable.toml"
_QUICK = ("run.max_steps=60",)
_SEEDS = (0, 1, 2, 3, 4)

method = Method(
    key="auon",
    summary="Momentum rescaled by the RMS of cosh of its normalized entries (linear time, no Newton-Schulz); "
    "Hybrid-AuON adds Newton-Schulz iterations; AdamW for non-matrix parameters.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_auon.hooks:AuonMethod",
    config=AuonConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    license="Apache-2.0",  # the reference code (ryyzn9/AuON) is Apache-2.0 too
    claims=(
        Claim(
            id="comparable-to-adamw",
            statement="AuON achieves performance comparable to AdamW (abstract; Sec. 4.2, CIFAR-10 at batch 128: "
            "76.22% vs 76.32%). Checked: test accuracy at most 1 point below tuned AdamW's, same budget.",
            plan=_COMPARE, metric="classification/accuracy", variant="auon", baseline="adamw", direction="higher",
            margin=-0.01, seeds=_SEEDS, quick=_QUICK, quick_seeds=(0, 1),
        ),
        Claim(
            id="comparable-to-muon",
            statement="AuON achieves performance comparable to Muon at linear cost (abstract). Checked: test accuracy "
            "at most 1 point below tuned Muon's (paperkit-normuon with normalize = false), same budget.",
            plan=_COMPARE, metric="classification/accuracy", variant="auon", baseline="muon", direction="higher",
            margin=-0.01, seeds=_SEEDS, quick=_QUICK, quick_seeds=(0, 1),
        ),
        Claim(
            id="paper-form-comparable-to-adamw",
            statement="AuON as the paper's Sec. 3.1 writes it (the momentum divided by its norm and by the cosh RMS, "
            "norm <= 1; step times sqrt(max(1, m/n)) as in the code of the paper's runs) achieves performance "
            "comparable to AdamW (abstract). Checked: test accuracy at most 1 point below tuned AdamW's, same budget.",
            plan=_COMPARE, metric="classification/accuracy", variant="auon-paper", baseline="adamw",
            direction="higher", margin=-0.01, seeds=_SEEDS, quick=_QUICK, quick_seeds=(0, 1),
        ),
        Claim(
            id="hybrid-comparable-to-muon",
            statement="Hybrid-AuON, with a single Newton-Schulz iteration, achieves performance comparable to Muon's "
            "five (abstract; Sec. 4.1, Table 1: loss 0.0422 vs 0.0375). Checked: test accuracy at most 1 point below "
            "tuned Muon's, same budget.",
            plan=_COMPARE, metric="classification/accuracy", variant="hybrid", baseline="muon", direction="higher",
            margin=-0.01, seeds=_SEEDS, quick=_QUICK, quick_seeds=(0, 1),
        ),
    ),
)
