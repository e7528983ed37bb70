"""NovoGrad against pytorch-optimizer's ``NovoGrad`` (benchmarks/methods.py runs it: step time, state memory).

Same algorithm on both sides: eps outside the square root (pytorch-optimizer's
form), coupled d*w inside the momentum, no gradient averaging; the reference
runs its own default path (``foreach=None``).
"""

from __future__ import annotations

from typing import Any

LABEL = "`novograd`"
REFERENCE = "pytorch-optimizer `NovoGrad`"
OPTIONS: dict[str, Any] = {"lr": 1e-2, "betas": (0.95, 0.98), "eps": 1e-8, "weight_decay": 1e-3}


def make_ours(params: list) -> Any:
    from paperkit_novograd.functional import NovoGrad

    return NovoGrad(params, eps_inside_sqrt=False, **OPTIONS)


def make_reference(params: list) -> Any:
    import pytorch_optimizer as po

    return po.NovoGrad(params, **OPTIONS)
