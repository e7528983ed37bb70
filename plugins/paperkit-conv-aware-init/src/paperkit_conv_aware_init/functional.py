"""Convolution Aware Initialization (Aghajanyan, 2017, arXiv:1702.06295) as plain functions.

The paper's idea (abstract): by the duality of convolution and the Fourier
transform, build *orthogonal filters in the Fourier space* and represent them
in the standard space by the inverse Fourier transform. The algorithm below is
the author's reference implementation, keras-contrib's ``ConvolutionAware``
initializer (``keras_contrib/initializers/convaware.py``, MIT; written by the
author, PR #60, with the later fix of commit d42e1b4 to the kernel layout),
ported from NumPy/Keras to torch step by step:

1. For every output filter ``o`` of a conv kernel with ``C_in`` input channels
   and spatial size ``k = (k_1, ..., k_d)``, the real FFT shape of the kernel
   is ``F = (k_1, ..., k_{d-1}, k_d // 2 + 1)`` with ``S = prod(F)`` entries.
2. ``C_in`` orthonormal vectors of ``R^S`` (:func:`fourier_basis`): for each of
   ``C_in // S + 1`` blocks, a standard Gaussian ``S × S`` matrix ``A`` is
   symmetrized (``A + Aᵀ - diag(A)``) and the rows of ``Uᵀ`` of its SVD are
   taken, the first ``C_in`` rows overall. The rows are rounded to the
   weight's dtype (the reference casts them to Keras' ``floatx``). When
   ``S = 1`` (a 1×1 kernel) there is no basis: the reference draws
   ``N(0, eps_std²)`` values instead.
3. Each row, reshaped to ``F``, is read as (real) rFFT coefficients and
   inverse-transformed to a spatial filter of shape ``k`` (``irfftn``), and
   ``N(0, eps_std²)`` noise is added to break symmetry
   (:func:`conv_aware_filters`).
4. The whole tensor ``(C_out, C_in, *k)`` is rescaled so that its (population)
   variance is ``2 / fan_in``, ``fan_in = C_in · prod(k)`` — He et al.'s
   (2015) variance (:func:`scale_to_variance`).

The reference builds the array in the order (filters, stack, *kernel) and
transposes it to Keras' ``(*kernel, stack, filters)``; that order *is*
torch's ``Conv{1,2,3}d`` weight layout ``(C_out, C_in, *k)``, so nothing is
transposed here (:func:`to_keras_layout` gives the Keras view).

Shapes that are not conv kernels (a ``Linear`` weight) get the reference's
fallback, Keras' ``Orthogonal()`` with gain 1 (:func:`keras_orthogonal_`): an
SVD of a Gaussian matrix shaped like the Keras kernel ``(in, out)``. The
baseline the paper compares with is He initialization: :func:`he_normal_`.

Randomness: every draw is a standard normal array of a given shape, taken
from a *normal source* (:func:`normal_source`): a ``torch.Generator`` (what the
hook uses), or a NumPy ``Generator`` / ``RandomState``, with which the draws
are the ones the NumPy reference makes, in the same order and shapes (so the
tests can feed both the same stream). Everything is computed in float64 on the
CPU and copied into the weight, so a seed gives the same weights on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import attrs
import torch
from torch import nn

#: A function returning float64 standard normal draws of a shape.
Normal = Callable[[tuple[int, ...]], torch.Tensor]
Scheme = Literal["conv-aware", "he"]
LinearInit = Literal["orthogonal", "he", "keep"]

#: The conv modules whose weight ``(C_out, C_in / groups, *k)`` is a conv kernel.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: He et al.'s (2015) variance factor for ReLU, ``Var W = 2 / fan_in``; the reference's ``variance = 2 / fan_in``.
HE_FACTOR = 2.0


def normal_source(generator: Any = None) -> Normal:
    """A standard normal source over ``generator``.

    * ``torch.Generator`` or ``None`` (torch's global generator): ``torch.randn(shape, dtype=float64)``.
    * a NumPy ``Generator`` or ``RandomState`` (anything with ``standard_normal``): its
      ``standard_normal(shape)``, the draws ``np.random.normal(0, s, shape)`` makes before scaling
      by ``s`` — so ``s * draw`` equals the NumPy reference's value bit for bit.
    """
    if generator is None or isinstance(generator, torch.Generator):
        def draw(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.randn(shape, generator=generator, dtype=torch.float64)
        return draw
    if callable(getattr(generator, "standard_normal", None)):
        def draw_numpy(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.as_tensor(generator.standard_normal(shape), dtype=torch.float64).reshape(shape)
        return draw_numpy
    raise TypeError(f"a normal source needs a torch.Generator or a NumPy Generator/RandomState, got {type(generator).__name__}")


def fourier_shape(kernel_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of ``rfftn`` of a real kernel: all axes kept, the last halved to ``k_d // 2 + 1``."""
    if not kernel_shape or any(k < 1 for k in kernel_shape):
        raise ValueError(f"a kernel shape needs at least one positive size, got {tuple(kernel_shape)}")
    return (*kernel_shape[:-1], kernel_shape[-1] // 2 + 1)


def symmetrize(a: torch.Tensor) -> torch.Tensor:
    """``A + Aᵀ - diag(A)``: the reference's symmetric matrix from a Gaussian one (diagonal counted once)."""
    return a + a.T - torch.diag(torch.diagonal(a))


def fourier_basis(count: int, size: int, normal: Normal, eps_std: float = 0.05,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` vectors of ``R^size`` that are orthonormal in blocks of ``size``: the filters in Fourier space.

    ``count // size + 1`` blocks (the reference's ``nbb``, one more than needed when ``size``
    divides ``count``), each the rows of ``Uᵀ`` from the SVD of a symmetrized ``size × size``
    standard Gaussian; the first ``count`` rows overall, rounded to ``dtype`` (Keras' ``floatx``)
    and returned in float64. With ``size == 1`` the reference returns ``eps_std · N(0, 1)`` values
    (not rounded) of shape ``(count, 1)``.
    """
    if size == 1:
        return eps_std * normal((count, 1))
    rows: list[torch.Tensor] = []
    for _ in range(count // size + 1):
        u, _s, _vh = torch.linalg.svd(symmetrize(normal((size, size))))
        rows.append(u.T)
    return torch.cat(rows)[:count].to(dtype).to(torch.float64)


def conv_aware_filters(out_channels: int, in_channels: int, kernel_shape: Sequence[int], normal: Normal,
                       eps_std: float = 0.05, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The unscaled filters ``(C_out, C_in, *k)``: per output filter, its Fourier basis inverse-transformed plus noise.

    For every output filter (in order): :func:`fourier_basis` of ``C_in`` vectors, each reshaped to
    :func:`fourier_shape` and mapped to the spatial domain by ``irfftn(·, s=k)`` over the kernel
    axes, then ``eps_std · N(0, 1)`` noise of shape ``(C_in, *k)`` added. The noise is one draw of
    that shape: in C order these are the draws the reference makes one channel at a time.
    """
    kernel_shape = tuple(int(k) for k in kernel_shape)
    fshape = fourier_shape(kernel_shape)
    size = math.prod(fshape)
    dims = tuple(range(1, len(kernel_shape) + 1))
    filters = []
    for _ in range(out_channels):
        basis = fourier_basis(in_channels, size, normal, eps_std, dtype).reshape(in_channels, *fshape)
        spatial = torch.fft.irfftn(basis, s=kernel_shape, dim=dims)
        filters.append(spatial + eps_std * normal((in_channels, *kernel_shape)))
    return torch.stack(filters)


def scale_to_variance(filters: torch.Tensor, variance: float) -> torch.Tensor:
    """``filters · sqrt(variance / Var(filters))``, the population variance over the whole tensor (``np.var``)."""
    current = filters.var(correction=0)
    if not current > 0:
        raise ValueError("the filters have zero variance and cannot be rescaled (1×1 kernels need eps_std > 0)")
    return filters * torch.sqrt(variance / current)


def conv_aware_kernel(weight_shape: Sequence[int], generator: Any = None, eps_std: float = 0.05,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A convolution-aware kernel of torch layout ``(C_out, C_in, *k)``, float64, variance exactly ``2 / fan_in``.

    ``fan_in = C_in · prod(k)`` (the later keras-contrib ``_compute_fans`` for conv kernels, the
    same as torch's). ``generator``: a torch or NumPy generator (:func:`normal_source`).
    """
    if len(weight_shape) < 3:
        raise ValueError(f"a conv kernel has shape (C_out, C_in, *k), got {tuple(weight_shape)}")
    out_channels, in_channels, *kernel_shape = (int(s) for s in weight_shape)
    fan_in = in_channels * math.prod(kernel_shape)
    filters = conv_aware_filters(out_channels, in_channels, kernel_shape, normal_source(generator), eps_std, dtype)
    return scale_to_variance(filters, HE_FACTOR / fan_in)


def to_keras_layout(kernel: torch.Tensor) -> torch.Tensor:
    """torch ``(C_out, C_in, *k)`` to Keras ``(*k, C_in, C_out)`` (the fixed reference's ``transpose((2, 3, 1, 0))`` in 2-D)."""
    return kernel.permute(*range(2, kernel.ndim), 1, 0)


def _work_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the basis is rounded to: the weight's own float32/float64 (Keras' floatx), else float32."""
    return weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32


@torch.no_grad()
def conv_aware_(weight: torch.Tensor, eps_std: float = 0.05, generator: Any = None) -> torch.Tensor:
    """Fill a conv weight ``(C_out, C_in / groups, *k)`` in place with a convolution-aware kernel (:func:`conv_aware_kernel`)."""
    kernel = conv_aware_kernel(weight.shape, generator, eps_std, _work_dtype(weight))
    weight.copy_(kernel.to(weight.dtype))
    return weight


def keras_orthogonal(shape: Sequence[int], generator: Any = None, gain: float = 1.0) -> torch.Tensor:
    """Keras 2's ``Orthogonal(gain)`` draw for a Keras-layout ``shape``, float64: the reference's non-conv fallback.

    ``A ~ N(0, 1)`` of shape ``(shape[0], prod(shape[1:]))``, ``U, _, V = svd(A)`` (thin), ``Q`` the
    factor with ``A``'s shape (``U`` when tall or square, ``Vᵀ``'s rows otherwise), ``gain · Q``.
    """
    flat = (int(shape[0]), math.prod(int(s) for s in shape[1:]))
    u, _s, vh = torch.linalg.svd(normal_source(generator)(flat), full_matrices=False)
    q = u if tuple(u.shape) == flat else vh
    return gain * q.reshape(tuple(shape))


@torch.no_grad()
def keras_orthogonal_(weight: torch.Tensor, gain: float = 1.0, generator: Any = None) -> torch.Tensor:
    """Fill a ``Linear`` weight ``(out, in)`` in place with Keras' orthogonal draw of its Keras kernel ``(in, out)``, transposed."""
    if weight.ndim != 2:
        raise ValueError(f"the orthogonal fallback here is for Linear weights (out, in), got shape {tuple(weight.shape)}")
    weight.copy_(keras_orthogonal((weight.shape[1], weight.shape[0]), generator, gain).T.to(weight.dtype))
    return weight


@torch.no_grad()
def he_normal_(weight: torch.Tensor, generator: Any = None) -> torch.Tensor:
    """He et al. (2015) normal, ``N(0, 2 / fan_in)``, ``fan_in = weight[0].numel()``: the paper's baseline.

    Equal to ``torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")``; with a torch
    generator, bit for bit (drawn in float32 on the CPU as torch does for a float32 weight).
    """
    fan_in = weight[0].numel()
    std = math.sqrt(HE_FACTOR / fan_in)
    if generator is None or isinstance(generator, torch.Generator):
        draw = torch.empty(weight.shape, dtype=_work_dtype(weight)).normal_(0.0, std, generator=generator)
    else:
        draw = std * normal_source(generator)(tuple(weight.shape))
    weight.copy_(draw.to(weight.dtype))
    return weight


@attrs.frozen
class LayerRecord:
    """What one layer received: its name, weight shape, the draw, and the weight's variance after it."""

    name: str
    shape: tuple[int, ...]
    draw: str
    variance: float


def init_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every conv (``Conv1d/2d/3d``) and ``Linear`` layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, (*CONV_TYPES, nn.Linear)) and isinstance(getattr(module, "weight", None), torch.Tensor):
            yield name, module


@torch.no_grad()
def init_model_(
    model: nn.Module,
    *,
    scheme: Scheme = "conv-aware",
    linear: LinearInit = "orthogonal",
    eps_std: float = 0.05,
    zero_bias: bool = True,
    generator: Any = None,
) -> list[LayerRecord]:
    """Initialize every conv and Linear layer of ``model`` in module order from one generator; return what each got.

    ``scheme = "conv-aware"``: conv weights by :func:`conv_aware_` (the method); ``"he"``: by
    :func:`he_normal_` (the paper's baseline). ``linear``: ``"orthogonal"`` is the reference's
    fallback for non-conv shapes (:func:`keras_orthogonal_`, gain 1), ``"he"`` He normal, ``"keep"``
    leaves Linear layers as built. ``zero_bias``: biases of the initialized layers set to 0, Keras'
    default ``bias_initializer="zeros"``. Other parameters (norm layers, embeddings) are untouched.
    A model without conv layers gets only the Linear treatment, as the reference gives any
    non-conv shape its orthogonal fallback.
    """
    if scheme not in ("conv-aware", "he"):
        raise ValueError(f"scheme must be 'conv-aware' or 'he', got {scheme!r}")
    if linear not in ("orthogonal", "he", "keep"):
        raise ValueError(f"linear must be 'orthogonal', 'he' or 'keep', got {linear!r}")
    if eps_std < 0:
        raise ValueError(f"eps_std must be >= 0, got {eps_std}")
    records = []
    for name, module in init_layers(model):
        weight = module.weight
        if isinstance(module, CONV_TYPES):
            draw = scheme
            conv_aware_(weight, eps_std, generator) if scheme == "conv-aware" else he_normal_(weight, generator)
        elif linear == "keep":
            continue
        else:
            draw = linear
            keras_orthogonal_(weight, 1.0, generator) if linear == "orthogonal" else he_normal_(weight, generator)
        bias = getattr(module, "bias", None)
        if zero_bias and isinstance(bias, torch.Tensor):
            bias.zero_()
        records.append(LayerRecord(name, tuple(weight.shape), draw, float(weight.double().var(correction=0))))
    if not records:
        raise ValueError("the model has no Conv1d/Conv2d/Conv3d layer (and Linear layers are kept): nothing to initialize")
    return records
