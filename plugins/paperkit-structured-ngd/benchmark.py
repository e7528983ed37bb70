"""Structured NGD against pytorch-optimizer's Shampoo for benchmarks/methods.py: step time and optimizer-state memory.

No implementation of the paper's update is installable, so the reference is the closest installed method:
pytorch-optimizer's ``Shampoo``, also a Kronecker-factored second-order optimizer with momentum, which refreshes its
preconditioners with an SVD-based inverse root (``preconditioning_compute_steps=1``, every step). Ours updates its
factors every step too (``update_freq=1``, the worst case: the reference scripts use T = 15 to 60) with products only.
The harness hands both sides bare weight matrices and random gradients; ours wraps each in a bias-free ``nn.Linear``
and is handed fixed layer statistics (from a batch of 256 inputs and output gradients) through
``StructuredNGD.record``, as its hooks would record them. Same lr, momentum, no weight decay.
"""

from __future__ import annotations

import torch
from paperkit_structured_ngd.functional import StructuredNGD, kronecker_factors
from torch import nn

LABEL = "`structured-ngd`"
REFERENCE = "pytorch-optimizer `Shampoo` (a different Kronecker method: SVD inverse roots; both refresh every step)"


class _WithStatistics:
    """StructuredNGD over linear layers that share the given weights, fed fixed statistics before every step."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        g = torch.Generator().manual_seed(2)
        layers = nn.ModuleList()
        for p in params:
            layer = nn.Linear(p.shape[1], p.shape[0], bias=False)
            layer.weight = p
            layers.append(layer)
        self.optimizer = StructuredNGD(layers, lr=1e-3, momentum=0.9, weight_decay=0.0, update_freq=1,
                                       lr_cov_warmup=False)
        self.statistics = [
            (layer, *kronecker_factors(layer, torch.randn(256, layer.in_features, generator=g),
                                       torch.randn(256, layer.out_features, generator=g) / 256, bias=False))
            for layer in layers
        ]
        self.state = self.optimizer.state

    def step(self) -> None:
        for layer, H_K, H_C in self.statistics:
            self.optimizer.record(layer, H_K, H_C)
        self.optimizer.step()


def make_ours(params: list[nn.Parameter]) -> _WithStatistics:
    return _WithStatistics(params)


def make_reference(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    import pytorch_optimizer as po

    return po.Shampoo(params, lr=1e-3, momentum=0.9, weight_decay=0.0, preconditioning_compute_steps=1)
