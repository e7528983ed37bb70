"""Adafactor against torch.optim.Adafactor for benchmarks/methods.py: step time and optimizer-state memory.

Same hyperparameters on both sides: our torch option set (eps1 clamps the denominator, decay scaled by lr,
eps1 = float32 eps) is the same computation as torch's single-tensor path (the parity test is bit-exact).
"""

from __future__ import annotations

import torch
from paperkit_adafactor.functional import Adafactor
from torch import nn

LABEL = "`adafactor`"
REFERENCE = "`torch.optim.Adafactor` (foreach=False)"


def make_ours(params: list[nn.Parameter]) -> Adafactor:
    return Adafactor(params, lr=1e-2, eps1=torch.finfo(torch.float32).eps, eps1_placement="denominator",
                     weight_decay_scale="lr")


def make_reference(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adafactor(params, lr=1e-2, foreach=False)
