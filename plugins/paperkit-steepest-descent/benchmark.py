"""Steepest descent under the spectral norm against pytorch-optimizer's ``Muon`` (benchmarks/methods.py runs it).

Same algorithm on both sides: Muon's momentum 0.95 with Nesterov, five Newton–Schulz
iterations in bfloat16, Keller Jordan's ``sqrt(max(1, m/n))`` factor, decoupled weight
decay (the parity test pins the two bit for bit); every parameter is a hidden matrix, so
the reference's AdamW part stays unused. The reference runs its own default path
(``foreach=None``).
"""

from __future__ import annotations

from typing import Any

LABEL = "`steepest-descent`"
REFERENCE = "pytorch-optimizer `Muon`"
OPTIONS: dict[str, Any] = {"lr": 0.02, "momentum": 0.95, "nesterov": True, "weight_decay": 0.01}


def make_ours(params: list) -> Any:
    from paperkit_steepest_descent.functional import SteepestDescent

    return SteepestDescent(params, norm="spectral", spectral_scale="muon", **OPTIONS)


def make_reference(params: list) -> Any:
    import pytorch_optimizer as po

    return po.Muon([{"params": params, "use_muon": True}], **OPTIONS)
