"""Second-order and per-sample derivatives of any model, for methods that measure or regularize curvature.

Sharpness diagnostics, Hessian-trace regularizers, influence and memorization
scores, neural-tangent kernels and gradient-noise estimates all reduce to a
few computations, here once and checked against exact ones in the tests:

- :func:`hvp`: a Hessian-vector product by double backpropagation;
- :func:`hutchinson_trace`: the trace of the Hessian from Rademacher probes
  (Hutchinson, 1989), with its standard error;
- :func:`per_sample_gradients`: one gradient per sample (``torch.func``'s
  ``vmap`` over ``grad``), no loop over the batch;
- :func:`parameter_jacobian`: per-sample Jacobians of the outputs with respect
  to the parameters (the empirical NTK is ``J Jᵀ``).

All take the plain module (``paperkit.unwrapped(model)`` inside a run) or any
``nn.Module``, and work in any hook. Double backpropagation inside
``regularize`` (a gradient penalty built with :func:`hvp`'s
``create_graph=True``) also works under several processes: DDP all-reduces the
final gradients as usual (each process's penalty is on its share of the batch,
so a penalty that is not a mean over samples differs from one process's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from paperkit.step import unwrapped


def hvp(
    loss: torch.Tensor, params: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor], create_graph: bool = False
) -> list[torch.Tensor]:
    """``H v`` for the Hessian ``H`` of ``loss`` w.r.t. ``params`` (one vector per parameter), by double backprop.

    ``loss`` must have been computed with a graph (not under ``no_grad``); the
    graph is kept, so several products can share one forward pass.
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(grads, vectors) if g is not None]
    if not pairs:
        return [torch.zeros_like(p) for p in params]
    dot = torch.stack([(g * v).sum() for g, v in pairs]).sum()
    products = torch.autograd.grad(dot, params, retain_graph=True, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, products)]


def hutchinson_trace(
    loss: torch.Tensor, params: Sequence[torch.Tensor], probes: int, generator: torch.Generator
) -> tuple[float, float]:
    """``(estimate, standard error)`` of ``tr(H)`` from ``probes`` Rademacher vectors: ``E[vᵀ H v] = tr(H)``.

    The vectors are drawn on the CPU from ``generator`` (a method's
    ``ctx.generator``), so the estimate is the same on every device and resumes
    exactly.
    """
    if probes < 1:
        raise ValueError("hutchinson_trace needs at least one probe")
    params = list(params)
    samples = []
    for _ in range(probes):
        vectors = [
            (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8) * 2 - 1).to(p.device, p.dtype)
            for p in params
        ]
        products = hvp(loss, params, vectors)
        samples.append(sum(float((v * h).sum()) for v, h in zip(vectors, products)))
    values = torch.tensor(samples, dtype=torch.float64)
    error = float(values.std(unbiased=True) / probes**0.5) if probes > 1 else float("nan")
    return float(values.mean()), error


def _functional(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    module = unwrapped(model)
    params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in module.named_buffers()}
    return module, params, buffers


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The gradient of ``loss_fn(logits, y)`` for every sample separately: ``{name: (B, *param.shape)}``.

    ``loss_fn`` receives one sample's logits and label with a batch dimension of
    one (``F.cross_entropy`` works as it is). Uses ``torch.func`` (``vmap`` over
    ``grad``), so the model must not mix samples (no batch-norm statistics in
    training mode); call it on a model in evaluation mode or without such layers.
    """
    from torch.func import functional_call, grad, vmap

    module, params, buffers = _functional(model)

    def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(module, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(logits, yi.unsqueeze(0))

    return vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)


def parameter_jacobian(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample Jacobians of the logits w.r.t. every trainable parameter: ``{name: (B, C, *param.shape)}``.

    The empirical neural tangent kernel of two sets is
    ``Σ_name J_a[name] · J_b[name]`` contracted over the parameter dimensions.
    """
    from torch.func import functional_call, jacrev, vmap

    module, params, buffers = _functional(model)

    def one(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(module, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    return vmap(jacrev(one), in_dims=(None, 0))(params, x)


def flat(tensors: dict[str, torch.Tensor] | Sequence[torch.Tensor], batch_dims: int = 0) -> torch.Tensor:
    """Tensors concatenated after flattening all but their first ``batch_dims`` dimensions."""
    values: Any = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(*t.shape[:batch_dims], -1) for t in values], dim=batch_dims)
