"""IDInit (Pan et al., ICLR 2025) as plain functions, usable without the engine.

IDInit keeps the identity in the main stem *and* in the residual sub-stem: every
weight is an identity-like matrix, and the layer that ends a residual branch is a
tiny zero-preserving matrix instead of exact zero.

* ``IDI_τ`` (Sec. 3.2, Eq. 3), a weight ``θ ∈ R^{D_out × D_in}`` (output × input):
  ``θ[m, j] = τ`` if ``m ≡ j (mod D_in)``, else ``0``.  Square: ``τ·I``.  Tall
  (``D_out > D_in``): the identity repeated down the rows, so every output unit
  carries an input (the "padded identity-like matrix"; zero padding would leave
  ``D_out − D_in`` units dead).  Wide: the first ``D_out`` inputs pass.
                                                                    -> :func:`idi_matrix`
* the "loose" condition (Sec. 3.2): the ``τ`` entries drawn from ``N(τ, σ²)`` to
  break the replicas of a tall matrix (``σ = 0``, off, by default)   -> ``loose`` of :func:`idi_matrix`
* ``IDIZ_ε`` (Sec. 3.3.2, dead neurons), the last layer of a residual branch: ``ε``
  times ``IDI`` on the first half of the inputs and ``−ε`` times ``IDI`` on the
  second half, so the branch starts at (or within ``O(ε)`` of) zero while every
  weight of the branch receives a gradient from the first step   -> :func:`idiz_matrix`
* ``IDIC_τ`` (Sec. 3.3.1, patch-maintain convolution): a kernel ``c_out × c_in × k × k``
  is read as the matrix ``c_out × (c_in·k·k)`` (PyTorch's flattening), given
  ``IDI_τ`` and reshaped back; ``"channel"`` puts ``IDI_τ(c_out × c_in)`` at the
  kernel centre instead (the channel-maintain baseline of the paper's ablation)
                                                                    -> :func:`idi_conv_kernel`

Biases are zero; normalization layers are reset to ones and zeros.  What the
paper's text could not settle for us (the exact ``IDIZ_ε`` pattern, the flattening
order of ``IDIC_τ``) is marked *our reading* below and in the README.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

ConvMode = Literal["patch", "channel"]

#: The last layer of each residual branch in paperkit's embedded models: the mlp's
#: ``Block.linear2`` (only with ``residual = true``) and, in the transformer, each
#: encoder layer's attention output projection and second feed-forward layer.
DEFAULT_RESIDUAL_ENDS: tuple[str, ...] = (
    "blocks.*.linear2",
    "encoder.layers.*.self_attn.out_proj",
    "encoder.layers.*.linear2",
)

#: Modules IDInit resets to their deterministic defaults (weight 1, bias 0).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def idi_matrix(out_features: int, in_features: int, tau: float = 1.0, *, loose: float = 0.0,
               generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``IDI_τ`` of Eq. (3): ``θ[m, j] = τ`` where ``m ≡ j (mod D_in)``, zero elsewhere.

    ``out_features`` is ``D_out`` (rows), ``in_features`` is ``D_in`` (columns). Row ``m``
    holds one ``τ``, at column ``m mod D_in``: the identity for a square matrix, the
    identity stacked ``⌈D_out/D_in⌉`` times for a tall one (no zero rows, unlike the
    partial identity of zero padding), the first ``D_out`` columns of the identity for a
    wide one. ``loose > 0`` draws each ``τ`` entry from ``N(τ, loose²)`` with
    ``generator`` (the "loose" condition of Sec. 3.2).
    """
    if out_features < 1 or in_features < 1:
        raise ValueError(f"IDI needs a non-empty matrix, got {out_features}x{in_features}")
    rows = torch.arange(out_features)
    values = torch.full((out_features,), float(tau), dtype=torch.float64)
    if loose > 0:
        values = values + loose * torch.randn(out_features, generator=generator, dtype=torch.float64)
    w = torch.zeros(out_features, in_features, dtype=torch.float64)
    w[rows, rows % in_features] = values
    return w.to(dtype)


def idiz_matrix(out_features: int, in_features: int, eps: float = 1e-6,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``IDIZ_ε``, the zero-preserving init of a residual branch's last layer (Sec. 3.3.2).

    With ``H = ⌊D_in/2⌋``: ``θ[:, :H] = ε·IDI(D_out, H)``, ``θ[:, H:2H] = −ε·IDI(D_out, H)``,
    and a last odd column stays zero. Output ``m`` is ``ε (h[m mod H] − h[H + m mod H])``:
    mean zero over exchangeable hidden units, variance ``O(ε²)``, and zero (up to rounding) when
    the hidden vector repeats with a period dividing ``H`` (a tall ``IDI`` in front of it,
    or a tiled stem as in the mlp). Unlike an exact zero, every column (and, for
    ``D_out ≥ H``, every row) is non-zero, so ``∂L/∂h = θᵀ g`` reaches the branch's first
    layer from the first step. *Our reading* of the paper's description (a subtraction
    that keeps the mean zero); ``eps = 0`` is exact zero (Fixup, ZerO). ``D_in = 1`` gives zero.
    """
    w = torch.zeros(out_features, in_features, dtype=torch.float64)
    half = in_features // 2
    if half and eps:
        block = idi_matrix(out_features, half, 1.0, dtype=torch.float64)
        w[:, :half] = eps * block
        w[:, half:2 * half] = -eps * block + 0.0  # + 0.0: no negative zeros
    return w.to(dtype)


def idi_conv_kernel(out_channels: int, in_channels: int, kernel_size: tuple[int, ...], tau: float = 1.0,
                    mode: ConvMode = "patch", *, zero_preserving: float | None = None, loose: float = 0.0,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``IDIC_τ`` for a kernel ``c_out × c_in × k...`` (Sec. 3.3.1), or ``IDIZ_ε`` when ``zero_preserving = ε``.

    ``"patch"`` (patch-maintain, the paper's choice): the kernel as the matrix
    ``c_out × (c_in·∏k)`` in PyTorch's order (input channel slowest, kernel position
    fastest), ``IDI_τ`` of that matrix, reshaped back; output channel ``o`` reads kernel
    position ``o mod ∏k`` of input channel ``⌊o/∏k⌋`` (mod ``c_in·∏k``), so ``∏k``
    consecutive output channels keep one input channel's whole patch. ``"channel"``
    (channel-maintain): ``IDI_τ(c_out × c_in)`` at the kernel centre, zero elsewhere (odd
    kernels only); a square one is the identity map with ``padding = k // 2``.
    """
    size = tuple(int(k) for k in kernel_size)
    taps = 1
    for k in size:
        taps *= k

    def matrix(rows: int, cols: int) -> torch.Tensor:
        if zero_preserving is not None:
            return idiz_matrix(rows, cols, zero_preserving, dtype)
        return idi_matrix(rows, cols, tau, loose=loose, generator=generator, dtype=dtype)

    if mode == "patch":
        return matrix(out_channels, in_channels * taps).reshape(out_channels, in_channels, *size)
    if mode == "channel":
        if any(k % 2 == 0 for k in size):
            raise ValueError(f"channel-maintain IDIC needs an odd kernel (a centre), got {'x'.join(map(str, size))}")
        kernel = torch.zeros(out_channels, in_channels, *size, dtype=dtype)
        kernel[(slice(None), slice(None), *(k // 2 for k in size))] = matrix(out_channels, in_channels)
        return kernel
    raise ValueError(f"conv mode must be 'patch' or 'channel', got {mode!r}")


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a qualified module name matches one of the glob ``patterns`` (fnmatch, case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def unmatched_patterns(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The ``patterns`` that name no Linear or convolution of ``model`` (most likely typos)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, *CONV_TYPES))]
    return [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]


@torch.no_grad()
def idinit_(model: nn.Module, residual_ends: Iterable[str] = DEFAULT_RESIDUAL_ENDS, tau: float = 1.0,
            eps: float = 1e-6, conv: ConvMode = "patch", loose: float = 0.0,
            generator: torch.Generator | None = None) -> dict[str, str]:
    """IDInit ``model`` in place; returns ``{module name: what it received}``.

    * ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (ungrouped) whose qualified name matches one
      of the glob ``residual_ends``: ``IDIZ_ε`` (its ``IDIC`` layout for a convolution).
    * every other ``nn.Linear``: ``IDI_τ``; every other convolution: ``IDIC_τ`` (``conv``).
    * ``nn.MultiheadAttention``'s packed ``in_proj_weight`` (``3d × d``): ``IDI_τ``
      (tall: queries, keys and values each start as the input).
    * every bias of those modules: zero; normalization layers: ones and zeros.

    Modules with parameters of any other kind (embeddings, free parameters such as a
    position table) are left as the model built them and reported as such: the paper
    gives IDInit for matrices and kernels only. ``loose > 0`` needs ``generator``
    for reproducible draws (a CPU ``torch.Generator``).
    """
    ends = tuple(residual_ends)
    done: dict[str, str] = {}
    for name, module in model.named_modules():
        label = name or "<root>"
        if isinstance(module, nn.Linear):
            out, inp = module.out_features, module.in_features
            if matches(name, ends):
                w, what = idiz_matrix(out, inp, eps), f"IDIZ eps={eps:g} {out}x{inp}"
            else:
                w, what = idi_matrix(out, inp, tau, loose=loose, generator=generator), f"IDI {_shape_kind(out, inp)} {out}x{inp}"
            module.weight.copy_(w.to(module.weight.dtype))
            _zero_bias(module)
            done[label] = what
        elif isinstance(module, CONV_TYPES):
            if module.groups != 1:
                raise ValueError(f"IDInit covers ungrouped convolutions; '{label}' has groups={module.groups}")
            out, inp, size = module.out_channels, module.in_channels, module.kernel_size
            end = matches(name, ends)
            kernel = idi_conv_kernel(out, inp, size, tau, conv, zero_preserving=eps if end else None,
                                     loose=0.0 if end else loose, generator=generator)
            module.weight.copy_(kernel.to(module.weight.dtype))
            _zero_bias(module)
            done[label] = f"{'IDIZ eps=' + format(eps, 'g') if end else 'IDIC'} {conv} {out}x{inp}x{'x'.join(map(str, size))}"
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is None:
                raise ValueError(f"IDInit covers MultiheadAttention with packed projections; '{label}' has separate ones")
            rows, cols = module.in_proj_weight.shape
            module.in_proj_weight.copy_(idi_matrix(rows, cols, tau, loose=loose, generator=generator).to(module.in_proj_weight.dtype))
            if module.in_proj_bias is not None:
                module.in_proj_bias.zero_()
            done[label] = f"IDI tall {rows}x{cols} (in_proj)"
        elif isinstance(module, NORM_TYPES):
            module.reset_parameters()
            done[label] = "norm defaults"
        elif any(True for _ in module.parameters(recurse=False)):
            done[label] = f"left as built ({type(module).__name__})"
    return done


def _zero_bias(module: nn.Module) -> None:
    if getattr(module, "bias", None) is not None:
        module.bias.zero_()


def _shape_kind(out: int, inp: int) -> str:
    return "square" if out == inp else "tall" if out > inp else "wide"
