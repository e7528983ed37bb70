"""Maxout initialization (Tseran & Montúfar, ICML 2023) as plain functions.

A rank-K maxout unit computes the largest of K affine functions of its input,

    x^l_i = max_{k = 1..K} (w^l_{i,k} · x^{l-1} + b^l_{i,k}),

and a maxout net stacks such layers. The paper draws every weight IID from
``N(0, c / n_{l-1})`` (``n_{l-1}`` the layer's fan-in) and studies the moments of the
gradients at initialization. Its recommendation for wide networks (the constants
of its Table 4, as the authors' code cites them) is

    c = 1 / M_K,    M_K = E[(Ξ(N(0, 1), K))²],

where ``Ξ(N(0, 1), K)`` is the largest order statistic of K independent standard
Gaussians: the second moment of the maximum of K standard normals. ``M_2 = 1``,
``M_3 = 1.27566``, ``M_4 = 1.55133``, ``M_5 = 1.80002``, so ``c = 1, 0.78391, 0.64461,
0.55555`` (the values the authors' code ships as "the initialization suggested in the
paper"; the moments for K = 2..100 are listed in their notebook, computed with
Mathematica; :func:`largest_gaussian_moment` reproduces them).

Why ``M_K`` (our derivation, checked in the tests by Monte Carlo and random nets). With zero biases and the input ``x^{l-1}`` fixed, the K pre-activations
``w_{i,k} · x^{l-1}`` of unit i are IID ``N(0, c ||x^{l-1}||² / n_{l-1})``, so

    E[(x^l_i)² | x^{l-1}] = c M_K ||x^{l-1}||² / n_{l-1}:

every layer multiplies the mean squared activation by ``c M_K`` (exactly, at any width;
:func:`forward_factor`). The gradient depends on the input (the paper's observation):
for a direction ``u`` the Jacobian-vector product of one layer is ``u^l_i = w_{i,k*} · u``
with ``k*`` the selected piece, and the selection is correlated with the component of
``w`` along ``x`` only, so

    E[||J u||²] = c (n_l / n_{l-1}) (M_K cos²θ + sin²θ) ||u||²,   θ = angle(u, x)

(:func:`jacobian_factor`): the component of ``u`` along ``x`` grows by ``c M_K`` per layer,
the orthogonal one by ``c``. Since the first grows ``M_K`` times faster, ``u`` turns towards
``x`` with depth and in a deep net gradients explode or vanish geometrically unless
``c M_K = 1``; with ``c = 1 / M_K`` the forward pass is stable and the gradients stay
bounded. He initialization (``c = 2``, right for ReLU) gives the factor ``2 M_K`` (3.6 for
K = 5) per layer in a maxout net.

The paper's bounds on the per-layer factor use order statistics of K chi-squared(1)
variables (:func:`chi2_order_statistic_mean`): ``c·E[smallest]`` below, ``c·E[largest]``
above; their reciprocals are the other two constants of Table 4 (e.g. 2.7519 and 0.61102
for K = 2). For a maxout layer followed by a p-unit max-pooling window the authors' code
uses ``1 / M_{pK}`` (0.26573 for K = 5 and 2×2 pooling, :func:`maxout_c` with ``pool``).

Expectations are computed by composite Gauss–Legendre quadrature (16 nodes on panels of
width 1/4 over [-12, 12] for a Gaussian, [0, 12] for its absolute value), in float64 and
log space for the order-statistic densities: exact to ~1e-14 against the closed forms
(``M_2 = 1``, ``M_3 = 1 + √3/(2π)``, ``E[max of 2 χ²₁] = 1 + 2/π``), checked in the tests
also against Monte Carlo and the authors' values.

Nothing here needs the paperkit engine: :func:`maxout_init_` works on any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import attrs
import numpy as np
import torch
from torch import nn

from paperkit import LAYER_KINDS

# --- order statistics of Gaussians ------------------------------------------------------------------------

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)


@lru_cache(maxsize=8)
def _rule(lo: float, hi: float, panel: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite 16-point Gauss–Legendre nodes and weights on [lo, hi] (panels of width <= ``panel``), float64."""
    n = max(1, math.ceil((hi - lo) / panel))
    edges = np.linspace(lo, hi, n + 1)
    half, mid = (edges[1:] - edges[:-1]) / 2, (edges[1:] + edges[:-1]) / 2
    nodes = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
    weights = (half[:, None] * _WEIGHTS[None, :]).ravel()
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _check_rank(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")


def gaussian_order_statistic_moment(k: int, j: int | None = None, p: int = 2) -> float:
    """``E[Z_(j)^p]`` for the j-th smallest ``Z_(j)`` of ``k`` IID standard normals (``j = k``: the largest, default).

    The density of ``Z_(j)`` is ``k!/((j-1)!(k-j)!) Φ(z)^{j-1} (1 − Φ(z))^{k-j} φ(z)``
    (e.g. David & Nagaraja, *Order Statistics*, Eq. 2.1.6), integrated in log space
    (``log Φ`` by ``torch.special.log_ndtr``) so that large ``k`` stays accurate.
    """
    _check_rank(k)
    j = k if j is None else j
    if isinstance(j, bool) or not isinstance(j, int) or not 1 <= j <= k:
        raise ValueError(f"j must be an integer in 1..{k}, got {j!r}")
    if isinstance(p, bool) or not isinstance(p, int) or p < 0:
        raise ValueError(f"p must be an integer >= 0, got {p!r}")
    z, w = _rule(-12.0, 12.0)
    log_coef = math.lgamma(k + 1) - math.lgamma(j) - math.lgamma(k - j + 1)
    log_density = (
        log_coef
        - 0.5 * z * z
        - 0.5 * math.log(2 * math.pi)
        + (j - 1) * torch.special.log_ndtr(z)
        + (k - j) * torch.special.log_ndtr(-z)
    )
    return float((w * z**p * torch.exp(log_density)).sum())


def largest_gaussian_moment(k: int) -> float:
    """``M_K = E[(Ξ(N(0, 1), K))²]``: the second moment of the largest of ``k`` IID standard normals (the paper's constant).

    ``M_1 = M_2 = 1`` (``max(Z₁, Z₂)² `` and ``min(Z₁, Z₂)²`` have the same law and sum to
    ``Z₁² + Z₂²``), ``M_3 = 1 + √3/(2π)``, and ``M_K`` grows like ``2 ln K``.
    """
    return gaussian_order_statistic_moment(k, k, 2)


def maxout_c(k: int, pool: int = 1) -> float:
    """The paper's weight-variance factor ``c = 1 / M_K`` for rank-``k`` maxout layers: ``W ~ N(0, c / fan_in)``.

    ``pool > 1``: a maxout layer whose output goes through a max-pooling window of
    ``pool`` units (4 for 2×2), as the maximum of ``pool·k`` Gaussians: ``1 / M_{pool·k}``
    (the authors' "max-pooling initialization", 0.26573 for K = 5 and 2×2 windows; it
    treats the pooled units as independent, an approximation).
    """
    _check_rank(pool, "pool")
    return 1.0 / largest_gaussian_moment(k * pool)


def chi2_order_statistic_mean(k: int, which: str = "largest") -> float:
    """``E[χ_(K)]`` or ``E[χ_(1)]``: the mean of the largest / smallest of ``k`` IID chi-squared(1) variables.

    These bound the per-layer factor of ``E[||J u||²]`` in the paper's Theorem (up to
    ``c n_l / n_{l-1}``): the smallest below, the largest above; their reciprocals are the
    "lower-bound" and "upper-bound" constants of the paper's Table 4. With ``|Z|`` of CDF
    ``G(t) = erf(t/√2)``: largest ``∫ t² k G^{k-1} dG``, smallest ``∫ t² k (1 − G)^{k-1} dG``.
    """
    _check_rank(k)
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    t, w = _rule(0.0, 12.0)
    log_abs_density = math.log(2.0) - 0.5 * t * t - 0.5 * math.log(2 * math.pi)
    tail = torch.erf(t / math.sqrt(2.0)) if which == "largest" else torch.erfc(t / math.sqrt(2.0))
    density = k * torch.exp(log_abs_density + (k - 1) * torch.log(tail.clamp_min(1e-300)))
    density = torch.where(tail > 0, density, torch.zeros_like(density))
    return float((w * t * t * density).sum())


def forward_factor(c: float, k: int) -> float:
    """``c M_K``: the factor by which one maxout layer (zero biases) multiplies the mean squared activation.

    ``E[||x^l||² / n_l | x^{l-1}] = c M_K ||x^{l-1}||² / n_{l-1}`` exactly; 1 at the paper's ``c``.
    """
    return c * largest_gaussian_moment(k)


def jacobian_factor(c: float, k: int, cos2: float) -> float:
    """``c (M_K cos²θ + 1 − cos²θ)``: ``E[||J u||²] / ||u||²`` of one maxout layer per unit of ``n_l / n_{l-1}``.

    ``θ`` is the angle between the direction ``u`` and the layer's input ``x`` (zero biases):
    the piece a unit selects depends on the component of its weights along ``x`` only, which
    is why the Jacobian's distribution depends on the input (the paper's observation, abstract).
    """
    if not 0.0 <= cos2 <= 1.0:
        raise ValueError(f"cos2 must lie in [0, 1], got {cos2}")
    return c * (largest_gaussian_moment(k) * cos2 + 1.0 - cos2)


# --- which layers feed a maxout -------------------------------------------------------------------------



def maxout_rank(module: nn.Module) -> int | None:
    """The rank K of a maxout module, or ``None`` for any other module.

    A maxout module is one whose class is named ``Maxout`` and which has an integer
    ``pieces`` attribute (paperkit's ``mlp`` with ``activation = "maxout"``; a user's
    class written the same way is recognized too).
    """
    pieces = getattr(module, "pieces", None)
    if type(module).__name__ == "Maxout" and isinstance(pieces, int) and not isinstance(pieces, bool):
        return pieces
    return None


@attrs.frozen
class LayerPlan:
    """One weight layer: its name, the module, and the rank of the maxout it feeds (``None``: it feeds none)."""

    name: str
    module: nn.Module
    rank: int | None


def plan_layers(model: nn.Module, kinds: tuple[str, ...] | list[str] = ("linear", "conv")) -> list[LayerPlan]:
    """Every weight layer of the given kinds, in module order, with the rank of the maxout it feeds.

    A layer feeds a maxout when the next module in ``model.modules()`` order that is either
    a weight layer or a maxout is a maxout (norms and dropout in between are skipped). In
    paperkit's ``mlp`` this marks the input layer and each block's first linear layer; the
    head (and a residual block's second linear layer) feed none.
    """
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown:
        raise ValueError(f"unknown layer kind(s) {', '.join(map(repr, unknown))} (known: {', '.join(LAYER_KINDS)})")
    types = tuple(t for k in kinds for t in LAYER_KINDS[k])
    weight_types = tuple(t for ts in LAYER_KINDS.values() for t in ts)
    out: list[LayerPlan] = []
    pending: list[int] = []  # indices in ``out`` of layers still waiting for their next weight layer or maxout
    for name, module in model.named_modules():
        rank = maxout_rank(module)
        if rank is not None:
            for i in pending:
                out[i] = attrs.evolve(out[i], rank=rank)
            pending = []
        elif isinstance(module, weight_types) and isinstance(getattr(module, "weight", None), torch.Tensor):
            pending = []
            if isinstance(module, types):
                out.append(LayerPlan(name, module, None))
                pending = [len(out) - 1]
    return out


# --- drawing the weights ----------------------------------------------------------------------------------


@torch.no_grad()
def normal_fan_in_(
    weight: torch.Tensor,
    c: float,
    generator: torch.Generator | None = None,
) -> None:
    """``W ~ N(0, c / fan_in)`` in place, drawn on the CPU from ``generator`` (``fan_in = in·k·...``, torch's).

    Equals ``torch.nn.init.normal_(weight, 0, √(c / fan_in), generator)`` bit for bit; with
    ``c = 2`` it is ``torch.nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")``.
    """
    fan_in = weight[0].numel() if weight.ndim >= 2 else 0
    if fan_in == 0:
        raise ValueError(f"a weight needs at least 2 dimensions and a non-empty fan-in, got shape {tuple(weight.shape)}")
    if not (c > 0.0 and math.isfinite(c)):
        raise ValueError(f"c must be finite and > 0, got {c}")
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    draw = torch.empty(weight.shape, dtype=dtype).normal_(0.0, math.sqrt(c / fan_in), generator=generator)
    weight.copy_(draw)


@attrs.frozen
class LayerRecord:
    """What one layer received: name, weight shape (out, fan_in), the rank of the maxout it feeds, c, bias zeroed."""

    name: str
    shape: tuple[int, int]
    rank: int | None
    c: float
    zero_bias: bool


@torch.no_grad()
def maxout_init_(
    model: nn.Module,
    *,
    c: float | Callable[[int], float] | None = None,
    output_c: float = 1.0,
    zero_bias: bool = True,
    layers: tuple[str, ...] | list[str] = ("linear", "conv"),
    generator: torch.Generator | None = None,
) -> list[LayerRecord]:
    """Draw every chosen layer of ``model`` in module order from one generator; returns what each got.

    * A layer that feeds a rank-K maxout (:func:`plan_layers`) gets ``W ~ N(0, c_K / fan_in)``
      with ``c_K = c`` if ``c`` is a number, ``c(K)`` if it is a function, and the paper's
      ``1 / M_K`` (:func:`maxout_c`) if it is ``None``.
    * Any other layer (the output layer) gets ``N(0, output_c / fan_in)``: the authors'
      code draws the last linear layer with ``c = 1``.
    * ``zero_bias``: every chosen layer's bias is set to 0 (the authors' code; the theory's
      zero biases). ``False`` keeps the biases the model was built with.

    Raises ``ValueError`` when the model has no maxout unit fed by a chosen layer.
    """
    plans = plan_layers(model, layers)
    if not any(p.rank is not None for p in plans):
        raise ValueError(
            "found no maxout unit fed by a linear or conv layer (a module named Maxout with an integer 'pieces'); "
            'build the mlp with activation = "maxout"'
        )
    records = []
    for plan in plans:
        if plan.rank is None:
            layer_c = float(output_c)
        elif c is None:
            layer_c = maxout_c(plan.rank)
        elif callable(c):
            layer_c = float(c(plan.rank))
        else:
            layer_c = float(c)
        weight = plan.module.weight
        normal_fan_in_(weight, layer_c, generator)
        bias = getattr(plan.module, "bias", None)
        if zero_bias and isinstance(bias, torch.Tensor):
            bias.zero_()
        records.append(LayerRecord(plan.name, (weight.shape[0], weight[0].numel()), plan.rank, layer_c, zero_bias))
    return records


# --- measuring propagation in a real net ----------------------------------------------------------------


def layer_second_moments(
    model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[list[float], list[float]]:
    """Per maxout module of ``model`` (module order): the mean squared activation and the mean squared gradient.

    Forward: ``mean((x^l)²)`` over the batch and the units of each maxout output.
    Backward: ``mean((∂L/∂x^l)²)`` for ``L = Σ output · g``, ``g`` IID standard normal drawn
    from ``generator`` (a random linear read-out of the outputs): the second moment of the
    back-propagated gradient at each layer.
    """
    outputs: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for m in model.modules()
        if maxout_rank(m) is not None
    ]
    if not handles:
        raise ValueError("the model has no maxout module to measure")
    try:
        with torch.enable_grad():
            y = model(x.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    g = torch.randn(y.shape, dtype=y.dtype, generator=generator).to(y.device)
    with torch.enable_grad():
        grads = torch.autograd.grad((y * g).sum(), outputs)
    forward = [float(o.detach().pow(2).mean()) for o in outputs]
    backward = [float(gr.pow(2).mean()) for gr in grads]
    return forward, backward
