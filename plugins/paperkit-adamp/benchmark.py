"""Step time and state memory of our AdamP against pytorch-optimizer's (``benchmarks/methods.py`` loads this file).

Same hyperparameters on both sides (weight decay on, the paper's delta and wd_ratio), pytorch-optimizer's
per-parameter path (``foreach=False``), which ours matches bit for bit. The harness's gradients are random,
so the cosine test runs on every matrix (both of its views) and finds none scale-invariant: the timing
covers the test, which is most of AdamP's cost over Adam. ``make_sgdp_ours``/``make_sgdp_reference`` give
the same pair for SGDP.
"""

from __future__ import annotations

from typing import Any

import pytorch_optimizer
from paperkit_adamp.functional import SGDP, AdamP

LABEL = "`adamp`"
REFERENCE = "pytorch-optimizer `AdamP` (foreach=False)"
_ADAMP: dict[str, Any] = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, delta=0.1, wd_ratio=0.1, nesterov=False)
_SGDP: dict[str, Any] = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-5, delta=0.1, wd_ratio=0.1, eps=1e-8)


def make_ours(params: Any) -> AdamP:
    return AdamP(params, **_ADAMP)


def make_reference(params: Any) -> pytorch_optimizer.AdamP:
    return pytorch_optimizer.AdamP(params, foreach=False, **_ADAMP)


def make_sgdp_ours(params: Any) -> SGDP:
    return SGDP(params, **_SGDP)


def make_sgdp_reference(params: Any) -> pytorch_optimizer.SGDP:
    return pytorch_optimizer.SGDP(params, foreach=False, **_SGDP)
