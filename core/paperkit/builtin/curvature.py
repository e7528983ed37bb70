"""A curvature and gradient-noise diagnostic on the evaluation sets, built on :mod:`paperkit.derivatives`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl
from paperkit.context import EvalSet, RunContext
from paperkit.derivatives import flat, hutchinson_trace, per_sample_gradients
from paperkit.step import forward, unwrapped


def curvature_report(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, probes: int, generator: torch.Generator, ctx: RunContext
) -> dict[str, float]:
    """On ``(x, y)``: Hutchinson's estimate of the trace of the cross-entropy Hessian (and its standard error),
    the norm of the mean gradient ``G``, the mean per-sample gradient norm, and McCandlish et al.'s (2018)
    simple noise scale ``B = tr(Σ)/‖G‖²`` with ``Σ`` the per-sample gradients' covariance."""
    module = unwrapped(model)
    params = [p for p in module.parameters() if p.requires_grad]
    training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(forward(module, x, ctx).logits, y)
            trace, error = hutchinson_trace(loss, params, probes, generator)
        per_sample = flat(per_sample_gradients(module, F.cross_entropy, x, y), batch_dims=1)
    finally:
        module.train(training)
    mean = per_sample.mean(0)
    spread = (per_sample - mean).pow(2).sum(1).sum() / max(len(per_sample) - 1, 1)
    return {
        "hessian_trace": trace,
        "hessian_trace_stderr": error,
        "grad_norm": float(mean.norm()),
        "per_sample_grad_norm": float(per_sample.norm(dim=1).mean()),
        "noise_scale": float(spread / mean.pow(2).sum().clamp_min(1e-30)),
    }


class Curvature:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def evaluate(self, model: nn.Module, data: EvalSet, ctx: RunContext) -> dict[str, float] | None:
        if data.split != "test":
            return None
        dataset = data.loader.dataset
        n = min(self.config.samples, len(dataset))
        x, y = dataset.x[:n].to(ctx.device), dataset.y[:n].to(ctx.device)
        # the same probes at every evaluation, so two evaluations differ only by the model
        generator = torch.Generator().manual_seed(ctx.generator("probes").initial_seed())
        return curvature_report(model, x, y, self.config.probes, generator, ctx)
