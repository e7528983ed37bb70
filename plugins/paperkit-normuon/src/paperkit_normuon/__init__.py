"""NorMuon (Li et al., 2025) for paperkit: the record and its config. No torch import here.

The math is in :mod:`paperkit_normuon.functional`, the hook in :mod:`paperkit_normuon.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["NorMuonConfig", "method"]

_UNIT = [v.ge(0.0), v.lt(1.0)]


def _betas(instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1): {list(value)}")


@attrs.define
class NorMuonConfig:
    """Defaults are the authors' released code (zichongli5/NorMuon, ``SingleDeviceNorMuonWithAuxAdam``)."""

    lr: float = option(0.02, help="Learning rate of the hidden matrices (reference code default; a Muon-sized rate for update_scale='preserve_norm').", validator=v.gt(0.0))
    momentum: float = option(0.95, help="beta1, the momentum of the gradient EMA (paper Alg. 1; reference code 0.95).", validator=_UNIT)
    beta2: float = option(0.95, help="Decay of the per-neuron second moment of the orthogonalized update (paper Alg. 1; reference code 0.95).", validator=_UNIT)
    nesterov: bool = option(True, help="Nesterov momentum (reference code and torch.optim.Muon; Alg. 1 writes plain momentum).")
    ns_steps: int = option(5, help="Newton-Schulz iterations (Muon's 5, coefficients 3.4445, -4.7750, 2.0315).", validator=[v.ge(1), v.lt(100)])
    eps: float = option(1e-10, help="Added to sqrt(v) in the row normalization and to norms (reference code 1e-10).", validator=v.gt(0.0))
    weight_decay: float = option(0.0, help="Decoupled weight decay of the hidden matrices, applied as lr*wd (reference code default 0).", validator=v.ge(0.0))
    normalize: bool = option(True, help="NorMuon's neuron-wise normalization; false gives plain Muon (== torch.optim.Muon).")
    update_scale: Literal["preserve_norm", "match_rms"] = option(
        "preserve_norm",
        help="preserve_norm: keep the orthogonalized update's norm, times sqrt(max(1, m/n)) (reference code). "
        "match_rms: RMS 0.2, i.e. 0.2*sqrt(mn)/||update|| (paper Alg. 1; use an AdamW-sized lr).",
        validator=v.in_(["preserve_norm", "match_rms"]),
    )
    input_layer: Literal["adamw", "muon"] = option(
        "adamw", help="Optimizer of the first layer (the input embedding): AdamW as in the Muon/NorMuon reference code, or Muon.",
        validator=v.in_(["adamw", "muon"]),
    )
    split_qkv: bool = option(
        True, help="Orthogonalize a fused Q/K/V projection (nn.MultiheadAttention's in_proj_weight) as three matrices, "
        "as the Muon authors do (modded-nanogpt: 'split grouped QKV parameters'); false: as one (3d, d) matrix.",
    )
    adamw_lr: float = option(3e-4, help="AdamW learning rate of the head, input layer, biases and norms (reference code 3e-4).", validator=v.gt(0.0))
    adamw_betas: tuple[float, float] = option((0.9, 0.95), help="AdamW betas of the non-matrix part (reference code (0.9, 0.95)).", validator=_betas)
    adamw_eps: float = option(1e-10, help="AdamW epsilon of the non-matrix part (reference code 1e-10).", validator=v.gt(0.0))
    adamw_weight_decay: float = option(0.0, help="AdamW decoupled weight decay of the non-matrix part (reference code default 0).", validator=v.ge(0.0))


_PAPER = Paper(
    "NorMuon: Making Muon more efficient and scalable", 2025, "2510.05491",
    "Zichong Li, Liming Liu, Chen Liang, Weizhu Chen, Tuo Zhao",
)

method = Method(
    key="normuon",
    summary="Muon (momentum + Newton-Schulz orthogonalization) with neuron-wise second-moment normalization; AdamW for non-matrix parameters.",
    paper=_PAPER,
    hooks=("optimize",),
    implementation="paperkit_normuon.hooks:NorMuonMethod",
    config=NorMuonConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="faster-than-adamw",
            statement="NorMuon trains faster than Adam (21.74% better training efficiency at 1.1B): "
            "lower loss after the same number of steps.",
            plan="paperkit_normuon:claims/faster.toml",
            metric="classification/loss", variant="normuon", baseline="adamw", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4), quick=("run.max_steps=40",), quick_seeds=(0, 1),
        ),
        Claim(
            id="faster-than-muon",
            statement="NorMuon trains faster than Muon (11.31% better training efficiency at 1.1B): "
            "lower loss after the same number of steps.",
            plan="paperkit_normuon:claims/faster.toml",
            metric="classification/loss", variant="normuon", baseline="muon", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4), quick=("run.max_steps=40",), quick_seeds=(0, 1),
        ),
    ),
)
