"""Shampoo against pytorch-optimizer's Shampoo for benchmarks/methods.py: step time and optimizer-state memory.

Same hyperparameters on both sides (the parity test is bit-exact for them). Our state is smaller: the reference
keeps a momentum buffer (a copy of the update) even at momentum 0. The 4-bit variant's state is measured by
``paperkit_shampoo.functional.state_bytes`` in the tests and the four-bit claim (no 4-bit reference runs here).
"""

from __future__ import annotations

import torch
from paperkit_shampoo.functional import Shampoo
from torch import nn

LABEL = "`shampoo`"
REFERENCE = "pytorch-optimizer `Shampoo`"


def make_ours(params: list[nn.Parameter]) -> Shampoo:
    return Shampoo(params, lr=1e-3, weight_decay=0.01)


def make_reference(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    import pytorch_optimizer as po

    return po.Shampoo(params, lr=1e-3, weight_decay=0.01)
