"""The math of neural-redshift as plain functions, usable without the engine.

Teney et al. (CVPR 2024) characterize the function a network implements by evaluating it on a dense grid of
inputs and measuring how complex the resulting "image" is. Their networks map R² to R, so the grid covers the
whole input space; a network with a higher-dimensional input is measured, as the follow-ups that apply the
measure to such networks do (e.g. SimBa, Lee et al. 2025, App. B), on a 2-D slice: the plane through a centre
point spanned by two random orthonormal directions.

Two of the paper's three measures are here (the third, the order of a Legendre-polynomial fit, is not):

- :func:`mean_frequency`, the Fourier measure: the mean spatial frequency of the output over the grid,
  each frequency weighted by the magnitude of its DFT coefficient, the constant term left out.
- :func:`lz_complexity`, the compressibility measure: the number of phrases of a Lempel-Ziv parsing of the
  binarized output, read in raster order, per symbol.

Nothing here reads a plan or a run context; :mod:`paperkit_neural_redshift.hooks` calls these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def slice_basis(dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two orthonormal directions of R^dim, shape ``(2, dim)``: the span of a Gaussian draw (QR), uniform on the
    Grassmannian of planes. ``dim = 2`` gives a random rotation of the paper's own input plane."""
    if dim < 2:
        raise ValueError(f"a 2-D slice needs an input of at least 2 dimensions, got {dim}")
    gaussian = torch.randn(dim, 2, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()  # signs fixed so the draw is a function of the seed


def grid_coordinates(points: int, radius: float) -> torch.Tensor:
    """``points`` coordinates ``-radius + 2·radius·i/points`` (i = 0..points-1), float64.

    The square [-radius, radius) is sampled as one period of the DFT (the right end left out), so a function that
    completes k cycles across the square puts all its energy in DFT bin k: the grid's frequency unit is "cycles
    per side of the square".
    """
    if points < 2:
        raise ValueError(f"the grid needs at least 2 points per side, got {points}")
    return -radius + 2.0 * radius * torch.arange(points, dtype=torch.float64) / points


def slice_inputs(center: torch.Tensor, basis: torch.Tensor, points: int, radius: float) -> torch.Tensor:
    """The grid of the slice as model inputs, shape ``(points², dim)``, float64.

    Point ``(i, j)`` (row-major: ``i`` the row) is ``center + a_i·basis[0] + a_j·basis[1]`` with
    ``a = grid_coordinates(points, radius)``.
    """
    a = grid_coordinates(points, radius)
    rows, cols = torch.meshgrid(a, a, indexing="ij")
    plane = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)  # (points², 2)
    return center.reshape(1, -1).to(torch.float64) + plane @ basis.to(torch.float64)


def mean_frequency(values: torch.Tensor, window: str = "none") -> torch.Tensor:
    """The Fourier complexity of functions sampled on a grid: the magnitude-weighted mean frequency.

    ``values`` has shape ``(..., N, M)`` (one map per leading index). With ``F_k`` the 2-D DFT of a map and
    ``k = (k1, k2)`` its signed integer frequencies (``torch.fft.fftfreq`` times the size),

        C_Fourier = Σ_{k ≠ 0} |F_k|·‖k‖₂ / Σ_{k ≠ 0} |F_k|,

    in cycles per side of the grid: the paper's measure, the mean of the frequencies weighted by the magnitude
    of their coefficients, with the constant component left out (the authors' code zeroes it: "shift is not
    important"). ``sin(2π·k·t)`` over one period gives exactly ``k``; a constant map gives 0 (no energy outside
    the constant term). The full spectrum is used, so every direction of variation counts alike (a real map's
    spectrum is symmetric, ``|F_{-k}| = |F_k|``).

    ``window = "none"`` is the DFT of the map as it is, as in the authors' code. The DFT treats the map as
    periodic, so a map whose opposite edges differ (any non-constant linear function) gets the slowly decaying
    spectrum of a jump (|F_k| ~ 1/‖k‖) and a floor of several cycles per side (8.6 for a linear map on 64×64).
    ``window = "hann"`` (our addition) first removes the map's mean and multiplies it by a separable periodic
    Hann window, which removes the jump: a linear map then gives about 1.7 and ``sin(2π·k·t)`` about ``k`` (the
    window spreads each frequency over its two neighbours, 1.51 at k = 1, 8.03 at k = 8).
    """
    if values.dim() < 2:
        raise ValueError(f"mean_frequency needs maps of shape (..., N, M), got shape {tuple(values.shape)}")
    if window not in ("none", "hann"):
        raise ValueError(f"window must be 'none' or 'hann', got {window!r}")
    n, m = values.shape[-2:]
    maps = values.to(torch.float64)
    if window == "hann":
        maps = maps - maps.mean((-2, -1), keepdim=True)
        w1 = torch.hann_window(n, periodic=True, dtype=torch.float64)
        w2 = torch.hann_window(m, periodic=True, dtype=torch.float64)
        maps = maps * w1[:, None] * w2[None, :]
    magnitude = torch.fft.fft2(maps).abs()
    k1 = torch.fft.fftfreq(n, dtype=torch.float64) * n
    k2 = torch.fft.fftfreq(m, dtype=torch.float64) * m
    radius = torch.sqrt(k1[:, None] ** 2 + k2[None, :] ** 2)  # ‖k‖₂, 0 at the constant term only
    total = magnitude.sum((-2, -1)) - magnitude[..., 0, 0]
    weighted = (magnitude * radius).sum((-2, -1))
    # a spectrum this small next to the map's own size is the rounding error of a constant map
    scale = values.to(torch.float64).abs().sum((-2, -1))
    flat = total <= 1e-12 * scale
    return torch.where(flat, torch.zeros_like(total), weighted / torch.where(flat, torch.ones_like(total), total))


def lz_phrases(sequence: str | Sequence[object]) -> int:
    """The number of phrases of the incremental Lempel-Ziv parsing of ``sequence``.

    The sequence is cut, left to right, into the shortest pieces not seen before as a piece; the count of
    distinct pieces is the complexity (the parsing of the authors' ``lempel_ziv_complexity``, after
    Lempel & Ziv's incremental parsing; a trailing piece that repeats an earlier one is not counted).
    ``"1001111011000010"`` parses as 1 / 0 / 01 / 11 / 10 / 110 / 00 / 010: 8 phrases.
    """
    text = sequence if isinstance(sequence, str) else tuple(sequence)
    seen: set[object] = set()
    start, length, n = 0, 1, len(text)
    while start + length <= n:
        piece = text[start : start + length]
        if piece in seen:
            length += 1
        else:
            seen.add(piece)
            start += length
            length = 1
    return len(seen)


def binarize(values: torch.Tensor) -> torch.Tensor:
    """Each map of ``values`` (``(..., N, M)``) as booleans: above its own median (torch's lower median)."""
    flat = values.reshape(*values.shape[:-2], -1)
    median = flat.median(dim=-1, keepdim=True).values
    return (flat > median).reshape(values.shape)


def lz_complexity(values: torch.Tensor) -> torch.Tensor:
    """The compressibility measure of maps ``(..., N, M)``: LZ phrases of each binarized map, read in raster order
    (row after row), divided by the number of grid points N·M (the authors' normalization by length).

    A constant map parses into about √(2·N·M) phrases (0 / 00 / 000 / ...: 0.022 at N = M = 64); a fair-coin map
    into more, asymptotically N·M / log₂(N·M) phrases (about 0.134 measured at N = M = 64, where the asymptotic
    law still says 0.083).
    """
    bits = binarize(values)
    flat = bits.reshape(-1, bits.shape[-2] * bits.shape[-1]).to(torch.uint8).cpu()
    counts = [lz_phrases(bytes(row.tolist()).decode("latin-1")) for row in flat]
    n = flat.shape[-1]
    return torch.tensor(counts, dtype=torch.float64).reshape(values.shape[:-2]) / n


@torch.no_grad()
def slice_outputs(
    model: nn.Module,
    center: torch.Tensor,
    basis: torch.Tensor,
    points: int,
    radius: float,
    input_shape: Sequence[int] | None = None,
    outputs: Sequence[int] | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """The model's outputs over the slice, one map per output unit: shape ``(outputs, points, points)``.

    ``input_shape`` is the shape of one input (an image's ``(C, H, W)``); the flat grid points are reshaped to it.
    ``outputs`` picks output units (a task-incremental experience's classes); default all. The model is run as it
    is (call ``model.eval()`` first for dropout and batch norm to act as at test time).
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = slice_inputs(center, basis, points, radius).to(device=device, dtype=dtype)
    if input_shape is not None:
        x = x.reshape(len(x), *input_shape)
    out = torch.cat([model(part) for part in x.split(chunk)])
    out = out.reshape(len(x), -1)
    if outputs is not None:
        out = out[:, list(outputs)]
    return out.T.reshape(-1, points, points).to(torch.float64).cpu()


def complexity_metrics(maps: torch.Tensor) -> dict[str, float]:
    """The measures of maps ``(outputs, N, M)``, each averaged over the output units: ``mean_frequency`` (the
    paper's DFT), ``mean_frequency_hann`` (windowed) and ``lz_complexity``; plus each one's spread over the
    output units (``<name>_std``, population std, 0 for one output)."""
    measures = {
        "mean_frequency": mean_frequency(maps),
        "mean_frequency_hann": mean_frequency(maps, window="hann"),
        "lz_complexity": lz_complexity(maps),
    }
    out: dict[str, float] = {}
    for name, values in measures.items():
        out[name] = float(values.mean())
        out[f"{name}_std"] = float(values.std(unbiased=False)) if len(values) > 1 else 0.0
    return out
