"""LSUV initialization (Mishkin & Matas, ICLR 2016) as plain functions.

Algorithm 1 of the paper, in two steps:

1. Pre-initialize the weight of every convolution and fully connected layer
   with an orthonormal matrix (Saxe et al., 2014): the ``U`` or ``V`` factor of
   the SVD of a standard Gaussian matrix shaped ``(out, in·kh·kw)``.
   (:func:`orthonormal_`)
2. From the first layer to the last, forward one minibatch, measure the
   variance of the layer's output blob ``B_L`` (the layer's own output, before
   any nonlinearity or normalization) and divide the weight by ``sqrt(Var(B_L))``;
   repeat until ``|Var(B_L) - 1| < Tol_var`` or ``T_max`` trials were made.
   (:func:`lsuv_init`)

Nothing here needs the paperkit engine: call :func:`lsuv_init` on any model and
a batch of inputs from your own training loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import attrs
import torch
from torch import nn

#: The layers LSUV processes: "convolution or inner-product layers" (paper, Section 2).
#: Transposed convolutions are left out: their weight is laid out (in, out, ...), so the
#: orthonormal step and the output variance would not mean what Algorithm 1 means.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Defaults of Algorithm 1 (Tol_var, T_max); the same values are the defaults of
#: the authors' Torch port (yobibyte/torch-lsuv, linked from ducha-aiki/LSUVinit).
TOL_VAR = 0.1
T_MAX = 10


@attrs.frozen
class LayerReport:
    """What LSUV did to one layer.

    ``variance`` is the output variance on the batch after the last rescaling;
    ``scale`` the factor the orthonormal weight was multiplied by in total;
    ``iterations`` the number of rescalings; ``converged`` whether
    ``|variance - 1| < tol``; ``reached`` whether the forward pass called the
    layer at all (a layer whose weights are used functionally, such as the
    output projection inside ``nn.MultiheadAttention``, is never observed and
    keeps its orthonormal pre-initialization).
    """

    name: str
    variance: float
    scale: float
    iterations: int
    converged: bool
    reached: bool = True


def orthonormal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``weight`` (out, in, ...) in place with an orthonormal matrix (Saxe et al., 2014).

    The weight is viewed as a matrix ``(out, in·k·k)``. A standard Gaussian
    matrix of that shape is decomposed by SVD; its left factor (orthonormal
    columns) is used when the matrix is tall, its right factor (orthonormal
    rows) when it is wide, as in the reference code (Lasagne's ``Orthogonal``
    used by ducha-aiki/LSUVinit and LSUV-pytorch). Returns ``weight``.
    """
    if weight.ndim < 2:
        raise ValueError(f"orthonormal init needs a weight with at least 2 dimensions, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape[0], math.prod(weight.shape[1:])
    gaussian = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    u, _s, vh = torch.linalg.svd(gaussian, full_matrices=False)
    q = u if u.shape == (rows, cols) else vh
    with torch.no_grad():
        weight.copy_(q.reshape(weight.shape).to(weight.dtype))
    return weight


def lsuv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers LSUV processes, in module order (the order they are registered)."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)]


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer's output is known."""


def output_variance(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> float | None:
    """Variance of ``layer``'s output when ``model`` runs on ``x``; ``None`` if it is never called.

    The variance is over every element of the output blob (batch, channels and
    positions together), the population variance the reference code computes
    with ``np.var``. The forward pass stops as soon as the layer has run, so
    measuring layer ``l`` costs only the first ``l`` layers.
    """
    captured: list[torch.Tensor] = []

    def capture(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured.append(output.detach())
        raise _Captured

    handle = layer.register_forward_hook(capture)
    try:
        model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        return None
    return captured[0].double().var(unbiased=False).item()


@contextlib.contextmanager
def _observable(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout noise, no running-stat updates), no autograd, and no
    fused transformer fast path (it bypasses the submodules whose outputs LSUV reads)."""
    was_training = model.training
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    model.eval()
    if mha is not None:
        mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)


def _device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def scale_to_unit_variance(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, tol: float = TOL_VAR, max_iters: int = T_MAX, name: str = ""
) -> LayerReport:
    """The inner loop of Algorithm 1 for one layer: ``W ← W / sqrt(Var(B_L))`` until within ``tol``.

    At most ``max_iters`` rescalings (T_max); the bias is not touched (the
    paper rescales only ``W_L``). A zero or non-finite variance stops the loop,
    since no rescaling of ``W`` can fix it.
    """
    variance = output_variance(model, layer, x)
    if variance is None:
        return LayerReport(name, float("nan"), 1.0, 0, False, reached=False)
    scale, iterations = 1.0, 0
    while abs(variance - 1.0) >= tol and iterations < max_iters:
        if not math.isfinite(variance) or variance <= 0.0:
            break
        factor = 1.0 / math.sqrt(variance)
        layer.weight.mul_(factor)
        scale *= factor
        iterations += 1
        variance = output_variance(model, layer, x)  # type: ignore[assignment]
    return LayerReport(name, variance, scale, iterations, abs(variance - 1.0) < tol)


def lsuv_init(
    model: nn.Module,
    batch: torch.Tensor,
    tol: float = TOL_VAR,
    max_iters: int = T_MAX,
    orthonormal: bool = True,
    zero_bias: bool = True,
    generator: torch.Generator | None = None,
) -> list[LayerReport]:
    """Layer-sequential unit-variance initialization of ``model`` in place (Algorithm 1).

    ``batch`` is the minibatch of inputs the model's ``forward`` takes (moved to
    the model's device). ``orthonormal`` pre-initializes every layer first
    (step 1); ``zero_bias`` sets biases to 0 as the reference prototxts' constant
    bias filler does (the algorithm itself never touches biases). Random draws
    use ``generator`` or torch's global generator. Returns one
    :class:`LayerReport` per processed layer, in order.
    """
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iters < 0:
        raise ValueError(f"max_iters must be >= 0, got {max_iters}")
    layers = lsuv_layers(model)
    if not layers:
        raise ValueError("the model has no nn.Linear or nn.Conv1d/2d/3d layer for LSUV to initialize")
    device = _device(model)
    x = batch.to(device) if device is not None else batch
    with _observable(model):
        for _name, layer in layers:
            if orthonormal:
                orthonormal_(layer.weight, generator)
            if zero_bias and layer.bias is not None:
                layer.bias.zero_()
        return [scale_to_unit_variance(model, layer, x, tol, max_iters, name) for name, layer in layers]
