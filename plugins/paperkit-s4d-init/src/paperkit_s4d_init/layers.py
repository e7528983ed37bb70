"""The S4D layer and the small S4D classifier registered as the ``s4d`` model.

Shapes and defaults follow the reference repository (state-spaces/s4, Apache-2.0):
``models/s4/s4d.py`` for the kernel and the block, ``example.py`` for the classifier
(linear encoder, residual blocks with LayerNorm, mean pooling over the sequence, linear decoder).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from paperkit import Classifier
from paperkit_s4d_init.functional import DiagonalInit, causal_conv, diagonal_init, s4d_kernel


class S4DKernel(nn.Module):
    """The diagonal SSM convolution kernel of H channels with state size N (s4d.py ``S4DKernel``).

    Parameters: ``log_dt`` (H), ``C`` (H, N/2, 2) (the real view of a complex tensor, B folded in),
    ``log_A_real`` and ``A_imag`` (H, N/2). Built with S4D-Lin from torch's global generator, drawing
    what the reference draws; ``s4d-init`` re-initializes it with any scheme (:meth:`load_init`).
    """

    def __init__(self, d_model: int, N: int = 64, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        self.H, self.N = d_model, N
        init = diagonal_init("lin", d_model, N, None, dt_min, dt_max)
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(init.log_dt.to(dtype))
        self.C = nn.Parameter(torch.view_as_real(init.C.to(torch.complex64 if dtype == torch.float32 else torch.complex128)))
        self.log_A_real = nn.Parameter(init.log_A_real.to(dtype))
        self.A_imag = nn.Parameter(init.A_imag.to(dtype))

    @torch.no_grad()
    def load_init(self, init: DiagonalInit) -> None:
        """Copy an initialization's values into the parameters, keeping their dtype and device."""
        expected = {"log_dt": (self.H,), "C": (self.H, self.N // 2), "log_A_real": (self.H, self.N // 2),
                    "A_imag": (self.H, self.N // 2)}
        for name, shape in expected.items():
            value = getattr(init, name)
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} of shape {tuple(value.shape)}, the kernel holds {shape}")
        self.log_dt.copy_(init.log_dt)
        self.C.copy_(torch.view_as_real(init.C.to(torch.complex128)))
        self.log_A_real.copy_(init.log_A_real)
        self.A_imag.copy_(init.A_imag)

    def forward(self, L: int) -> Tensor:
        """The kernel K, shape (H, L)."""
        return s4d_kernel(self.log_dt, torch.view_as_complex(self.C), self.log_A_real, self.A_imag, L)


class S4D(nn.Module):
    """One S4D layer on (B, H, L): y = SSM-convolution(u) + D·u, GELU, dropout, 1x1 conv to 2H and GLU (s4d.py ``S4D``)."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, dt_min: float = 0.001,
                 dt_max: float = 0.1) -> None:
        super().__init__()
        self.D = nn.Parameter(torch.randn(d_model))
        self.kernel = S4DKernel(d_model, d_state, dt_min, dt_max)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout1d(dropout) if dropout > 0 else nn.Identity()  # one mask per channel, as DropoutNd
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u: Tensor) -> Tensor:
        k = self.kernel(u.shape[-1])
        y = causal_conv(u, k) + u * self.D.unsqueeze(-1)
        return self.output_linear(self.dropout(self.activation(y)))


class S4DClassifier(Classifier):
    """example.py's ``S4Model``: encoder, ``layers`` residual S4D blocks (post- or pre-norm), mean pool, head.

    Inputs (B, L, d_input); a flat (B, L) input is read as one feature per step. Token inputs are
    embedded. ``features`` is the mean over the sequence of the last block's output.
    """

    def __init__(self, d_input: int, num_classes: int, config: Any, vocab_size: int | None = None) -> None:
        super().__init__()
        self.prenorm = config.prenorm
        self.tokens = vocab_size is not None
        self.encoder: nn.Module = (
            nn.Embedding(vocab_size, config.d_model) if vocab_size is not None else nn.Linear(d_input, config.d_model)
        )
        self.blocks = nn.ModuleList(
            S4D(config.d_model, config.d_state, config.dropout, config.dt_min, config.dt_max)
            for _ in range(config.layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(config.d_model) for _ in range(config.layers))
        self.dropouts = nn.ModuleList(
            nn.Dropout1d(config.dropout) if config.dropout > 0 else nn.Identity() for _ in range(config.layers)
        )
        self.head = nn.Linear(config.d_model, num_classes)

    def features(self, x: Tensor) -> Tensor:
        if self.tokens:
            h = self.encoder(x.long())
        else:
            h = self.encoder(x.unsqueeze(-1) if x.dim() == 2 else x)
        h = h.transpose(-1, -2)  # (B, H, L)
        for block, norm, dropout in zip(self.blocks, self.norms, self.dropouts):
            z = norm(h.transpose(-1, -2)).transpose(-1, -2) if self.prenorm else h
            h = dropout(block(z)) + h
            if not self.prenorm:
                h = norm(h.transpose(-1, -2)).transpose(-1, -2)
        return h.mean(dim=-1)


def kernels(model: nn.Module) -> list[tuple[str, S4DKernel]]:
    """Every S4D kernel of ``model``, in module order, with its name."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, S4DKernel)]


def build(config: Any, info: Any) -> S4DClassifier:
    """The ``s4d`` model factory: ``(config, TaskInfo)`` -> classifier."""
    if info.input_kind == "tokens":
        return S4DClassifier(1, info.num_classes, config, vocab_size=info.vocab_size)
    seq_len = info.seq_len or info.input_dim
    if info.input_dim % seq_len:
        raise ValueError(f"s4d: the input size {info.input_dim} is not a whole number of features per step "
                         f"over {seq_len} steps")
    return S4DClassifier(info.input_dim // seq_len, info.num_classes, config)
