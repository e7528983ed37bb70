"""The sharpness measures of Wu & Su (ICML 2023) against the learning rate, as plain functions.

Wu & Su study which global minima SGD can converge to: a minimum θ* is *linearly stable* when SGD on the loss
linearized there (a quadratic with Hessian ``H = ∇²L(θ*)``) stays bounded in mean square. Their stability result
(abstract; the full text was not available to us): if a global minimum is linearly stable for SGD with learning
rate η, then

    tr(H) ≤ 2/η                                      (SGD; trace of the Hessian)

while for gradient descent stability only gives the classical

    λ_max(H) ≤ 2/η                                   (GD; largest eigenvalue)

Since ``λ_max ≤ tr`` for a positive semi-definite ``H``, the SGD constraint is the stronger one, and a larger η
constrains the minimum more (the paper's "stronger implicit regularization with a larger LR").

This module measures the three sides of these statements on any model and loss:

- :func:`top_eigenvalue`: λ_max(H) by power iteration on Hessian-vector products (``paperkit.hvp``);
- :func:`stability_report`: Hutchinson's ``tr(H)`` (``paperkit.hutchinson_trace``, with its standard error),
  λ_max, the loss, and the ratios ``η·tr(H)/2`` and ``η·λ_max/2`` (each ≤ 1 at a minimum stable for SGD / GD),
  plus :func:`mixture_ratio`, the batch-size interpolation between them.

Batch size. The abstract states the trace bound without a batch size; it is the single-sample (B = 1) condition.
For a batch of B samples drawn without replacement from n, the mean-square stability of linearized SGD is that of
a process that takes a single-sample step with probability ``p = (n − B)/(B(n − 1))`` and a full-batch step
otherwise (Mulayoff & Michaeli, 2023, "Exact mean square linear stability analysis for SGD"). With equal
per-sample gradient norms (our derivation, for the squared loss at an interpolating minimum), one step from the
top eigenvector of H grows the mean-square distance exactly when ``η·[(1 − p)·λ_max + p·tr(H)]/2 > 1``:
:func:`mixture_ratio`. It equals ``η·tr(H)/2`` at B = 1 and ``η·λ_max/2`` at B = n (GD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import paperkit


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def top_eigenvalue(
    loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    generator: torch.Generator,
    iters: int = 100,
    tol: float = 1e-4,
) -> tuple[float, int]:
    """``(λ, iterations)``: the Hessian eigenvalue of largest magnitude of ``loss`` w.r.t. ``params``.

    Power iteration ``v ← H v / ‖H v‖`` from a Gaussian vector drawn (on the CPU) from ``generator``, each product
    by :func:`paperkit.hvp` on the one graph of ``loss``; λ is the Rayleigh quotient ``vᵀ H v``, and the iteration
    stops once two successive quotients agree to ``tol`` (relative) or after ``iters`` products. At a minimum H is
    positive semi-definite, so this is λ_max(H), the sharpness of the GD condition λ_max ≤ 2/η (the paper's
    abstract; Wu, Ma & E, 2018). Away from a minimum a negative eigenvalue of larger magnitude would be returned,
    with its sign.
    """
    if iters < 1:
        raise ValueError("top_eigenvalue needs at least one iteration")
    params = list(params)
    vector = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype) for p in params]
    norm = _dot(vector, vector).sqrt()
    vector = [v / norm for v in vector]
    value, done = float("nan"), 0
    for done in range(1, iters + 1):
        product = [h.detach() for h in paperkit.hvp(loss, params, vector)]
        new = float(_dot(vector, product))
        size = float(_dot(product, product).sqrt())
        if size == 0.0:  # H v = 0: v lies in the null space (a zero Hessian gives λ = 0)
            return 0.0, done
        converged = not math.isnan(value) and abs(new - value) <= tol * max(abs(new), 1e-12)
        value = new
        if converged:
            break
        vector = [h / size for h in product]
    return value, done


def mixture_ratio(lr: float, trace: float, lambda_max: float, batch_size: int, samples: int) -> float:
    """``η·[(1 − p)·λ_max + p·tr(H)]/2`` with ``p = (n − B)/(B(n − 1))``: the batch-size-B stability ratio.

    ``p`` is the probability of a single-sample step in the mixture process whose mean-square linear stability
    equals that of SGD with B samples drawn without replacement from n (Mulayoff & Michaeli, 2023). The ratio
    is ``η·tr/2`` (the paper's SGD bound) at B = 1 and ``η·λ_max/2`` (GD's) at B ≥ n; a value above 1 means one
    step from the top eigenvector of H grows the mean-square distance to the minimum when the per-sample
    gradient norms are equal (our derivation for the squared loss; see the module docstring).
    """
    if batch_size < 1 or samples < 1:
        raise ValueError("batch_size and samples must be positive")
    p = 1.0 if samples == 1 else max(samples - batch_size, 0) / (batch_size * (samples - 1))
    return lr * ((1.0 - p) * lambda_max + p * trace) / 2.0


def squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The built-in ``mse`` loss: squared error averaged over outputs, then over samples."""
    target = target.to(prediction.dtype).reshape(prediction.shape)
    return (prediction - target).pow(2).reshape(len(prediction), -1).mean(-1).mean()


def loss_function(name: str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss whose Hessian is measured: ``"mse"`` (as the built-in ``mse``) or ``"cross-entropy"``."""
    if name == "mse":
        return squared_error
    if name == "cross-entropy":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    raise ValueError(f"unknown loss {name!r}: use 'mse' or 'cross-entropy'")


def stability_report(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    probes: int = 100,
    power_iters: int = 100,
    tol: float = 1e-4,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Sharpness of ``loss_fn`` on ``(x, y)`` at the model's parameters, against the learning rate ``lr``.

    ``tr(H)`` by Hutchinson's estimator with ``probes`` Rademacher vectors (:func:`paperkit.hutchinson_trace`;
    ``trace_stderr`` its standard error), ``λ_max(H)`` by :func:`top_eigenvalue`, both on one forward pass over
    all of ``x`` (the Hessian of the full-batch loss, as in the paper's stability analysis), and:

    - ``trace_ratio = η·tr(H)/2``: ≤ 1 at a minimum linearly stable for SGD (the paper's tr(H) ≤ 2/η);
    - ``lambda_ratio = η·λ_max/2``: ≤ 1 at a minimum linearly stable for GD (λ_max ≤ 2/η);
    - ``mixture_ratio``: :func:`mixture_ratio` for ``batch_size`` out of ``len(x)``;
    - ``loss``: the loss itself, to tell how close to a (global) minimum the point is: the bounds are about minima.

    The model runs in evaluation mode (no dropout; batch norm with its running statistics) and is restored to
    its mode afterwards. ``forward(model, x)`` returns the logits (default ``model(x)``; inside a run the hook
    passes ``paperkit.forward`` so the class mask of the loss applies). Draws only from ``generator``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    frozen: list[torch.Tensor] = []
    if not params:  # an adapter merged into frozen weights at the end of the run: the trained weights are these
        frozen = params = [p for p in model.parameters() if p.is_floating_point()]
        for p in frozen:
            p.requires_grad_(True)
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = forward(model, x) if forward is not None else model(x)
            loss = loss_fn(logits, y)
            trace, stderr = paperkit.hutchinson_trace(loss, params, probes, generator)
            lam, iterations = top_eigenvalue(loss, params, generator, power_iters, tol)
    finally:
        model.train(training)
        for p in frozen:
            p.requires_grad_(False)
    n = len(x)
    return {
        "loss": float(loss.detach()),
        "trace": trace,
        "trace_stderr": stderr,
        "lambda_max": lam,
        "lambda_iterations": float(iterations),
        "lr": float(lr),
        "bound": 2.0 / lr,
        "trace_ratio": lr * trace / 2.0,
        "trace_ratio_stderr": lr * stderr / 2.0,
        "lambda_ratio": lr * lam / 2.0,
        "mixture_ratio": mixture_ratio(lr, trace, lam, batch_size, n),
        "batch_size": float(batch_size),
        "samples": float(n),
    }


def plan_learning_rate(plan: Any) -> float | None:
    """The base learning rate ``lr`` of the plan's optimizer entry (the method holding ``"optimizer"``), if any."""
    for use in plan.methods_for("optimize"):
        if "optimizer" in use.spec.exclusive:
            lr = getattr(use.config, "lr", None)
            return float(lr) if isinstance(lr, (int, float)) else None
    return None
