"""Random orthogonal initialization (Saxe et al., 2014; Day et al., 2023) as plain functions.

Both papers replace the IID Gaussian draw of every weight matrix by a draw
from the Haar (uniform) measure on the orthogonal group, scaled by a gain:

* Saxe, McClelland & Ganguli (ICLR 2014): ``W = g · Q`` with ``Q``
  Haar-orthogonal. In a deep *linear* net with ``g = 1`` every singular value
  of the end-to-end map is 1 ("dynamical isometry"), so the learning time is
  independent of depth; the scaled Gaussian draw ``W ~ N(0, g²/N)`` has the
  same variance per entry but a product spectrum that spreads with depth, and
  learning slows down as the net gets deeper.
* Day, Kahn & Roberts (2023), "Feature learning and generalization in deep
  networks with orthogonal weights": the same draw for every (rectangular)
  weight matrix of a *tanh* MLP tuned to criticality (``C_W = g² = 1``,
  ``C_b = 0``). The leading finite-width fluctuations of the preactivations
  (and of the NTK) then stop growing with depth, whereas for critical IID
  Gaussian weights they grow linearly with depth.

The draw itself is PyTorch's ``torch.nn.init.orthogonal_`` (which cites Saxe
et al.): a standard Gaussian matrix ``A`` shaped ``(out, in·k·…)`` (or its
transpose when it is wide), its QR factorization ``A = QR``, and the column
signs of ``Q`` fixed by ``sign(diag R)`` so that ``Q`` is Haar-distributed
(Mezzadri 2007, arXiv:math-ph/0609050). :func:`orthogonal_` reproduces it bit
for bit for the same generator state and gain (``tests/``), drawing on the CPU
so that a seed gives the same weights on every device.

Nothing here needs the paperkit engine: call :func:`init_model_` on any model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import attrs
import torch
from torch import nn

Distribution = Literal["orthogonal", "gaussian"]
Nonlinearity = Literal["linear", "tanh", "relu"]

#: The layer kinds an option may name, and the modules each covers. A conv weight
#: ``(out, in, k, ...)`` is flattened to ``(out, in·k·...)``, as torch's orthogonal_ does.
LAYER_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}

#: The gain σ_w at criticality (with zero biases) for each nonlinearity:
#: linear: 1 — Saxe et al. (2014): orthogonal W with g = 1 makes every singular value
#:   of a deep linear net's map 1; the Gaussian baseline has variance 1/N.
#: tanh: 1 — C_W = 1, C_b = 0, the critical point of the K* = 0 class (Roberts, Yaida
#:   & Hanin 2022, "The Principles of Deep Learning Theory", Ch. 5; Poole et al. 2016's
#:   order-to-chaos edge at σ_b = 0), used by Day et al. (2023). Not torch's
#:   calculate_gain("tanh") = 5/3, which lies in the chaotic phase at σ_b = 0.
#: relu: √2 — C_W = 2, C_b = 0 (He et al. 2015; the scale-invariant class of PDLT Ch. 5).
CRITICAL_GAIN: dict[str, float] = {"linear": 1.0, "tanh": 1.0, "relu": math.sqrt(2.0)}

#: Activation modules the "auto" setting recognizes in a model.
_ACTIVATION_MODULES: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def critical_gain(nonlinearity: Nonlinearity) -> float:
    """σ_w at criticality for ``nonlinearity`` with zero biases (see :data:`CRITICAL_GAIN`)."""
    try:
        return CRITICAL_GAIN[nonlinearity]
    except KeyError:
        raise ValueError(f"no critical gain known for nonlinearity {nonlinearity!r} (known: {', '.join(CRITICAL_GAIN)})") from None


def detect_nonlinearity(model: nn.Module) -> Nonlinearity:
    """The one nonlinearity a model uses: ``tanh`` or ``relu`` from its activation modules, ``linear`` if it has none.

    Raises ``ValueError`` when the model mixes them or uses one without a known critical
    gain (GELU, SiLU, ...): set the nonlinearity or the gain explicitly then.
    """
    found: set[str] = set()
    unknown: set[str] = set()
    for module in model.modules():
        kind = _ACTIVATION_MODULES.get(type(module))
        if kind is not None:
            found.add(kind)
        elif isinstance(module, (nn.GELU, nn.SiLU, nn.Sigmoid, nn.ELU, nn.LeakyReLU, nn.SELU, nn.Softplus, nn.Mish)):
            unknown.add(type(module).__name__)
    if unknown:
        raise ValueError(f"the model uses {', '.join(sorted(unknown))}, which has no known critical gain: set gain explicitly")
    if len(found) > 1:
        raise ValueError(f"the model mixes nonlinearities ({', '.join(sorted(found))}): set nonlinearity or gain explicitly")
    return found.pop() if found else "linear"  # type: ignore[return-value]


def _as_matrix_shape(weight: torch.Tensor) -> tuple[int, int]:
    if weight.ndim < 2:
        raise ValueError(f"orthogonal init needs a weight with at least 2 dimensions, got shape {tuple(weight.shape)}")
    rows = weight.shape[0]
    return rows, weight.numel() // rows if rows else 0


def _work_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the draw is computed in: the weight's own when LAPACK supports it (torch's behaviour), else float32."""
    return weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32


@torch.no_grad()
def orthogonal_(weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``weight`` in place with ``gain · Q``, ``Q`` a Haar-random (semi-)orthogonal matrix.

    ``weight`` is viewed as ``(out, in·k·...)``. A tall or square view gets orthonormal
    columns (``QᵀQ = I``), a wide one orthonormal rows (``QQᵀ = I``). Saxe et al.'s (2014)
    "random orthogonal initial conditions"; the construction (Gaussian, QR,
    ``Q · sign(diag R)``) and the order of draws are torch.nn.init.orthogonal_'s, so the
    same ``generator`` state and ``gain`` give the same tensor bit for bit. The Gaussian
    is drawn on the CPU from ``generator`` (the global generator when ``None``).
    """
    rows, cols = _as_matrix_shape(weight)
    if weight.numel() == 0:
        return weight
    gaussian = torch.empty((rows, cols), dtype=_work_dtype(weight)).normal_(0, 1, generator=generator)
    if rows < cols:
        gaussian.t_()
    q, r = torch.linalg.qr(gaussian)
    q *= torch.diag(r, 0).sign()  # Haar measure: Q's column signs follow R's diagonal (Mezzadri 2007)
    if rows < cols:
        q.t_()
    q.mul_(gain)
    weight.copy_(q.reshape(weight.shape))
    return weight


@torch.no_grad()
def gaussian_(weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``weight`` in place with IID ``N(0, gain² / fan_in)``, the baseline of both papers.

    Saxe et al. (2014) compare with "scaled random Gaussian" weights of variance ``g²/N``;
    Day et al. (2023) with critical IID Gaussian weights ``Var W = C_W / n_{ℓ-1}``. At the
    same ``gain`` every entry has the same variance as under :func:`orthogonal_` for a
    square or wide weight. ``fan_in`` is ``in·k·...`` (torch's). The draw equals
    ``torch.nn.init.normal_(weight, 0, gain / sqrt(fan_in), generator)`` bit for bit.
    """
    rows, cols = _as_matrix_shape(weight)
    if weight.numel() == 0:
        return weight
    std = gain / math.sqrt(cols)
    weight.copy_(torch.empty(weight.shape, dtype=_work_dtype(weight)).normal_(0, std, generator=generator))
    return weight


def init_layers(model: nn.Module, kinds: tuple[str, ...] | list[str] = ("linear", "conv")) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every layer of the given kinds (:data:`LAYER_KINDS`), in module order."""
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown:
        raise ValueError(f"unknown layer kind(s) {', '.join(map(repr, unknown))} (known: {', '.join(LAYER_KINDS)})")
    types = tuple(t for k in kinds for t in LAYER_KINDS[k])
    for name, module in model.named_modules():
        if isinstance(module, types) and isinstance(getattr(module, "weight", None), torch.Tensor):
            yield name, module


@attrs.frozen
class LayerRecord:
    """What one layer received: its name, weight shape (out, in·k·...), distribution and gain."""

    name: str
    shape: tuple[int, int]
    distribution: str
    gain: float


@torch.no_grad()
def init_model_(
    model: nn.Module,
    *,
    distribution: Distribution = "orthogonal",
    gain: float = 1.0,
    layers: tuple[str, ...] | list[str] = ("linear", "conv"),
    zero_bias: bool = True,
    generator: torch.Generator | None = None,
) -> list[LayerRecord]:
    """Re-draw the weight of every chosen layer, in module order, from one generator; returns what each got.

    ``distribution = "orthogonal"`` is the method (:func:`orthogonal_`), ``"gaussian"``
    the papers' IID baseline at the same gain (:func:`gaussian_`). ``zero_bias`` sets the
    biases of those layers to 0: Saxe et al.'s linear nets have none, and criticality
    in Day et al. is stated for ``C_b = 0``. Other parameters (norm layers, embeddings)
    are left untouched.
    """
    if distribution not in ("orthogonal", "gaussian"):
        raise ValueError(f"distribution must be 'orthogonal' or 'gaussian', got {distribution!r}")
    draw = orthogonal_ if distribution == "orthogonal" else gaussian_
    records = []
    for name, module in init_layers(model, layers):
        weight = module.weight
        draw(weight, gain, generator)
        bias = getattr(module, "bias", None)
        if zero_bias and isinstance(bias, torch.Tensor):
            bias.zero_()
        records.append(LayerRecord(name, _as_matrix_shape(weight), distribution, float(gain)))
    if not records:
        raise ValueError(f"the model has no layer of kind(s) {', '.join(layers)} to initialize")
    return records
