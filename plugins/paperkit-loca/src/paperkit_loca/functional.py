"""LoCA's spectral update as plain functions and one adapter layer, usable on any ``nn.Linear`` without the engine.

Notation (Du et al., 2025, "LoCA: Location-Aware Cosine Adaptation for
Parameter-Efficient Fine-Tuning", Sec. 4; the authors' code TL-UESTC/LoCA,
``peft/src/peft/tuners/loca/``): a linear layer computes ``y = x W'ᵀ + bias``
with ``W`` of shape ``(M, N) = (out, in)``. LoCA trains ``n`` coefficients
``a ∈ Rⁿ`` placed at ``n`` locations ``l = (rows, cols)`` of an ``M × N``
spectrum ``S(a, l)`` (zero elsewhere) and adds its inverse 2-D DCT:

    ΔW = α · iDCT2(S(a, l)) = α · C_Mᵀ S(a, l) C_N          W' = W0 + ΔW         (paper Eq. 1)

with ``C_K`` the orthonormal DCT-II matrix of size ``K`` (row ``k``:
``c_k √(2/K) cos(π (2j+1) k / (2K))``, ``c_0 = 1/√2``), so that ``iDCT2`` is
``scipy.fft.idctn(·, norm="ortho")``. The coefficients start at zero, so the
adapted model starts as the base model.

**Locations** are discrete. LoCA learns them (Sec. 4.3) with a finite-difference
estimate of the loss gradient with respect to each coefficient's row and
column: with ``G = ∂L/∂iDCT2(S)`` and ``K = DCT2(G) = C_M G C_Nᵀ`` (the
gradient with respect to the dense spectrum), the coefficient ``a_i`` at
``(r, c)`` gets

    ∂L/∂a_i ≈ K[r, c]
    ∂L/∂r_i ≈ clip(½ a_i (K[r+1, c] − K[r−1, c]), −1, 1)      ∂L/∂c_i ≈ clip(½ a_i (K[r, c+1] − K[r, c−1]), −1, 1)

(central differences, one-sided at the borders, clipped to ``[−1, 1]``: the
authors' ``IdctWithIndexGrad``). For a loss linear in ``ΔW`` the central
difference is exactly half the change of the loss when ``a_i`` moves from
``r−1`` to ``r+1``. The continuous location parameters live in ``[0, 1]`` as in
the authors' code: ``r = round(clip(ρ, 0, 0.999) · (M − 1))``. Training
alternates ``B_a`` steps on the coefficients with ``B_l`` steps on the
locations, and freezes the locations after ``B_s`` steps (Sec. 4.4;
:func:`phase`).

**FourierFT** (Gao et al., 2024; Hugging Face PEFT ``FourierFT``) is the same
construction with the inverse DFT, ``ΔW = α · Re(ifft2(S))``, and fixed random
locations; ``transform = "dft"`` gives it (:func:`inverse_spectrum`), which is
what the PEFT parity tests pin.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import nn

from paperkit import AdaptedLinear

#: The inverse transforms: ``"dct"`` is LoCA's (orthonormal iDCT-II), ``"dft"`` FourierFT's (real part of ifft2).
TRANSFORMS = ("dct", "dft")
Transform = Literal["dct", "dft"]
#: How locations behave: ``"dynamic"`` (LoCA, Sec. 4.3) or ``"fixed"`` (random, FourierFT's).
LOCATIONS = ("dynamic", "fixed")
#: The authors' upper clip of a continuous location before it is scaled to an index (``torch.clamp(max=0.999)``).
LOCATION_CLIP = 0.999


# -- transforms ---------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _dct_matrix_cached(size: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    k = torch.arange(size, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(size, dtype=torch.float64).unsqueeze(0)
    matrix = torch.cos(math.pi * (2 * j + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(device=device, dtype=dtype)


def dct_matrix(size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` of ``size × size`` (``C Cᵀ = I``; row ``k`` is frequency ``k``).

    Built in float64 and cast, cached per size, device and dtype (a constant: not a parameter, not saved).
    ``C x`` is ``scipy.fft.dct(x, norm="ortho")`` and ``Cᵀ X`` its inverse.
    """
    return _dct_matrix_cached(int(size), str(torch.device(device)), dtype)


def idct2(spectrum: torch.Tensor) -> torch.Tensor:
    """``C_Mᵀ S C_N``: the orthonormal 2-D inverse DCT-II of a dense ``M × N`` spectrum (``scipy.fft.idctn``, ortho)."""
    m, n = spectrum.shape
    return dct_matrix(m, spectrum.device, spectrum.dtype).T @ spectrum @ dct_matrix(n, spectrum.device, spectrum.dtype)


def dct2(matrix: torch.Tensor) -> torch.Tensor:
    """``C_M X C_Nᵀ``: the orthonormal 2-D DCT-II (the adjoint, and inverse, of :func:`idct2`)."""
    m, n = matrix.shape
    return dct_matrix(m, matrix.device, matrix.dtype) @ matrix @ dct_matrix(n, matrix.device, matrix.dtype).T


def inverse_spectrum(transform: str, spectrum: torch.Tensor) -> torch.Tensor:
    """The spatial matrix of a dense real spectrum: :func:`idct2` (``"dct"``) or ``Re(ifft2(S))`` (``"dft"``,
    PEFT's FourierFT, which computes it in float32)."""
    if transform == "dct":
        return idct2(spectrum)
    if transform == "dft":
        return torch.fft.ifft2(spectrum.float()).real.to(spectrum.dtype)
    raise ValueError(f"unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")


def spectrum_gradient(transform: str, grad: torch.Tensor) -> torch.Tensor:
    """``K = ∂L/∂S`` for a real spectrum from ``G = ∂L/∂inverse(S)``: ``DCT2(G)`` or ``Re(ifft2(G))`` (both maps are
    real-linear; the adjoint of ``S ↦ Re(ifft2(S))`` restricted to real ``S`` is ``G ↦ Re(ifft2(G))``)."""
    if transform == "dct":
        return dct2(grad)
    if transform == "dft":
        return torch.fft.ifft2(grad.float()).real.to(grad.dtype)
    raise ValueError(f"unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")


def scatter_spectrum(coefficients: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The dense spectrum ``S(a, l)``: ``coefficients[i]`` at ``(indices[0, i], indices[1, i])``, zero elsewhere;
    coefficients sharing a location add up (the authors' ``sparse_coo_tensor(...).to_dense()``)."""
    dense = coefficients.new_zeros(shape)
    return dense.index_put((indices[0], indices[1]), coefficients, accumulate=True)


def spectral_delta(
    transform: str, coefficients: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int], scale: float
) -> torch.Tensor:
    """``ΔW = α · inverse(S(a, l))`` at fixed integer locations (paper Eq. 1; FourierFT with ``"dft"``)."""
    return inverse_spectrum(transform, scatter_spectrum(coefficients, indices, shape)) * scale


# -- locations ----------------------------------------------------------------------------------
def random_locations(n: int, out_features: int, in_features: int, seed: int) -> torch.Tensor:
    """``n`` distinct random spectrum locations, ``(2, n)`` long: PEFT FourierFT's draw (``randperm`` of the
    ``out · in`` entries with ``torch.Generator().manual_seed(seed)``, first ``n``, row-major)."""
    if not 1 <= n <= out_features * in_features:
        raise ValueError(f"n_frequency must be in [1, out·in = {out_features * in_features}], got {n}")
    flat = torch.randperm(out_features * in_features, generator=torch.Generator().manual_seed(int(seed)))[:n]
    return torch.stack([flat // in_features, flat % in_features], dim=0)


def continuous_locations(indices: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Integer locations as the authors' continuous parameters in ``[0, 1]``: ``ρ = index / (size − 1)``
    (0 for a size-1 axis); :func:`discrete_locations` maps them back (up to the ``0.999`` clip, see there)."""
    sizes = torch.tensor([out_features - 1, in_features - 1], dtype=torch.float64).clamp(min=1).unsqueeze(1)
    return (indices.double() / sizes).float()


def scaled_locations(locations: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """``clip(ρ, 0, 0.999) · (size − 1)``, still continuous (the authors' ``lo_clip``; differentiable)."""
    clipped = torch.clamp(locations, min=0.0, max=LOCATION_CLIP)
    return torch.stack([clipped[0] * (out_features - 1), clipped[1] * (in_features - 1)], dim=0)


def discrete_locations(locations: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The integer ``(row, col)`` of each coefficient: ``round(clip(ρ, 0, 0.999) · (size − 1))``, ``(2, n)`` long."""
    return scaled_locations(locations.detach(), out_features, in_features).round().long()


def location_gradient(
    spectrum_grad: torch.Tensor, coefficients: torch.Tensor, indices: torch.Tensor, clip: float = 1.0
) -> torch.Tensor:
    """The finite-difference location gradient (Sec. 4.3; the authors' ``IdctWithIndexGrad.backward``), ``(2, n)``.

    ``spectrum_grad`` is ``K = ∂L/∂S`` (dense), ``indices`` the integer locations.
    Row: ``½ a (K[r+1, c] − K[r−1, c])``, with ``r ± 1`` held inside ``[0, M − 1]``
    (so a border coefficient gets the one-sided half difference); column
    likewise; each clipped to ``[−clip, clip]``.
    """
    rows, cols = indices[0], indices[1]
    m, n = spectrum_grad.shape
    up, down = (rows + 1).clamp(max=m - 1), (rows - 1).clamp(min=0)
    right, left = (cols + 1).clamp(max=n - 1), (cols - 1).clamp(min=0)
    a = coefficients.to(spectrum_grad.dtype)
    grad_rows = 0.5 * a * (spectrum_grad[up, cols] - spectrum_grad[down, cols])
    grad_cols = 0.5 * a * (spectrum_grad[rows, right] - spectrum_grad[rows, left])
    return torch.stack([grad_rows, grad_cols], dim=0).clamp(min=-clip, max=clip)


class _InverseWithLocationGradient(torch.autograd.Function):
    """``inverse(S(a, round(l)))`` with the coefficient gradient ``K[l]`` and the finite-difference location gradient."""

    @staticmethod
    def forward(ctx: Any, coefficients: torch.Tensor, scaled: torch.Tensor, shape: tuple[int, int], transform: str) -> torch.Tensor:
        indices = scaled.round().long()
        ctx.save_for_backward(coefficients, indices)
        ctx.transform = transform
        return inverse_spectrum(transform, scatter_spectrum(coefficients, indices, shape))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        coefficients, indices = ctx.saved_tensors
        k = spectrum_gradient(ctx.transform, grad_output)
        grad_coefficients = k[indices[0], indices[1]].to(coefficients.dtype) if ctx.needs_input_grad[0] else None
        grad_locations = location_gradient(k, coefficients, indices) if ctx.needs_input_grad[1] else None
        return grad_coefficients, grad_locations, None, None


def learned_location_delta(
    transform: str, coefficients: torch.Tensor, locations: torch.Tensor, shape: tuple[int, int], scale: float
) -> torch.Tensor:
    """``ΔW = α · inverse(S(a, l))`` with continuous location parameters ``ρ ∈ [0, 1]`` (``(2, n)``) that receive the
    finite-difference gradient through the clip and the scaling by ``size − 1`` (the authors' ``spectrum_to_para``)."""
    scaled = scaled_locations(locations, *shape).to(coefficients.dtype)
    return _InverseWithLocationGradient.apply(coefficients, scaled, shape, transform) * scale


# -- the schedule -------------------------------------------------------------------------------
def phase(step: int, coefficient_steps: int, location_steps: int, location_until: int) -> str:
    """Which parameters train at optimizer step ``step`` (0-based): ``"coefficients"`` or ``"locations"``.

    Sec. 4.4 and the authors' layer: in every cycle of ``B_a + B_l`` steps the
    first ``B_a`` update the coefficients and the next ``B_l`` the locations; from
    step ``B_s`` (``location_until``) on, the locations are frozen and only the
    coefficients train. ``location_steps = 0`` never moves the locations.
    """
    if step >= location_until or location_steps == 0:
        return "coefficients"
    return "coefficients" if step % (coefficient_steps + location_steps) < coefficient_steps else "locations"


# -- the layer ----------------------------------------------------------------------------------
class LocaLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus a sparse-spectrum update ``W' = W0 + α · inverse(S(a, l))``, ``a = 0`` at first.

    ``loca_spectrum`` holds the ``n`` coefficients ``a`` (PEFT's
    ``fourierft_spectrum``). With ``locations = "fixed"`` the integer locations
    are the buffer ``loca_indices`` (``(2, n)``, saved with the model); with
    ``"dynamic"`` they are the trainable parameter ``loca_locations``
    (``(2, n)`` in ``[0, 1]``, the authors' ``spectrum_indices``), started at
    ``indices`` and moved by the finite-difference gradient. Adapter parameters
    of half-precision layers are float32.
    """

    def __init__(
        self,
        base: nn.Linear,
        indices: torch.Tensor,
        scale: float = 1.0,
        transform: Transform = "dct",
        locations: str = "fixed",
    ) -> None:
        super().__init__(base)
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")
        if locations not in LOCATIONS:
            raise ValueError(f"unknown locations {locations!r} (known: {', '.join(LOCATIONS)})")
        indices = torch.as_tensor(indices).long()
        m, n_in = base.out_features, base.in_features
        if indices.ndim != 2 or indices.shape[0] != 2 or indices.shape[1] < 1:
            raise ValueError(f"indices must have shape (2, n), got {tuple(indices.shape)}")
        if (indices < 0).any() or (indices[0] >= m).any() or (indices[1] >= n_in).any():
            raise ValueError(f"indices must lie inside the {m}×{n_in} spectrum")
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.transform: str = transform
        self.locations: str = locations
        self.scale = float(scale)
        self.loca_spectrum = nn.Parameter(torch.zeros(indices.shape[1], device=device, dtype=dtype))
        if locations == "dynamic":
            start = continuous_locations(indices, m, n_in).to(device=device, dtype=dtype)
            self.loca_locations = nn.Parameter(start)
        else:
            self.register_buffer("loca_indices", indices.to(device))

    @property
    def n_frequency(self) -> int:
        return self.loca_spectrum.shape[0]

    def indices(self) -> torch.Tensor:
        """The current integer locations ``(2, n)``."""
        if self.locations == "dynamic":
            return discrete_locations(self.loca_locations, self.out_features, self.in_features)
        return self.loca_indices

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        own = {"loca_spectrum": self.loca_spectrum}
        if self.locations == "dynamic":
            own["loca_locations"] = self.loca_locations
        return own

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "loca",
            "transform": self.transform,
            "locations": self.locations,
            "n_frequency": self.n_frequency,
            "scale": self.scale,
        }

    def delta_weight(self) -> torch.Tensor:
        """``α · inverse(S(a, l))`` in the base weight's dtype."""
        shape = (self.out_features, self.in_features)
        if self.locations == "dynamic" and torch.is_grad_enabled() and self.loca_locations.requires_grad:
            delta = learned_location_delta(self.transform, self.loca_spectrum, self.loca_locations, shape, self.scale)
        else:
            delta = spectral_delta(self.transform, self.loca_spectrum, self.indices(), shape, self.scale)
        return delta.to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        result = self.base(x)
        delta = self.delta_weight().to(x.dtype)
        return result + torch.nn.functional.linear(x, delta)


def loca_linear(
    linear: nn.Linear,
    n_frequency: int,
    scale: float = 1.0,
    transform: Transform = "dct",
    locations: str = "fixed",
    seed: int = 777,
) -> LocaLinear:
    """Wrap one ``nn.Linear`` with ``n_frequency`` coefficients at PEFT-style random locations drawn with ``seed``."""
    indices = random_locations(n_frequency, linear.out_features, linear.in_features, seed)
    return LocaLinear(linear, indices, scale, transform, locations)


def trainable_values(n_frequency: int, locations: str) -> int:
    """Values LoCA optimizes on one layer: ``n`` coefficients, plus ``2n`` locations while they move (the paper
    counts the coefficients only: the locations are fixed integers once training ends)."""
    return n_frequency * (3 if locations == "dynamic" else 1)
