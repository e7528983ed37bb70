"""Step time and state memory of our AuON against the closest runnable optimizers (``benchmarks/methods.py`` loads this).

The authors' AuON (ryyzn9/AuON) is not installable, so there is no same-algorithm reference. ``make_reference``
is ``torch.optim.Muon``, the optimizer AuON replaces (the paper's efficiency claim is against Newton–Schulz):
same one-buffer state, same momentum and weight decay. ``make_sgd_reference`` (torch SGD with Nesterov momentum,
per-parameter path: the same state and elementwise work, minus the cosh scale) and ``make_adamw_reference``
(torch AdamW, per-parameter path, two buffers) give the other two neighbours; ``make_hybrid_ours`` is
Hybrid-AuON with the paper's single Newton–Schulz iteration.
"""

from __future__ import annotations

from typing import Any

import torch
from paperkit_auon.functional import AuON

LABEL = "`auon`"
REFERENCE = "torch `Muon` (the closest runnable: AuON's authors' package is not installable)"
_SHARED: dict[str, Any] = dict(momentum=0.95, weight_decay=1e-2)


def make_ours(params: Any) -> AuON:
    return AuON(params, lr=0.24, **_SHARED)


def make_reference(params: Any) -> torch.optim.Muon:
    return torch.optim.Muon(params, lr=0.02, nesterov=True, adjust_lr_fn="original", **_SHARED)


def make_hybrid_ours(params: Any) -> AuON:
    return AuON(params, lr=0.01, ns_steps=1, **_SHARED)


def make_sgd_reference(params: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.24, nesterov=True, foreach=False, **_SHARED)


def make_adamw_reference(params: Any) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, foreach=False)
