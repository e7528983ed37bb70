"""CorDA's context-oriented decomposition as plain functions: usable on any ``nn.Linear`` without the engine.

Notation (Yang et al., NeurIPS 2024, Sec. 3.1–3.3; PEFT's layout): a linear layer computes ``y = x Wᵀ`` with
``W`` of shape ``(out, in)``. From a few *context* samples, each one a matrix ``X_i`` of input rows (the tokens of
one sequence), the layer's covariance is

    C = (1/N) Σ_i X̂_iᵀ X̂_i,      X̂_i = X_i / |max(X_i)|                         (Sec. 3.2, Eq. 1)

(the per-sample rescaling by the largest entry is the reference code's, iboing/CorDA ``cordalib`` and PEFT's
``calib_cov_distribution``). The context-oriented decomposition is the SVD of ``W C``, mapped back by ``C⁻¹``:

    W C = U Σ Vᵀ,     W = U Σ (Vᵀ C⁻¹)  =:  U Σ V̂ᵀ                                (Sec. 3.2, Eq. 2–3)

where ``C`` is damped (``C + λ·mean(diag C)·I``, ``λ = 0.01`` doubled until ``‖C C⁻¹ − I‖ < 0.05``, as in the
reference code) so that it inverts. With ``r`` components selected:

* IPA, instruction-previewed adaptation (Sec. 3.3): ``C`` from the fine-tuning task, the ``r`` *largest* ``σ``;
* KPA, knowledge-preserved adaptation (Sec. 3.3): ``C`` from knowledge (question-answering) samples, the ``r``
  *smallest* ``σ`` train, the principal components, which carry that knowledge, stay frozen;

and, as for PiSSA, with the adapter's scaling ``s = alpha / r`` divided out of the selected ``σ``:

    A = sqrt(Σ_r / s) V̂_rᵀ   (r × in,  PEFT's lora_A)
    B = U_r sqrt(Σ_r / s)    (out × r, PEFT's lora_B)
    W_res = W − s · B A      (the frozen base weight)

so the adapted layer computes exactly what ``W`` did before training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from paperkit import LowRankLinear

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
MODES = ("ipa", "kpa")


def normalized_gram(rows: torch.Tensor) -> torch.Tensor:
    """``X̂ᵀ X̂`` of one context sample ``X`` (``tokens × in``), with ``X̂ = X / |max(X)|`` (Eq. 1; the reference code
    divides by the absolute value of the largest entry, not by the largest absolute value), in float32."""
    x = rows.detach().float()
    x = x / torch.max(x).abs()
    if not torch.isfinite(x).all():
        raise ValueError("a context sample has non-finite (or all-zero) activations")
    return x.T @ x


def sample_rows(padding_id: int | None = None) -> Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """How a layer's input splits into context samples (what PEFT's hook sees in one forward call of batch size 1).

    A ``(batch, tokens, in)`` input gives one sample per sequence; token positions whose input id is ``padding_id``
    are left out (the reference code calibrates on unpadded sequences). A 2-D ``(batch, in)`` input is one sample,
    as it is for PEFT's hook, which normalizes and accumulates once per forward call.
    """

    def rows(layer_input: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        if layer_input.ndim == 3:
            keep = None
            if padding_id is not None and not torch.is_floating_point(x) and tuple(x.shape) == tuple(layer_input.shape[:2]):
                keep = x != padding_id
            return [seq if keep is None else seq[keep[i]] for i, seq in enumerate(layer_input)]
        return [layer_input.reshape(-1, layer_input.shape[-1])]

    return rows


@torch.no_grad()
def context_covariances(
    model: nn.Module,
    inputs: Iterable[torch.Tensor],
    targets: Iterable[str],
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    padding_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """The covariance ``C`` (Eq. 1) of every target linear layer's input over the context ``inputs``.

    ``inputs`` are model inputs (batches); each batch is split into samples by :func:`sample_rows`. The model runs in
    evaluation mode (its mode is restored); ``forward(model, x)`` defaults to ``model(x)``.
    """
    names = list(targets)
    split = sample_rows(padding_id)
    sums: dict[str, torch.Tensor | float] = {n: 0.0 for n in names}
    counts = dict.fromkeys(names, 0)
    current: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            for rows in split(args[0], current["x"]):
                sums[name] = sums[name] + normalized_gram(rows)
                counts[name] += 1

        return hook

    handles = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for x in inputs:
            current["x"] = x
            (forward or (lambda m, v: m(v)))(model, x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = {}
    for n in names:
        if counts[n] == 0:
            raise ValueError(f"layer '{n}' saw no context sample")
        out[n] = sums[n] / counts[n]  # type: ignore[operator]
    return out


def damped_inverse(covariance: torch.Tensor, damp: float = 0.01, tolerance: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C + λ·mean(diag C)·I, its inverse)``: ``λ`` starts at ``damp`` and doubles until ``‖C C⁻¹ − I‖_F <
    tolerance`` (the reference code's safeguard for a low-rank context covariance)."""
    c = covariance.float()
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    mean_diag = torch.mean(torch.diag(c))
    while True:
        fixed = c + eye * mean_diag * damp
        inverse = torch.linalg.inv(fixed)
        if torch.dist(fixed @ inverse, eye).item() < tolerance:
            return fixed, inverse
        damp *= 2


def context_decomposition(weight: torch.Tensor, covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U (out×k), Σ (k), V̂ (in×k)`` with ``W = U diag(Σ) V̂ᵀ``: the SVD of ``W C`` (damped ``C``) with the right
    factor mapped back by ``C⁻¹`` (Eq. 2–3), ``k = min(out, in)``, singular values in decreasing order, float32."""
    if weight.dtype not in _FLOATS:
        raise TypeError(f"CorDA needs a float32/float16/bfloat16 weight, got {weight.dtype}")
    if covariance.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"covariance {tuple(covariance.shape)} does not match the layer's {weight.shape[1]} inputs")
    fixed, inverse = damped_inverse(covariance)
    U, S, Vh = torch.linalg.svd(weight.detach().float() @ fixed, full_matrices=False)
    return U, S, (Vh @ inverse).T


def select(U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, rank: int, mode: str) -> tuple[torch.Tensor, ...]:
    """The ``rank`` components that train: the largest ``σ`` for IPA, the smallest for KPA (Sec. 3.3)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 1 <= rank <= S.shape[0]:
        raise ValueError(f"rank {rank} must be between 1 and min(out, in) = {S.shape[0]}")
    part = slice(None, rank) if mode == "ipa" else slice(S.shape[0] - rank, None)
    return U[:, part], S[part], V[:, part]


def corda_factors(
    weight: torch.Tensor, covariance: torch.Tensor, rank: int, mode: str = "ipa", scaling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, B, W_res)`` with ``W_res + scaling · B A = W``; ``A``, ``B`` in float32, ``W_res`` in ``weight``'s dtype."""
    if scaling <= 0:
        raise ValueError(f"scaling must be > 0, got {scaling}")
    U, S, V = select(*context_decomposition(weight, covariance), rank, mode)
    root = torch.sqrt(S / scaling)
    A = V.T * root[:, None]
    B = U * root[None, :]
    residual = weight.detach().float() - scaling * (B @ A)
    return A, B, residual.to(weight.dtype)


@torch.no_grad()
def corda_init_(layer: LowRankLinear, covariance: torch.Tensor, mode: str = "ipa") -> LowRankLinear:
    """Initialize a :class:`paperkit.LowRankLinear` in place: context-oriented factors, residual base weight."""
    A, B, residual = corda_factors(layer.base.weight, covariance.to(layer.base.weight.device), layer.rank, mode, layer.scaling)
    layer.lora_A.copy_(A.to(layer.lora_A.dtype))
    layer.lora_B.copy_(B.to(layer.lora_B.dtype))
    layer.base.weight.copy_(residual)
    return layer


def corda_linear(
    linear: nn.Linear, covariance: torch.Tensor, rank: int, mode: str = "ipa", alpha: float | None = None, dropout: float = 0.0,
) -> LowRankLinear:
    """Wrap one ``nn.Linear`` as a CorDA adapter (``alpha = None`` means ``alpha = rank``, a scaling of 1)."""
    scaling = (rank if alpha is None else alpha) / rank
    return corda_init_(LowRankLinear(linear, rank, scaling, dropout), covariance, mode)
