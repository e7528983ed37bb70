"""Kumar's activation-dependent weight variance (Kumar, 2017, arXiv:1704.08863) as plain functions.

The paper considers a deep feed-forward net ``y_m = W_m g(y_{m-1}) + b_m`` with IID
weights ``W_m ~ N(0, v²)``, zero biases, ``N`` inputs per unit (the fan-in) and asks for the
``v`` that keeps the variance of the pre-activations ``y_m`` the same from layer to layer.

* **Activations differentiable at 0** (the general result). Linearizing ``g`` at 0,
  ``g(y) ≈ g(0) + g'(0) y``, the paper obtains

      v² = 1 / (N · g'(0)² · (1 + g(0)²)),

  e.g. ``v² = 1/N`` for tanh and the identity (``g(0) = 0``, ``g'(0) = 1``: Xavier's / LeCun's
  value), and for the logistic sigmoid (``g(0) = 1/2``, ``g'(0) = 1/4``) ``v² = 12.8/N``, i.e.
  ``v ≈ 3.6/√N``, the paper's headline number. :func:`kumar_variance` returns ``N·v²``.

* **ReLU** is not differentiable at 0, so the general result does not apply; the paper
  derives it separately (``E[relu(y)²] = Var(y)/2`` for a symmetric ``y``) and finds
  ``v² = 2/N`` (He et al.'s value, :data:`RELU_VARIANCE`). Xavier's ``1/N`` halves the
  variance at every ReLU layer, which is why the paper calls it a poor choice for ReLU.

A consequence of the linearized map that we derive here (not stated in what we could read):
with the general ``v²`` the linearized second-moment map
``q_{m} = N v² (g(0)² + g'(0)² q_{m-1})`` has the fixed point ``q* = 1/g'(0)²`` when
``g(0) ≠ 0`` and is the identity when ``g(0) = 0`` (:func:`linearized_variance_map`). How
well the real net follows it depends on how linear ``g`` is over that range: exactly for the
identity, well for tanh (the variance decays only polynomially), and badly for GELU / SiLU,
whose ``g'(0) = 1/2`` gives ``v² = 4/N`` while they behave like ReLU (``2/N``) for large inputs:
the variance of a deep GELU net drawn this way grows from layer to layer (tested).

``g(0)`` and ``g'(0)`` are computed by autograd on the model's own activation module at 0, so
any pointwise activation works; whether ``g`` is differentiable at 0 is checked with one-sided
difference quotients (:func:`kink_at_zero`). Activations the formula cannot serve are refused
with a one-line reason (:class:`UnsupportedActivation`): not pointwise (maxout, softmax),
``g'(0) = 0`` (the square ``x²``: the variance would be infinite), or a kink at 0 other than
ReLU's (leaky ReLU, SELU, PReLU: the paper derives only ReLU's case).

Nothing here needs the paperkit engine: :func:`init_model_` works on any model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import attrs
import torch
from torch import nn

from paperkit import weight_layers

Fn = Callable[[torch.Tensor], torch.Tensor]

#: ``N·v²`` for ReLU (the paper's separate derivation; He et al. 2015's value).
RELU_VARIANCE = 2.0

#: Points at which two activation modules are compared and the ReLU / pointwise checks are made.
_PROBE = torch.linspace(-8.0, 8.0, 33, dtype=torch.float64)


class UnsupportedActivation(ValueError):
    """The model's activation is one the paper's formula does not cover (the message says why)."""


# --- the formula ---------------------------------------------------------------------------------


def kumar_variance(g0: float, g1: float) -> float:
    """``N·v² = 1 / (g'(0)² (1 + g(0)²))``: the paper's general weight variance times the fan-in.

    ``g0 = g(0)``, ``g1 = g'(0)``. ``g'(0) = 0`` has no finite answer (the linearized
    activation passes no signal) and raises :class:`UnsupportedActivation`.
    """
    if not (math.isfinite(g0) and math.isfinite(g1)):
        raise UnsupportedActivation(f"g(0) = {g0} and g'(0) = {g1} must be finite")
    if g1 == 0.0:
        raise UnsupportedActivation(
            "g'(0) = 0: the paper's variance 1/(N g'(0)² (1 + g(0)²)) is infinite (the linearized g passes no signal)"
        )
    return 1.0 / (g1 * g1 * (1.0 + g0 * g0))


def linearized_variance_map(q: float, g0: float, g1: float, n_var: float) -> float:
    """``N v² (g(0)² + g'(0)² q)``: the next layer's pre-activation second moment under the linearization.

    ``n_var = N·v²``. With the paper's ``n_var`` (:func:`kumar_variance`) this is the identity
    for ``g(0) = 0`` and has the fixed point ``q* = 1/g'(0)²`` otherwise (our derivation).
    """
    return n_var * (g0 * g0 + g1 * g1 * q)


# --- reading an activation ---------------------------------------------------------------------------


@torch.no_grad()
def _scalar(fn: Fn, x: float) -> float:
    return float(fn(torch.tensor([x], dtype=torch.float64)).reshape(-1)[0])


def values_at_zero(fn: Fn) -> tuple[float, float]:
    """``(g(0), g'(0))`` of an activation, in float64; ``g'(0)`` by autograd."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        y = fn(x).reshape(-1)[0]
        (grad,) = torch.autograd.grad(y, x, allow_unused=True)
    return float(y.detach()), 0.0 if grad is None else float(grad.reshape(-1)[0])


def is_pointwise(fn: Fn) -> bool:
    """Whether ``fn`` acts on each entry alone: its output on a (2, 33) batch equals its output entry by entry.

    False for maxout (it changes the width), softmax (it mixes entries) or anything that raises.
    """
    x = torch.stack([_PROBE, _PROBE.flip(0)])
    try:
        with torch.no_grad():
            whole = fn(x)
            single = torch.stack([fn(x[:, i : i + 1]).reshape(-1) for i in range(x.shape[1])], dim=1)
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False
    return whole.shape == x.shape and torch.allclose(whole.to(torch.float64), single.to(torch.float64), atol=1e-12)


def kink_at_zero(fn: Fn, h: float = 1e-6) -> bool:
    """Whether ``g`` is not differentiable at 0: its one-sided difference quotients there differ.

    ``(g(h) − g(0))/h`` and ``(g(0) − g(−h))/h`` agree to ``O(g''(0) h)`` for a smooth ``g``; the
    tolerance is ``10⁻⁴·max(1, |g'(0)|)``. ReLU (0 against 1), leaky ReLU, SELU and ELU with
    ``α ≠ 1`` have a kink; tanh, sigmoid, GELU, SiLU, softplus, ELU(α = 1), sine do not.
    """
    g0 = _scalar(fn, 0.0)
    right = (_scalar(fn, h) - g0) / h
    left = (g0 - _scalar(fn, -h)) / h
    return abs(right - left) > 1e-4 * max(1.0, abs(right), abs(left))


def is_relu(fn: Fn) -> bool:
    """Whether ``fn`` equals ``max(x, 0)`` on [−8, 8] (so that the paper's ReLU result applies)."""
    with torch.no_grad():
        out = fn(_PROBE.reshape(1, -1)).to(torch.float64).reshape(-1)
    return out.shape == _PROBE.shape and torch.allclose(out, _PROBE.clamp(min=0.0), atol=1e-12)


@attrs.frozen
class Resolved:
    """What the formula gives for one activation: its ``g(0)``, ``g'(0)``, the rule used and ``N·v²``."""

    activation: str
    g0: float
    g1: float
    rule: str  # "general" (g differentiable at 0) or "relu" (the paper's separate ReLU result)
    n_var: float  # N·v², the weight variance times the fan-in

    @property
    def sigma_w(self) -> float:
        """``v·√N``: the weight standard deviation times √fan_in."""
        return math.sqrt(self.n_var)


def resolve(fn: Fn, name: str = "activation") -> Resolved:
    """The paper's variance for activation ``fn`` (any callable on tensors, e.g. an ``nn.Module``).

    Pointwise and differentiable at 0 with ``g'(0) ≠ 0``: the general formula. Equal to ReLU:
    ``2/N``. Anything else raises :class:`UnsupportedActivation` with the reason. A module is
    evaluated as a float64 copy (its parameters, e.g. PReLU's slope, included).
    """
    if isinstance(fn, nn.Module):
        fn = copy.deepcopy(fn).double()
    if not is_pointwise(fn):
        hint = " (maxout-init draws maxout nets)" if "maxout" in name.lower() else ""
        raise UnsupportedActivation(
            f"{name} is not a pointwise function g(x): the paper's variance needs g(0) and g'(0){hint}"
        )
    g0, g1 = values_at_zero(fn)
    if kink_at_zero(fn):
        if is_relu(fn):
            return Resolved(name, g0, g1, "relu", RELU_VARIANCE)
        raise UnsupportedActivation(
            f"{name} is not differentiable at 0 and is not ReLU: the paper's general variance needs g'(0) and "
            "its separate result covers only ReLU"
        )
    h = 1e-6
    central = (_scalar(fn, h) - _scalar(fn, -h)) / (2 * h)
    if abs(central - g1) > 1e-4 * max(1.0, abs(central)):
        raise UnsupportedActivation(f"{name}: autograd gives g'(0) = {g1} but its difference quotient is {central}")
    try:
        n_var = kumar_variance(g0, g1)
    except UnsupportedActivation as exc:
        raise UnsupportedActivation(f"{name}: {exc}") from None
    return Resolved(name, g0, g1, "general", n_var)


#: Activations a config may name instead of reading the model's (torch functions, float64-safe).
NAMED: dict[str, Fn] = {
    "relu": torch.relu,
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "elu": nn.functional.elu,
    "softplus": nn.functional.softplus,
}

#: Leaf modules that are not activations: layers, normalizations, dropout, reshaping and pooling.
_NOT_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.Flatten,
    nn.Unflatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)

#: Modules whose activations are functions inside them, not modules: auto-detection refuses them.
_OPAQUE: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.RNNBase,
)


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every activation module: a leaf that is no layer, norm, dropout, reshape or pool.

    Leaves with parameters count only when they are torch activations (``nn.PReLU``).
    """
    found = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()) or isinstance(module, _NOT_ACTIVATIONS):
            continue
        torch_activation = type(module).__module__ == "torch.nn.modules.activation"
        if any(True for _ in module.parameters(recurse=False)) and not torch_activation:
            continue
        found.append((name, module))
    return found


def _same_function(a: nn.Module, b: nn.Module) -> bool:
    a, b = copy.deepcopy(a).double(), copy.deepcopy(b).double()
    try:
        with torch.no_grad():
            return torch.allclose(a(_PROBE.reshape(1, -1)), b(_PROBE.reshape(1, -1)), atol=1e-12)
    except (RuntimeError, ValueError, TypeError, IndexError):
        return type(a) is type(b) and repr(a) == repr(b)


def detect_activation(model: nn.Module) -> tuple[str, Fn]:
    """The one activation a model uses, as ``(name, module)``; the identity when it has none.

    Refuses models with attention or recurrent layers (their activations are not modules:
    name the activation in the config) and models that mix different activations.
    """
    opaque = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _OPAQUE)})
    if opaque:
        raise UnsupportedActivation(
            f"the model has {', '.join(opaque)}, whose activations are not modules: set activation explicitly"
        )
    found = activation_modules(model)
    if not found:
        return "identity", NAMED["identity"]
    first = found[0][1]
    other = [(n, m) for n, m in found[1:] if not _same_function(first, m)]
    if other:
        kinds = sorted({repr(first), *(repr(m) for _n, m in other)})
        raise UnsupportedActivation(f"the model mixes activations ({', '.join(kinds)}): set activation explicitly")
    return repr(first), first


# --- drawing the weights -------------------------------------------------------------------------------

#: The layer kinds an option may name (the core's walk over weight layers, shared by every init).
init_layers = weight_layers


@torch.no_grad()
def kumar_normal_(weight: torch.Tensor, n_var: float, generator: torch.Generator | None = None) -> float:
    """``W ~ N(0, n_var / fan_in)`` in place, drawn on the CPU from ``generator``; returns the std used.

    ``fan_in = in·k·...`` (torch's), the paper's ``N``. The draw equals
    ``torch.nn.init.normal_(weight, 0, √(n_var/fan_in), generator)`` bit for bit.
    """
    fan_in = weight[0].numel() if weight.ndim >= 2 else 0
    if fan_in == 0:
        raise ValueError(f"a weight needs at least 2 dimensions and a non-empty fan-in, got {tuple(weight.shape)}")
    if not (n_var > 0.0 and math.isfinite(n_var)):
        raise ValueError(f"the variance times fan-in must be finite and > 0, got {n_var}")
    std = math.sqrt(n_var / fan_in)
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    weight.copy_(torch.empty(weight.shape, dtype=dtype).normal_(0.0, std, generator=generator))
    return std


@attrs.frozen
class LayerRecord:
    """What one layer received: its name, weight shape (out, fan_in) and the std of its draw."""

    name: str
    shape: tuple[int, int]
    std: float


@torch.no_grad()
def init_model_(
    model: nn.Module,
    n_var: float,
    *,
    layers: tuple[str, ...] | list[str] = ("linear", "conv"),
    zero_bias: bool = True,
    generator: torch.Generator | None = None,
) -> list[LayerRecord]:
    """Draw every chosen layer's weight from ``N(0, n_var / fan_in)`` in module order; biases 0.

    The paper's derivation assumes zero biases; ``zero_bias = False`` keeps the model's own.
    Every layer is drawn alike, the input and output layers included.
    """
    records = []
    for name, module in init_layers(model, layers):
        std = kumar_normal_(module.weight, n_var, generator)
        bias = getattr(module, "bias", None)
        if zero_bias and isinstance(bias, torch.Tensor):
            bias.zero_()
        records.append(LayerRecord(name, (module.weight.shape[0], module.weight[0].numel()), std))
    if not records:
        raise ValueError(f"the model has no layer of kind(s) {', '.join(layers)} to initialize")
    return records


# --- measuring the forward signal ---------------------------------------------------------------------


@torch.no_grad()
def forward_second_moments(
    model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] | list[str] = ("linear",)
) -> list[float]:
    """The mean square of each chosen layer's output (the pre-activations ``y_m``) for the batch ``x``, in order."""
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
    return [float(y.double().pow(2).mean()) for y in outputs]
