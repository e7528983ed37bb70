"""Edge-of-Chaos initialization (Hayou, Doucet & Rousseau, ICML 2019) as plain functions.

The paper studies a deep feed-forward net at initialization,

    y^l = W^l φ(y^{l-1}) + B^l,   W^l_ij ~ N(0, σ_w² / N_{l-1}),   B^l_i ~ N(0, σ_b²),

in the infinite-width (mean-field) limit of Poole et al. (2016) and Schoenholz et al.
(2017), which the paper builds on (its Sec. 2). Two one-dimensional maps describe it:

* the **variance map** (how the per-unit second moment ``q`` of a pre-activation moves
  from one layer to the next)

      q^l = F(q^{l-1}) = σ_b² + σ_w² E[φ(√q^{l-1} Z)²],   Z ~ N(0, 1);

* the **correlation map** (how the correlation ``c`` of the pre-activations of two inputs
  moves, both inputs at the variance fixed point ``q``)

      c^l = f(c^{l-1}) = (σ_b² + σ_w² E[φ(u₁) φ(u₂)]) / q,
      u₁ = √q Z₁,  u₂ = √q (c Z₁ + √(1 − c²) Z₂).

``c = 1`` is always a fixed point of ``f`` and its slope there is

      χ₁ = f'(1) = σ_w² E[φ'(√q Z)²].

``χ₁ < 1`` is the *ordered* phase (every pair of inputs ends up perfectly correlated,
exponentially fast, depth scale ξ_c = −1/ln χ₁), ``χ₁ > 1`` the *chaotic* phase (the
correlations converge to some ``c* < 1``, ξ_c = −1/ln f'(c*)); gradients vanish or explode
at the same rate. The **Edge of Chaos (EoC)** is the set of (σ_b, σ_w) for which the variance
has a fixed point ``q*`` and ``χ₁ = 1`` there. The paper's results used here:

* ReLU-like activations: the EoC is the single point (σ_b, σ_w) = (0, √2) (Sec. 3), and on
  it ``1 − c^l ~ 9π² / (2 l²)``: the correlation still goes to 1, but polynomially.
* Smooth activations (tanh, ELU, Swish/SiLU, GELU): the EoC is a curve, one σ_w for each
  σ_b, and on it ``1 − c^l ~ β_q / l`` with ``β_q = 2 E[φ'(√q Z)²] / (q E[φ''(√q Z)²])``
  (Sec. 4): slower than ReLU's ``1/l²``, so information propagates deeper; the paper argues
  that this is why smooth activations on the EoC train faster and better.

How the EoC is computed here. Writing the two EoC conditions at a given fixed point
``q = q*`` makes them linear in (σ_w², σ_b²):

      σ_w² = χ / E[φ'(√q Z)²],     σ_b² = q − χ E[φ(√q Z)²] / E[φ'(√q Z)²]      (χ = 1 on the EoC)

so the curve is explicit in ``q*`` (the standard parametrization of the critical line,
e.g. Pennington et al. 2017), and the σ_w for a chosen σ_b is one monotone root in ``q*``
(:func:`eoc_point`). The same formula with χ ≠ 1 gives the ordered (χ < 1) and chaotic
(χ > 1) baselines at the same σ_b. Every point is checked to be an *attracting* fixed point
of the variance map (``F'(q*) < 1``), otherwise the net never reaches it.

Expectations. A Gaussian expectation ``E[g(√q Z)]`` is computed by Gaussian quadrature:
8-point Gauss–Legendre on panels of width ≤ 0.5 (in units of the pre-activation, and ≤ √q/2)
over ±10 standard deviations, with a panel boundary at 0 where ReLU and ELU have their kinks
(:func:`gaussian_rule`). Plain Gauss–Hermite in ``Z`` resolves φ's features near 0 with node
spacing ∝ √(q/n): fine for q ≲ 1 but 2 % off for tanh at q = 10 with 100 nodes,
and the EoC of smooth activations reaches q* ≫ 1 for σ_b ≳ 0.5. Gauss–Hermite is kept as an
independent cross-check in the tests, together with closed forms and Monte Carlo.

Nothing here needs the paperkit engine: :func:`init_model_` works on any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import attrs
import numpy as np
import torch
from torch import nn

from paperkit import weight_layers

Fn = Callable[[torch.Tensor], torch.Tensor]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --- activations --------------------------------------------------------------------------------


@attrs.frozen
class Activation:
    """An activation φ with its first two derivatives (float64 torch functions).

    ``homogeneous`` marks the positively homogeneous ones (ReLU, identity: φ(λx) = λφ(x) for
    λ > 0), for which ``E[φ'(√q Z)²]`` does not depend on ``q`` and the EoC is solved in
    closed form (Sec. 3 of the paper: ReLU-like activations).
    """

    name: str
    phi: Fn
    dphi: Fn
    d2phi: Fn
    homogeneous: bool = False


def _gauss_cdf(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(u / _SQRT2))


def _gauss_pdf(u: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * u * u) * _INV_SQRT_2PI


def _tanh_d1(u: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(u) ** 2


def _tanh_d2(u: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(u)
    return -2.0 * t * (1.0 - t * t)


def _silu_d1(u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(u)
    return s * (1.0 + u * (1.0 - s))


def _silu_d2(u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(u)
    return s * (1.0 - s) * (2.0 + u * (1.0 - 2.0 * s))


#: The activations the EoC can be computed for. ``relu``, ``tanh``, ``gelu`` and ``identity``
#: are the ``mlp`` model's; ``elu`` (α = 1) and ``silu`` (Swish, x·sigmoid(x)) are the paper's
#: other two (Sec. 4-5); each φ is torch's own function (``nn.GELU`` is the exact erf form).
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(
        "relu", torch.relu, lambda u: (u > 0).to(u.dtype), lambda u: torch.zeros_like(u), homogeneous=True
    ),
    "identity": Activation(
        "identity", lambda u: u, lambda u: torch.ones_like(u), lambda u: torch.zeros_like(u), homogeneous=True
    ),
    "tanh": Activation("tanh", torch.tanh, _tanh_d1, _tanh_d2),
    "gelu": Activation(
        "gelu",
        torch.nn.functional.gelu,
        lambda u: _gauss_cdf(u) + u * _gauss_pdf(u),
        lambda u: (2.0 - u * u) * _gauss_pdf(u),
    ),
    "elu": Activation(
        "elu",
        torch.nn.functional.elu,
        lambda u: torch.where(u > 0, torch.ones_like(u), torch.exp(torch.clamp(u, max=0.0))),
        lambda u: torch.where(u > 0, torch.zeros_like(u), torch.exp(torch.clamp(u, max=0.0))),
    ),
    "silu": Activation("silu", torch.nn.functional.silu, _silu_d1, _silu_d2),
}

#: The σ_b used when none is given. ReLU-like activations (and the identity) have a single
#: EoC point, at σ_b = 0 (paper Sec. 3). tanh and ELU: 0.2, the σ_b of the EoC values that
#: third-party initializers citing this line of work ship (tanh (0.2, 1.31), Swish (0.2, 1.72);
#: keras / MATLAB snippets, not checked against the paper's text, which we could not read; our
#: own tanh value at σ_b = 0.2 is σ_w = 1.304). GELU and SiLU: the EoC point at σ_b = 0.2 is a
#: *repelling* variance fixed point (F'(q*) ≈ 1.1; the variance of a deep net runs away from
#: it), so their defaults are the smallest round σ_b >= 0.2 with an attracting one: 0.5
#: (σ_w = 1.400) and 1.0 (σ_w = 1.403).
DEFAULT_SIGMA_B: dict[str, float] = {"relu": 0.0, "identity": 0.0, "tanh": 0.2, "elu": 0.2, "gelu": 0.5, "silu": 1.0}


def get_activation(name: str | Activation) -> Activation:
    """The :class:`Activation` called ``name`` (see :data:`ACTIVATIONS`)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})") from None


def _module_activation(module: nn.Module) -> str | None:
    """The :data:`ACTIVATIONS` name of an activation module, None for other modules; error for unsupported ones."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise ValueError("nn.GELU(approximate='tanh') is not supported: its EoC differs from the exact GELU's")
        return "gelu"
    if isinstance(module, nn.ELU):
        if module.alpha != 1.0:
            raise ValueError(f"nn.ELU(alpha={module.alpha}) is not supported: only alpha = 1")
        return "elu"
    if isinstance(module, (nn.Sigmoid, nn.LeakyReLU, nn.SELU, nn.Softplus, nn.Mish, nn.PReLU, nn.Hardtanh, nn.CELU)):
        raise ValueError(f"the model uses {type(module).__name__}, for which no EoC is computed: set activation")
    return None


#: Modules whose activations are not visible as modules (and whose signal propagation the paper's
#: feed-forward mean field does not describe): auto-detection refuses models that contain them.
_NOT_FEED_FORWARD: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.RNNBase,
)


def detect_activation(model: nn.Module) -> str:
    """The single activation a model uses, from its activation modules; ``identity`` when it has none.

    Refuses models with attention or recurrent layers (their activations are functions, not
    modules, and the paper's analysis is for feed-forward nets): name the activation explicitly there.
    """
    other = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _NOT_FEED_FORWARD)})
    if other:
        raise ValueError(
            f"the model has {', '.join(other)}: its activation cannot be read from its modules and the paper's mean "
            "field is for feed-forward nets; set activation explicitly to draw the EoC point anyway"
        )
    found = {name for name in map(_module_activation, model.modules()) if name is not None}
    if len(found) > 1:
        raise ValueError(f"the model mixes activations ({', '.join(sorted(found))}): set activation explicitly")
    return found.pop() if found else "identity"


# --- Gaussian expectations ------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _legendre(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(points)
    return torch.from_numpy(x), torch.from_numpy(w)


def gaussian_rule(
    q: float, *, panel: float = 0.5, points: int = 8, span: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``u`` and weights ``w`` (float64) with ``Σ w g(u) ≈ E[g(U)]``, ``U ~ N(0, q)``.

    Composite ``points``-point Gauss–Legendre on panels of width ``min(panel, √q / 2)`` covering
    ``[−span·√q, span·√q]``, with a panel boundary at 0 (where ReLU and ELU are not smooth);
    the weights include the Gaussian density. ``q = 0`` gives the point mass at 0.
    """
    if not q >= 0.0 or not math.isfinite(q):
        raise ValueError(f"the variance q must be finite and >= 0, got {q}")
    if q == 0.0:
        return torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    s = math.sqrt(q)
    half = span * s
    n = max(1, math.ceil(half / min(panel, s / 2.0)))
    h = half / n
    x, w = _legendre(points)
    left = torch.arange(n, dtype=torch.float64) * h
    pos = (left[:, None] + (x[None, :] + 1.0) * (h / 2.0)).reshape(-1)
    u = torch.cat([-pos.flip(0), pos])
    wts = (w[None, :] * (h / 2.0)).expand(n, points).reshape(-1)
    wts = torch.cat([wts.flip(0), wts]) * torch.exp(-0.5 * (u / s) ** 2) / (s * math.sqrt(2.0 * math.pi))
    return u, wts


def gaussian_expectation(g: Fn, q: float) -> float:
    """``E[g(U)]`` for ``U ~ N(0, q)`` (:func:`gaussian_rule`)."""
    u, w = gaussian_rule(q)
    return float((w * g(u)).sum())


def _moments(act: Activation, q: float) -> tuple[float, float]:
    """``(E[φ(√q Z)²], E[φ'(√q Z)²])``."""
    u, w = gaussian_rule(q)
    return float((w * act.phi(u) ** 2).sum()), float((w * act.dphi(u) ** 2).sum())


# --- the variance map -----------------------------------------------------------------------------


def variance_map(q: float, sigma_w: float, sigma_b: float, activation: str | Activation) -> float:
    """``F(q) = σ_b² + σ_w² E[φ(√q Z)²]``: the next layer's pre-activation variance (paper Sec. 2)."""
    act = get_activation(activation)
    return sigma_b**2 + sigma_w**2 * gaussian_expectation(lambda u: act.phi(u) ** 2, q)


def variance_map_slope(q: float, sigma_w: float, activation: str | Activation) -> float:
    """``F'(q) = σ_w² E[φ'(√q Z)² + φ(√q Z) φ''(√q Z)]`` (Gaussian integration by parts); < 1 at an attracting q*."""
    act = get_activation(activation)
    return sigma_w**2 * gaussian_expectation(lambda u: act.dphi(u) ** 2 + act.phi(u) * act.d2phi(u), q)


def variance_fixed_point(
    sigma_w: float, sigma_b: float, activation: str | Activation, q0: float = 1.0, q_max: float = 1e6
) -> float:
    """The fixed point ``q*`` that the variance reaches from ``q⁰ = q0`` (``inf`` if it grows without bound).

    ``F`` is increasing in ``q`` for every activation here (``E[φ(√q Z)²]`` grows with ``q``),
    so the sequence ``q^l`` is monotone and converges to the first fixed point in the
    direction it moves: it is bracketed by doubling (or halving) from ``q0``, then bisected.
    """
    act = get_activation(activation)
    gap = lambda q: variance_map(q, sigma_w, sigma_b, act) - q  # noqa: E731
    g0 = gap(q0)
    if g0 == 0.0:
        return q0
    lo, hi = q0, q0
    if g0 > 0:  # the variance grows: look upwards
        while gap(hi) > 0:
            lo, hi = hi, 2.0 * hi
            if hi > q_max:
                return math.inf
    else:  # it shrinks: look downwards
        while gap(lo) < 0:
            hi, lo = lo, lo / 2.0
            if lo < 1e-12:
                return 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def chi1(sigma_w: float, q: float, activation: str | Activation) -> float:
    """``χ₁ = σ_w² E[φ'(√q Z)²]``: the slope of the correlation map at c = 1 (paper Sec. 2; Schoenholz et al. 2017).

    Also the factor by which the squared gradient norm changes per layer, so χ₁ < 1
    (ordered) means vanishing, χ₁ > 1 (chaotic) exploding gradients; χ₁ = 1 is the EoC.
    """
    act = get_activation(activation)
    return sigma_w**2 * gaussian_expectation(lambda u: act.dphi(u) ** 2, q)


def phase(chi: float, tol: float = 1e-6) -> str:
    """``"ordered"`` (χ₁ < 1), ``"edge of chaos"`` (χ₁ = 1 within ``tol``) or ``"chaotic"`` (χ₁ > 1)."""
    if abs(chi - 1.0) <= tol:
        return "edge of chaos"
    return "ordered" if chi < 1.0 else "chaotic"


# --- the EoC ----------------------------------------------------------------------------------------


@attrs.frozen
class EocPoint:
    """An initialization point: σ_b, σ_w, the variance fixed point q* it reaches, and χ₁ there."""

    activation: str
    sigma_b: float
    sigma_w: float
    q: float
    chi: float

    @property
    def phase(self) -> str:
        return phase(self.chi)


def eoc_sigma_b2(q: float, activation: str | Activation, chi: float = 1.0) -> float:
    """σ_b² of the point with variance fixed point ``q`` and ``χ₁ = chi``: ``q − χ E[φ²] / E[φ'²]`` (may be < 0)."""
    act = get_activation(activation)
    e_phi2, e_dphi2 = _moments(act, q)
    return q - chi * e_phi2 / e_dphi2


def eoc_sigma_w(q: float, activation: str | Activation, chi: float = 1.0) -> float:
    """σ_w of the point with variance fixed point ``q`` and ``χ₁ = chi``: ``√(χ / E[φ'(√q Z)²])``."""
    act = get_activation(activation)
    return math.sqrt(chi / _moments(act, q)[1])


def eoc_point(
    activation: str | Activation, sigma_b: float = 0.0, chi: float = 1.0, *, q_min: float = 1e-10, q_max: float = 1e6
) -> EocPoint:
    """The σ_w at which ``χ₁ = chi`` for this σ_b: the EoC (``chi = 1``), or an ordered / chaotic point.

    Solves ``eoc_sigma_b2(q) = σ_b²`` for the smallest ``q* > 0`` (a scan in factors of 2
    from ``q_min``, then bisection), then ``σ_w = eoc_sigma_w(q*)``, and checks that ``q*`` is
    an attracting fixed point of the variance map. ReLU and the identity are solved in closed
    form: ``σ_w = √(χ / E[φ'²])`` (√2 for ReLU on the EoC), with ``q* = σ_b² / (1 − χ)`` when
    χ < 1; the EoC of ReLU-like activations is the single point σ_b = 0 (paper Sec. 3), where
    every variance is a fixed point (``q`` is reported as nan).

    Raises ``ValueError`` when no such point exists (e.g. ReLU on the EoC with σ_b > 0).
    """
    act = get_activation(activation)
    if not (sigma_b >= 0.0 and math.isfinite(sigma_b)):
        raise ValueError(f"sigma_b must be finite and >= 0, got {sigma_b}")
    if not (chi > 0.0 and math.isfinite(chi)):
        raise ValueError(f"chi must be finite and > 0, got {chi}")
    if act.homogeneous:
        sigma_w = math.sqrt(chi / _moments(act, 1.0)[1])
        if chi < 1.0:
            return EocPoint(act.name, sigma_b, sigma_w, sigma_b**2 / (1.0 - chi), chi)
        if sigma_b == 0.0:
            # chi = 1: every q is a fixed point; chi > 1: q = 0 is the only, repelling, one (the variance explodes)
            return EocPoint(act.name, sigma_b, sigma_w, math.nan if chi == 1.0 else math.inf, chi)
        raise ValueError(
            f"{act.name} with sigma_b = {sigma_b} > 0 has no variance fixed point at chi >= 1 (the variance grows without "
            f"bound); its edge of chaos is the single point (sigma_b, sigma_w) = (0, {math.sqrt(1 / _moments(act, 1.0)[1]):.4g})"
        )
    if sigma_b == 0.0:
        zero = _zero_variance_point(act, chi)
        if zero is not None:
            return zero
    target = sigma_b**2
    gap = lambda q: eoc_sigma_b2(q, act, chi) - target  # noqa: E731
    lo = q_min
    if gap(lo) >= 0.0:
        raise ValueError(
            f"{act.name} has no point with chi = {chi} at sigma_b = {sigma_b}"
            + (
                " with an attracting variance fixed point; use sigma_b > 0"
                if sigma_b == 0.0
                else f" (q-scan starts at {q_min})"
            )
        )
    hi = lo
    while gap(hi) < 0.0:
        lo, hi = hi, 2.0 * hi
        if hi > q_max:
            raise ValueError(
                f"no point with chi = {chi} and sigma_b = {sigma_b} for {act.name} with q* <= {q_max:g}: "
                f"sigma_b is beyond the largest one that its EoC curve reaches"
            )
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gap(mid) < 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    q = 0.5 * (lo + hi)
    sigma_w = eoc_sigma_w(q, act, chi)
    slope = variance_map_slope(q, sigma_w, act)
    if slope >= 1.0:
        raise ValueError(
            f"the variance fixed point q* = {q:.4g} of {act.name} at (sigma_b, sigma_w) = ({sigma_b}, {sigma_w:.4g}) is "
            f"not attracting (F'(q*) = {slope:.4g} >= 1)"
        )
    return EocPoint(act.name, sigma_b, sigma_w, q, chi)


def _zero_variance_point(act: Activation, chi: float) -> EocPoint | None:
    """σ_b = 0: the point q* = 0, σ_w = √χ / |φ'(0)| when φ(0) = 0 and q = 0 attracts the variance, else None.

    q = 0 attracts iff F(q) < q just above it (tanh, ELU at χ <= 1); it repels for GELU and
    SiLU (F(q) ≈ q + O(q²) from above at χ = 1) and whenever χ > 1.
    """
    zero = torch.zeros(1, dtype=torch.float64)
    if float(act.phi(zero)) != 0.0 or float(act.dphi(zero)) == 0.0 or chi > 1.0:
        return None
    sigma_w = math.sqrt(chi) / abs(float(act.dphi(zero)))
    q = 1e-4
    if variance_map(q, sigma_w, 0.0, act) >= q:
        return None
    return EocPoint(act.name, 0.0, sigma_w, 0.0, chi)


def eoc_curve(activation: str | Activation, sigma_bs: list[float] | tuple[float, ...]) -> list[EocPoint]:
    """The EoC point for each σ_b (paper Sec. 4: for smooth activations the EoC is a curve)."""
    return [eoc_point(activation, float(sb)) for sb in sigma_bs]


def point_for(sigma_w: float, sigma_b: float, activation: str | Activation, q0: float = 1.0) -> EocPoint:
    """The :class:`EocPoint` of a given (σ_b, σ_w): the variance fixed point reached from ``q0`` and χ₁ there."""
    act = get_activation(activation)
    q = variance_fixed_point(sigma_w, sigma_b, act, q0)
    if math.isinf(q):
        return EocPoint(act.name, sigma_b, sigma_w, q, math.inf)
    return EocPoint(act.name, sigma_b, sigma_w, q, chi1(sigma_w, q, act))


# --- the correlation map --------------------------------------------------------------------------------


def _pair_rule(q: float, c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nodes (u₁, u₂) and weights for E[g(u₁, u₂)], (u₁, u₂) ~ N(0, q [[1, c], [c, 1]]).

    ``u₂ = c u₁ + √(1 − c²) u'`` with ``u₁, u'`` independent N(0, q), each on :func:`gaussian_rule`'s
    nodes (panels ≤ 1 wide over ±8 standard deviations: the 2-D rule has the square of the nodes).
    """
    u, w = gaussian_rule(q, panel=1.0, span=8.0)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    u1 = u[:, None].expand(-1, u.numel())
    u2 = c * u[:, None] + s * u[None, :]
    return u1.reshape(-1), u2.reshape(-1), (w[:, None] * w[None, :]).reshape(-1)


def correlation_map(c: float, q: float, sigma_w: float, sigma_b: float, activation: str | Activation) -> float:
    """``f(c) = (σ_b² + σ_w² E[φ(u₁)φ(u₂)]) / q``: the next layer's correlation of two inputs at variance q (Sec. 2)."""
    act = get_activation(activation)
    if q == 0.0:
        return 1.0
    u1, u2, w = _pair_rule(q, c)
    return (sigma_b**2 + sigma_w**2 * float((w * act.phi(u1) * act.phi(u2)).sum())) / q


def correlation_map_slope(c: float, q: float, sigma_w: float, activation: str | Activation) -> float:
    """``f'(c) = σ_w² E[φ'(u₁)φ'(u₂)]`` (equals χ₁ at c = 1)."""
    act = get_activation(activation)
    u1, u2, w = _pair_rule(q, c)
    return sigma_w**2 * float((w * act.dphi(u1) * act.dphi(u2)).sum())


def correlation_fixed_point(q: float, sigma_w: float, sigma_b: float, activation: str | Activation) -> float:
    """The stable fixed point ``c*`` of the correlation map: 1 in the ordered phase and on the EoC, < 1 when chaotic.

    In the chaotic phase c = 1 repels (χ₁ > 1) and ``f`` is increasing, so ``c*`` is the
    largest root of ``f(c) = c`` below 1, found by scanning down from 1 and bisecting.
    """
    act = get_activation(activation)
    if chi1(sigma_w, q, act) <= 1.0:
        return 1.0
    gap = lambda c: correlation_map(c, q, sigma_w, sigma_b, act) - c  # noqa: E731
    hi, lo = 1.0 - 1e-9, 1.0 - 1e-9
    while gap(lo) < 0.0:  # f(c) < c just below 1 in the chaotic phase
        hi, lo = lo, max(-1.0, 1.0 - 2.0 * (1.0 - lo))
        if lo == -1.0:
            break
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if gap(mid) < 0.0:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-13:
            break
    return 0.5 * (lo + hi)


def correlation_depth_scale(point: EocPoint) -> float:
    """ξ_c = −1/ln f'(c*) (Schoenholz et al. 2017, Eq. 9): |c^l − c*| ∝ exp(−l/ξ_c); ∞ on the EoC.

    Ordered phase: c* = 1, f'(1) = χ₁. Chaotic phase: c* < 1 from :func:`correlation_fixed_point`.
    On the EoC the approach is polynomial (:func:`eoc_rate`), not exponential.
    """
    if point.phase == "edge of chaos":
        return math.inf
    if not (math.isfinite(point.q) and math.isfinite(point.chi)):
        return math.nan  # the variance grows without bound: no correlation fixed point to approach
    if point.chi < 1.0:
        return -1.0 / math.log(point.chi)
    c_star = correlation_fixed_point(point.q, point.sigma_w, point.sigma_b, point.activation)
    return -1.0 / math.log(correlation_map_slope(c_star, point.q, point.sigma_w, point.activation))


def correlation_trajectory(point: EocPoint, c0: float, depth: int) -> list[float]:
    """``[c⁰, c¹, …, c^depth]``: the mean-field correlation of two inputs layer by layer, at the fixed point q*."""
    out = [c0]
    for _ in range(depth):
        out.append(correlation_map(out[-1], point.q, point.sigma_w, point.sigma_b, point.activation))
    return out


def eoc_rate(point: EocPoint) -> float:
    """The constant of the polynomial approach to c = 1 on the EoC (paper Secs. 3-4).

    ReLU-like: ``1 − c^l ~ 9π² / (2 l²)``, returned as 9π²/2. Smooth: ``1 − c^l ~ β_q / l``
    with ``β_q = 2 E[φ'(√q Z)²] / (q E[φ''(√q Z)²])`` (from ``f(c) ≈ c − f''(1)(1 − c)²/2``,
    ``f''(1) = σ_w² q E[φ''²]``); larger β_q means slower loss of information with depth.
    """
    act = get_activation(point.activation)
    if act.name == "relu":
        return 9.0 * math.pi**2 / 2.0
    if act.homogeneous or point.q == 0.0:
        return math.inf  # identity: f(c) = c; q* = 0: the net is linear in the limit
    u, w = gaussian_rule(point.q)
    return 2.0 * float((w * act.dphi(u) ** 2).sum()) / (point.q * float((w * act.d2phi(u) ** 2).sum()))


# --- drawing the weights ----------------------------------------------------------------------------------

#: The layer kinds an option may name (the core's walk over weight layers, shared by every init).
init_layers = weight_layers


@torch.no_grad()
def eoc_normal_(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    sigma_w: float,
    sigma_b: float,
    generator: torch.Generator | None = None,
) -> None:
    """``W ~ N(0, σ_w² / fan_in)``, ``B ~ N(0, σ_b²)`` in place (paper Sec. 2), drawn on the CPU from ``generator``.

    ``fan_in`` is ``in·k·...`` (torch's). The weight is drawn first, then the bias; the
    draw equals ``torch.nn.init.normal_(weight, 0, σ_w/√fan_in, generator)`` then
    ``normal_(bias, 0, σ_b, generator)`` bit for bit. ``σ_b = 0`` zeroes the bias without drawing.
    """
    fan_in = weight[0].numel() if weight.ndim >= 2 else 0
    if fan_in == 0:
        raise ValueError(
            f"a weight needs at least 2 dimensions and a non-empty fan-in, got shape {tuple(weight.shape)}"
        )
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    weight.copy_(torch.empty(weight.shape, dtype=dtype).normal_(0.0, sigma_w / math.sqrt(fan_in), generator=generator))
    if bias is not None:
        if sigma_b == 0.0:
            bias.zero_()
        else:
            bias.copy_(torch.empty(bias.shape, dtype=dtype).normal_(0.0, sigma_b, generator=generator))


@attrs.frozen
class LayerRecord:
    """What one layer received: its name, weight shape (out, fan_in), σ_w and σ_b."""

    name: str
    shape: tuple[int, int]
    sigma_w: float
    sigma_b: float


@torch.no_grad()
def init_model_(
    model: nn.Module,
    sigma_w: float,
    sigma_b: float,
    *,
    layers: tuple[str, ...] | list[str] = ("linear", "conv"),
    generator: torch.Generator | None = None,
) -> list[LayerRecord]:
    """Draw every chosen layer (:func:`eoc_normal_`) in module order from one generator; returns what each got.

    The paper initializes every layer of the net alike, the input and output layers
    included. A layer without a bias gets none (the mean-field point then assumes σ_b = 0);
    with ``σ_b > 0`` that is an error, since the point the caller asked for is not reached.
    """
    records = []
    for name, module in init_layers(model, layers):
        bias = getattr(module, "bias", None)
        bias = bias if isinstance(bias, torch.Tensor) else None
        if bias is None and sigma_b > 0.0:
            raise ValueError(
                f"layer '{name}' has no bias but sigma_b = {sigma_b} > 0: build the model with biases or use sigma_b = 0"
            )
        eoc_normal_(module.weight, bias, sigma_w, sigma_b, generator)
        records.append(
            LayerRecord(name, (module.weight.shape[0], module.weight[0].numel()), float(sigma_w), float(sigma_b))
        )
    if not records:
        raise ValueError(f"the model has no layer of kind(s) {', '.join(layers)} to initialize")
    return records


# --- measuring propagation in a real net ----------------------------------------------------------------


@torch.no_grad()
def measured_correlations(
    model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] | list[str] = ("linear",)
) -> list[float]:
    """For a batch of two inputs ``x`` (shape (2, ...)), the empirical correlation of their pre-activations at each layer.

    ``c = Σ_i y_i(a) y_i(b) / √(Σ_i y_i(a)² Σ_i y_i(b)²)`` over the units of each chosen layer's
    output (uncentered, as in the mean-field definition ``q_ab / √(q_aa q_bb)``), in module order.
    """
    if x.shape[0] != 2:
        raise ValueError(f"measured_correlations needs exactly two inputs, got a batch of {x.shape[0]}")
    outputs: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        for _n, m in init_layers(model, layers)
    ]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for y in outputs:
        a, b = y[0].reshape(-1).double(), y[1].reshape(-1).double()
        result.append(float(a.dot(b) / (a.norm() * b.norm())))
    return result
