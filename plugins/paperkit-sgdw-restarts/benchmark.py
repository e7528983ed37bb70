"""Step time and state memory of our SGDW against pytorch-optimizer's (``benchmarks/methods.py`` loads this file).

Same update on both sides: momentum 0.9, weight decay on, a constant learning rate, where our
paper-style decay ``eta_t * lambda`` (``eta_t = 1``) is pytorch-optimizer's ``lr * lambda'`` with
``lambda' = lambda / lr``. pytorch-optimizer runs its per-parameter path (``foreach=False``), the
one ours matches bit for bit in ``decay_scaling="lr"``; both keep one momentum buffer per parameter.
"""

from __future__ import annotations

from typing import Any

import pytorch_optimizer
from paperkit_sgdw_restarts.functional import SGDW

LABEL = "`sgdw-restarts`"
REFERENCE = "pytorch-optimizer `SGDW` (foreach=False)"
_LR, _LAMBDA = 0.05, 5e-4
_COMMON: dict[str, Any] = dict(lr=_LR, momentum=0.9, dampening=0.0, nesterov=False)


def make_ours(params: Any) -> SGDW:
    return SGDW(params, weight_decay=_LAMBDA, decay_scaling="schedule", **_COMMON)


def make_reference(params: Any) -> pytorch_optimizer.SGDW:
    return pytorch_optimizer.SGDW(params, foreach=False, weight_decay=_LAMBDA / _LR, weight_decouple=True, **_COMMON)
