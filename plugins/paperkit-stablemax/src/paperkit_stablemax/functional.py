"""StableMax and ⊥Grad as plain functions (Prieto, Barsbey, Mediano & Birdal, ICLR 2025).

StableMax replaces the exponential of Softmax by

    s(x) = x + 1          for x >= 0
    s(x) = 1 / (1 - x)    for x <  0

and normalizes: StableMax(x)_i = s(x_i) / sum_j s(x_j). s grows linearly
instead of exponentially, so scaling the logits cannot drive the probability of
the true class to exactly 1 in floating point ("Softmax Collapse"), and the
gradient does not vanish. The loss is -log StableMax(x)_y, computed in float64
in the reference experiments.

⊥Grad removes, per parameter tensor w, the component of the gradient
g along w (the "naive loss minimization" direction that only scales weights):

    g_perp = g - (w·g / (w·w + eps)) w

and, in the reference code and in pytorch-optimizer's ``OrthoGrad``, rescales
g_perp to the norm of g so that the base optimizer sees a gradient of the same
size. The base optimizer (SGD, AdamW) then steps on g_perp.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: The reference code divides by ``w·w + 1e-30`` and by ``||g_perp|| + 1e-30`` (``orthograd.py``).
ORTHOGRAD_EPS = 1e-30


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x): x + 1 for x >= 0 and 1 / (1 - x) for x < 0; positive, increasing, continuous at 0.

    The negative branch is evaluated on ``min(x, 0)`` so that its unused values
    for x >= 0 stay finite: ``torch.where`` back-propagates zero times the
    unused branch's derivative, and 0 * inf (1 / (1 - x) at x = 1) would be NaN.
    """
    negative = 1.0 / (1.0 - x.clamp(max=0.0))
    return torch.where(x < 0, negative, x + 1.0)


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log StableMax over ``dim``: log(s(x_i) / sum_j s(x_j)).

    Written as the log of the normalized value, as the reference ``log_stablemax``
    (``utils.py``) does, so that the forward pass is bit-identical to it.
    """
    s = stablemax_s(logits)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """StableMax probabilities: s(x_i) / sum_j s(x_j)."""
    s = stablemax_s(logits)
    return s / s.sum(dim=dim, keepdim=True)


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float64, reduction: str = "mean"
) -> torch.Tensor:
    """-log StableMax(x)_y, computed in ``dtype`` (float64 in the reference experiments).

    Returns a tensor of ``dtype``; its gradient flows back to the logits' own dtype.
    """
    logprobs = log_stablemax(logits.to(dtype), dim=-1)
    picked = -logprobs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return _reduce(picked, reduction)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float64, reduction: str = "mean"
) -> torch.Tensor:
    """-log Softmax(x)_y, computed in ``dtype``: the paper's baseline at a chosen precision.

    As the reference ``softmax_cross_entropy`` (``utils.py``): ``log_softmax`` with
    ``dtype`` (the logits are cast first), then the true class's entry. In float32
    it equals torch's ``cross_entropy``; in float64 the logits have to grow much
    further before the true class's probability rounds to exactly 1 (Softmax
    Collapse), which is how the paper's float64 baseline delays the collapse.
    """
    logprobs = torch.nn.functional.log_softmax(logits, dim=-1, dtype=dtype)
    picked = -logprobs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return _reduce(picked, reduction)


def _reduce(picked: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return picked.mean()
    if reduction == "sum":
        return picked.sum()
    if reduction == "none":
        return picked
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


@torch.no_grad()
def orthogonalize_(param: torch.Tensor, grad: torch.Tensor, eps: float = ORTHOGRAD_EPS, rescale: bool = True) -> torch.Tensor:
    """Replace ``grad`` in place by its component orthogonal to ``param`` (flattened); returns it.

    With ``rescale`` the result is scaled back to ``||grad||``. A gradient that is
    parallel to the weights (its orthogonal part is rounding noise) becomes zero
    instead of amplified noise, as pytorch-optimizer does. Half-precision
    tensors are projected in float32.
    """
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    w = param.reshape(-1).to(dtype)
    g = grad.reshape(-1).to(dtype)
    g_perp = g - (torch.dot(w, g) / (torch.dot(w, w) + eps)) * w
    if rescale:
        g_norm, perp_norm = g.norm(2), g_perp.norm(2)
        if perp_norm <= 4.0 * torch.finfo(dtype).eps * g_norm:
            g_perp.zero_()
        else:
            g_perp.mul_(g_norm / (perp_norm + eps))
    grad.copy_(g_perp.view_as(grad))
    return grad


def orthogonalize_gradients_(params: Iterable[torch.Tensor], eps: float = ORTHOGRAD_EPS, rescale: bool = True) -> None:
    """⊥Grad on every parameter with a dense gradient, one tensor at a time."""
    for p in params:
        if p.grad is None or p.grad.is_sparse or torch.is_complex(p):
            continue
        orthogonalize_(p, p.grad, eps, rescale)
